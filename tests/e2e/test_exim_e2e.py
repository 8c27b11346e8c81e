"""End-to-end: a real Exim delivers to a fake remote SMTP server; the exporter reads its main log.

Same scenario and ground truth as test_postfix_e2e.py (common.SCENARIO, the fake's record).
Exim is Debian's exim4-daemon-light, unpacked by fetch_mta.py (it conflicts with postfix, so it
is not installed) and run by exim_lab.py. The module-scoped `finished_run` plays the scenario
once: inject, forced queue runs (`exim -qff`) until the record is complete, then more forced runs
until the retry cutoff has passed and Exim gave the always-deferred mail up ("retry timeout
exceeded"), then the daemon is stopped so the main log no longer changes.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import fetch_mta
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
from .exim_lab import DEFAULT_LOG_SELECTOR, EximLab
from .fake_smtp import Answer
from .requirements import require

pytestmark = pytest.mark.e2e

DRIVE_TIMEOUT = 40.0
RETRY_CUTOFF = "5s"  # Exim gives an address up at its first failure this long after the first
SETTLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class FinishedRun:
    maillog: Path
    record: dict[str, list[Answer]]
    recipients: dict[str, list[str]]


def require_exim() -> None:
    require(os.geteuid() == 0, "the Exim e2e lab must run as root")
    reason = fetch_mta.not_ready((fetch_mta.exim_binary(),))
    require(
        reason is None, f"the Exim e2e lab needs Debian's exim4-daemon-light unpacked: {reason}"
    )


# The lab's selector, and every optional field Exim can log (+all: F=, P=, T="subject", ports,
# +millisec stamps, [pid], ...): the parser must count the same with either.
LOG_SELECTORS = {"lab": DEFAULT_LOG_SELECTOR, "all": "+all"}


@pytest.fixture(scope="module", params=sorted(LOG_SELECTORS), ids=lambda p: f"log_selector-{p}")
def finished_run(request, make_fake_smtp, tmp_path_factory) -> FinishedRun:
    require_exim()
    fake = make_fake_smtp(SCENARIO)
    kept = tmp_path_factory.mktemp("exim-lab") / "mainlog"  # outlives the lab, also on failure
    with ExitStack() as stack:  # the lab is stopped and removed when the run is over
        lab = EximLab(
            fake.port, retry_cutoff=RETRY_CUTOFF, log_selector=LOG_SELECTORS[request.param]
        )
        stack.callback(lab.cleanup)
        stack.callback(_keep_log, lab, kept)  # before cleanup (LIFO)
        lab.start()

        recipients = recipients_of()
        for domain, rcpts in recipients.items():
            for i, rcpt in enumerate(rcpts, 1):
                lab.inject(SENDER, rcpt, f"e2e {domain} #{i}")

        # Each message was tried once on arrival; forced queue runs retry everything now.
        drive_until_done(fake, lab.queue_run, recipients, lab.log_tail, DRIVE_TIMEOUT)

        # Freeze: retry until Exim gives the deferred mail up, the queue is empty and every
        # message is logged Completed; then stop the daemon: the log and the record are final.
        lab.drain(SETTLE_TIMEOUT)
        lab.stop()
        assert not lab.leftover_processes(), "exim left processes behind"
        return FinishedRun(kept, fake.record(), recipients)


def _keep_log(lab: EximLab, kept: Path) -> None:
    if lab.maillog.exists():
        shutil.copy2(lab.maillog, kept)
        print(f"exim lab mainlog kept in {kept}")


# -- main log parsing (for the lab test; deliberately independent of the exporter's parser) -----
_LINE_RE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? (?:\[\d+\] )?\S+ "  # +millisec, +pid
    r"(?P<flag>=>|->|==|\*\*) (?P<rcpt>[^\s:]+):? (?P<rest>.*)$"
)
_SAID_RE = re.compile(
    r"SMTP error from remote mail server after (?P<cmd>RCPT TO:<[^>]*>|end of data): "
    r"(?P<code>[245]\d\d) (?P<enh>[245]\.\d{1,3}\.\d{1,3})"
)
_CONFIRM_RE = re.compile(r' C="(?P<code>2\d\d) ')


def _log_lines(maillog: Path) -> list[LoggedAttempt]:
    out = []
    for line in maillog.read_text(errors="replace").splitlines():
        m = _LINE_RE.match(line)
        if not m:
            continue
        rest = m["rest"]
        if m["flag"] in ("=>", "->"):
            confirm = _CONFIRM_RE.search(rest)
            out.append(LoggedAttempt(m["rcpt"], "sent", confirm and confirm["code"], None))
            continue
        if m["flag"] == "**" and rest.startswith("retry timeout exceeded"):
            out.append(LoggedAttempt(m["rcpt"], "expired", None, None))
            continue
        said = _SAID_RE.search(rest)
        stage = None if not said else ("DATA" if said["cmd"] == "end of data" else "RCPT")
        out.append(
            LoggedAttempt(
                m["rcpt"],
                "deferred" if m["flag"] == "==" else "bounced",
                said and said["code"],
                said and said["enh"],
                stage,
            )
        )
    return out


def test_lab_records_real_exim_deliveries(finished_run: FinishedRun) -> None:
    record = finished_run.record
    n = MESSAGES_PER_DOMAIN
    # One bounce notice per message that did not make it (bounced or given up).
    assert_scenario_played(
        record, finished_run.recipients, returned=2 * n + len(ALWAYS_DEFERRED) * n
    )

    logged = _log_lines(finished_run.maillog)
    assert_log_matches_record([x for x in logged if x.status != "expired"], record)
    expired = Counter(x.domain for x in logged if x.status == "expired")
    assert expired == {domain: n for domain in ALWAYS_DEFERRED}
    # Every attempt was forced by the test: Exim never skipped an address for its retry time.
    assert "retry time not reached" not in finished_run.maillog.read_text()


def test_exporter_counts_match_fake_server(
    finished_run: FinishedRun, run_exporter, tmp_path
) -> None:
    assert_exporter_matches_record(
        run_exporter,
        finished_run.maillog,
        "exim",
        finished_run.record,
        tmp_path,
        expired={domain: MESSAGES_PER_DOMAIN for domain in ALWAYS_DEFERRED},
    )
