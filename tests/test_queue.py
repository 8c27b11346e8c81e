"""The Postfix queue view: ``postqueue -j`` (here tests/fake_postqueue.py printing its format) run
at scrape time, cached for queue.interval, exposed as bounce_queue_recipients{queue, domain,
category} and bounce_queue_oldest_timestamp_seconds{queue, domain}; a failing command sets
bounce_exporter_queue_up to 0, logged once; a missing one turns the view off."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from bounce_exporter.config import load_config
from bounce_exporter.errors import ConfigError
from bounce_exporter.exposition.collector import Exposition
from bounce_exporter.sources.postqueue import (
    QueuedMessage,
    QueuedRecipient,
    QueueError,
    QueueReader,
    parse_postqueue,
)

from .helpers import exporters, local_config, samples, value

FAKE = Path(__file__).with_name("fake_postqueue.py")
SAID = "host mx.{d}[192.0.2.7] said: {reply} (in reply to RCPT TO command)"
FULL = SAID.format(d="disk-full.example", reply="431 4.3.1 Insufficient system storage")
BUSY = SAID.format(d="busy.example", reply="421 4.7.0 Too many connections, slow down")


def record(queue: str, qid: str, arrival: int, *recipients: tuple[str, str]) -> str:
    """One line of postqueue -j, as Postfix 3.x prints it."""
    return json.dumps({
        "queue_name": queue, "queue_id": qid, "arrival_time": arrival, "message_size": 512,
        "forced_expire": False, "sender": "s@sender.example",
        "recipients": [{"address": a, "delay_reason": r} if r else {"address": a}
                       for a, r in recipients]}) + "\n"


QUEUE = (record("deferred", "4F2A3C1E2B", 1_764_300_000, ("a@disk-full.example", FULL),
                ("b@disk-full.example", FULL), ("c@busy.example", BUSY))
         + record("deferred", "5A1B2C3D4E", 1_764_300_600, ("d@Disk-Full.Example", FULL))
         + record("active", "6B2C3D4E5F", 1_764_301_200, ("e@busy.example", "")))


def command(path: Path, *extra: str) -> str:
    return shlex.join([sys.executable, str(FAKE), str(path), *extra])


def runs(path: Path) -> int:
    runs = Path(f"{path}.runs")
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def queue_samples(exporter) -> dict:
    found = samples(generate_latest(exporter.registry).decode())
    return {(name, tuple(sorted(labels))): v for (name, labels), v in found.items()
            if name.startswith(("bounce_queue_", "bounce_exporter_queue_"))}


def test_postqueue_json_lines_are_read_exactly():
    messages = parse_postqueue(QUEUE + "\n")
    assert messages == [
        QueuedMessage("deferred", "4F2A3C1E2B", 1_764_300_000.0, (
            QueuedRecipient("a@disk-full.example", FULL),
            QueuedRecipient("b@disk-full.example", FULL),
            QueuedRecipient("c@busy.example", BUSY))),
        QueuedMessage("deferred", "5A1B2C3D4E", 1_764_300_600.0, (
            QueuedRecipient("d@Disk-Full.Example", FULL),)),
        QueuedMessage("active", "6B2C3D4E5F", 1_764_301_200.0, (
            QueuedRecipient("e@busy.example", ""),))]


def test_output_that_is_not_postqueue_json_names_its_line():
    for text, why in (('{"queue_name": "deferred"', "line 2 is not a postqueue -j record"),
                      ('{"queue_name": "deferred"}', "line 2 is not a postqueue -j record"),
                      ("[1, 2]", "line 2 is not a postqueue -j record")):
        try:
            parse_postqueue(QUEUE.splitlines()[0] + "\n" + text + "\n")
        except QueueError as err:
            assert str(err).startswith(why), err
        else:
            raise AssertionError(f"{text!r} was read")


def test_queue_recipients_per_queue_domain_and_category_and_oldest_arrival(tmp_path):
    path = tmp_path / "queue.jsonl"
    path.write_text(QUEUE)
    with exporters() as start:
        exporter = start(local_config(tmp_path, queue_command=command(path)))
        assert queue_samples(exporter) == {
            ("bounce_queue_recipients", (("category", "system_full"), ("domain", "disk-full.example"),
                                         ("queue", "deferred"))): 3.0,
            ("bounce_queue_recipients", (("category", "rate_limited"), ("domain", "busy.example"),
                                         ("queue", "deferred"))): 1.0,
            # not tried yet: no delay reason, a deferral without a reply to the classifier
            ("bounce_queue_recipients", (("category", "other"), ("domain", "busy.example"),
                                         ("queue", "active"))): 1.0,
            ("bounce_queue_oldest_timestamp_seconds", (("domain", "disk-full.example"),
                                                       ("queue", "deferred"))): 1_764_300_000.0,
            ("bounce_queue_oldest_timestamp_seconds", (("domain", "busy.example"),
                                                       ("queue", "deferred"))): 1_764_300_000.0,
            ("bounce_queue_oldest_timestamp_seconds", (("domain", "busy.example"),
                                                       ("queue", "active"))): 1_764_301_200.0,
            ("bounce_exporter_queue_up", ()): 1.0}


def test_queue_domains_share_the_counters_domain_cap(tmp_path):
    path = tmp_path / "queue.jsonl"
    path.write_text(QUEUE)
    with exporters() as start:
        exporter = start(local_config(tmp_path, queue_command=command(path), max_domains=1))
        found = queue_samples(exporter)
    recipients = {labels: v for (name, labels), v in found.items()
                  if name == "bounce_queue_recipients"}
    assert recipients == {
        (("category", "system_full"), ("domain", "disk-full.example"), ("queue", "deferred")): 3.0,
        (("category", "rate_limited"), ("domain", "other"), ("queue", "deferred")): 1.0,
        (("category", "other"), ("domain", "other"), ("queue", "active")): 1.0}


def test_the_command_runs_at_most_once_per_interval(tmp_path):
    path = tmp_path / "queue.jsonl"
    path.write_text(QUEUE)
    now = [100.0]
    reader = QueueReader(shlex.split(command(path)), interval=30.0, clock=lambda: now[0])
    assert reader.reading().up is None and runs(path) == 0  # nothing run before a scrape
    assert len(reader.refresh().messages) == 3 and runs(path) == 1
    path.write_text(record("hold", "7C3D4E5F6A", 1_764_302_000, ("f@held.example", "")))
    now[0] = 129.9
    assert len(reader.refresh().messages) == 3 and runs(path) == 1  # the cached reading
    now[0] = 130.0
    assert [m.queue for m in reader.refresh().messages] == ["hold"] and runs(path) == 2


def test_a_failing_command_sets_queue_up_to_0_logged_once_until_it_works_again(tmp_path, caplog):
    path = tmp_path / "queue.jsonl"  # missing: the fake fails as postqueue with Postfix down
    now = [0.0]
    reader = QueueReader(shlex.split(command(path)), interval=1.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, "bounce_exporter")
    for step in range(3):
        now[0] = float(step)
        assert reader.refresh().up is False and reader.reading().messages == ()
    assert runs(path) == 3
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().partition(" failed: ")[2] for r in failed] == [
        "exit status 69: postqueue: fatal: Queue report unavailable - mail system is down"]
    path.write_text(QUEUE)
    now[0] = 3.0
    assert reader.refresh().up is True
    assert caplog.records[-1].levelno == logging.INFO
    assert caplog.records[-1].getMessage().endswith("works again")
    path.write_text("not json\n")
    now[0] = 4.0
    assert reader.refresh().up is False
    assert caplog.records[-1].getMessage().endswith("line 1 is not a postqueue -j record "
                                                    "(JSONDecodeError('Expecting value: line 1 "
                                                    "column 1 (char 0)')): 'not json'")
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


def test_a_command_that_hangs_is_killed_at_the_timeout(tmp_path, caplog):
    path = tmp_path / "queue.jsonl"
    path.write_text(QUEUE)
    reader = QueueReader(shlex.split(command(path, "--sleep", "30")), timeout=0.5)
    caplog.set_level(logging.INFO, "bounce_exporter")
    assert reader.refresh().up is False
    assert caplog.records[-1].getMessage().endswith("failed: no answer within 0.5s")


def test_queue_up_is_0_in_the_exposition_while_the_command_fails(tmp_path):
    with exporters() as start:
        exporter = start(local_config(tmp_path, queue_command=command(tmp_path / "none.jsonl")))
        assert queue_samples(exporter) == {("bounce_exporter_queue_up", ()): 0.0}


def test_a_command_not_found_turns_the_view_off_logged_once_at_info(tmp_path, caplog):
    caplog.set_level(logging.INFO, "bounce_exporter")
    with exporters() as start:
        exporter = start(local_config(tmp_path, queue_command="no-such-postqueue -j",
                                      queue_interval="0s"))
        for _ in range(3):
            assert queue_samples(exporter) == {}  # no queue families at all
    told = [(r.levelno, r.getMessage()) for r in caplog.records if "queue" in r.getMessage()]
    assert told == [(logging.INFO,
                     "queue view off: no-such-postqueue not found (no Postfix here?)")]


def test_queue_settings_from_the_file_and_the_flags(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("queue:\n  command: [postqueue, -c, /etc/postfix-out, -j]\n  interval: 1m\n")
    config = load_config(str(path), {})
    assert (config.queue_command, config.queue_interval) == (
        ("postqueue", "-c", "/etc/postfix-out", "-j"), 60.0)
    flagged = load_config(str(path), {"queue_command": "postqueue -c '/etc/postfix 2' -j",
                                      "queue_interval": "5s"})
    assert (flagged.queue_command, flagged.queue_interval) == (
        ("postqueue", "-c", "/etc/postfix 2", "-j"), 5.0)
    assert load_config(None, {}).queue_command == ("postqueue", "-j")
    assert load_config(None, {}).queue_interval == 30.0
    assert load_config(None, {"queue_command": ""}).queue_command == ()
    path.write_text("queue:\n  command: 3\n  interval: soon\n  every: 1s\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), {})
    assert err.value.problems == [
        "config.yml: queue.every: unknown key (known: command, interval)",
        "config.yml: queue.command: must be a list of words such as [postqueue, -j]",
        ("config.yml: queue.interval: not a duration: 'soon' (use a number with s, m, h or d, "
         "e.g. 30m)")]


def test_a_reload_applies_a_new_queue_command(tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text(QUEUE)
    second.write_text(record("hold", "7C3D4E5F6A", 1_764_302_000, ("f@held.example", "")))
    with exporters() as start:
        exporter = start(local_config(tmp_path, queue_command=command(first)))
        assert value(samples(generate_latest(exporter.registry).decode()),
                     "bounce_queue_recipients", queue="active", domain="busy.example",
                     category="other") == 1.0
        exporter.reload(local_config(tmp_path, queue_command=command(second)))
        exporter.queue.refresh()  # as a scrape does, but not served the keeper's last snapshot
        found = samples(generate_latest(Exposition(exporter.store.snapshot())).decode())
        assert {(name, tuple(sorted(labels))): v for (name, labels), v in found.items()
                if name.startswith(("bounce_queue_", "bounce_exporter_queue_"))} == {
            ("bounce_queue_recipients", (("category", "other"), ("domain", "held.example"),
                                         ("queue", "hold"))): 1.0,
            ("bounce_queue_oldest_timestamp_seconds", (("domain", "held.example"),
                                                       ("queue", "hold"))): 1_764_302_000.0,
            ("bounce_exporter_queue_up", ()): 1.0}
