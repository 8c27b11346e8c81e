"""The Sendmail parser against the shared corpus samples and the cases they do not show."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.sendmail import SendmailParser, recipients_of

from .corpus import check_event, fragments, sample_id, whole_lines

WHOLE_LINES = whole_lines("sendmail")
FRAGMENTS = fragments("sendmail")
HEAD = "Apr  2 00:15:25 mta001 sendmail[12566]: "




@pytest.mark.parametrize("sample", WHOLE_LINES, ids=sample_id)
def test_whole_corpus_line(sample):
    events = SendmailParser().parse(sample["line"].encode())
    if sample["event"] == "other":
        assert events == ()  # DSN / return-to-sender lines: the bounce itself was logged before
        return
    (event,) = events  # conn_fail lines are deferrals of their recipient (stat=Deferred: ...)
    check_event(event, sample)
    assert event.mta == "sendmail"


@pytest.mark.parametrize("sample", FRAGMENTS, ids=sample_id)
def test_fragment(sample):
    message = re.sub(r"^[\w-]+\[\d+\]: ", "", sample["line"])  # a header without its stamp
    (event,) = SendmailParser().parse_delivery(0.0, message)
    check_event(event, sample)


def test_several_recipients_in_one_to_list_give_one_event_each():
    (first, second) = SendmailParser().parse(
        (HEAD + "u31FFPtp032300: to=<a@one.example>,<b@Two.Example>, delay=00:00:15, "
         "xdelay=00:00:15, mailer=esmtp, pri=34527, relay=mx.example. [192.0.2.1], dsn=4.3.5, "
         "stat=Deferred: 451 4.3.5 Server configuration problem").encode())
    assert [(e.recipient, e.domain, e.code, e.enhanced, e.status) for e in (first, second)] == [
        ("a@one.example", "one.example", "451", "4.3.5", "deferred"),
        ("b@Two.Example", "two.example", "451", "4.3.5", "deferred")]
    assert recipients_of("a@x.example,b@y.example") == ["a@x.example", "b@y.example"]
    assert recipients_of('"Doe, J" <j@x.example>') == ["j@x.example"]


def test_delay_with_days_and_a_basic_code_only_after_deferred():
    (event,) = SendmailParser().parse(
        (HEAD + "mAO2tx04010773: to=<u@example.com>, delay=8+03:40:15, xdelay=00:10:18, "
         "mailer=esmtp, pri=32250365, relay=example.com. [208.77.188.166], dsn=4.0.0, "
         "stat=Deferred: Connection timed out with example.com.").encode())
    assert (event.status, event.code, event.enhanced) == ("deferred", None, "4.0.0")
    (event,) = SendmailParser().parse(
        (HEAD + "q1: to=<u@example.com>, delay=00:00:01, mailer=esmtp, pri=1, relay=x, "
         "dsn=5.0.0, stat=Service unavailable 10.5.3.2").encode())
    assert (event.status, event.code, event.enhanced) == ("bounced", None, "5.0.0")


def test_status_is_sendmails_word_not_the_replys_digit():
    (event,) = SendmailParser().parse(
        (HEAD + "q1: to=<u@example.com>, delay=00:00:01, mailer=esmtp, pri=1, relay=x, "
         "dsn=5.7.1, stat=Deferred: 554 5.7.1 try again").encode())
    assert (event.status, event.code) == ("deferred", "554")


def test_queued_only_is_no_attempt():
    parser = SendmailParser()
    assert parser.parse((HEAD + "q1: to=<u@example.com>, delay=00:00:00, mailer=esmtp, "
                         "pri=30000, stat=queued").encode()) == ()
    assert parser.counters() == {"queued_only": 1}


def test_queue_timeout_expires_each_recipient_still_deferred_once():
    parser = SendmailParser(reference=datetime(2026, 12, 31).timestamp())
    for rcpt in ("a@d.example", "b@d.example", "c@ok.example"):
        parser.parse((HEAD + f"Q1: to=<{rcpt}>, delay=4+23:00:00, mailer=esmtp, pri=1, "
                      "relay=x, dsn=4.3.1, stat=Deferred: 431 4.3.1 full").encode())
    parser.parse((HEAD + "Q1: to=<c@ok.example>, delay=4+23:00:01, mailer=esmtp, pri=1, "
                  "relay=x, dsn=2.0.0, stat=Sent (Ok: queued as X)").encode())
    events = parser.parse((HEAD + "Q1: Q2: sender notify: Cannot send message for 5 days")
                          .encode())
    assert [(e.status, e.recipient, e.code, e.enhanced) for e in events] == [
        ("expired", "a@d.example", "431", "4.3.1"), ("expired", "b@d.example", "431", "4.3.1")]
    assert parser.parse((HEAD + "Q1: Q3: postmaster notify: Cannot send message for 5 days")
                        .encode()) == ()
    assert parser.parse((HEAD + "Q4: Q5: sender notify: Warning: could not send message for past "
                         "4 hours").encode()) == ()


def test_postfix_and_foreign_lines_with_stat_are_ignored():
    parser = SendmailParser()
    assert parser.parse(b"Apr  2 00:15:25 mx postfix/smtp[1]: ABC: to=<a@b.example>, relay=x, "
                        b"delay=1, dsn=2.0.0, status=sent (250 ok) stat=") == ()
    assert parser.parse(b"Apr  2 00:15:25 mx foo[1]: stat=ok") == ()


def test_broken_delivery_lines_are_not_understood():
    with pytest.raises(LineNotUnderstood) as err:
        SendmailParser().parse((HEAD + "q1: to=<u@example.com>, delay=00:00:01 stat=Sent").encode())
    assert err.value.reason == "malformed_delivery"
    with pytest.raises(LineNotUnderstood) as err:
        SendmailParser().parse(b"\xff\xfe stat=Sent")
    assert err.value.reason == "no_header"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(
    lambda a, b: a + b, st.sampled_from([HEAD.encode() + b"q1: to=", HEAD.encode() + b"q1: q2: ",
                                         HEAD.encode() + b"q1: to=<a@b>, stat="]),
    st.binary(max_size=200)))
def test_arbitrary_input_never_raises_anything_else(raw):
    for line in (raw, raw + b" stat=Deferred", raw + b": q2: DSN: Cannot send message for 5 days"):
        try:
            SendmailParser().parse(line)
        except LineNotUnderstood:
            pass
