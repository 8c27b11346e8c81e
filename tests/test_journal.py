"""The journal source: entries become syslog-style lines; followed through a real journalctl against
a real systemd-journald (run here in its own journal namespace, no systemd as PID 1 needed); the
cursor saved with a scrape resumes the next lifetime, nothing counted twice; a journalctl that
exits sets up to 0 and is started again after the last cursor seen.

What is real: systemd-journald (Debian's /lib/systemd/systemd-journald, as ``systemd-journald NS``)
receives the entries through its native socket, writes them to its journal files; journalctl
follows them. What is not: the entries are sent by this test (``SYSLOG_IDENTIFIER=postfix/smtp``),
not by a Postfix process, and the unit match is made through ``OBJECT_SYSTEMD_UNIT`` (which
``journalctl -u`` also matches for root's entries), not ``_SYSTEMD_UNIT``: journald sets that from
the sender's cgroup, which a container without systemd does not have."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import time
import uuid
from datetime import datetime

import pytest

from bounce_exporter.app import Exporter
from bounce_exporter.config import load_config
from bounce_exporter.errors import ConfigError
from bounce_exporter.parsers import make_parser
from bounce_exporter.sources import journal
from bounce_exporter.sources.journal import JournalCursor, JournalSource, entry_line

from .helpers import exporters, local_config, wait_until

JOURNALD = "/lib/systemd/systemd-journald"
SENT = ("Q{q:06X}: to=<u{q}@ok.example>, relay=x[1.2.3.4]:25, delay=0.02, dsn=2.0.0, "
        "status=sent (250 2.0.0 Ok: queued as F{q})")
DEFERRED = ("Q{q:06X}: to=<u{q}@full.example>, relay=x[5.6.7.8]:25, delay=1, dsn=4.3.1, "
            "status=deferred (host x[5.6.7.8] said: 431 4.3.1 Insufficient system storage \xe9t\xe9)")


# -- entries to lines --------------------------------------------------------------------------


# A `journalctl -o json` entry of a Postfix smtpd reject (from the shared format samples, trimmed).
SAMPLE = {
    "_COMM": "smtpd", "SYSLOG_IDENTIFIER": "postfix/smtpd", "_HOSTNAME": "andres",
    "__REALTIME_TIMESTAMP": "1789228152650438", "SYSLOG_PID": "314894", "_PID": "314894",
    "__CURSOR": "s=e78b838844e74ae493345c409fcf1038;i=120a6a;b=008efef50f404b3fabc40080aa3eb46e;"
                "m=6c571b897;t=65b4b2475fac6;x=f3e4b22e42be6a22",
    "_SYSTEMD_UNIT": "postfix.service",
    "MESSAGE": "NOQUEUE: reject: RCPT from unknown[91.92.41.82]: 554 5.7.1 <verify@test.com>: "
               "Relay access denied; from=<test@test.com> to=<verify@test.com> proto=ESMTP "
               "helo=<test.com>",
}


def test_an_entry_becomes_a_syslog_line_the_postfix_parser_reads():
    line = entry_line(SAMPLE)
    assert line is not None
    stamp, host, prog, _ = line.split(b" ", 3)
    assert (host, prog) == (b"andres", b"postfix/smtpd[314894]:")
    assert datetime.fromisoformat(stamp.decode()).timestamp() == 1789228152.650438
    assert list(make_parser("postfix", None).parse(line)) == []  # understood: inbound, no attempt
    delivery = entry_line({**SAMPLE, "SYSLOG_IDENTIFIER": "postfix/smtp",
                           "MESSAGE": SENT.format(q=7)})
    events = make_parser("postfix", None).parse(delivery)
    assert [(e.status, e.code, e.domain) for e in events] == [("sent", "250", "ok.example")]


def test_a_message_that_is_not_utf8_arrives_as_a_list_of_byte_values():
    entry = {"__REALTIME_TIMESTAMP": "1795874756252356", "_HOSTNAME": "mx1",
             "SYSLOG_IDENTIFIER": "postfix/smtp", "SYSLOG_PID": "77",
             "MESSAGE": list(b"caf\xe9 \xff")}
    assert entry_line(entry).endswith(b" mx1 postfix/smtp[77]: caf\xe9 \xff")


def test_line_parts_fall_back_and_newlines_become_spaces():
    entry = {"__REALTIME_TIMESTAMP": "0", "_COMM": "smtp", "_PID": "9",
             "MESSAGE": ["first\nsecond\n", "a repeated field"]}
    line = entry_line(entry)
    assert line.endswith(b" localhost smtp[9]: first second")
    assert entry_line({"__CURSOR": "x"}) is None  # no MESSAGE: nothing to parse


def test_command_follows_the_default_units_and_starts_by_rule():
    source = JournalSource()
    assert source.name == "journal:postfix@-.service,postfix.service"
    cmd = source.command()
    assert "--unit=postfix@-.service" in cmd and "--unit=postfix.service" in cmd
    assert "--follow" in cmd and "--output=json" in cmd and cmd[-1] == "--lines=0"
    assert JournalSource(identifier="postfix", from_start=True).command()[-1] == "--no-tail"
    resumed = JournalSource(directory="/j")
    resumed._cursor = "s=1;i=2"  # as begin() sets it from a saved cursor, without starting
    assert resumed.command()[-4:] == ["--directory=/j", "--unit=postfix@-.service",
                                      "--unit=postfix.service", "--after-cursor=s=1;i=2"]
    assert JournalCursor.from_state(JournalCursor("c").to_state()) == JournalCursor("c")


# -- configuration -----------------------------------------------------------------------------


def test_config_journal_sources_and_flags(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("sources:\n  - journal: {unit: postfix@-.service}\n"
                    "  - journal: {identifier: postfix, namespace: mail}\n  - journal: {}\n"
                    "  - path: /var/log/mail.log\n")
    config = load_config(str(path), {})
    assert [s.path for s in config.sources] == [
        "journal:postfix@-.service", "journal:identifier=postfix@mail",
        "journal:postfix@-.service,postfix.service", "/var/log/mail.log"]
    flagged = load_config(None, {"journal_units": ["a.service", "b.service"],
                                 "journal_directory": "/srv/j"})
    assert [(s.journal.units, s.journal.directory) for s in flagged.sources] == [
        (("a.service", "b.service"), "/srv/j")]
    path.write_text("sources:\n  - journal: {unit: a, identifier: b, colour: red}\n"
                    "  - {journal: {}, path: /x}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), {})
    text = "\n".join(err.value.problems)
    assert "sources[0].journal.colour: unknown key" in text
    assert "unit and identifier" in text and "sources[1]: needs a path or a journal" in text


# -- a real journald ---------------------------------------------------------------------------


class Journald:
    """systemd-journald in a namespace of its own; entries sent to its native socket."""

    def __init__(self):
        self.namespace = f"bxtest{uuid.uuid4().hex[:12]}"
        self.socket_path = f"/run/systemd/journal.{self.namespace}/socket"
        self.proc = subprocess.Popen([JOURNALD, self.namespace], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(self.socket_path) or self.proc.poll() is not None,
                   10, "journald's socket")
        if self.proc.poll() is not None:
            raise RuntimeError("systemd-journald exited")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sent = 0

    def directory(self) -> str | None:
        with open("/etc/machine-id") as handle:
            machine = handle.read().strip()
        for root in ("/var/log/journal", "/run/log/journal"):
            path = f"{root}/{machine}.{self.namespace}"
            if os.path.isdir(path):
                return path
        return None

    def send(self, message: str | bytes, identifier: str = "postfix/smtp", **extra: str) -> None:
        fields = {"MESSAGE": message, "SYSLOG_IDENTIFIER": identifier, "SYSLOG_PID": "4242",
                  **extra}
        out = b""
        for key, value in fields.items():
            data = value.encode() if isinstance(value, str) else value
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        self.sock.sendto(out, self.socket_path)

    def sent_lines(self, count: int, template: str = SENT, **extra: str) -> None:
        for _ in range(count):
            message = template.format(q=self.sent)
            self.send(message.encode("latin-1") if "\xe9" in message else message, **extra)
            self.sent += 1

    def stop(self) -> None:
        self.sock.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        for path in (self.directory(), os.path.dirname(self.socket_path)):
            if path:
                shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def journald():
    if not (os.path.exists(JOURNALD) and shutil.which("journalctl") and os.geteuid() == 0
            and os.path.exists("/etc/machine-id")):
        pytest.skip("needs root, systemd-journald and journalctl (Debian package systemd)")
    try:
        daemon = Journald()
    except (OSError, RuntimeError, AssertionError) as err:
        pytest.skip(f"systemd-journald cannot run here: {err}")
    yield daemon
    daemon.stop()


@pytest.fixture
def lifetimes(tmp_path):
    def begin(journal_config: str, **overrides) -> Exporter:
        path = tmp_path / "config.yml"
        path.write_text(f"sources:\n  - journal: {journal_config}\n")
        return start(local_config(tmp_path, str(path), **overrides))

    with exporters() as start:
        yield begin


def counts(exporter: Exporter) -> tuple[int, int, int]:
    """(lines read, ok.example deliveries, full.example 431 failures) after a loop turn."""
    exporter.step()
    with exporter.state.lock:
        lines = sum(s.lines_read for s in exporter.state.sources.values())
    sent = deferred = 0
    for family in exporter.registry.collect():
        for sample in family.samples:
            if sample.name == "bounce_deliveries_total" and sample.labels.get("domain") == "ok.example":
                sent += int(sample.value)
            if (sample.name == "bounce_failures_total"
                    and sample.labels.get("domain") == "full.example"):
                deferred += int(sample.value)
    return lines, sent, deferred


def up(exporter: Exporter) -> int:
    exporter.step()
    with exporter.state.lock:
        return next(iter(exporter.state.sources.values())).up


def test_follow_a_real_journal_append_and_resume_after_the_saved_cursor(journald, lifetimes):
    journald.sent_lines(3)
    journald.sent_lines(1, DEFERRED)  # not UTF-8: journalctl writes MESSAGE as byte values
    journald.send("some other program", identifier="cron")
    first = lifetimes(f"{{identifier: postfix/smtp, namespace: {journald.namespace}}}",
                      from_start=True)
    wait_until(lambda: counts(first) == (4, 3, 1), 20, "the first entries")
    assert up(first) == 1
    journald.sent_lines(2)  # appended while following
    wait_until(lambda: counts(first) == (6, 5, 1), 20, "the appended entries")
    with first.state.lock:
        first.keeper.take()  # what a scrape does: snapshot counters and cursor
    first.shutdown()
    with open(first.config.state_file) as handle:
        saved = json.load(handle)["positions"]
    cursor = saved[f"journal:identifier=postfix/smtp@{journald.namespace}"]["cursor"]
    assert cursor.startswith("s=")

    journald.sent_lines(2)  # written while the exporter is down
    second = lifetimes(f"{{identifier: postfix/smtp, namespace: {journald.namespace}}}",
                       from_start=True)
    wait_until(lambda: counts(second) == (2, 2, 0), 20, "the entries after the cursor")
    time.sleep(0.5)
    assert counts(second) == (2, 2, 0)  # and nothing before it, counted twice


def test_default_units_match_both_postfix_units_only(journald, lifetimes):
    journald.sent_lines(2, OBJECT_SYSTEMD_UNIT="postfix@-.service")  # Debian 12
    journald.sent_lines(1, OBJECT_SYSTEMD_UNIT="postfix.service")
    journald.sent_lines(4, OBJECT_SYSTEMD_UNIT="dovecot.service")
    exporter = lifetimes(f"{{namespace: {journald.namespace}}}", from_start=True)
    wait_until(lambda: counts(exporter) == (3, 3, 0), 20, "the postfix units' entries")


def test_a_new_start_without_cursor_reads_only_new_entries(journald, lifetimes):
    journald.sent_lines(3)
    exporter = lifetimes(f"{{identifier: postfix/smtp, namespace: {journald.namespace}}}")
    wait_until(lambda: up(exporter) == 1, 10, "journalctl running")
    time.sleep(1.0)  # journalctl has sought to the end
    journald.sent_lines(1)
    wait_until(lambda: counts(exporter) == (1, 1, 0), 20, "the new entry")


def test_journal_files_in_a_directory(journald, lifetimes):
    journald.sent_lines(2)
    wait_until(journald.directory, 10, "the journal directory")
    exporter = lifetimes(f"{{identifier: postfix/smtp, directory: '{journald.directory()}'}}",
                         from_start=True)
    wait_until(lambda: counts(exporter) == (2, 2, 0), 20, "the directory's entries")
    journald.sent_lines(1)
    wait_until(lambda: counts(exporter) == (3, 3, 0), 20, "an entry appended to the files")


def test_journalctl_exit_sets_up_0_and_restarts_after_the_last_cursor(journald, lifetimes,
                                                                      monkeypatch):
    monkeypatch.setattr(journal, "BACKOFF_FIRST", 1.0)
    journald.sent_lines(2)
    exporter = lifetimes(f"{{identifier: postfix/smtp, namespace: {journald.namespace}}}",
                         from_start=True)
    wait_until(lambda: counts(exporter) == (2, 2, 0), 20, "the first entries")
    source = exporter.pipeline.feeds[0].source
    source._proc.kill()  # journalctl dies
    wait_until(lambda: source.restarts == 1, 10, "the exit noticed")
    assert up(exporter) == 0  # within the back-off
    journald.sent_lines(1)
    wait_until(lambda: counts(exporter) == (3, 3, 0) and up(exporter) == 1, 20,
               "journalctl started again")
    with exporter.state.lock:
        assert exporter.state.sources[source.name].read_errors == 1


def test_a_missing_journalctl_is_down_and_retried(monkeypatch):
    monkeypatch.setattr(journal, "BACKOFF_FIRST", 0.05)
    woken = []
    source = JournalSource(identifier="x", journalctl="/nonexistent/journalctl",
                           on_data=lambda: woken.append(1))
    source.begin()
    try:
        wait_until(lambda: source.restarts >= 2, 10, "two attempts")
        assert source.up is False and list(source.read_batches()) == [] and woken
    finally:
        source.close()


def test_journalctl_stopped_with_the_process_group_logs_no_error(journald, lifetimes, caplog):
    """systemd's default KillMode sends SIGTERM to every process of the unit: journalctl may end
    a moment before the exporter itself is told to stop. That is a normal stop, not an error."""
    journald.sent_lines(1)
    exporter = lifetimes(f"{{identifier: postfix/smtp, namespace: {journald.namespace}}}",
                         from_start=True)
    wait_until(lambda: counts(exporter) == (1, 1, 0), 20, "the first entry")
    source = exporter.pipeline.feeds[0].source
    with caplog.at_level("INFO", logger="bounce_exporter.sources.journal"):
        source._proc.terminate()  # the group's SIGTERM reaches journalctl first ...
        time.sleep(0.2)
        exporter.shutdown()  # ... then the exporter's own stop
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "WARNING")] == []
    assert source.restarts == 0


def test_journalctl_terminated_alone_restarts_with_a_warning(journald, lifetimes, monkeypatch,
                                                            caplog):
    monkeypatch.setattr(journal, "STOP_GRACE", 0.2)
    monkeypatch.setattr(journal, "BACKOFF_FIRST", 0.1)
    journald.sent_lines(1)
    exporter = lifetimes(f"{{identifier: postfix/smtp, namespace: {journald.namespace}}}",
                         from_start=True)
    wait_until(lambda: counts(exporter) == (1, 1, 0), 20, "the first entry")
    source = exporter.pipeline.feeds[0].source
    with caplog.at_level("INFO", logger="bounce_exporter.sources.journal"):
        source._proc.terminate()  # nobody else is stopping: start it again
        wait_until(lambda: source.restarts == 1, 10, "the exit noticed")
    levels = [r.levelname for r in caplog.records if "journalctl exited" in r.getMessage()]
    assert levels == ["WARNING"]
    journald.sent_lines(1)
    wait_until(lambda: counts(exporter) == (2, 2, 0), 20, "journalctl started again")
