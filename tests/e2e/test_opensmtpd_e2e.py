"""End-to-end: a real OpenSMTPD delivers to a fake remote SMTP server; the exporter reads its log.

Same scenario and ground truth as test_postfix_e2e.py (common.SCENARIO, the fake's record).
OpenSMTPD is Debian's opensmtpd, unpacked by fetch_mta.py (it conflicts with postfix, so it is
not installed) and run by opensmtpd_lab.py (`smtpd -d`, its stderr written out as a syslog-style
log). The module-scoped `finished_run` plays the scenario once: inject, `smtpctl schedule all`
until the record is complete, then again until `queue ttl` has expired the always-deferred mail
and the queue is empty, then smtpd is stopped so the log no longer changes.
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
from .fake_smtp import Answer
from .opensmtpd_lab import OpenSMTPDLab
from .requirements import require

pytestmark = pytest.mark.e2e

DRIVE_TIMEOUT = 40.0
QUEUE_TTL = "8s"  # long enough for >= 3 attempts per message (about 1 s apart), short for the test
SETTLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class FinishedRun:
    maillog: Path  # BSD syslog headers
    maillog_rfc3339: Path  # the same lines, RFC 3339 headers
    record: dict[str, list[Answer]]
    recipients: dict[str, list[str]]


def require_opensmtpd() -> None:
    require(os.geteuid() == 0, "the OpenSMTPD e2e lab must run as root")
    reason = fetch_mta.not_ready((fetch_mta.smtpd_binary(), fetch_mta.smtpctl_binary()))
    require(reason is None, f"the OpenSMTPD e2e lab needs Debian's opensmtpd unpacked: {reason}")


@pytest.fixture(scope="module")
def finished_run(make_fake_smtp, tmp_path_factory) -> FinishedRun:
    require_opensmtpd()
    fake = make_fake_smtp(SCENARIO)
    kept = tmp_path_factory.mktemp("opensmtpd-lab")  # the logs outlive the lab
    with ExitStack() as stack:  # the lab is stopped and removed when the run is over
        lab = OpenSMTPDLab(fake.port, queue_ttl=QUEUE_TTL)
        stack.callback(lab.cleanup)
        stack.callback(_keep_log, lab, kept)  # before cleanup (LIFO)
        lab.start()

        recipients = recipients_of()
        for domain, rcpts in recipients.items():
            for i, rcpt in enumerate(rcpts, 1):
                lab.inject(SENDER, rcpt, f"e2e {domain} #{i}")

        drive_until_done(fake, lab.schedule_all, recipients, lab.log_tail, DRIVE_TIMEOUT, step=1.0)

        # Freeze: retry until `queue ttl` expires the deferred mail and the queue is empty,
        # then stop smtpd (the lab's log writer has every line once smtpd's stderr closes).
        lab.drain(SETTLE_TIMEOUT)
        lab.stop()
        assert not lab.leftover_processes(), "smtpd left processes behind"
        return FinishedRun(
            kept / lab.maillog.name, kept / lab.maillog_rfc3339.name, fake.record(), recipients
        )


def _keep_log(lab: OpenSMTPDLab, kept: Path) -> None:
    for log in (lab.maillog, lab.maillog_rfc3339):
        if log.exists():
            shutil.copy2(log, kept / log.name)
    print(f"opensmtpd lab logs kept in {kept}")


# -- log parsing (for the lab test; deliberately independent of the exporter's parser) ---------
_HEADER_RE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ smtpd\[\d+\]: ")
_DELIVERY_RE = re.compile(
    r" mta delivery evpid=\w+ from=<[^>]*> to=<(?P<rcpt>[^>]+)> .* "
    r'result="(?P<result>\w+)" stat="(?P<code>\d{3})(?: (?P<enh>\d\.\d{1,3}\.\d{1,3}))?'
)
_EXPIRE_RE = re.compile(
    r" relay: Expire for \w+: from=<[^>]*>, to=<(?P<rcpt>[^>]+)>, .*"
    r"stat=Envelope expired$"
)
_NOTICE_RE = re.compile(r" smtp envelope evpid=\w+ from=<> to=<sender@sender\.example>$")
STATUS = {"Ok": "sent", "TempFail": "deferred", "PermFail": "bounced"}


def test_lab_records_real_opensmtpd_deliveries(finished_run: FinishedRun) -> None:
    record = finished_run.record
    n = MESSAGES_PER_DOMAIN
    lines = finished_run.maillog.read_text(errors="replace").splitlines()
    assert lines and all(_HEADER_RE.match(line) for line in lines), "every line has a header"
    # Notices to the sender: one per bounce, and for the expired mail delay warnings (6.8 sends
    # "delayed for more than 4 hours" seconds into a short `queue ttl`, then "... 0 seconds" at
    # expiry, instead of a failure notice): counted from the log.
    notices = sum(1 for line in lines if _NOTICE_RE.search(line))
    assert notices >= 2 * n + len(ALWAYS_DEFERRED) * n
    assert_scenario_played(record, finished_run.recipients, returned=notices)

    logged: list[LoggedAttempt] = []
    expired: Counter[str] = Counter()
    for line in lines:
        if m := _DELIVERY_RE.search(line):
            logged.append(LoggedAttempt(m["rcpt"], STATUS[m["result"]], m["code"], m["enh"]))
        elif m := _EXPIRE_RE.search(line):
            expired[m["rcpt"].rpartition("@")[2].lower()] += 1
    assert_log_matches_record(logged, record, stages=False)  # its log names no SMTP stage
    assert expired == {domain: n for domain in ALWAYS_DEFERRED}


@pytest.mark.parametrize("header", ["bsd", "rfc3339"])
def test_exporter_counts_match_fake_server(
    finished_run: FinishedRun, header: str, run_exporter, tmp_path
) -> None:
    log = finished_run.maillog if header == "bsd" else finished_run.maillog_rfc3339
    assert log.read_bytes().count(b"\n") == finished_run.maillog.read_bytes().count(b"\n")
    assert_exporter_matches_record(
        run_exporter,
        log,
        "opensmtpd",
        finished_run.record,
        tmp_path,
        expired={domain: MESSAGES_PER_DOMAIN for domain in ALWAYS_DEFERRED},
    )
