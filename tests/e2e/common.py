"""Pieces shared by the end-to-end tests and labs of every MTA (the labs' own base: mta_lab.py).

- the scenario (same domains and answers as test_postfix_e2e.py) and its "done" predicate;
- SMTP injection, process-group bookkeeping, a BSD syslog header;
- `assert_exporter_matches_record()`: run the exporter on a frozen log until it has read every
  line, and compare its counters with the fake server's record exactly.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .fake_smtp import Answer, attempts, deliveries, failures, per_recipient, summarize

SENDER = "sender@sender.example"  # the fake answers 250 for it, so bounce notices are delivered
DISK_FULL = "431 4.3.1 Insufficient system storage"
SCENARIO = {
    "ok.example": "250",
    "disk-full.example": DISK_FULL,
    "full-mailbox.example": "452 4.2.2 Mailbox full",
    "nouser.example": "550 5.1.1 User unknown",
    "spam.example": "DATA:554 5.7.1 Message rejected as spam",
    "flaky.example": [DISK_FULL, DISK_FULL, "250"],
}
MESSAGES_PER_DOMAIN = 2
MIN_DEFERRALS = 3  # per message, for the always-deferring domains
ALWAYS_DEFERRED = {"disk-full.example": "431", "full-mailbox.example": "452"}
# (code, enhanced) -> (kind, category) as the exporter's catalog classifies them (kind: what the
# MTA decided; in this scenario 4xx answers are deferrals and 5xx ones bounces).
CLASSIFICATION = {
    ("431", "4.3.1"): ("soft", "system_full"),
    ("452", "4.2.2"): ("soft", "mailbox_full"),
    ("550", "5.1.1"): ("hard", "user_unknown"),
    ("554", "5.7.1"): ("hard", "spam_content"),
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def recipients_of(scenario: Mapping[str, object] = SCENARIO) -> dict[str, list[str]]:
    return {
        domain: [f"user{i}@{domain}" for i in range(1, MESSAGES_PER_DOMAIN + 1)]
        for domain in scenario
    }


def scenario_done(record: Mapping[str, Sequence[Answer]], recipients: dict[str, list[str]]) -> bool:
    """Every message got its final answer, and each always-deferred one >= MIN_DEFERRALS 4xx."""

    def rec(domain: str) -> Sequence[Answer]:
        return record.get(domain, [])

    n = MESSAGES_PER_DOMAIN
    if deliveries(rec("ok.example")) < n or deliveries(rec("flaky.example")) < n:
        return False
    if failures(rec("nouser.example")).get(("550", "5.1.1"), 0) < n:
        return False
    if failures(rec("spam.example")).get(("554", "5.7.1"), 0) < n:
        return False
    for domain, code in ALWAYS_DEFERRED.items():
        counts = per_recipient(rec(domain), code)
        if any(counts.get(r.lower(), 0) < MIN_DEFERRALS for r in recipients[domain]):
            return False
    return True


def drive_until_done(fake, retry: Callable[[], object], recipients: dict[str, list[str]],
                     tail: Callable[[], str], timeout: float, step: float = 2.0) -> None:
    """Force retries (``retry``: flush, queue run, schedule) until the fake's record shows the
    scenario done; new answers wake the loop, a deadline bounds it."""
    deadline = time.monotonic() + timeout
    while not scenario_done(fake.record(), recipients):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"scenario not complete after {timeout}s: {summarize(fake.record())}\n"
                        f"log tail:\n{tail()}")
        seen = fake.answer_count()
        retry()
        fake.wait_for_new_answers(seen, timeout=min(step, remaining))


def assert_scenario_played(
    record: Mapping[str, Sequence[Answer]], recipients: dict[str, list[str]], returned: int
) -> None:
    """The run did what it was meant to; `returned` notices (bounces, delay warnings) reached
    the sender."""
    n = MESSAGES_PER_DOMAIN
    assert deliveries(record["ok.example"]) == n
    assert failures(record["ok.example"]) == {}
    assert failures(record["nouser.example"]) == {("550", "5.1.1"): n}
    assert failures(record["spam.example"]) == {("554", "5.7.1"): n}
    assert [a.stage for a in record["spam.example"] if a.code == "554"] == ["DATA"] * n
    assert failures(record["flaky.example"]) == {("431", "4.3.1"): 2}  # shared list: 2, then 250
    assert deliveries(record["flaky.example"]) == n
    for domain, code in ALWAYS_DEFERRED.items():
        assert deliveries(record[domain]) == 0
        counts = per_recipient(record[domain], code)
        assert all(counts[r] >= MIN_DEFERRALS for r in recipients[domain]), counts
    assert deliveries(record["sender.example"]) == returned


@dataclass(frozen=True)
class LoggedAttempt:
    """One delivery attempt as a lab test reads it from the MTA's log, with its own regexes
    (deliberately independent of the exporter's parsers)."""

    recipient: str
    status: str  # sent | deferred | bounced (| expired, which is no attempt)
    code: str | None
    enhanced: str | None
    stage: str | None = None  # "RCPT" or "DATA" for a refusal, where the log says

    @property
    def domain(self) -> str:
        return self.recipient.rpartition("@")[2].lower()


def assert_log_matches_record(logged: Iterable[LoggedAttempt],
                              record: Mapping[str, Sequence[Answer]],
                              *, stages: bool = True) -> dict[str, list[LoggedAttempt]]:
    """The log's attempts agree with the fake server's record, domain by domain, exactly: how many,
    sent, deferred and bounced, the refusals' codes and (with ``stages``) the SMTP stage of each.
    Returns the attempts by domain."""
    by_domain: dict[str, list[LoggedAttempt]] = {}
    for attempt in logged:
        by_domain.setdefault(attempt.domain, []).append(attempt)
    assert set(by_domain) == set(record), (sorted(by_domain), sorted(record))
    for domain, answers in record.items():
        lines = by_domain[domain]
        statuses = Counter(x.status for x in lines)
        assert len(lines) == attempts(answers), (domain, summarize({domain: answers}), statuses)
        assert statuses["sent"] == deliveries(answers), domain
        refused = Counter((x.code, x.enhanced) for x in lines if x.status != "sent")
        assert refused == Counter(failures(answers)), domain
        verdicts = [a for a in answers if a.ends_attempt and a.code[0] != "2"]
        assert statuses["deferred"] == sum(1 for a in verdicts if a.code[0] == "4"), domain
        assert statuses["bounced"] == sum(1 for a in verdicts if a.code[0] == "5"), domain
        if stages:
            assert Counter(x.stage for x in lines if x.status != "sent") == Counter(
                a.stage for a in verdicts), domain
    return by_domain


# -- SMTP -------------------------------------------------------------------------------------
def smtp_inject(
    port: int, sender: str, recipient: str, subject: str, body: str = "e2e test\n"
) -> str:
    """Submit one message over SMTP to 127.0.0.1:port; return the text of the DATA reply."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, recipient, subject
    msg.set_content(body)
    with smtplib.SMTP(
        "127.0.0.1", port, local_hostname="injector.bounce-e2e.test", timeout=30
    ) as smtp:
        smtp.ehlo()
        code, resp = smtp.mail(sender)
        if code != 250:
            raise RuntimeError(f"MAIL FROM refused: {code} {resp!r}")
        code, resp = smtp.rcpt(recipient)
        if code not in (250, 251):
            raise RuntimeError(f"RCPT TO {recipient} refused: {code} {resp!r}")
        code, resp = smtp.data(msg.as_bytes())
        if code != 250:
            raise RuntimeError(f"DATA refused: {code} {resp!r}")
    return resp.decode(errors="replace")


def smtp_answers(port: int) -> bool:
    """True when something on 127.0.0.1:port greets with 220."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.settimeout(2)
            if not sock.recv(512).startswith(b"220"):
                return False
            sock.sendall(b"QUIT\r\n")
            sock.recv(512)
            return True
    except OSError:
        return False


# -- processes --------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def stop_process(proc: subprocess.Popen | None, leftovers: Callable[[], list[int]],
                 timeout: float) -> None:
    """SIGTERM ``proc`` (kill it after ``timeout``), wait for ``leftovers()`` to go, SIGKILL the
    rest."""
    if proc is not None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    deadline = time.monotonic() + timeout
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_all(leftovers())


def live_processes(pgid: int | None = None, cmdline_part: str | None = None) -> list[int]:
    """Live (non-zombie) processes in process group `pgid` or whose command line contains
    `cmdline_part`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if not fields or fields[0] == "Z":
            continue
        if pgid is not None and len(fields) > 2 and int(fields[2]) == pgid:
            found.append(int(entry.name))
            continue
        if cmdline_part is not None:
            try:
                cmdline = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
            if cmdline_part in cmdline:
                found.append(int(entry.name))
    return found


def kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def syslog_header(
    host: str, program: str, pid: int, when: float | None = None, *, rfc3339: bool = False
) -> str:
    """``Nov 28 12:22:45 host program[pid]: `` in local time, as a BSD syslog daemon writes it;
    with rfc3339, ``2026-11-28T12:22:45.123456+01:00 host program[pid]: `` (rsyslog's default
    on Debian 12)."""
    when = time.time() if when is None else when
    if rfc3339:
        stamp = datetime.fromtimestamp(when).astimezone().isoformat(timespec="microseconds")
    else:
        t = time.localtime(when)
        stamp = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {time.strftime('%H:%M:%S', t)}"
    return f"{stamp} {host} {program}[{pid}]: "


# -- the exporter against the record ----------------------------------------------------------
def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (extra labels allowed)."""
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def counter_mismatches(found: list, record: Mapping[str, Sequence[Answer]]) -> list[str]:
    """Differences between the exporter's counters and the fake server's record, per domain."""
    mismatches = []

    def check(what: str, got: float, expected: int) -> None:
        if got != expected:
            mismatches.append(f"{what}: exporter {got:g}, fake server {expected}")

    for domain, answers in sorted(record.items()):
        check(
            f"bounce_delivery_attempts_total{{domain={domain!r}}}",
            value(found, "bounce_delivery_attempts_total", domain=domain),
            attempts(answers),
        )
        check(
            f"bounce_deliveries_total{{domain={domain!r}}}",
            value(found, "bounce_deliveries_total", domain=domain),
            deliveries(answers),
        )
        refused = failures(answers)
        for (code, enhanced), count in sorted(refused.items()):
            kind, category = CLASSIFICATION[(code, enhanced)]
            labels = {
                "domain": domain,
                "kind": kind,
                "code": code,
                "enhanced": enhanced,
                "category": category,
            }
            check(
                f"bounce_failures_total{labels}",
                value(found, "bounce_failures_total", **labels),
                count,
            )
        check(
            f"sum of bounce_failures_total{{domain={domain!r}}}",
            value(found, "bounce_failures_total", domain=domain),
            sum(refused.values()),
        )
    # Nothing counted for a domain the fake never answered for (e.g. "unknown").
    for s in found:
        if (
            s.name in ("bounce_delivery_attempts_total", "bounce_failures_total")
            and s.value
            and s.labels.get("domain") not in record
        ):
            mismatches.append(f"{s.name}{s.labels}: exporter {s.value:g}, fake server 0")
    return mismatches


def assert_exporter_matches_record(
    run_exporter,
    log: Path,
    log_format: str,
    record: Mapping[str, Sequence[Answer]],
    tmp_path: Path,
    expired: Mapping[str, int] | None = None,
) -> list:
    """Run the exporter on the frozen `log` until it has read every line; its counters must
    equal the record (and bounce_expired_total the `expired` counts, when given); SIGTERM must
    end it with 0. Returns the samples of the last scrape."""
    line_count = log.read_bytes().count(b"\n")  # wc -l
    exporter = run_exporter([
        "--log.file", str(log), "--log.from-start", "--log.format", log_format,
        "--state.file", str(tmp_path / "state.json"),  # never /var/lib, never an earlier run
    ])  # fmt: skip

    def caught_up(text: str) -> bool:
        return (
            value(samples(text), "bounce_exporter_lines_read_total", source=str(log)) == line_count
        )

    found = samples(exporter.wait_for_metrics(caught_up, timeout=30))
    mismatches = counter_mismatches(found, record)
    for domain, count in sorted((expired or {}).items()):
        got = value(found, "bounce_expired_total", domain=domain)
        if got != count:
            mismatches.append(
                f"bounce_expired_total{{domain={domain!r}}}: exporter {got:g}, lab {count}"
            )
    not_understood = value(found, "bounce_exporter_lines_not_understood_total")
    if not_understood:
        mismatches.append(f"bounce_exporter_lines_not_understood_total: {not_understood:g}")
    assert not mismatches, "\n".join(mismatches)
    assert exporter.terminate() == 0, exporter.output()
    return found
