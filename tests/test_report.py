"""`report` and `backfill` (issue 17): old logs replayed through the exporter's own stages.

The report's numbers are the exporter's counters after the replay, so they equal what `parse`
prints, domain by domain; a rotated log read as its rotated files gives what the whole log gives;
the backfill's last step is what the live exporter exposes after reading the same log.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import pty
import re
import time
from collections import Counter

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from bounce_exporter import oneshot
from bounce_exporter.app import Exporter
from bounce_exporter.cli import main
from bounce_exporter.config import load_config, rotation_chains
from bounce_exporter.exposition.backfill import Backfill
from bounce_exporter.exposition.collector import snapshot_families
from bounce_exporter.report.render import table

from .corpus import CORPUS
from .helpers import read_to_end

REAL = CORPUS / "real"
POSTFIX = REAL / "postfix-3min.log"
LOGS = ["postfix-3min.log", "exim-3min.log", "opensmtpd-3min.log"]


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Log times are local times: read and shown in UTC here, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def report_json(*paths, config=None, err=None) -> dict:
    out = io.StringIO()
    status = oneshot.report_files([str(p) for p in paths], config or load_config(None, {}), "json",
                              out, err or io.StringIO())
    assert status == 0
    return json.loads(out.getvalue())


def parse_counts(path) -> Counter:
    found: Counter = Counter()
    for _, event in oneshot.iter_file_events(str(path), "auto", 65536):
        if event.without_attempt is None:  # the report's counts are attempts (and expiries)
            found[(event.domain or "unknown", event.status)] += 1
    return found


def report_counts(report: dict) -> Counter:
    found: Counter = Counter()
    for row in report["domains"]:
        for status, key in (("sent", "delivered"), ("deferred", "deferred"),
                            ("bounced", "bounced"), ("expired", "expired")):
            found[(row["domain"], status)] = row[key]
    return +found


@pytest.mark.parametrize("name", LOGS)
def test_the_reports_counts_are_parses_domain_by_domain(name):
    report = report_json(REAL / name)
    counted = parse_counts(REAL / name)
    assert report_counts(report) == counted
    for row in report["domains"]:
        assert row["attempts"] == row["delivered"] + row["deferred"] + row["bounced"]
    totals = report["totals"]
    assert (totals["delivered"], totals["deferred"], totals["bounced"], totals["expired"]) == tuple(
        sum(n for (_, status), n in counted.items() if status == s)
        for s in ("sent", "deferred", "bounced", "expired"))
    assert totals["attempts"] == sum(row["attempts"] for row in report["domains"])


def test_the_text_report_shows_the_domain_table_and_the_disk_full_episode_explained():
    out = io.StringIO()
    assert oneshot.report_files([str(POSTFIX)], load_config(None, {}), "text", out,
                            io.StringIO()) == 0
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == ("bounce-exporter report: 1 file (postfix), 1083 lines, 303 delivery "
                        "events, from 2026-11-28 12:22:37 to 2026-11-28 12:24:55 (UTC+00:00)")
    header = next(line for line in lines if line.startswith("domain  "))
    assert header.split() == ["domain", "attempts", "delivered", "deferred", "bounced", "expired",
                              "waiting", "oldest_waiting", "top", "replies"]
    row = next(line for line in lines if line.startswith("disk-full.example  "))
    assert row.split() == ["disk-full.example", "27", "0", "27", "0", "3", "0", "-", "431",
                           "4.3.1", "system_full", "(27)"]
    assert header.index("expired") + len("expired") == row.index(" 3 ") + 2  # right-aligned
    start = lines.index("disk-full.example 431 (system_full), still going:")
    assert lines[start + 1:start + 4] == [
        "  rule       disk-full: 3 deferrals over at least 30m, not reached",
        ("  reply      host 127.0.0.1[127.0.0.1] said: 431 4.3.1 STOREDRV.Deliver; disk is full "
        "and the server"),
        "             cannot accept new messages (in reply to RCPT TO command)"]
    assert lines[start + 4] == "  meaning    Exchange's mailbox store is out of disk space (STOREDRV)"
    assert lines[start + 5].startswith("  sender     Nothing to fix on your side, but do not "
                                       "just wait: a full disk does not clear by")


def test_the_episodes_say_how_they_ended():
    report = report_json(POSTFIX)
    assert [(e["domain"], e["code"], e["attempts"], e["persistent"], e["ended"], e["expired"],
             e["category"]) for e in report["episodes"]] == [
        ("disk-full.example", "431", 27, False, "still going", 3, "system_full"),
        ("flaky.example", "431", 9, False, "delivery", 0, "system_full")]
    assert report["episodes"][0]["from"] == "2026-11-28T12:22:37+00:00"


LATER_DELIVERY = (b"Nov 28 12:40:00 mx1 postfix/smtp[14397]: 3E35E512499: to=<user0009@ok.example>, "
                  b"relay=127.0.0.1[127.0.0.1]:2525, delay=0.06, delays=0.02/0.02/0.01/0.01, "
                  b"dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as FAKE000099)\n")


def test_a_persistent_episode_under_a_rule_that_fits_the_log(tmp_path):
    config_file = tmp_path / "config.yml"
    config_file.write_text("persistent_deferrals:\n  - name: disk\n    match: {code: \"431\"}\n"
                           "    min_attempts: 3\n    min_duration: 1m\n    clear_after: 5m\n")
    config = load_config(str(config_file), {})
    report = report_json(POSTFIX, config=config)
    disk = [e for e in report["episodes"] if e["domain"] == "disk-full.example"]
    # its last deferral is the log's last event: still going when the log ends
    assert [(e["persistent"], e["ended"], e["expired"], e["attempts"]) for e in disk] == [
        (True, "still going", 3, 27)]
    # a line 15 minutes later: the streak timed out (clear_after) after its messages expired
    longer = tmp_path / "mail.log"
    longer.write_bytes(POSTFIX.read_bytes() + LATER_DELIVERY)
    os.utime(longer, (POSTFIX.stat().st_mtime,) * 2)
    disk = [e for e in report_json(longer, config=config)["episodes"]
            if e["domain"] == "disk-full.example"]
    assert [(e["persistent"], e["ended"], e["expired"], e["ended_at"]) for e in disk] == [
        (True, "expiry", 3, "2026-11-28T12:29:55+00:00")]  # last deferral 12:24:55 + 5m


def test_csv_holds_the_json_tables_each_row_led_by_its_table():
    report = report_json(POSTFIX)
    out = io.StringIO()
    assert oneshot.report_files([str(POSTFIX)], load_config(None, {}), "csv", out,
                            io.StringIO()) == 0
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    domains = [row for row in rows if row[0] == "domains"]
    assert domains[0][:9] == ["domains", "domain", "attempts", "delivered", "deferred", "bounced",
                              "expired", "waiting", "oldest_waiting"]
    assert [row[1:7] for row in domains[1:]] == [
        [d["domain"], *(str(d[k]) for k in ("attempts", "delivered", "deferred", "bounced",
                                             "expired"))] for d in report["domains"]]
    assert {row[0] for row in rows} == {"totals", "kinds", "domains", "providers", "episodes",
                                        "replies"}


def test_a_rotated_log_given_as_its_files_reports_what_the_whole_log_does(tmp_path):
    lines = POSTFIX.read_bytes().splitlines(keepends=True)
    thirds = [lines[:400], lines[400:750], lines[750:]]
    live = tmp_path / "mail.log"
    with gzip.open(tmp_path / "mail.log.2.gz", "wb") as oldest:
        oldest.writelines(thirds[0])
    (tmp_path / "mail.log.1").write_bytes(b"".join(thirds[1]))
    live.write_bytes(b"".join(thirds[2]))
    stamp = os.stat(POSTFIX).st_mtime
    for path in tmp_path.iterdir():
        os.utime(path, (stamp, stamp))
    given = [live, tmp_path / "mail.log.1", tmp_path / "mail.log.2.gz"]  # as a shell glob sorts
    rotated = report_json(*given)
    whole = report_json(POSTFIX)
    assert rotated["domains"] == whole["domains"]
    assert rotated["episodes"] == whole["episodes"]
    assert [f["file"] for f in rotated["files"]] == [str(p) for p in reversed(given)]
    assert rotated["lines"] == whole["lines"] == 1083


def test_rotation_chains_put_each_logs_files_oldest_first():
    assert rotation_chains(["/v/mail.log", "/v/mail.log.1", "/v/mail.log.10.gz",
                            "/v/mail.log.2.gz", "/x/exim.log"]) == [
        ["/v/mail.log.10.gz", "/v/mail.log.2.gz", "/v/mail.log.1", "/v/mail.log"],
        ["/x/exim.log"]]
    assert rotation_chains(["m.log-20260102.gz", "m.log-20260101.gz"]) == [
        ["m.log-20260101.gz", "m.log-20260102.gz"]]


def test_tables_align_numbers_right_and_text_left():
    assert table(("name", "n"), [["a", 5], ["longer", 123], ["b", None]]) == [
        "name      n",
        "------  ---",
        "a         5",
        "longer  123",
        "b         -"]


def test_backfill_is_openmetrics_whose_last_step_is_the_live_exporters_counters(tmp_path):
    out = io.StringIO()
    assert oneshot.backfill_files([str(POSTFIX)], load_config(None, {}), 60.0, out,
                              io.StringIO()) == 0
    text = out.getvalue()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}  # OpenMetrics' rules
    assert not [name for name in families if name.startswith(("bounce_exporter_",
                                                                "bounce_waiting_"))]
    steps = sorted({float(s.timestamp) for f in families.values() for s in f.samples})
    assert steps == [1795868580, 1795868640, 1795868700]  # every minute, to the one after the end
    last = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values()
            if f.type == "counter" for s in f.samples if float(s.timestamp) == steps[-1]}

    config = load_config(None, {"log_files": [str(POSTFIX)], "from_start": True,
                                "state_file": str(tmp_path / "state.json")})
    live = Exporter(config)
    live.pipeline.begin({})
    live.pipeline.pump()
    exposed = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in snapshot_families(live.store.snapshot())
               if f.type == "counter" and not f.name.startswith("bounce_exporter_")
               for s in f.samples}
    live.pipeline.close()
    live.wakeup.stop()
    assert last == exposed
    assert last[("bounce_failures_total", (("category", "system_full"), ("code", "431"),
                 ("domain", "disk-full.example"), ("enhanced", "4.3.1"), ("kind", "soft")))] == 27


def test_backfill_writes_each_series_step_by_step_with_its_gaps():
    backfill = Backfill()
    for at, value in ((60.0, 1.0), (120.0, 1.0), (180.0, None), (240.0, 2.0)):
        gauge = GaugeMetricFamily("bounce_persistent_deferral", "1 while.", labels=["domain"])
        if value is not None:
            gauge.add_metric(["a.example"], value)
        left_out = GaugeMetricFamily("bounce_exporter_domains", "Self.", value=3)
        backfill.add(at, [gauge, left_out])
    out = io.StringIO()
    assert backfill.write(out) == 3
    assert out.getvalue() == (
        "# HELP bounce_persistent_deferral 1 while.\n"
        "# TYPE bounce_persistent_deferral gauge\n"
        'bounce_persistent_deferral{domain="a.example"} 1 60\n'
        'bounce_persistent_deferral{domain="a.example"} 1 120\n'
        'bounce_persistent_deferral{domain="a.example"} 2 240\n'
        "# EOF\n")


def test_the_commands_say_what_they_could_not_do(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.log")]) == 1
    assert capsys.readouterr().err == (f"bounce-exporter report: cannot read "
                                       f"{tmp_path / 'nope.log'}: no such file\n")
    assert main(["backfill", str(POSTFIX), "--step", "0"]) == 2
    assert capsys.readouterr().err == "bounce-exporter backfill: --step must be more than 0\n"
    assert main(["backfill", str(POSTFIX), "--step", "soon"]) == 2
    assert "--step: not a duration: 'soon'" in capsys.readouterr().err
    assert main(["backfill", str(POSTFIX), "--label", "domain=x"]) == 2
    assert capsys.readouterr().err == ("bounce-exporter backfill: --label 'domain=x': the label "
                                       "domain is already set\n")


def test_backfill_labels_every_series_as_prometheus_labels_the_live_ones(tmp_path):
    output = tmp_path / "history.om"
    assert main(["backfill", str(POSTFIX), "--label", "job=bounce-exporter", "--label",
                 "instance=mx1:39431", "--output", str(output)]) == 0
    families = list(text_string_to_metric_families(output.read_text()))
    assert families and all(
        (s.labels["job"], s.labels["instance"]) == ("bounce-exporter", "mx1:39431")
        for f in families for s in f.samples)


def test_report_draws_its_progress_line_on_a_terminal(monkeypatch):
    monkeypatch.setattr(oneshot.Progress, "INTERVAL", 0.0)
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert oneshot.report_files([str(POSTFIX)], load_config(None, {}), "json", io.StringIO(),
                                terminal) == 0
    drawn = read_to_end(leader)
    os.close(leader)
    frames = drawn.decode().replace("\r\n", "\n").split("\r")[1:]
    size = POSTFIX.stat().st_size / 1e6
    assert re.fullmatch(rf"report: {size:.1f} MB of {size:.1f} MB \(100%\), \d+\.\d MB/s"
                        r"\x1b\[K\n", frames[-1]), frames


