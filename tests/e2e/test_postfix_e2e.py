"""End-to-end: a real Postfix delivers to a fake remote SMTP server; the exporter reads the maillog.

The ground truth is the fake server's record of every answer it gave. The module-scoped
`finished_run` fixture plays the scenario once and freezes the result (queue drained, Postfix
stopped, so the maillog no longer changes); both tests assert against it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from .common import (
    ALWAYS_DEFERRED,
    MESSAGES_PER_DOMAIN,
    MIN_DEFERRALS,
    SCENARIO,
    SENDER,
    assert_exporter_matches_record,
    drive_until_done,
    recipients_of,
)
from .fake_smtp import Answer, attempts, deliveries, failures, per_recipient, summarize

pytestmark = pytest.mark.e2e

DRIVE_TIMEOUT = 40.0
SETTLE_TIMEOUT = 20.0


@dataclass(frozen=True)
class FinishedRun:
    maillog: Path
    record: dict[str, list[Answer]]
    recipients: dict[str, list[str]]


@pytest.fixture(scope="module")
def finished_run(make_fake_smtp, make_postfix_lab) -> FinishedRun:
    fake = make_fake_smtp(SCENARIO)
    lab = make_postfix_lab(fake.port)

    recipients = recipients_of()
    for domain, rcpts in recipients.items():
        for i, rcpt in enumerate(rcpts, 1):
            lab.inject(SENDER, rcpt, f"e2e {domain} #{i}")

    # Drive retries with `postqueue -f` until the fake server has seen everything we want.
    # Synchronisation is on the fake's record (new answers wake us up), bounded by a deadline.
    drive_until_done(fake, lab.flush, recipients, lab.log_tail, DRIVE_TIMEOUT)

    # Freeze: force-expire the still-deferred mail (returned to the sender, no further attempt),
    # wait until the queue is empty and every message is logged as removed, then stop Postfix:
    # from here on neither the maillog nor the fake's record can change.
    lab.drain(SETTLE_TIMEOUT)
    lab.stop()
    assert not lab.leftover_processes(), "postfix stop left processes behind"
    return FinishedRun(lab.maillog, fake.record(), recipients)


# -- maillog parsing (for the lab test; deliberately independent of the exporter's parser) ------
_DELIVERY_RE = re.compile(
    r" to=<(?P<rcpt>[^>]*)>,.* status=(?P<status>sent|deferred|bounced) \((?P<reason>.*)\)$"
)
_SAID_RE = re.compile(r" said: (?P<code>[245]\d\d)(?:[ -](?P<enh>[245]\.\d{1,3}\.\d{1,3}))?")
_STAGE_RE = re.compile(r"\(in reply to (?P<cmd>RCPT TO|end of DATA) command\)$")


@dataclass(frozen=True)
class LogDelivery:
    recipient: str
    status: str
    code: str | None
    enhanced: str | None
    stage: str | None

    @property
    def domain(self) -> str:
        return self.recipient.rpartition("@")[2].lower()


def _log_deliveries(maillog: Path) -> list[LogDelivery]:
    out = []
    for line in maillog.read_text(errors="replace").splitlines():
        m = _DELIVERY_RE.search(line)
        if not m:
            continue
        said = _SAID_RE.search(m["reason"])
        stage = _STAGE_RE.search(m["reason"])
        code = said["code"] if said else (m["reason"][:3] if m["status"] == "sent" else None)
        out.append(
            LogDelivery(
                m["rcpt"],
                m["status"],
                code,
                said["enh"] if said else None,
                {"RCPT TO": "RCPT", "end of DATA": "DATA"}[stage["cmd"]] if stage else None,
            )
        )
    return out


def test_lab_records_real_postfix_deliveries(finished_run: FinishedRun) -> None:
    record = finished_run.record
    logged = _log_deliveries(finished_run.maillog)
    by_domain: dict[str, list[LogDelivery]] = {}
    for d in logged:
        by_domain.setdefault(d.domain, []).append(d)

    # Scenario sanity: the run did what it was meant to.
    n = MESSAGES_PER_DOMAIN
    assert deliveries(record["ok.example"]) == n
    assert failures(record["ok.example"]) == {}
    assert failures(record["nouser.example"]) == {("550", "5.1.1"): n}
    assert failures(record["spam.example"]) == {("554", "5.7.1"): n}
    assert [a.stage for a in record["spam.example"] if a.code == "554"] == ["DATA"] * n
    assert failures(record["flaky.example"]) == {
        ("431", "4.3.1"): 2
    }  # shared answer list: 2 then 250s
    assert deliveries(record["flaky.example"]) == n
    for domain, code in ALWAYS_DEFERRED.items():
        assert deliveries(record[domain]) == 0
        counts = per_recipient(record[domain], code)
        assert all(counts[r] >= MIN_DEFERRALS for r in finished_run.recipients[domain]), counts
    # One bounce notice to the sender per message that did not make it (bounced or expired).
    returned = 2 * n + len(ALWAYS_DEFERRED) * n
    assert deliveries(record["sender.example"]) == returned

    # The maillog agrees with the fake server, domain by domain, exactly.
    assert set(by_domain) == set(record), (sorted(by_domain), sorted(record))
    for domain, answers in record.items():
        lines = by_domain[domain]
        statuses = Counter(d.status for d in lines)
        assert len(lines) == attempts(answers), (domain, summarize({domain: answers}), statuses)
        assert statuses["sent"] == deliveries(answers), domain
        refused = Counter((d.code, d.enhanced) for d in lines if d.status != "sent")
        assert refused == Counter(failures(answers)), domain
        assert statuses["deferred"] == sum(
            1 for a in answers if a.ends_attempt and a.code[0] == "4"
        ), domain
        assert statuses["bounced"] == sum(
            1 for a in answers if a.ends_attempt and a.code[0] == "5"
        ), domain
        stages = Counter(d.stage for d in lines if d.status != "sent")
        assert stages == Counter(a.stage for a in answers if a.ends_attempt and a.code[0] != "2"), (
            domain
        )
    # e.g. the brief's example, spelled out: deferred lines saying 431 for disk-full.
    disk_full_431 = [
        d for d in by_domain["disk-full.example"] if d.status == "deferred" and d.code == "431"
    ]
    assert len(disk_full_431) == failures(record["disk-full.example"])[("431", "4.3.1")]

    text = finished_run.maillog.read_text()
    assert text.count("status=force-expired, returned to sender") == len(ALWAYS_DEFERRED) * n


# -- exporter ------------------------------------------------------------------------------------
def test_exporter_counts_match_fake_server(
    finished_run: FinishedRun, run_exporter, tmp_path
) -> None:
    """The exporter's counters on the maillog equal the fake server's record exactly, no line is
    left not understood, and SIGTERM ends it with 0."""
    assert_exporter_matches_record(
        run_exporter, finished_run.maillog, "postfix", finished_run.record, tmp_path
    )
