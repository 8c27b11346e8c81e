"""End-to-end: a real Postfix delivers to a fake remote SMTP server; the exporter reads the maillog.

The ground truth is the fake server's record of every answer it gave. The module-scoped
`finished_run` fixture plays the scenario once and freezes the result (queue drained, Postfix
stopped, so the maillog no longer changes); both tests assert against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from .common import (
    ALWAYS_DEFERRED,
    MESSAGES_PER_DOMAIN,
    SCENARIO,
    SENDER,
    LoggedAttempt,
    assert_exporter_matches_record,
    assert_log_matches_record,
    assert_scenario_played,
    drive_until_done,
    recipients_of,
)
from .fake_smtp import Answer, failures

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


def _log_deliveries(maillog: Path) -> list[LoggedAttempt]:
    out = []
    for line in maillog.read_text(errors="replace").splitlines():
        m = _DELIVERY_RE.search(line)
        if not m:
            continue
        said = _SAID_RE.search(m["reason"])
        stage = _STAGE_RE.search(m["reason"])
        code = said["code"] if said else (m["reason"][:3] if m["status"] == "sent" else None)
        out.append(
            LoggedAttempt(
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
    # Scenario sanity: the run did what it was meant to, and one bounce notice reached the
    # sender per message that did not make it (bounced or expired).
    n = MESSAGES_PER_DOMAIN
    assert_scenario_played(record, finished_run.recipients,
                           returned=2 * n + len(ALWAYS_DEFERRED) * n)

    # The maillog agrees with the fake server, domain by domain, exactly.
    by_domain = assert_log_matches_record(_log_deliveries(finished_run.maillog), record)
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
