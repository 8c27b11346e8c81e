"""The Exim parser against real lines: the shared corpus samples and a real Exim 4.96's 3-minute log,
whose per-domain counts are checked against what the remote SMTP server recorded."""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.exim import EximParser

from .corpus import CORPUS, SOFT, sample_id, whole_lines

DELIVERY_EVENTS = {"sent", "deferred", "bounced", "expired", "conn_fail"}
WHOLE_LINES = whole_lines("exim")
_FLAG = re.compile(r" [0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4} (=>|->|==|\*\*) ")



@pytest.mark.parametrize("sample", WHOLE_LINES, ids=sample_id)
def test_whole_corpus_line(sample):
    expect, line = sample["expect"], sample["line"]
    parser = EximParser()
    events = parser.parse(line.encode())
    if sample["event"] not in DELIVERY_EVENTS or not _FLAG.search(line):
        # not a delivery record: "<=", "Completed", and host-level lines without a flag, which
        # Exim follows with one "=="/"**" line per recipient saying the same
        assert events == ()
        return
    if "retry time not reached" in line and " == " in line:
        # Exim skipped the recipient, no server was contacted: a deferral without attempt
        (event,) = events
        assert (event.status, event.without_attempt, event.code, event.domain) == (
            "deferred", "retry_time_not_reached", None, expect["domain"])
        assert parser.retry_not_reached == 1
        return
    (event,) = events
    assert (event.code, event.enhanced, event.domain) == (
        expect["code"], expect["enhanced"], expect["domain"])
    assert SOFT[event.status] == expect["soft"]
    assert event.mta == "exim"


def test_statuses_follow_the_flag_and_expiry_texts():
    parser = EximParser()
    head = "2026-11-28 12:22:38 1xXHRu-0003l1-0v "
    assert parser.parse((head + "** u@a.example: retry timeout exceeded").encode())[0].status \
        == "expired"
    (event,) = parser.parse((head + "** u@b.example R=r T=t: all hosts for 'b.example' have been "
                             "failing for a long time (and retry time not reached) DT=0s").encode())
    assert event.status == "expired"
    assert event.text == ("all hosts for 'b.example' have been failing for a long time "
                          "(and retry time not reached)")
    (event,) = parser.parse((head + "** u@c.example R=r T=t: Unrouteable address").encode())
    assert (event.status, event.code) == ("bounced", None)
    (event,) = parser.parse((head + "-> u@d.example R=r T=t H=h [192.0.2.1] C=\"250 OK id=1\"")
                            .encode())
    assert (event.status, event.code, event.text) == ("sent", "250", "250 OK id=1")


def test_a_4xx_reply_on_a_bounce_is_still_a_bounce_and_a_5xx_on_a_deferral_a_deferral():
    parser = EximParser()
    (event,) = parser.parse(b"2026-11-28 12:22:38 1xXHRu-0003l1-0v ** u@a.example R=r T=t H=h "
                            b"[192.0.2.1]: SMTP error from remote mail server after RCPT "
                            b"TO:<u@a.example>: 452 4.2.2 Mailbox full DT=0s")
    assert (event.status, event.code, event.enhanced) == ("bounced", "452", "4.2.2")
    assert event.text.endswith("Mailbox full")
    (event,) = parser.parse(b"2026-11-28 12:22:38 1xXHRu-0003l1-0v == u@a.example R=r T=t "
                            b"defer (-44) H=h [192.0.2.1]: SMTP error from remote mail server "
                            b"after RCPT TO:<u@a.example>: 550 5.1.1 nope")
    assert (event.status, event.code, event.enhanced) == ("deferred", "550", "5.1.1")


def test_connection_failures_are_deferrals_without_a_reply():
    parser = EximParser()
    (refused,) = parser.parse(b"2026-11-28 12:22:44 1xXHS0-0003oW-02 == u@unreachable.example "
                              b"R=lab_route T=remote_smtp defer (111): Connection refused DT=0s")
    assert (refused.status, refused.code, refused.text) == ("deferred", None, "Connection refused")
    (silent,) = parser.parse(b"2026-11-28 12:22:44 1xXHS0-0003of-23 == u@timeout.example "
                             b"R=lab_route T=remote_smtp defer (110): Connection timed out "
                             b"H=127.0.0.1 [127.0.0.1]:2698 DT=0s: SMTP timeout after initial "
                             b"connection")
    assert (silent.code, silent.text) == (
        None, "Connection timed out: SMTP timeout after initial connection")


def test_an_address_after_the_code_never_reads_as_an_enhanced_code():
    (event,) = EximParser().parse(
        b"2026-11-28 12:22:38 1xXHRu-0003l1-0v == u@a.example R=r T=t defer (-44) H=h "
        b"[10.5.3.2]: SMTP error from remote mail server after RCPT TO:<u@a.example>: 450 "
        b"10.5.3.2 is not allowed")
    assert (event.code, event.enhanced) == ("450", None)
    (event,) = EximParser().parse(
        b"2026-11-28 12:22:38 1xXHRu-0003l1-0v == u@a.example R=r T=t defer (-1): failed to "
        b"talk to 10.5.3.2: 421 4.3.2 oops")
    assert (event.code, event.enhanced) == (None, None)  # not a remote reply


def test_retry_time_not_reached_is_counted_apart():
    parser = EximParser()
    head = b"2026-11-28 12:22:50 1xXHRu-0003l1-0v == "
    lines = [
        head + b"u@d.example routing defer (-52) DT=0s: retry time not reached",
        head + b"u@busy.example R=lab_route T=remote_smtp defer (-54) DT=0s: retry time not "
               b"reached for any host for 'busy.example'",
        head + b"u@l.example R=local T=local_delivery defer (-53): retry time not reached",
    ]
    found = [event for line in lines for event in parser.parse(line)]
    assert [(e.domain, e.status, e.without_attempt, e.code) for e in found] == [
        ("d.example", "deferred", "retry_time_not_reached", None),
        ("busy.example", "deferred", "retry_time_not_reached", None),
        ("l.example", "deferred", "retry_time_not_reached", None)]
    assert parser.retry_not_reached == 3
    assert parser.counters() == {"retry_not_reached": 3, "blackholed": 0}


def test_stamps_millisecond_offset_pid_and_both_message_id_lengths():
    parser = EximParser()
    (event,) = parser.parse(b"2020-06-20 01:32:57 +0200 [789] 1jmKso-0009d4-Uf => a@b.example "
                            b"R=r T=t H=h [192.0.2.1] C=\"250 ok\"")
    assert event.time == datetime.fromisoformat("2020-06-19T23:32:57+00:00").timestamp()
    (event,) = parser.parse(b"2017-07-30 18:51:05.712 10HmbA-000000005vi-0000 => a@b.example "
                            b"R=r T=t")
    assert event.time == pytest.approx(datetime(2017, 7, 30, 18, 51, 5, 712000).timestamp())
    assert (event.queue_id, event.code, event.text) == ("10HmbA-000000005vi-0000", None, "")
    with pytest.raises(LineNotUnderstood) as err:
        parser.parse(b"2017-13-30 18:51:05 10HmbA-000000005vi-0000 => a@b.example R=r T=t")
    assert err.value.reason == "bad_stamp"


def test_syslog_lines_with_and_without_exims_own_stamp():
    parser = EximParser(reference=datetime(2026, 12, 1).timestamp())
    (event,) = parser.parse(b"Nov 28 12:22:37 mx exim[14260]: 1xXHRt-0003ks-27 => u@ok.example "
                            b"R=r T=t H=h [192.0.2.1] C=\"250 2.0.0 Ok\"")
    assert (event.time, event.enhanced) == (datetime(2026, 11, 28, 12, 22, 37).timestamp(), "2.0.0")
    (event,) = parser.parse(b"Nov 28 12:22:37 mx exim4[14260]: 2026-11-28 12:22:38 "
                            b"1xXHRt-0003ks-27 ** u@ok.example: retry timeout exceeded")
    assert (event.time, event.status) == (datetime(2026, 11, 28, 12, 22, 38).timestamp(), "expired")
    assert parser.parse(b"Nov 28 12:22:37 mx other[1]: 1xXHRt-0003ks-27 => u@ok.example") == ()


def test_local_deliveries_take_the_domain_of_the_address_in_brackets():
    (event,) = EximParser().parse(b"2026-11-28 12:22:37 1xXHRt-0003ks-27 => /var/mail/u "
                                  b"<u@Local.Example> R=userforward T=address_file")
    assert (event.recipient, event.domain) == ("u@Local.Example", "local.example")
    (event,) = EximParser().parse(b"2026-11-28 12:22:37 1xXHRt-0003ks-27 => u@remote.example "
                                  b"<alias@local.example> R=dnslookup T=remote_smtp H=h [192.0.2.1]")
    assert event.domain == "remote.example"


def test_expiry_carries_the_last_reply_of_the_recipient():
    parser = EximParser()
    parser.parse(b"2026-11-28 12:22:38 1xXHRu-0003l1-0v == u@d.example R=r T=t defer (-44) H=h "
                 b"[192.0.2.1]: SMTP error from remote mail server after RCPT TO:<u@d.example>: "
                 b"431 4.3.1 disk is full")
    (event,) = parser.parse(b"2026-11-28 12:24:41 1xXHRu-0003l1-0v ** u@d.example: retry timeout "
                            b"exceeded")
    assert (event.status, event.code, event.enhanced) == ("expired", "431", "4.3.1")
    (event,) = parser.parse(b"2026-11-28 12:24:42 1xXHRu-0003l1-0v ** u@d.example: retry timeout "
                            b"exceeded")
    assert (event.code, event.text) == (None, "retry timeout exceeded")  # forgotten once used


def test_malformed_flagged_lines_are_not_understood():
    with pytest.raises(LineNotUnderstood) as err:
        EximParser().parse(b"2026-11-28 12:22:38 1xXHRu-0003l1-0v == u@d.example R=r T=t oops")
    assert err.value.reason == "malformed_deferral"
    with pytest.raises(LineNotUnderstood) as err:
        EximParser().parse(b"\xff\xfe garbage == here")
    assert err.value.reason == "no_header"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(
    lambda a, b: a + b, st.sampled_from([b"2026-11-28 12:22:38 1xXHRu-0003l1-0v == ",
                                         b"2026-11-28 12:22:38 1xXHRu-0003l1-0v ** ",
                                         b"2026-11-28 12:22:38 1xXHRu-0003l1-0v => ",
                                         b"Nov 28 12:22:37 mx exim[1]: 1xXHRu-0003l1-0v -> "]),
    st.binary(max_size=200)))
def test_arbitrary_input_never_raises_anything_else(raw):
    try:
        EximParser().parse(raw)
    except LineNotUnderstood:
        pass


# -- the real Exim log, against what the remote server recorded ------------------------------

REAL_LOG = CORPUS / "real" / "exim-3min.log"
TRUTH = CORPUS / "real" / "exim-3min.truth.json"


def read_events(parser, path):
    events = []
    with path.open("rb") as handle:
        for raw in handle:
            events.extend(parser.parse(raw.rstrip(b"\n")))
    return events


def visible(record: dict) -> bool:
    """Did the remote see this domain at all? (connection refused: never; silence: it counts)"""
    return record["smtp_attempts"] > 0 or record["connections_seen_on_own_port"] > 0


def expected_from_truth(truth: dict, greeting_refusal: str | None) -> dict[str | None, Counter]:
    """Per domain, the sent / deferred / bounced / expired counts the remote's record implies.

    - Every reply at the DATA stage, and every non-2xx reply at another stage, is one attempt
      the MTA must log for one recipient (one recipient per message here): 2xx at DATA -> sent,
      4xx -> deferred, 5xx -> bounced; a silent connection (no reply) -> deferred.
      2xx at RCPT/MAIL only says the transaction went on: the DATA reply decides.
    - A refusal in the greeting (connect stage) names no recipient. ``greeting_refusal`` says
      what the MTA makes of it: "recipient" (Exim: one "=="/"**" line per recipient, 5xx is a
      bounce), or "session" (OpenSMTPD: one recipient-less deferral per connection, counted
      under the domain None, and it never bounces for it).
    - Every message ends as exactly one of sent, bounced, expired or still queued, so
      expired = messages sent - accepted (not counting the null-sender notices this domain
      received) - bounced - still queued at stop.
    """
    expected: dict[str | None, Counter] = defaultdict(Counter)
    for domain, record in truth["domains"].items():
        counts = expected[domain]
        for stage, replies in record["replies_by_stage"].items():
            for reply, n in replies.items():
                code = reply[:3] if reply[:3].isdigit() else None
                where = counts
                if stage == "connect" and greeting_refusal == "session":
                    where = expected[None]
                if code is None:
                    where["deferred"] += n
                elif code[0] == "2":
                    if stage == "data":
                        where["sent"] += n
                elif code[0] == "4" or (stage == "connect" and greeting_refusal == "session"):
                    where["deferred"] += n
                else:
                    where["bounced"] += n
        accepted = record["accepted_at_data"] - record["accepted_null_sender_dsns"]
        counts["expired"] = (record["messages_sent"] - accepted - counts["bounced"]
                             - record["still_queued_at_stop"])
    return expected


def counts_by_domain(events) -> dict[str | None, Counter]:
    """Attempts and expiries per domain and status (deferrals without attempt left out)."""
    counts: dict[str | None, Counter] = defaultdict(Counter)
    for event in events:
        if event.without_attempt is None:
            counts[event.domain][event.status] += 1
    return counts


def per_message_sequences(truth: dict) -> dict[str, list[tuple[str, str, float]]]:
    """Per queue id, the (status, code, time) of each attempt the remote's per-message record
    implies (a 2xx before DATA only says the transaction went on)."""
    sequences = {}
    for message in truth["messages"]:
        sequence = []
        for attempt in message["attempts"]:
            code = str(attempt["code"])
            if code.startswith("2") and attempt["stage"] != "data":
                continue
            status = {"2": "sent", "4": "deferred", "5": "bounced"}[code[0]]
            when = datetime.fromisoformat(attempt["time"] + "+00:00").timestamp()
            sequence.append((status, code, when))
        sequences[message["queue_id"]] = sequence
    return sequences


def check_per_message(events, truth: dict, queue_id_of) -> None:
    """Each message's logged attempts equal the remote's record, in order and at its times."""
    by_queue_id = defaultdict(list)
    for event in events:
        if event.status != "expired" and event.queue_id is not None \
                and event.without_attempt is None:
            by_queue_id[queue_id_of(event.queue_id)].append(event)
    offsets = []
    checked = 0
    for qid, sequence in per_message_sequences(truth).items():
        if not sequence:  # never reached RCPT: refused greetings, MAIL-stage refusals, silence
            continue
        got = by_queue_id[qid]
        assert [(e.status, e.code) for e in got] == [(s, c) for s, c, _ in sequence], qid
        offsets.extend(e.time - when for e, (_, _, when) in zip(got, sequence))
        checked += 1
    assert checked >= 21  # ok, disk-full, full-mailbox, throttle, nouser, spam, flaky
    # the log's stamps are the lab's local time (UTC), read here in the local zone: whatever that
    # is, every event is at its attempt's second
    assert max(offsets) - min(offsets) < 1.5


def test_real_exim_log_per_domain_counts_match_the_remote():
    truth = json.loads(TRUTH.read_text())
    parser = EximParser(reference=os.path.getmtime(REAL_LOG))
    got = counts_by_domain(read_events(parser, REAL_LOG))
    expected = expected_from_truth(truth, greeting_refusal="recipient")
    log = REAL_LOG.read_text()
    for domain, record in truth["domains"].items():
        if visible(record):
            assert got[domain] == +expected[domain], domain
        else:
            # The remote saw nothing (connection refused). Rule: every "==" line of a recipient
            # of that domain that is not a "retry time not reached" skip is one failed attempt
            # (read here with a plain pattern), nothing was sent or bounced, and every message
            # not still queued expired.
            attempts = len(re.findall(rf"== \S+@{re.escape(domain)} R=\S+ T=\S+ defer "
                                      rf"\((?!-5[234]\))-?\d+\)", log))
            assert attempts > 0
            assert got[domain] == +Counter(deferred=attempts, expired=expected[domain]["expired"])
    assert None not in got  # Exim names the recipient on every attempt
    assert got["disk-full.example"] == Counter(deferred=35, expired=3)
    assert got["blocked.example"] == Counter(bounced=3)
    assert got["sender.example"] == Counter(sent=48)


def test_real_exim_log_per_message_attempts_match_the_remote():
    truth = json.loads(TRUTH.read_text())
    parser = EximParser(reference=os.path.getmtime(REAL_LOG))
    events = read_events(parser, REAL_LOG)
    check_per_message(events, truth, queue_id_of=lambda qid: qid)
    skips = re.findall(r" == .* retry time not reached", REAL_LOG.read_text())
    assert parser.retry_not_reached == len(skips) == 341
    expired = [e for e in events if e.status == "expired" and e.domain == "disk-full.example"]
    assert {(e.code, e.enhanced) for e in expired} == {("431", "4.3.1")}


def test_host_level_errors_no_recipient_line_reports_are_attempts_of_the_next_recipient():
    """A session-level error without recipient (here at MAIL FROM) that no "=="/"**" line
    reports (the message went out through the next host) is one failed attempt of the
    message's recipient; one that a "==" line reports gives no second event."""
    parser = EximParser()
    head = "2026-11-28 12:22:4{} 1xXHRt-0003ks-27 "
    lines = [
        head.format(0) + "H=mx1.a.example [192.0.2.1]: SMTP error from remote mail server after "
        "pipelined MAIL FROM:<s@x.example> SIZE=10: 421 4.7.0 too many connections",
        head.format(1) + '=> u@a.example R=r T=remote_smtp H=mx2.a.example [192.0.2.2] C="250 OK"',
    ]
    found = [e for line in lines for e in parser.parse(line.encode())]
    assert [(e.recipient, e.domain, e.status, e.code, e.enhanced, e.relay) for e in found] == [
        ("u@a.example", "a.example", "deferred", "421", "4.7.0", "mx1.a.example"),
        ("u@a.example", "a.example", "sent", "250", None, "mx2.a.example")]
    reported = [head.format(2) + "H=mx1.a.example [192.0.2.1]: SMTP error from remote mail "
                "server after initial connection: 421 4.3.2 busy",
                head.format(3) + "== v@a.example R=r T=remote_smtp defer (-46) H=mx1.a.example "
                "[192.0.2.1]: SMTP error from remote mail server after initial connection: 421 "
                "4.3.2 busy"]
    found = [e for line in reported for e in parser.parse(line.encode())]
    assert [(e.recipient, e.status, e.code) for e in found] == [("v@a.example", "deferred", "421")]
    assert parser.state()["host_errors"] == []


def test_blackhole_is_no_attempt_and_ends_the_recipient():
    parser = EximParser()
    parser.parse(b"2026-11-28 12:22:40 1xXHRt-0003ks-27 == u@void.example R=r T=t defer (-46) "
                 b"H=mx [192.0.2.1]: SMTP error from remote mail server after RCPT TO:<u@void."
                 b"example>: 450 4.2.0 later")
    assert parser.parse(b"2026-11-28 12:23:40 1xXHRt-0003ks-27 => :blackhole: <u@void.example> "
                        b"R=blackhole_router") == ()
    assert parser.counters() == {"retry_not_reached": 0, "blackholed": 1}
    assert parser.in_flight() == []  # no longer waiting


def test_lines_about_messages_received_are_no_host_errors():
    """An incoming message's rejection names a client (HELO in parentheses, F=<sender>): it is
    held as nothing, so no later line of that id turns it into an attempt."""
    parser = EximParser()
    for line in ((b"2026-11-28 12:22:37 1xXHRt-0003ks-27 H=(helo.example) [192.0.2.7] F=<a@b> "
                  b"rejected after DATA: spam"),
                 (b"2026-11-28 12:22:37 1xXHRt-0003ks-28 H=client.example (helo) [192.0.2.7] "
                  b"F=<a@b> rejected after DATA: spam"),
                 (b"2026-11-28 12:22:37 1xXHRt-0003ks-29 H=mx.a.example [192.0.2.7] F=<a@b> "
                  b"rejected after DATA: spam")):
        assert parser.parse(line) == ()
    assert parser.state()["host_errors"] == []
