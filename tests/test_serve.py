"""The exporter in-process, driven one read step at a time, scraped over real HTTP."""

from __future__ import annotations

import json
import shutil

import pytest

from bounce_exporter.app import Exporter
from bounce_exporter.config import Config

from .corpus import CORPUS
from .helpers import exporters, http_get, local_config, samples, value

DISK_FULL = ("Nov 28 12:22:{s:02d} mx1 postfix/smtp[14397]: Q{q}: to=<u{q}@disk-full.example>, "
             "relay=127.0.0.1[127.0.0.1]:2525, delay=0.02, delays=0/0/0/0.01, dsn=4.3.1, "
             "status=deferred (host 127.0.0.1[127.0.0.1] said: 431 4.3.1 disk is full "
             "(in reply to RCPT TO command))\n")
SENT = ("Nov 28 12:22:{s:02d} mx1 postfix/smtp[14397]: Q{q}: to=<u{q}@ok.example>, relay=x[1.2.3.4]:25, "
        "delay=0.02, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as FAKE1)\n")


def serve_config(tmp_path, log, config_text: str = "", **overrides) -> Config:
    """A configuration for ``log``: ``config_text`` as the config file, then ``overrides``."""
    config_file = tmp_path / "config.yml"
    config_file.write_text(config_text)
    return local_config(tmp_path, str(config_file), log_files=[str(log)], **overrides)


def make_exporter(tmp_path, log, config_text: str = "", **overrides) -> Exporter:
    return Exporter(serve_config(tmp_path, log, config_text, **overrides))


@pytest.fixture
def running(tmp_path):
    def begin(log, config_text: str = "", **overrides):
        exporter = start(serve_config(tmp_path, log, config_text, **overrides))
        return exporter, f"http://127.0.0.1:{exporter.server.server_address[1]}"

    with exporters() as start:
        yield begin


def scrape(base: str) -> dict:
    status, content_type, body = http_get(base + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    return samples(body)


def test_follows_new_lines_only_and_counts_them(tmp_path, running):
    log = tmp_path / "mail.log"
    log.write_text(DISK_FULL.format(s=1, q=1))  # already there at start: not counted
    exporter, base = running(log)
    exporter.step()
    with log.open("a") as handle:
        handle.write(DISK_FULL.format(s=2, q=2) + SENT.format(s=3, q=3) + "garbage status=x\n")
    exporter.step()
    found = scrape(base)
    source = str(log)
    assert value(found, "bounce_exporter_lines_read_total", source=source) == 3
    assert value(found, "bounce_exporter_lines_not_understood_total", source=source,
                 reason="no_header") == 1
    assert value(found, "bounce_exporter_source_up", source=source) == 1
    assert value(found, "bounce_delivery_attempts_total", domain="disk-full.example") == 1
    assert value(found, "bounce_failures_total", domain="disk-full.example", kind="soft",
                 code="431", enhanced="4.3.1", category="system_full") == 1
    assert value(found, "bounce_deliveries_total", domain="ok.example") == 1


def test_landing_page_health_and_unknown_paths(tmp_path, running):
    _, base = running(tmp_path / "missing.log")
    status, content_type, body = http_get(base + "/")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert '<a href="/metrics">Metrics</a>' in body
    assert http_get(base + "/-/healthy")[:2] == (200, "text/plain; charset=utf-8")
    assert http_get(base + "/nope")[0] == 404


def test_missing_log_is_down_and_picked_up_when_it_appears(tmp_path, running):
    log = tmp_path / "mail.log"
    exporter, base = running(log)
    exporter.step()
    assert value(scrape(base), "bounce_exporter_source_up", source=str(log)) == 0
    log.write_text(SENT.format(s=1, q=1))
    exporter.step()
    found = scrape(base)
    assert value(found, "bounce_exporter_source_up", source=str(log)) == 1
    assert value(found, "bounce_deliveries_total", domain="ok.example") == 1


LOWERED_RULE = """
persistent_deferrals:
  - {name: disk-full, match: {code: "431"}, min_attempts: 3, min_duration: 1m, clear_after: 3650d}
"""


def test_replaying_the_real_log_flags_disk_full_and_not_flaky(tmp_path, running):
    log = tmp_path / "postfix.log"
    shutil.copy(CORPUS / "real" / "postfix-3min.log", log)
    exporter, base = running(log, LOWERED_RULE, from_start=True)
    exporter.step()
    found = scrape(base)
    flagged = {labels for (name, labels), v in found.items() if name == "bounce_persistent_deferral"}
    assert flagged == {frozenset({("domain", "disk-full.example"), ("code", "431")})}
    assert value(found, "bounce_persistent_deferral_attempts", domain="disk-full.example",
                 code="431") == 27
    status, content_type, body = http_get(base + "/api/v1/deferrals")
    assert (status, content_type) == (200, "application/json")
    rows = {(row["domain"], row["state"]) for row in json.loads(body)}
    assert ("disk-full.example", "persistent") in rows
    assert not any(domain == "flaky.example" and state == "persistent" for domain, state in rows)


def test_flag_and_since_survive_a_restart(tmp_path, running):
    log = tmp_path / "postfix.log"
    shutil.copy(CORPUS / "real" / "postfix-3min.log", log)
    first, base = running(log, LOWERED_RULE, from_start=True)
    first.step()
    since = value(scrape(base), "bounce_persistent_deferral_since_timestamp_seconds",
                  domain="disk-full.example", code="431")
    first.shutdown()
    empty = tmp_path / "empty.log"
    empty.write_text("")
    second, base = running(empty, LOWERED_RULE)
    second.step()
    found = scrape(base)
    assert value(found, "bounce_persistent_deferral", domain="disk-full.example", code="431") == 1
    assert value(found, "bounce_persistent_deferral_since_timestamp_seconds",
                 domain="disk-full.example", code="431") == since


def test_a_failed_state_write_is_counted_and_serving_goes_on(tmp_path, running):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    log = tmp_path / "mail.log"
    log.write_text("")
    exporter, base = running(log, state_file=str(blocker / "state.json"))
    exporter.keeper.interval = 3600  # only the saves below
    exporter.step()
    assert exporter.keeper.save() is False
    assert exporter.keeper.save() is False
    with log.open("a") as handle:
        handle.write(SENT.format(s=1, q=1))
    exporter.step()
    found = scrape(base)
    # the start's write (issue 18: a first start's position is written at once) and the two saves
    assert value(found, "bounce_exporter_state_write_errors_total") == 3
    assert value(found, "bounce_deliveries_total", domain="ok.example") == 1


def test_exim_lines_that_reached_no_server_are_counted_apart(tmp_path, running):
    log = tmp_path / "exim.log"
    shutil.copy(CORPUS / "real" / "exim-3min.log", log)
    exporter, base = running(log, from_start=True, log_format="exim")
    exporter.step()
    found = scrape(base)
    assert value(found, "bounce_exporter_lines_not_attempts_total", source=str(log),
                 reason="retry_not_reached") == 341
    assert value(found, "bounce_exporter_lines_read_total", source=str(log)) == len(
        log.read_bytes().splitlines())


def test_a_stop_during_a_long_catch_up_ends_the_read_at_the_next_block(tmp_path):
    """SIGTERM sets ``stopping``: the read loop must not read a whole backlog first (systemd
    would kill it after TimeoutStopSec). What is not read is read by the next start."""
    line = ("Dec  1 12:00:00 mx1 postfix/smtp[1]: Q{n:08X}: to=<u@ok.example>, relay=mx[192.0.2.1]:25, "
            "delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n")
    log = tmp_path / "mail.log"
    log.write_text("".join(line.format(n=n) for n in range(40_000)))  # about 5 blocks of 1 MiB
    config = local_config(tmp_path, log_files=[str(log)], from_start=True)
    with exporters() as start:
        stopped = start(config)
        stopped.stopping.set()
        first = stopped.step()
        whole = start(local_config(tmp_path / "other", log_files=[str(log)], from_start=True))
        assert whole.step() == 40_000
    assert 0 < first < 10_000  # the first block's lines, not the backlog
