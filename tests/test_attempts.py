"""One definition of an attempt for every MTA, checked on the real MTA logs of the corpus.

An attempt is a line that records the MTA trying to reach a server for a recipient (connection
refused and timeouts included); a deferral decided without contacting a server (a retry time not
reached, a destination marked down) is no attempt: it is counted per domain and reason in
``bounce_deferrals_without_attempt_total``, and its recipient waits in the ledger. The expected
attempts are the scripted remote server's own count (the ``*.truth.json`` beside each log).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import pytest

from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.exposition.collector import counter_families
from bounce_exporter.parsers import make_parser
from bounce_exporter.pipeline import Pipeline, read_through
from bounce_exporter.state.counters import DomainLabels, MetricState
from bounce_exporter.state.waiting import waiting_totals

from .corpus import CORPUS

REAL = CORPUS / "real"
CLASSIFIER = Classifier.load()


def truth(mta: str) -> dict:
    return json.loads((REAL / f"{mta}-3min.truth.json").read_text())["domains"]


def replay(mta: str, path=None, state: MetricState | None = None):
    """The corpus log of ``mta`` (or ``path``) read through the pipeline: (counters, parser)."""
    path = path or REAL / f"{mta}-3min.log"
    state = state or MetricState()
    parser = make_parser(mta, os.path.getmtime(REAL / f"{mta}-3min.log"))
    read_through(str(path), Pipeline(CLASSIFIER, state), parser, 65536)
    return state, parser


def waiting_by_domain(parser) -> Counter:
    totals = waiting_totals([parser.in_flight()], DomainLabels().view_label,
                            lambda e: CLASSIFIER.classify(e.status, e.code, e.enhanced,
                                                          e.text).category)
    found: Counter = Counter()
    for (domain, _category), count in totals.recipients.items():
        found[domain] += count
    return found


def reached(record: dict, stages=("rcpt", "mail")) -> bool:
    return any(stage in record["attempts_by_stage"] for stage in stages)


@pytest.mark.parametrize("mta", ["postfix", "exim", "opensmtpd"])
def test_attempts_of_every_domain_that_reached_mail_or_rcpt_equal_the_remotes_count(mta):
    state, _ = replay(mta)
    domains = {d: r for d, r in truth(mta).items() if reached(r)}
    assert len(domains) == 9  # ok, disk-full, full-mailbox, throttle, nouser, spam, flaky, ...
    assert {d: state.attempts.get(d, 0) for d in domains} == {
        d: r["smtp_attempts"] for d, r in domains.items()}


@pytest.mark.parametrize("mta", ["postfix", "exim"])
def test_postfix_and_exim_tie_greeting_refusals_and_silent_servers_to_their_domain(mta):
    state, _ = replay(mta)
    for domain in ("busy.example", "blocked.example", "timeout.example"):
        assert state.attempts[domain] == truth(mta)[domain]["smtp_attempts"], domain
    assert "unknown" not in state.attempts
    log = (REAL / f"{mta}-3min.log").read_text()
    refused = {"postfix": r"to=<\S+@unreachable\.example>.*status=deferred",
               "exim": r"== \S+@unreachable\.example R=\S+ T=\S+ defer \((?!-5[234]\))"}[mta]
    # connection refused: the remote cannot count them; one attempt per logged try
    assert state.attempts["unreachable.example"] == len(re.findall(refused, log)) == {
        "postfix": 27, "exim": 12}[mta]


def test_exim_retry_time_skips_are_deferrals_without_attempt_of_their_domain():
    state, parser = replay("exim")
    log = (REAL / "exim-3min.log").read_text()
    per_domain = Counter(re.findall(r" == \S+@(\S+) .*retry time not reached", log))
    assert dict(state.without_attempt) == {
        (domain, "retry_time_not_reached"): n for domain, n in per_domain.items()}
    assert sum(per_domain.values()) == 341
    assert state.without_attempt[("busy.example", "retry_time_not_reached")] == 63
    assert parser.counters() == {"retry_not_reached": 341, "blackholed": 0}  # kept as before


def test_postfix_corpus_has_no_deferral_without_attempt():
    state, _ = replay("postfix")
    assert dict(state.without_attempt) == {}


def test_opensmtpd_greeting_refusals_are_visible_on_their_domains_never_only_as_unknown(tmp_path):
    """In the lab every route is [::1] on its own port and the envelope lines drop the port: no
    line ties the sessions refused at the greeting (busy: 5, blocked: 1) to their domain. They
    stay on ``unknown``; their domains show through their deferrals without attempt (the route
    failed, no server asked) and, until they expire, their waiting recipients."""
    mta = "opensmtpd"
    records = truth(mta)
    state, _ = replay(mta)
    log = (REAL / f"{mta}-3min.log").read_text()
    refused = len(re.findall(r"mta error reason=IO Error: Connection refused", log))
    assert refused == 6
    assert state.attempts["unknown"] == (records["busy.example"]["smtp_attempts"]
                                         + records["blocked.example"]["smtp_attempts"]
                                         + refused) == 12
    assert "busy.example" not in state.attempts and "blocked.example" not in state.attempts
    without = Counter(re.findall(r" 0{16} mta delivery .* to=<\S+@(\S+)> .*result=\"TempFail\"",
                                 log))
    assert dict(state.without_attempt) == {(d, "destination_suspended"): n
                                           for d, n in without.items()}
    assert state.without_attempt[("busy.example", "destination_suspended")] == 9
    assert state.without_attempt[("blocked.example", "destination_suspended")] == 9
    assert state.expired["busy.example"] == records["busy.example"]["messages_sent"] == 3
    assert state.expired["blocked.example"] == records["blocked.example"]["messages_sent"] == 3
    # before the first expiry, their recipients wait: every message the remote never accepted
    lines = (REAL / f"{mta}-3min.log").read_bytes().splitlines(keepends=True)
    first_expiry = next(i for i, line in enumerate(lines) if b"relay: Expire for" in line)
    prefix = tmp_path / "opensmtpd.log"
    prefix.write_bytes(b"".join(lines[:first_expiry]))
    _, parser = replay(mta, prefix)
    waiting = waiting_by_domain(parser)
    for domain in ("busy.example", "blocked.example", "unreachable.example", "timeout.example"):
        assert waiting[domain] == records[domain]["messages_sent"] == 3, domain
    assert "unknown" not in waiting


def test_a_deferral_without_attempt_is_counted_apart_under_the_domain_cap():
    state = MetricState(DomainLabels(max_domains=1))
    line = ("Dec 21 07:41:10 localhost postfix/error[29539]: 773A9CBBC: to=<u@a.example>, "
            "relay=none, delay=334, delays=304/31/0/0, dsn=4.4.1, status=deferred (delivery "
            "temporarily suspended: connect to mx.a.example[192.0.2.1]:25: Connection timed out)")
    parser = make_parser("postfix")
    for raw in (line, line.replace("u@a.example", "u@b.example")):
        for event in parser.parse(raw.encode()):
            assert event.without_attempt == "destination_suspended"
            state.record(event, CLASSIFIER.classify(event.status, event.code, event.enhanced,
                                                    event.text))
    assert dict(state.without_attempt) == {("a.example", "destination_suspended"): 1,
                                           ("other", "destination_suspended"): 1}
    assert dict(state.attempts) == {} and dict(state.failures) == {}
    assert sum(state.providers.attempts.values()) == 0
    family = next(f for f in counter_families(state.snapshot())
                  if f.name == "bounce_deferrals_without_attempt")
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("bounce_deferrals_without_attempt_total",
         {"domain": "a.example", "reason": "destination_suspended"}, 1),
        ("bounce_deferrals_without_attempt_total",
         {"domain": "other", "reason": "destination_suspended"}, 1)]


def test_a_deferral_without_attempt_keeps_the_last_servers_reply_in_the_ledger():
    """An expiry after a retry-time skip carries the last reply a server gave, not the skip's."""
    parser = make_parser("exim")
    head = "2026-11-28 12:2{}:00 1xXHRu-0003l1-0v "
    lines = [head.format(2) + "== u@d.example R=r T=remote_smtp defer (-44) H=mx [192.0.2.1]: "
             "SMTP error from remote mail server after RCPT TO:<u@d.example>: 431 4.3.1 full",
             head.format(3) + "== u@d.example R=r T=remote_smtp defer (-54) DT=0s: retry time "
             "not reached for any host for 'd.example'",
             head.format(4) + "** u@d.example: retry timeout exceeded"]
    events = [e for line in lines for e in parser.parse(line.encode())]
    assert [(e.status, e.without_attempt, e.code) for e in events] == [
        ("deferred", None, "431"), ("deferred", "retry_time_not_reached", None),
        ("expired", None, "431")]


def test_the_parse_record_names_a_deferral_without_attempt():
    from bounce_exporter.oneshot import event_record

    event = DeliveryEvent(0.0, "exim", "q", "u@d.example", "d.example", "deferred", None, None,
                          "retry time not reached", None, "retry_time_not_reached")
    record = event_record("f", 1, event, CLASSIFIER.classify("deferred", None, None, ""))
    assert (record["status"], record["without_attempt"]) == ("deferred", "retry_time_not_reached")


def test_the_tracker_and_the_recent_view_pass_over_a_deferral_without_attempt():
    """A Postfix "delivery temporarily suspended" deferral keeps its earlier 451 reply: it must
    not grow the (domain, 451) streak, as the attempt that gave the 451 did."""
    from bounce_exporter.state.deferrals import DeferralTracker
    from bounce_exporter.state.rules import DeferralRule
    from bounce_exporter.state.store import Store

    store = Store(MetricState(), DeferralTracker([DeferralRule("r", "451", None, None, 1, 0.0,
                                                               7200.0)]))
    attempt = DeliveryEvent(100.0, "postfix", "Q", "u@a.example", "a.example", "deferred", "451",
                            "4.0.0", "451 busy", "mx.a.example")
    skipped = DeliveryEvent(200.0, "postfix", "Q", "u@a.example", "a.example", "deferred", "451",
                            "4.0.0", "delivery temporarily suspended: ... said: 451 busy", None,
                            "destination_suspended")
    verdict = CLASSIFIER.classify("deferred", "451", "4.0.0", "451 busy")
    store.observe(skipped, verdict)
    assert store.tracker.tracking() == 0
    store.observe(attempt, verdict)
    store.observe(skipped, verdict)
    assert [(s.domain, s.code, s.attempts) for s in store.tracker.active()] == [
        ("a.example", "451", 1)]


def test_a_recipient_held_without_attempt_is_saved_and_restored_exactly():
    from bounce_exporter.parsers.ledger import Ledger

    ledger = Ledger(10)
    skipped = DeliveryEvent(5.0, "exim", "M", "u@d.example", "d.example", "deferred", None, None,
                            "retry time not reached", None, "retry_time_not_reached")
    ledger.hold("M", "u@d.example", skipped)
    again = Ledger(10)
    assert again.load_state(json.loads(json.dumps(ledger.to_state()))) == 0
    ((message, held),) = again.view()
    assert (message, [(w.first, w.attempts, w.last) for w in held.values()]) == (
        "M", [(5.0, 0, skipped)])
