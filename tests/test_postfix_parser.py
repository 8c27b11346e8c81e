"""The Postfix parser against real lines: the shared corpus samples and a real Postfix's 3-minute log."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest

from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.postfix import PostfixParser
from bounce_exporter.parsers.reply import find_reply

from .corpus import CORPUS, check_event, fragments, sample_id, whole_lines

DELIVERY_EVENTS = {"sent", "deferred", "bounced", "expired", "conn_fail"}
WHOLE_LINES = whole_lines("postfix")
FRAGMENTS = fragments("postfix")



@pytest.mark.parametrize("sample", WHOLE_LINES, ids=sample_id)
def test_whole_corpus_line(sample):
    events = PostfixParser().parse(sample["line"].encode())
    if sample["event"] not in DELIVERY_EVENTS or "status=" not in sample["line"]:
        assert events == ()  # not a delivery record (per-MX connect lines, rejects, removals)
        return
    assert len(events) == 1
    check_event(events[0], sample)


@pytest.mark.parametrize("sample", FRAGMENTS, ids=sample_id)
def test_fragment_reply(sample):
    expect = sample["expect"]
    line = sample["line"]
    if ": to=" in line and sample["event"] in DELIVERY_EVENTS:
        (event,) = PostfixParser().parse_delivery(0.0, "postfix", line)
        assert (event.code, event.enhanced, event.domain) == (
            expect["code"], expect["enhanced"], expect["domain"])
    elif "status=expired" in line:
        (event,) = PostfixParser().parse_expiry(0.0, "postfix", line)
        assert (event.status, event.domain, event.code) == ("expired", None, None)
    else:
        code, enhanced = find_reply(line)
        assert code == expect["code"]
        if "dsn=" not in line:
            assert enhanced == expect["enhanced"]


def test_leading_space_and_bare_recipient_fragments():
    parser = PostfixParser()
    (event,) = parser.parse_delivery(0.0, "postfix", "892A0205B6: to=ghost@LocalHost, relay=local, "
                                     "delay=0.05, dsn=5.1.1, status=bounced (unknown user)")
    assert (event.recipient, event.domain, event.enhanced) == ("ghost@LocalHost", "localhost", "5.1.1")


def test_idna_domain_is_normalised_to_a_labels():
    (event,) = PostfixParser().parse_delivery(
        0.0, "postfix", "ABC: to=<hans@Müller.Example>, relay=none, delay=1, dsn=4.4.1, "
        "status=deferred (connect to müller.example[192.0.2.1]:25: Connection refused)")
    assert event.domain == "xn--mller-kva.example"


def test_softbounce_is_a_deferral_even_with_a_5xx_text():
    (event,) = PostfixParser().parse_delivery(
        0.0, "postfix", "C76431E2: to=<login@sample.net>, relay=local, delay=2, "
        "status=SOFTBOUNCE (host sample.net[192.168.0.1] said: 550 User unknown)")
    assert (event.status, event.code) == ("deferred", "550")


def test_a_broken_delivery_line_is_not_understood():
    with pytest.raises(LineNotUnderstood) as err:
        PostfixParser().parse(b"Nov 28 12:22:37 mx1 postfix/smtp[1]: ABC: to=<a@b.example>, status=")
    assert err.value.reason == "malformed_delivery"
    with pytest.raises(LineNotUnderstood) as err:
        PostfixParser().parse(b"\xff\xfe garbage status=deferred")
    assert err.value.reason == "no_header"


def test_foreign_program_lines_with_status_are_ignored():
    parser = PostfixParser()
    assert parser.parse(b"Nov 28 12:22:37 mx1 systemd[1]: foo.service: status=0/SUCCESS") == ()
    assert parser.parse(b"Nov 28 12:22:37 mx1 postfix/smtp[1]: ABC: to=<a@b.example>, relay=x, "
                        b"delay=0, dsn=2.1.5, status=deliverable (250 ok)") == ()


def test_expiry_emits_one_event_per_recipient_still_deferred():
    parser = PostfixParser()
    head = "Nov 28 12:22:37 mx1 postfix/smtp[1]: Q1: to=<{0}>, relay=x[1.2.3.4]:25, delay=1, "
    for rcpt in ("a@disk.example", "b@disk.example", "c@ok.example"):
        parser.parse((head.format(rcpt) + "dsn=4.3.1, status=deferred (host x said: 431 4.3.1 "
                      "full (in reply to RCPT TO command))").encode())
    parser.parse((head.format("c@ok.example") + "dsn=2.0.0, status=sent (250 2.0.0 Ok)").encode())
    # the same queue id in another instance is another message
    events = parser.parse(b"Nov 28 12:24:37 mx1 postfix-out/qmgr[2]: Q1: from=<s@x>, "
                          b"status=expired, returned to sender")
    assert [(e.recipient, e.domain) for e in events] == [(None, None)]
    events = parser.parse(b"Nov 28 12:24:37 mx1 postfix/qmgr[2]: Q1: from=<s@x>, "
                          b"status=expired, returned to sender")
    assert [(e.status, e.recipient, e.code, e.enhanced) for e in events] == [
        ("expired", "a@disk.example", "431", "4.3.1"), ("expired", "b@disk.example", "431", "4.3.1")]


def test_removed_message_is_forgotten():
    parser = PostfixParser()
    parser.parse(b"Nov 28 12:22:37 mx1 postfix/smtp[1]: Q2: to=<a@d.example>, relay=x, delay=1, "
                 b"dsn=4.3.1, status=deferred (host x said: 431 4.3.1 full)")
    parser.parse(b"Nov 28 12:22:38 mx1 postfix/qmgr[2]: Q2: removed")
    events = parser.parse(b"Nov 28 12:24:37 mx1 postfix/qmgr[2]: Q2: from=<s@x>, "
                          b"status=expired, returned to sender")
    assert [e.recipient for e in events] == [None]


# -- the real Postfix log: every status= line, checked against an independent reading ---------

REAL_LOG = CORPUS / "real" / "postfix-3min.log"
_TO = re.compile(r" (\S+): to=<[^@>]*@([^>]+)>.*?(?:dsn=(\d\.\d+\.\d+), )?status=(\w+) \((.*)\)$")
_EXPIRED = re.compile(r" (\S+)/qmgr\[\d+\]: (\S+): from=.*status=expired")


def _independent_reading():
    """(domain, status, code, enhanced) per line, read with simpler patterns than the parser's."""
    expected = []
    domain_of_queue_id = {}
    for line in REAL_LOG.read_text().splitlines():
        match = _TO.search(line)
        if match:
            qid, domain, dsn, status, text = match.groups()
            reply = re.match(r"(?:host \S+ (?:said|refused to talk to me): )?(\d{3}) ", text)
            code = reply.group(1) if reply else None
            expected.append((domain, status, code, dsn))
            domain_of_queue_id[qid] = (domain, dsn, code)
            continue
        match = _EXPIRED.search(line)
        if match:
            domain, dsn, code = domain_of_queue_id[match.group(2)]
            expected.append((domain, "expired", code, dsn))
    return expected


def test_real_postfix_log_every_status_line():
    parser = PostfixParser(reference=os.path.getmtime(REAL_LOG))
    got = []
    with REAL_LOG.open("rb") as handle:
        for raw in handle:
            got.extend(parser.parse(raw.rstrip(b"\n")))
    assert [(e.domain, e.status, e.code, e.enhanced) for e in got] == _independent_reading()


def test_real_postfix_log_per_domain_counts():
    parser = PostfixParser(reference=os.path.getmtime(REAL_LOG))
    counts = Counter()
    with REAL_LOG.open("rb") as handle:
        for raw in handle:
            for event in parser.parse(raw.rstrip(b"\n")):
                counts[(event.domain, event.status)] += 1
    text = REAL_LOG.read_text()
    for domain in ("ok", "disk-full", "flaky", "nouser", "timeout"):
        for status in ("sent", "deferred", "bounced"):
            lines = len(re.findall(rf"to=<[^>]*@{domain}\.example>.*status={status} ", text))
            assert counts[(f"{domain}.example", status)] == lines
    assert counts[("disk-full.example", "deferred")] == 27
    assert counts[("disk-full.example", "expired")] == 3
    assert counts[("flaky.example", "deferred")] == 9
    assert counts[("flaky.example", "sent")] == 3
    assert counts[("nouser.example", "bounced")] == 3


def test_a_forced_expiry_by_postsuper_expires_the_pending_recipients():
    """``postsuper -f`` (Postfix 3.5+): qmgr logs status=force-expired; the message is given up
    like at the end of its queue lifetime."""
    parser = PostfixParser()
    parser.parse(b"Nov 28 12:22:37 mx1 postfix/smtp[1]: Q3: to=<a@disk.example>, relay=x, "
                 b"delay=1, dsn=4.3.1, status=deferred (host x said: 431 4.3.1 full)")
    events = parser.parse(b"Nov 28 12:30:00 mx1 postfix/qmgr[2]: Q3: from=<s@x>, "
                          b"status=force-expired, returned to sender")
    assert [(e.status, e.recipient, e.domain, e.code) for e in events] == [
        ("expired", "a@disk.example", "disk.example", "431")]
    events = parser.parse(b"Nov 28 12:31:00 mx1 postfix/qmgr[2]: Q4: from=<s@x>, "
                          b"status=force-expired, returned to sender")
    assert [(e.status, e.domain, e.text) for e in events] == [
        ("expired", None, "force-expired, returned to sender")]
