"""The bounded memory of pending deferrals (parsers/pending.py) and the parsers' pending_evictions."""

from __future__ import annotations

import logging

import pytest

from bounce_exporter.parsers.exchange import ExchangeParser
from bounce_exporter.parsers.exim import EximParser
from bounce_exporter.parsers.ledger import MAX_MESSAGES as MAX_PENDING_MESSAGES
from bounce_exporter.parsers.opensmtpd import OpenSMTPDParser
from bounce_exporter.parsers.pending import PendingMessages
from bounce_exporter.parsers.postfix import PostfixParser
from bounce_exporter.parsers.sendmail import SendmailParser

LOGGER = "bounce_exporter.parsers.pending"


def test_evicts_the_oldest_past_the_cap_and_counts_each_eviction():
    pending: PendingMessages[str, int] = PendingMessages(3)
    for i, key in enumerate("abc"):
        pending.remember(key, i)
    assert (list(pending), pending.evicted) == (["a", "b", "c"], 0)
    pending.remember("d", 3)
    assert (list(pending), pending.evicted) == (["b", "c", "d"], 1)
    assert "a" not in pending and pending.get("a") is None
    pending.remember("e", 4)
    pending.remember("f", 5)
    assert (list(pending), pending.evicted, len(pending)) == (["d", "e", "f"], 3, 3)


def test_a_key_remembered_again_keeps_its_place_without_refresh():
    pending: PendingMessages[str, int] = PendingMessages(3)
    for i, key in enumerate("abc"):
        pending.remember(key, i)
    pending.remember("a", 10)  # replaced in place: still the oldest, no eviction
    assert (list(pending), pending.get("a"), pending.evicted) == (["a", "b", "c"], 10, 0)
    pending.remember("d", 3)
    assert (list(pending), pending.evicted) == (["b", "c", "d"], 1)


def test_a_key_remembered_again_becomes_the_newest_with_refresh():
    pending: PendingMessages[str, int] = PendingMessages(3, refresh=True)
    for i, key in enumerate("abc"):
        pending.remember(key, i)
    pending.remember("a", 10)
    assert (list(pending), pending.evicted) == (["b", "c", "a"], 0)
    pending.remember("d", 3)
    assert (list(pending), pending.get("a"), pending.evicted) == (["c", "a", "d"], 10, 1)


def test_pop_forgets_and_frees_a_place():
    pending: PendingMessages[str, int] = PendingMessages(2)
    pending.remember("a", 1)
    pending.remember("b", 2)
    assert pending.pop("a") == 1
    assert pending.pop("a") is None and pending.pop("a", 0) == 0
    pending.remember("c", 3)
    assert (list(pending), pending.evicted) == (["b", "c"], 0)


def test_the_first_eviction_is_logged_once_per_memory(caplog):
    first: PendingMessages[int, None] = PendingMessages(2, name="postfix")
    second: PendingMessages[int, None] = PendingMessages(2, name="exim")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for key in range(10):
            first.remember(key, None)
        assert first.evicted == 8
        assert len(caplog.records) == 1
        assert caplog.records[0].levelno == logging.WARNING
        assert "postfix" in caplog.records[0].getMessage()
        for key in range(3):
            second.remember(key, None)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["postfix", "exim"]


def test_no_log_line_below_the_cap(caplog):
    pending: PendingMessages[int, None] = PendingMessages(5)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for key in range(5):
            pending.remember(key, None)
    assert (pending.evicted, caplog.records) == (0, [])


def test_a_cap_below_one_is_refused():
    with pytest.raises(ValueError):
        PendingMessages(0)


# -- the parsers -------------------------------------------------------------------------------

_POSTFIX_DEFERRAL = ("Nov 28 12:22:37 mx1 postfix/smtp[1]: Q{0:06X}: to=<u@disk.example>, "
                     "relay=x[1.2.3.4]:25, delay=1, dsn=4.3.1, "
                     "status=deferred (host x said: 431 4.3.1 full)\n")
_POSTFIX_EXPIRY = ("Nov 28 12:24:37 mx1 postfix/qmgr[2]: Q{0:06X}: from=<s@x>, "
                   "status=expired, returned to sender")


def test_postfix_counts_exactly_the_overflow_of_its_cap():
    parser = PostfixParser()
    overflow = 7
    block = "".join(_POSTFIX_DEFERRAL.format(i)
                    for i in range(MAX_PENDING_MESSAGES + overflow)).encode()
    assert len(parser.parse_block(block, failed=lambda raw, error: None)) == (
        MAX_PENDING_MESSAGES + overflow)
    assert parser.pending_evictions == overflow
    # the oldest were forgotten: their expiry names no recipient; the next one still does
    (forgotten,) = parser.parse(_POSTFIX_EXPIRY.format(overflow - 1).encode())
    (kept,) = parser.parse(_POSTFIX_EXPIRY.format(overflow).encode())
    assert (forgotten.recipient, kept.recipient) == (None, "u@disk.example")


def test_postfix_with_a_small_cap_forgets_the_oldest_messages():
    parser = PostfixParser(max_pending=5)
    for i in range(12):
        parser.parse(_POSTFIX_DEFERRAL.format(i).rstrip("\n").encode())
    parser.parse(_POSTFIX_DEFERRAL.format(11).rstrip("\n").encode())  # a known id: no eviction
    assert parser.pending_evictions == 7
    recipients = [parser.parse(_POSTFIX_EXPIRY.format(i).encode())[0].recipient
                  for i in range(12)]
    assert recipients == [None] * 7 + ["u@disk.example"] * 5
    assert parser.pending_evictions == 7


def test_exim_counts_its_evictions():
    parser = EximParser(max_pending=2)
    line = ("2026-11-28 12:22:38 1xXHR{0}-0003l1-0v == u@disk.example R=r T=remote_smtp defer (-44)"
            " H=127.0.0.1 [127.0.0.1]:2625: SMTP error from remote mail server after RCPT TO:"
            "<u@disk.example>: 431 4.3.1 disk is full")
    for letter in "abcde":
        (event,) = parser.parse(line.format(letter).encode())
        assert event.status == "deferred"
    assert parser.pending_evictions == 3


def test_sendmail_counts_its_evictions():
    parser = SendmailParser(max_pending=2)
    line = ("Apr  2 00:15:25 mta001 sendmail[1]: u31FFPtp03230{0}: to=<d@example.com>, "
            "delay=00:00:15, mailer=esmtp, pri=1, relay=[1.2.3.4], dsn=4.3.5, "
            "stat=Deferred: 451 4.3.5 Server configuration problem")
    for digit in range(4):
        (event,) = parser.parse(line.format(digit).encode())
        assert event.status == "deferred"
    assert parser.pending_evictions == 2


def test_opensmtpd_counts_its_evictions_and_a_new_deferral_refreshes_an_envelope():
    parser = OpenSMTPDParser(max_pending=2)
    line = ('Nov 28 12:22:45 mail smtpd[1]: 912fc4270770288f mta delivery evpid=ce2b550ff77d09a{0} '
            'from=<s@x> to=<u@disk.example> rcpt=<-> source="127.0.0.1" relay="127.0.0.1" '
            'delay=0s result="TempFail" stat="431 4.3.1 disk is full"')
    for envelope in "121":  # 1 is deferred again: the newest, so 3 evicts 2
        parser.parse(line.format(envelope).encode())
    assert parser.pending_evictions == 0
    parser.parse(line.format(3).encode())
    assert parser.pending_evictions == 1
    expire = ("Nov 28 12:24:58 mail smtpd[2]: relay: Expire for ce2b550ff77d09a{0}: from=<s@x>, "
              "to=<u@disk.example>, rcpt=<->, delay=2m8s, stat=Envelope expired")
    assert [parser.parse(expire.format(e).encode())[0].code for e in "213"] == [None, "431", "431"]


def test_exchange_remembers_nothing():
    assert ExchangeParser().pending_evictions == 0


def test_the_ledger_cap_is_configured_by_limits_max_pending_messages(tmp_path):
    """Issue 18's flood: the ledger is most of the memory (about 1 KiB a message) and of the state
    file; ``limits.max_pending_messages`` sets its cap for every source's parser (auto's chosen
    one too). The oldest messages go first, counted in the evictions."""
    from .helpers import exporters, local_config

    log = tmp_path / "mail.log"
    log.write_bytes(b"".join(
        f"Nov 28 12:22:{i % 60:02d} mx1 postfix/smtp[1]: Q{i:05d}: to=<u{i}@full.example>, "
        "relay=full.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.3.1, "
        "status=deferred (host full.example[192.0.2.1] said: 431 4.3.1 full (in reply to RCPT "
        "TO command))\n".encode() for i in range(30)))
    config = tmp_path / "config.yml"
    config.write_text("limits: {max_pending_messages: 20}\n")
    with exporters() as start:
        exporter = start(local_config(tmp_path, str(config), log_files=[str(log)],
                                      from_start=True))
        exporter.step()
        [waiting] = exporter.pipeline.in_flight()
        stats = exporter.state.sources[str(log)]
    assert [message for message, _ in waiting] == [f"Q{i:05d}" for i in range(10, 30)]
    assert stats.pending_evicted == 10
