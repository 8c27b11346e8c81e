"""The OpenSMTPD parser against real lines: the shared corpus samples and a real OpenSMTPD 6.8's
3-minute log, whose per-domain counts are checked against what the remote SMTP server recorded."""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.opensmtpd import OpenSMTPDParser

from .corpus import CORPUS, check_event, fragments, sample_id, whole_lines
from .test_exim_parser import (
    check_per_message,
    counts_by_domain,
    expected_from_truth,
    read_events,
    visible,
)

WHOLE_LINES = whole_lines("opensmtpd")
FRAGMENTS = fragments("opensmtpd")
HEAD = "Nov 28 12:22:45 mail smtpd[14390]: "




@pytest.mark.parametrize("sample", WHOLE_LINES, ids=sample_id)
def test_whole_corpus_line(sample):
    events = OpenSMTPDParser().parse(sample["line"].encode())
    if sample["event"] in ("other", "conn_fail"):
        # conn_fail lines here are 5.x "smtp-out:" session lines: no recipient, and whether the
        # session's envelopes get their own TempFail lines cannot be told from them
        assert events == ()
        return
    (event,) = events
    check_event(event, sample)


@pytest.mark.parametrize("sample", FRAGMENTS, ids=sample_id)
def test_fragment(sample):
    message = re.sub(r"^smtpd\[\d+\]: ", "", sample["line"])  # a header without its stamp
    (event,) = OpenSMTPDParser().parse_message(0.0, message)
    check_event(event, sample)


def test_results_decide_the_status_not_the_reply():
    parser = OpenSMTPDParser()
    line = (HEAD + "912fc4270770288f mta delivery evpid=ce2b550ff77d09a5 from=<a@s.example> "
            "to=<u@d.example> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.1 (localhost)\" "
            "delay=0s result=\"{}\" stat=\"{}\"")
    (event,) = parser.parse(line.format("TempFail", "550 5.7.1 try later").encode())
    assert (event.status, event.code, event.enhanced) == ("deferred", "550", "5.7.1")
    (event,) = parser.parse(line.format("PermFail", "450 4.2.2 full").encode())
    assert (event.status, event.text) == ("bounced", "450 4.2.2 full")
    (event,) = parser.parse(line.format("Ok", "250 2.0.0 10.5.3.2 queued").encode())
    assert (event.status, event.code, event.enhanced, event.queue_id) == (
        "sent", "250", "2.0.0", "ce2b550ff77d09a5")
    (event,) = parser.parse(line.format("TempFail", "451 10.5.3.2 busy").encode())
    assert (event.code, event.enhanced) == ("451", None)


def test_tempfail_without_a_session_is_no_attempt_but_a_permfail_is_a_bounce():
    parser = OpenSMTPDParser()
    line = (HEAD + "0000000000000000 mta delivery evpid=7a2c0ab3874f211f from=<a@s.example> "
            "to=<u@blocked.example> rcpt=<-> source=\"-\" relay=\"[::1]\" delay=21s "
            "result=\"{}\" stat=\"{}\"")
    (event,) = parser.parse(line.format("TempFail", "Network error on destination MXs").encode())
    assert (event.status, event.without_attempt, event.domain, event.code, event.relay) == (
        "deferred", "destination_suspended", "blocked.example", None, "::1")
    assert parser.counters() == {"tempfail_without_session": 1}
    ((_, waiting),) = parser.in_flight()  # the envelope waits, no attempt counted
    assert [(w.attempts, w.last.without_attempt) for w in waiting.values()] == [
        (0, "destination_suspended")]
    (event,) = parser.parse(line.format("PermFail", "Domain does not exist").encode())
    assert (event.status, event.domain, event.code) == ("bounced", "blocked.example", None)


def test_session_errors_before_any_envelope_are_domainless_deferrals():
    parser = OpenSMTPDParser()
    sid = "912fc469d917b761"
    assert parser.parse(f"{HEAD}{sid} mta connecting address=smtp://[::1]:2726 host=::1"
                        .encode()) == ()
    assert parser.parse(f"{HEAD}{sid} mta connected".encode()) == ()
    (event,) = parser.parse(f"{HEAD}{sid} mta error reason=BANNER rejected: 421 4.3.2 "
                            "mx.busy.example Service not available, too busy".encode())
    assert (event.status, event.recipient, event.domain, event.code, event.enhanced) == (
        "deferred", None, None, "421", "4.3.2")
    # a connection that never got through
    sid = "912fc4b4e1d8775c"
    parser.parse(f"{HEAD}{sid} mta connecting address=smtp://[::1]:2799 host=::1".encode())
    (event,) = parser.parse(f"{HEAD}{sid} mta error reason=IO Error: Connection refused".encode())
    assert (event.domain, event.code, event.text) == (None, None, "IO Error: Connection refused")


def test_an_error_after_the_sessions_deliveries_adds_nothing():
    parser = OpenSMTPDParser()
    sid = "912fc4495b9c78fa"
    parser.parse(f"{HEAD}{sid} mta connecting address=smtp://[::1]:2729 host=::1".encode())
    parser.parse(f"{HEAD}{sid} mta connected".encode())
    (event,) = parser.parse(
        f"{HEAD}{sid} mta delivery evpid=fa3f1bbda99aa0a5 from=<a@s.example> "
        "to=<u@throttle.example> rcpt=<-> source=\"[::1]\" relay=\"[::1] (::1)\" delay=5s "
        "result=\"TempFail\" stat=\"421 4.7.0 Try again later, closing connection\"".encode())
    assert event.domain == "throttle.example"
    assert parser.parse(f"{HEAD}{sid} mta error reason=IO Error: Connection reset by peer"
                        .encode()) == ()


def test_a_connected_sessions_error_is_held_until_it_is_known_whether_envelopes_carry_it():
    parser = OpenSMTPDParser()
    sid = "912fc4495b9c78fb"
    parser.parse(f"{HEAD}{sid} mta connecting address=smtp://[::1]:2729 host=::1".encode())
    parser.parse(f"{HEAD}{sid} mta connected".encode())
    assert parser.parse(f"{HEAD}{sid} mta error reason=Connection closed unexpectedly"
                        .encode()) == ()
    # the envelopes the session held are failed with the error, under the session's id
    (event,) = parser.parse(
        f"{HEAD}{sid} mta delivery evpid=fa3f1bbda99aa0a5 from=<a@s.example> to=<u@t.example> "
        "rcpt=<-> source=\"[::1]\" relay=\"[::1] (::1)\" delay=5s result=\"TempFail\" "
        "stat=\"Connection closed unexpectedly\"".encode())
    assert (event.domain, event.text) == ("t.example", "Connection closed unexpectedly")
    # the same, with no envelope: the held deferral comes with the next line
    sid = "912fc4495b9c78fc"
    parser.parse(f"{HEAD}{sid} mta connecting address=smtp://[::1]:2798 host=::1".encode())
    parser.parse(f"{HEAD}{sid} mta connected".encode())
    assert parser.parse(f"{HEAD}{sid} mta error reason=Connection timeout".encode()) == ()
    (event,) = parser.parse(f"{HEAD}912fc4495b9c78fd smtp connected address=local".encode())
    assert (event.domain, event.status, event.text) == (None, "deferred", "Connection timeout")


def test_expiry_carries_the_last_reply_of_the_envelope():
    parser = OpenSMTPDParser()
    parser.parse((HEAD + "912fc4270770288f mta delivery evpid=ce2b550ff77d09a5 from=<a@s.example> "
                  "to=<u@d.example> rcpt=<-> source=\"127.0.0.1\" relay=\"x\" delay=0s "
                  "result=\"TempFail\" stat=\"431 4.3.1 disk is full\"").encode())
    (event,) = parser.parse((HEAD + "relay: Expire for ce2b550ff77d09a5: from=<a@s.example>, "
                             "to=<u@d.example>, rcpt=<->, delay=2m8s, stat=Envelope expired")
                            .encode())
    assert (event.status, event.domain, event.code, event.enhanced) == (
        "expired", "d.example", "431", "4.3.1")


def test_broken_delivery_lines_are_not_understood():
    with pytest.raises(LineNotUnderstood) as err:
        OpenSMTPDParser().parse((HEAD + "912fc4270770288f mta delivery evpid=ce2b550ff77d09a5 "
                                 "from=<a@s.example>").encode())
    assert err.value.reason == "malformed_delivery"
    with pytest.raises(LineNotUnderstood) as err:
        OpenSMTPDParser().parse(b"\xff garbage relay: TempFail for 12: to=<x>")
    assert err.value.reason == "no_header"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(
    lambda a, b: a + b, st.sampled_from([
        HEAD.encode() + b"912fc4270770288f mta delivery evpid=",
        HEAD.encode() + b"912fc4270770288f mta error reason=",
        HEAD.encode() + b"relay: TempFail for ", HEAD.encode() + b"912fc4270770288f mta "]),
    st.binary(max_size=200)))
def test_arbitrary_input_never_raises_anything_else(raw):
    parser = OpenSMTPDParser()
    for line in (raw, raw):  # the second pass meets any held session error
        try:
            parser.parse(line)
        except LineNotUnderstood:
            pass


# -- the real OpenSMTPD log, against what the remote server recorded -------------------------

REAL_LOG = CORPUS / "real" / "opensmtpd-3min.log"
TRUTH = CORPUS / "real" / "opensmtpd-3min.truth.json"


def test_real_opensmtpd_log_per_domain_counts_match_the_remote():
    truth = json.loads(TRUTH.read_text())
    parser = OpenSMTPDParser(reference=os.path.getmtime(REAL_LOG))
    got = counts_by_domain(read_events(parser, REAL_LOG))
    # greeting refusals are logged per connection ("mta error reason=BANNER rejected: ..."),
    # never for a recipient, and OpenSMTPD retries after a 554 greeting too: they are counted
    # under the domain None
    expected = expected_from_truth(truth, greeting_refusal="session")
    log = REAL_LOG.read_text()
    for domain, record in truth["domains"].items():
        if visible(record):
            assert got[domain] == +expected[domain], domain
        else:
            # The remote saw nothing (connection refused; and "timeout", whose route OpenSMTPD
            # had disabled, so it never connected). Rule: a deferral is an SMTP session's TempFail
            # line for the recipient, read here with a plain pattern (there is none: every such
            # line is "Network error on destination MXs" without a session, no attempt); the
            # refused connections are recipient-less and counted under None below; nothing was
            # sent or bounced, and every message not still queued expired.
            attempts = len(re.findall(rf"\] [0-9a-f]{{16}}(?<!0{{16}}) mta delivery .* "
                                      rf"to=<\S+@{re.escape(domain)}> .*result=\"TempFail\"", log))
            assert got[domain] == +Counter(deferred=attempts, expired=expected[domain]["expired"])
    refused = len(re.findall(r"mta error reason=IO Error: Connection refused", log))
    assert refused == 6
    expected[None]["deferred"] += refused  # connection attempts the remote cannot see
    assert got[None] == +expected[None]
    assert got[None] == Counter(deferred=12)
    assert got["throttle.example"] == Counter(deferred=7, expired=3)
    assert got["blocked.example"] == Counter(expired=3)
    assert parser.tempfail_without_session == len(re.findall(r"0{16} mta delivery .*TempFail", log))


def test_real_opensmtpd_log_per_message_attempts_match_the_remote():
    truth = json.loads(TRUTH.read_text())
    parser = OpenSMTPDParser(reference=os.path.getmtime(REAL_LOG))
    events = read_events(parser, REAL_LOG)
    # the remote knows a message by OpenSMTPD's message id: the envelope id's first 8 digits
    check_per_message(events, truth, queue_id_of=lambda evpid: evpid[:8])
    greetings = Counter((e.code, e.enhanced) for e in events if e.domain is None)
    assert greetings == {("421", "4.3.2"): 5, ("554", "5.7.1"): 1, (None, None): 6}


def test_a_failed_session_is_the_domain_whose_envelopes_its_server_address_carried():
    """A session refused at the greeting names no envelope; when earlier sessions to the same
    server address (port included) carried envelopes of one domain only, the failure is that
    domain's. An address that carried several domains (a relay host) ties it to none."""
    parser = OpenSMTPDParser()

    def session(sid: str, address: str, *after: str) -> list:
        lines = [f"{sid} mta connecting address=smtp://{address} host=mx.example",
                 f"{sid} mta connected", *after]
        return [e for line in lines for e in parser.parse((HEAD + line).encode())]

    def delivery(sid: str, evpid: str, to: str) -> str:
        return (f"{sid} mta delivery evpid={evpid} from=<a@s.example> to=<{to}> rcpt=<-> "
                f'source="192.0.2.9" relay="192.0.2.5 (mx.a.example)" delay=0s result="Ok" '
                f'stat="250 2.0.0 Ok"')

    session("a000000000000001", "192.0.2.5:25", delivery("a000000000000001", "e1", "u@a.example"),
            "a000000000000001 mta disconnected")
    (refused,) = session("a000000000000002", "192.0.2.5:25",
                         "a000000000000002 mta error reason=BANNER rejected: 421 4.3.2 busy")
    assert (refused.domain, refused.recipient, refused.code) == ("a.example", None, "421")
    (other_port,) = session("a000000000000003", "192.0.2.5:2525",
                            "a000000000000003 mta error reason=BANNER rejected: 421 4.3.2 busy")
    assert other_port.domain is None  # never an envelope through that address
    session("a000000000000004", "192.0.2.5:25", delivery("a000000000000004", "e2", "v@b.example"),
            "a000000000000004 mta disconnected")
    (shared,) = session("a000000000000005", "192.0.2.5:25",
                        "a000000000000005 mta error reason=BANNER rejected: 421 4.3.2 busy")
    assert shared.domain is None  # a.example and b.example share it
    restored = OpenSMTPDParser()
    restored.restore(parser.state())
    assert restored.state() == parser.state()
