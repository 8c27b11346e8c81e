"""End-to-end: the exporter replays a Postfix log, a real Prometheus scrapes it and evaluates the
shipped deploy/prometheus/alerts.yml, and the alerts are read back through Prometheus' HTTP API.

- disk-full.example keeps answering 431 4.3.1 (4 attempts over 6 minutes): the exporter flags it
  and BouncePersistentDeferral431 fires, with annotations about that domain;
- recovered.example deferred the same way and then took a delivery: no flag, no alert;
- ok.example only took deliveries;
- then a delivery to disk-full.example is appended to the log: the flag clears, the series goes
  stale in Prometheus and the alert resolves.

Log stamps are RFC 3339 and recent (wall clock minus offsets): the tracker also clears streaks
`clear_after` after their last deferral by the wall clock, so a stale log would prove nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ..helpers import samples, value
from .conftest_prometheus import make_prometheus  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT = "BouncePersistentDeferral431"
TIMEOUT = 30.0  # per wait; a green run takes ~10 s in all

# The shipped default needs 30m; lowered so a 6-minute streak in the replayed log is persistent.
CONFIG = (
    "persistent_deferrals:\n"
    '  - {name: disk-full, match: {code: "431"}, min_attempts: 3, min_duration: 1m, '
    "clear_after: 2h}\n"
)

# Line shapes copied from ../shared/corpus/real/postfix-3min.log (real Postfix 3.7 output),
# with RFC 3339 stamps as Debian 12's rsyslog writes them.
QMGR = ("{stamp} mx1 postfix/qmgr[14113]: {qid}: from=<app@sender.example>, size=488, nrcpt=1 "
        "(queue active)")
DEFERRED = (
    "{stamp} mx1 postfix/smtp[14397]: {qid}: to=<{rcpt}>, relay=127.0.0.1[127.0.0.1]:2525, "
    "delay=0.02, delays=0/0/0/0.01, dsn=4.3.1, status=deferred (host 127.0.0.1[127.0.0.1] said: "
    "431 4.3.1 STOREDRV.Deliver; disk is full and the server cannot accept new messages "
    "(in reply to RCPT TO command))"
)
SENT = (
    "{stamp} mx1 postfix/smtp[14399]: {qid}: to=<{rcpt}>, relay=127.0.0.1[127.0.0.1]:2525, "
    "delay=0.03, delays=0/0.01/0.01/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {fake})"
)
REMOVED = "{stamp} mx1 postfix/qmgr[14113]: {qid}: removed"

DISK_FULL = ("4E6AC512253", "user0004@disk-full.example")
RECOVERED = ("5692B5124C2", "user0006@recovered.example")
OK = ("3E35E512444", "user0001@ok.example")


def stamp(seconds_ago: float, now: float) -> str:
    return datetime.fromtimestamp(now - seconds_ago, UTC).isoformat(timespec="microseconds")


def line(template: str, seconds_ago: float, now: float, message: tuple[str, str],
         fake: str = "FAKE000001") -> str:
    qid, rcpt = message
    return template.format(stamp=stamp(seconds_ago, now), qid=qid, rcpt=rcpt, fake=fake)


def replayed_log(now: float) -> list[str]:
    lines = [
        line(QMGR, 600, now, DISK_FULL),
        line(QMGR, 600, now, RECOVERED),
        line(QMGR, 590, now, OK),
        line(SENT, 590, now, OK, "FAKE000001"),
        line(REMOVED, 590, now, OK),
    ]
    for ago in (600, 480, 360, 240):  # Postfix retrying: 431 4.3.1 each time
        lines.append(line(DEFERRED, ago - 1, now, DISK_FULL))
        if ago > 240:  # recovered.example: 3 attempts over 4 minutes, persistent on its own ...
            lines.append(line(DEFERRED, ago - 2, now, RECOVERED))
    lines += [  # ... then a delivery
        line(QMGR, 180, now, RECOVERED),
        line(SENT, 180, now, RECOVERED, "FAKE000002"),
        line(REMOVED, 180, now, RECOVERED),
    ]
    return lines


def series_labels(result: list[dict]) -> list[dict]:
    return sorted((r["metric"] for r in result), key=lambda m: sorted(m.items()))


def alerts_named(lab, name: str, **labels: str) -> list[dict]:
    return [a for a in lab.alerts() if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def test_persistent_431_fires_through_prometheus_and_resolves_on_delivery(
        tmp_path, run_exporter, make_prometheus):  # noqa: F811
    assert ALERTS.is_file(), ALERTS
    now = time.time()
    log = tmp_path / "postfix.log"
    lines = replayed_log(now)
    log.write_text("\n".join(lines) + "\n")
    config = tmp_path / "config.yml"
    config.write_text(CONFIG)

    exporter = run_exporter([
        "--config.file", str(config), "--log.file", str(log), "--log.from-start",
        "--state.file", str(tmp_path / "state" / "state.json"),
    ])

    def lines_read(text: str, count: int) -> bool:
        return value(samples(text), "bounce_exporter_lines_read_total", source=str(log)) == count

    text = exporter.wait_for_metrics(lambda t: lines_read(t, len(lines)), TIMEOUT)
    found = samples(text)
    # The exporter itself: flag for disk-full only, before Prometheus is involved.
    assert value(found, "bounce_persistent_deferral", domain="disk-full.example", code="431") == 1
    assert value(found, "bounce_persistent_deferral",
                 domain="recovered.example", code="431") is None
    assert value(found, "bounce_persistent_deferral_attempts",
                 domain="disk-full.example", code="431") == 4

    target = f"127.0.0.1:{exporter.port}"
    prom = make_prometheus([target], rule_files=[ALERTS])
    prom.wait_for_targets_up(TIMEOUT)

    # 4. Firing, for disk-full.example only.
    firing = prom.wait_for(
        lambda: [a for a in alerts_named(prom, ALERT, domain="disk-full.example", code="431")
                 if a["state"] == "firing"],
        TIMEOUT, what=f"{ALERT} firing for disk-full.example")
    assert len(firing) == 1, firing
    alert = firing[0]
    assert alert["labels"] == {"alertname": ALERT, "domain": "disk-full.example", "code": "431",
                               "severity": "critical"}, alert
    summary, description = alert["annotations"]["summary"], alert["annotations"]["description"]
    assert "disk-full.example" in summary, summary
    assert "disk-full.example" in description, description
    # The templates' own queries ran against Prometheus and found the streak.
    assert "4 attempts over all relays" in description, description
    assert "an unknown time" not in description, description

    assert not [a for a in prom.alerts() if a["labels"].get("domain") != "disk-full.example"
                and a["labels"].get("alertname", "").startswith("BouncePersistentDeferral")], \
        prom.alerts()
    assert not [a for a in prom.alerts() if a["labels"].get("domain") == "recovered.example"]
    assert series_labels(prom.query("bounce_persistent_deferral")) == [{
        "__name__": "bounce_persistent_deferral", "domain": "disk-full.example", "code": "431",
        "instance": target, "job": "bounce-exporter"}]
    # Not vacuous: Prometheus did see recovered.example's three 431s and ok.example's delivery.
    recovered = prom.query('bounce_failures_total{domain="recovered.example",code="431"}')
    assert [r["value"][1] for r in recovered] == ["3"], recovered
    assert [r["value"][1] for r in prom.query('bounce_deliveries_total{domain="ok.example"}')] \
        == ["1"]

    # 6. The exporter reads its log: the stall alert is not pending or firing, and every
    # shipped rule evaluates without error.
    assert not alerts_named(prom, "BounceExporterLogStalled"), prom.alerts()
    stall = prom.query("time() - bounce_exporter_last_line_timestamp_seconds")
    assert len(stall) == 1 and float(stall[0]["value"][1]) < 900, stall
    prom.check_rules_healthy()

    # 5. A delivery to disk-full.example clears the flag; the alert resolves.
    appended = [line(SENT, 0, time.time(), DISK_FULL, "FAKE000003"),
                line(REMOVED, 0, time.time(), DISK_FULL)]
    with log.open("a") as handle:
        handle.write("\n".join(appended) + "\n")
    text = exporter.wait_for_metrics(lambda t: lines_read(t, len(lines) + len(appended)), TIMEOUT)
    assert value(samples(text), "bounce_persistent_deferral",
                 domain="disk-full.example", code="431") is None
    prom.wait_for(lambda: not alerts_named(prom, ALERT), TIMEOUT,
                  what=f"{ALERT} to resolve after the delivery")
    assert prom.query("bounce_persistent_deferral") == []
    left = [a for a in prom.alerts() if a["labels"].get("alertname", "").startswith("Bounce")]
    assert not left, left

    assert exporter.terminate() == 0, exporter.output()
