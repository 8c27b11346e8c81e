"""`bounce-exporter backfill` into a real Prometheus: a corpus log's history, turned into blocks by
`promtool tsdb create-blocks-from openmetrics`, served by `prometheus` and queried at the log's
times, gives the counts `parse` gives, sample by sample, and the persistent-deferral flag exactly
at the steps at which the tracker held it.

Why the counter's value and not `increase()`: a counter series starts when its domain first
appears, at the first step after its first event, already above 0; `increase()` over the span
misses what that first sample holds and extrapolates to the range's ends. The raw samples (a range
selector at the end) and the last one are exact, and what the live exporter's series show too.

Needs promtool and prometheus (apt-get install prometheus): skipped without them, failed with
BOUNCE_EXPORTER_REQUIRE_E2E=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

from .prometheus_lab import PrometheusLab
from .requirements import find_binary, require

REPO = Path(__file__).resolve().parents[2]
LOG = REPO.parent / "shared" / "corpus" / "real" / "postfix-3min.log"
STEP = 15
RULES = """\
persistent_deferrals:
  - name: disk-full
    match: {code: "431"}
    min_attempts: 3
    min_duration: 1m
    clear_after: 2h
"""
ENV = {**os.environ, "TZ": "UTC"}


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bounce_exporter", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def parsed_events() -> list[dict]:
    events = [json.loads(line) for line in run("parse", str(LOG)).splitlines()]
    for event in events:
        event["seconds"] = datetime.fromisoformat(event["time"]).timestamp()
    return events


def samples(lab: PrometheusLab, selector: str, at: float) -> dict[str, list[tuple[float, float]]]:
    """The raw samples of each series of ``selector`` in the 10 minutes up to ``at``, keyed by
    its domain (and code)."""
    found = lab.query(f"{selector}[10m]", at=at)
    return {",".join(v for k, v in sorted(r["metric"].items()) if k in ("domain", "code", "kind")):
            [(float(t), float(v)) for t, v in r["values"]] for r in found}


def test_backfilled_history_in_prometheus_gives_parses_counts_at_the_logs_times(tmp_path):
    require("promtool", "backfill into Prometheus needs promtool (apt-get install prometheus)")
    require("prometheus", "backfill into Prometheus needs prometheus (apt-get install prometheus)")
    config = tmp_path / "config.yml"
    config.write_text(RULES)
    history = tmp_path / "history.om"
    run("backfill", str(LOG), "--step", f"{STEP}s", "--config.file", str(config),
        "--output", str(history))
    assert history.read_text().endswith("# EOF\n")
    blocks = tmp_path / "blocks"
    made = subprocess.run([find_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                           str(history), str(blocks)], capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stdout + made.stderr

    events = parsed_events()
    first, last = min(e["seconds"] for e in events), max(e["seconds"] for e in events)
    boundaries = list(range(int(first // STEP + 1) * STEP, int(last // STEP + 2) * STEP, STEP))
    end = boundaries[-1]
    disk_full = sorted(e["seconds"] for e in events
                       if e["domain"] == "disk-full.example" and e["status"] == "deferred")
    # persistent at the first 431 deferral that is the 3rd and a minute after the first
    became = next(t for n, t in enumerate(disk_full, 1) if n >= 3 and t - disk_full[0] >= 60)

    lab = PrometheusLab(storage_path=blocks, workdir=tmp_path / "prometheus",
                        extra_args=["--storage.tsdb.retention.time=100y"]).start()
    try:
        raw = samples(lab, 'bounce_failures_total{domain="disk-full.example"}', end)
        flag = samples(lab, 'bounce_persistent_deferral{domain="disk-full.example"}', end)
        since = lab.query('bounce_persistent_deferral_since_timestamp_seconds', at=end)
        at_end = {
            "deliveries": lab.query("bounce_deliveries_total", at=end),
            "expired": lab.query("bounce_expired_total", at=end),
            "failures": lab.query("sum by (domain, kind) (bounce_failures_total)", at=end),
        }
    finally:
        lab.stop()

    counted = Counter((e["domain"], e["status"]) for e in events)
    served = Counter()
    for name, status in (("deliveries", "sent"), ("expired", "expired")):
        for r in at_end[name]:
            served[(r["metric"]["domain"], status)] = int(float(r["value"][1]))
    for r in at_end["failures"]:
        status = "deferred" if r["metric"]["kind"] == "soft" else "bounced"
        served[(r["metric"]["domain"], status)] = int(float(r["value"][1]))
    assert +served == counted  # every domain and status, exactly (+: without zero entries)

    # the disk-full counter at every step: the deferrals logged before it
    assert raw == {"431,disk-full.example,soft": [
        (float(b), float(sum(1 for t in disk_full if t < b)))
        for b in boundaries if any(t < b for t in disk_full)]}
    # the flag: from the first step after it became persistent to the end (no delivery, and the
    # 2h clear_after is not over), at 1
    assert flag == {"431,disk-full.example": [(float(b), 1.0) for b in boundaries if b > became]}
    assert [(r["metric"]["domain"], float(r["value"][1])) for r in since] == [
        ("disk-full.example", disk_full[0])]
