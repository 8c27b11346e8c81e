"""End-to-end: README's walkthrough, minus Grafana's UI. Every query of the shipped Grafana
dashboard is a test case, run through a real Prometheus that scrapes a real exporter.

1. The demo log: `deploy/demo/recent-log.py config/sample/postfix.log` (a 3-minute run of a real
   Postfix, stamps moved to now), read by `serve --config.file deploy/demo/demo.yml
   --log.from-start`. It is written in two parts, with scrapes in between, so that rates are not
   all zero; one over-long line gives "lines not understood" something to show. The Postfix
   queue panels read a fake `postqueue -j` (tests/fake_postqueue.py) holding two deferred
   messages for disk-full.example.
2. Prometheus runs with the shipped deploy/prometheus/prometheus.yml's job (its target replaced
   by the test exporter's address) and its rule files (alerts.yml, recording.yml).
3. BouncePersistentDeferral431 fires for disk-full.example (the README's promise).
4. Each panel's expressions (and the annotation's), with the template variables substituted as
   Grafana would ($job, $instance as regex-escaped alternations, $domain "All" = .*,
   $__rate_interval, $__range), go through Prometheus' query API: range queries for graphs,
   instant queries for tables, stats and bar gauges. Any error fails; so does an empty result.
   The same again for one domain, where only errors fail. The variables' own label_values()
   queries are run through the series API.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from ..helpers import samples, value
from .conftest_prometheus import make_prometheus  # noqa: F401  (pytest fixture)
from .prometheus_lab import PrometheusError

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "bounce-exporter.json"
DEMO_LOG = ROOT / "deploy" / "demo" / "recent-log.py"
DEMO_CONFIG = ROOT / "deploy" / "demo" / "demo.yml"
SAMPLE = ROOT / "config" / "sample" / "postfix.log"
TIMEOUT = 45.0
ALERT = "BouncePersistentDeferral431"

# What Grafana would put in for a 1s scrape interval and a short time range.
BUILTINS = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "1h",
            "$__range_s": "3600", "$__range_ms": "3600000"}
PERSISTENT = {("disk-full.example", "431"), ("unreachable.example", "none"),
              ("timeout.example", "none")}


def grafana_regex(values: list[str]) -> str:
    """A multi-value variable inside =~"...", as Grafana's Prometheus data source formats it:
    regex metacharacters escaped (with the backslash doubled for the PromQL string), values
    joined as an alternation."""
    escaped = [re.sub(r"([\\$^*{}\[\]'+?.()|])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted({**BUILTINS, **variables}, key=len, reverse=True):
        expr = expr.replace(name, {**BUILTINS, **variables}[name])
    left = re.findall(r"\$\{?\w+", expr)
    assert not left, f"template variables not substituted: {left} in {expr}"
    return expr


def dashboard_queries(doc: dict) -> list[tuple[str, str, str, bool]]:
    """(panel title, refId, expr, instant) of every panel target and annotation."""
    queries = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["refId"], target["expr"],
                            bool(target.get("instant")) and not target.get("range")))
    for annotation in doc["annotations"]["list"]:
        if annotation.get("expr"):
            queries.append((f"annotation {annotation['name']}", "-", annotation["expr"], False))
    return queries


def demo_log() -> list[str]:
    """The README's step: the sample log with its stamps moved to now."""
    result = subprocess.run([sys.executable, str(DEMO_LOG), str(SAMPLE)], capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout.splitlines()


def fake_queue(folder: Path) -> str:
    """The --queue.command of a fake postqueue -j: two messages deferred for disk-full.example."""
    queue = folder / "queue.jsonl"
    reason = ("host 127.0.0.1[127.0.0.1] said: 431 4.3.1 Insufficient system storage (in reply "
              "to RCPT TO command)")
    queue.write_text("".join(json.dumps({
        "queue_name": "deferred", "queue_id": f"4F2A3C1E2{i}", "arrival_time": int(time.time()) - 60,
        "message_size": 512, "sender": "s@sender.example",
        "recipients": [{"address": f"user{i}@disk-full.example", "delay_reason": reason}]}) + "\n"
        for i in range(2)))
    return shlex.join([sys.executable, str(ROOT / "tests" / "fake_postqueue.py"), str(queue)])


def first_431_time(lines: list[str]) -> float:
    for line in lines:
        if "@disk-full.example>" in line and "status=deferred" in line:
            return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()
    raise AssertionError("no 431 deferral for disk-full.example in the sample")


def shipped_job(target: str) -> tuple[dict, list[Path]]:
    """The bounce-exporter job of deploy/prometheus/prometheus.yml, scraping ``target``."""
    doc = yaml.safe_load(PROMETHEUS_YML.read_text())
    [job] = [j for j in doc["scrape_configs"] if j["job_name"] == "bounce-exporter"]
    job = copy.deepcopy(job)
    job["static_configs"] = [{"targets": [target]}]
    return job, [PROMETHEUS_YML.parent / f for f in doc["rule_files"]]


def test_every_dashboard_query_returns_data_from_a_real_prometheus(
        tmp_path, run_exporter, make_prometheus):  # noqa: F811
    lines = demo_log()
    split = len(lines) * 2 // 3
    first, second = lines[:split], lines[split:] + ["x" * 70000]  # > max_line_bytes: too_long
    log = tmp_path / "mail.log"
    log.write_text("\n".join(first) + "\n")

    exporter = run_exporter(["--config.file", str(DEMO_CONFIG), "--log.file", str(log),
                             "--log.from-start", "--state.file", str(tmp_path / "state.json"),
                             "--queue.command", fake_queue(tmp_path), "--queue.interval", "1s"])
    read = lambda text, n: value(samples(text), "bounce_exporter_lines_read_total",
                                 source=str(log)) == n
    exporter.wait_for_metrics(lambda t: read(t, len(first)), TIMEOUT)

    target = f"127.0.0.1:{exporter.port}"
    job, rule_files = shipped_job(target)
    prom = make_prometheus({}, rule_files=rule_files, extra_scrape_configs=[job])
    prom.wait_for_targets_up(TIMEOUT)
    started = time.time()
    lines_read = f'bounce_exporter_lines_read_total{{source="{log}"}}'
    prom.wait_for(lambda: prom.query(f"{lines_read} == {len(first)}"), TIMEOUT,
                  what="Prometheus to scrape the first part")
    time.sleep(2)  # a few scrapes of the first part: rates need two samples before the jump

    with log.open("a") as handle:
        handle.write("\n".join(second) + "\n")
    prom.wait_for(lambda: prom.query(f"{lines_read} == {len(lines) + 1}"), TIMEOUT,
                  what="Prometheus to scrape the whole log")

    # The README's promise: the 431 alert fires, for the out-of-disk domain only.
    firing = prom.wait_for(
        lambda: [a for a in prom.alerts() if a["labels"].get("alertname") == ALERT
                 and a["state"] == "firing"], TIMEOUT, what=f"{ALERT} to fire")
    assert [a["labels"]["domain"] for a in firing] == ["disk-full.example"], firing
    # Every series has a few samples (rates over new series need two), and the recording
    # rules have evaluated.
    counters = ("bounce_failures_total", "bounce_delivery_attempts_total",
                "bounce_expired_total", "bounce_exporter_lines_not_understood_total")
    prom.wait_for(lambda: all(prom.query(f"min(count_over_time({name}[1m])) >= 3")
                              for name in counters), TIMEOUT,
                  what="three samples of every counter series")
    prom.wait_for(lambda: prom.query("job_domain:bounce_failed_attempts:ratio_rate5m"),
                  TIMEOUT, what="the recording rules")
    prom.check_rules_healthy()

    doc = json.loads(DASHBOARD.read_text())
    variables = {"$job": grafana_regex([job["job_name"]]),
                 "$instance": grafana_regex([target]), "$domain": ".*"}
    check_variables(prom, doc, variables, target)

    end = time.time()
    failures, report = [], []
    for title, ref, expr, instant in dashboard_queries(doc):
        query = substitute(expr, variables)
        try:
            if instant:
                result = prom.query(query)
            else:
                result = prom.query_range(query, started - 5, end, step=1)
        except PrometheusError as err:
            failures.append(f"{title} [{ref}]: {query}\n    ERROR {err}")
            continue
        report.append(f"{title} [{ref}]: {len(result)} series")
        if not result:
            failures.append(f"{title} [{ref}]: {query}\n    EMPTY")
    assert not failures, "\n".join(failures) + "\n\nall:\n" + "\n".join(report) + \
        f"\n{prom.describe(1500)}"

    # One domain selected: no errors (empty panels are fine: disk-full never hard-bounces).
    one = {**variables, "$domain": grafana_regex(["disk-full.example"])}
    for title, ref, expr, instant in dashboard_queries(doc):
        query = substitute(expr, one)
        if instant:
            prom.query(query)
        else:
            prom.query_range(query, started - 5, end, step=5)

    check_persistent_table(prom, doc, variables, lines)
    assert exporter.terminate() == 0, exporter.output()


def check_variables(prom, doc: dict, variables: dict[str, str], target: str) -> None:
    """label_values(selector, label) of each query variable, through the series API."""
    found = {}
    for var in doc["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"])
        assert match, var["definition"]
        selector = substitute(match.group(1), variables)
        series = prom.api("series", **{"match[]": selector, "start": time.time() - 600})
        found[var["name"]] = {s[match.group(2)] for s in series if match.group(2) in s}
        assert found[var["name"]], f"variable {var['name']}: {selector} found nothing"
    assert found["instance"] == {target}, found
    assert found["job"] == {"bounce-exporter"}, found
    assert {"disk-full.example", "ok.example"} <= found["domain"], found


def check_persistent_table(prom, doc: dict, variables: dict[str, str], lines: list[str]) -> None:
    """The table's rows are the demo's persistent deferrals, since = the log's first 431."""
    [table] = [p for p in doc["panels"] if p["title"] == "Persistent deferrals"]
    columns = table["transformations"][1]["options"]["renameByName"]
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for target in table["targets"]:
        for series in prom.query(substitute(target["expr"], variables)):
            key = (series["metric"]["domain"], series["metric"]["code"])
            rows.setdefault(key, {})[columns[f"Value #{target['refId']}"]] = \
                float(series["value"][1])
    assert set(rows) == PERSISTENT, rows
    disk_full = rows[("disk-full.example", "431")]
    assert disk_full["Since"] == pytest.approx(first_431_time(lines) * 1000, abs=1), disk_full
    assert disk_full["Attempts"] == 27 and disk_full["Instances"] == 1, disk_full
    assert 60 < disk_full["For"] < 3600, disk_full
    assert disk_full["Last deferral"] >= disk_full["Since"]
