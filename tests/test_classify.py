"""The classifier: kind from the MTA's decision, category from text rules, then codes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from bounce_exporter.classify.classifier import Classification, Classifier
from bounce_exporter.parsers.reply import find_reply_in_line

CORPUS = Path(__file__).parent.parent.parent / "shared" / "corpus"

# The status a parser gives each sample event. conn_fail lines are deferrals; "other" lines that
# carry a soft/hard expectation are interim per-host replies, after which the MTA keeps the message.
EVENT_STATUS = {"sent": "sent", "deferred": "deferred", "bounced": "bounced",
                "expired": "expired", "conn_fail": "deferred", "other": "deferred"}

# Samples whose expect.soft disagrees with the rule "kind follows the event status" on purpose.
KIND_EXCEPTIONS = {
    # The corpus README says expired lines count as soft; this Exchange expiry is marked hard
    # because Exchange reports it with a 5xx basic code. kind follows the MTA's decision (expired).
    "550 4.4.7 QUEUE.Expired; message expired in unreachable destination queue. Reason: ",
}


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


def samples() -> list[dict]:
    with open(CORPUS / "format-samples.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


GMAIL_SPAM = (
    "host gmail-smtp-in.l.google.com[2607:f8b0:400e:c04::1b] said: 550-5.7.1 [2607:4100:3:25:100::2"
    "      12] Our system has detected that this 550-5.7.1 message is likely unsolicited mail. To "
    "reduce the amount of spam sent 550-5.7.1 to Gmail, this message has been blocked. "
    "(in reply to end of DATA command)")
GMAIL_RATE = (
    "host gmail-smtp-in.l.google.com[74.125.136.26] said: 421-4.7.28 [192.0.2.4      15] Our "
    "system has detected an unusual rate of 421-4.7.28 unsolicited mail originating from your IP "
    "address. (in reply to end of DATA command)")
MS_BUSY = ("host hotmail-com.olc.protection.outlook.com[192.0.2.1] said: 451 4.7.500 Server busy. "
           "Please try again later from [192.0.2.2]. (AS761) (in reply to RCPT TO command)")
MS_REPUTATION = ("host outlook-com.olc.protection.outlook.com[192.0.2.255] said: 451 4.7.650 The "
                 "mail server [192.0.2.5] has been temporarily rate limited due to IP reputation. "
                 "(S775) (in reply to MAIL FROM command)")

CASES = [
    # (status, code, enhanced, text) -> (kind, category)
    ("deferred", None, None, "connect to mx.example.com[192.0.2.1]:25: Connection refused",
     "soft", "network"),
    ("deferred", None, "4.4.1", "connect to icloud.se[17.253.142.4]:25: Connection timed out",
     "soft", "network"),
    ("deferred", None, None, "connect to mail2.example.it[192.0.2.21]:25: No route to host",
     "soft", "network"),
    ("deferred", None, "4.4.2", ("lost connection with mx.example.com[192.0.2.44] while receiving "
     "the initial server greeting"), "soft", "network"),
    ("deferred", None, None, ("conversation with mail.example.com timed out while sending end of "
     "data -- message may be sent more than once"), "soft", "network"),
    ("deferred", None, None, "Network error on destination MXs", "soft", "network"),
    ("deferred", None, None, ("Host or domain name not found. Name service error for "
     "name=mail.example.com type=MX: Host not found, try again"), "soft", "dns"),
    ("bounced", None, "5.4.4", ("Host or domain name not found. Name service error for "
     "name=hotmai.com type=A: Host found but no data record of requested type"), "hard", "dns"),
    ("deferred", None, None, "TLS session: (tls lib connect fn): timed out", "soft", "tls"),
    ("deferred", None, None, "Cannot start TLS: handshake failure", "soft", "tls"),
    # text beats the basic code: 530 alone would be smtp_auth
    ("bounced", "530", "5.7.0", "530 5.7.0 Must issue a STARTTLS command first", "hard", "tls"),
    ("deferred", "554", "4.0.0", ("host mx.blocked.example[192.0.2.7] refused to talk to me: 554 "
     "mx.blocked.example ESMTP not accepting messages from your IP"), "soft", "blocklisted"),
    ("bounced", None, None, "mail for mail.example.com loops back to myself", "hard", "local"),
    ("deferred", None, None, "delivery temporarily suspended: transport is unavailable",
     "soft", "local"),
    ("deferred", "550", "5.7.1", ('Error (temporary failure: "mail.lmtp: LMTP server error: 550 '
     '5.7.1 <p@forge.example> Permanent failure: unrecognized patch header format")'),
     "soft", "local"),
    ("deferred", "452", "4.1.1", ("452 4.1.1 <u@example.com> user is over quota, please try again "
     "later (in reply to RCPT TO command)"), "soft", "mailbox_full"),
    ("bounced", "554", "5.2.2", ("554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:"
     "QuotaExceededException.MapiExceptionShutoffQuotaExceeded"), "hard", "mailbox_full"),
    ("bounced", "552", "5.2.2", "552 5.2.2 Mailbox full", "hard", "mailbox_full"),
    ("deferred", "452", None, "452 Insufficient system storage, try again later",
     "soft", "system_full"),
    ("bounced", "550", "5.7.1", GMAIL_SPAM, "hard", "spam_content"),
    ("deferred", "451", None, ("451 DT:SPM 163 mx13,P8CowECpNVM_oEVaenoEAQ--.23796S3 1514512449, "
     "please try again 15min later"), "soft", "spam_content"),
    ("deferred", "451", "4.7.500", MS_BUSY, "soft", "rate_limited"),
    ("deferred", "451", "4.7.650", MS_REPUTATION, "soft", "rate_limited"),
    ("deferred", "421", "4.7.28", GMAIL_RATE, "soft", "rate_limited"),
    ("deferred", "421", "4.7.0", ("421 4.7.0 [TSS04] Messages from 192.0.2.66 temporarily deferred "
     "due to unexpected volume or user complaints - 4.16.55.1"), "soft", "rate_limited"),
    ("deferred", "450", "4.2.1", ("450-4.2.1 The user you are trying to contact is receiving mail "
     "at a rate that 450-4.2.1 prevents additional messages from being delivered."),
     "soft", "rate_limited"),
    ("deferred", "450", "4.2.0", ("450 4.2.0 <u@lists.example.org>: Recipient address rejected: "
     "Greylisted, see http://postgrey.schweikert.ch/help/lists.example.org.html"),
     "soft", "greylisted"),
    ("bounced", "554", "5.7.1", ("554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked "
     "using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.9"), "hard",
     "blocklisted"),
    ("deferred", "571", "4.0.0", ("host relay.verizon.net[192.0.2.11] refused to talk to me: 571 "
     "Email from 192.0.2.138 is currently blocked by Verizon Online's anti-spam system."),
     "soft", "blocklisted"),
    ("bounced", "550", "5.1.1", ("550 5.1.1 <nobody@example.com>: Recipient address rejected: User "
     "unknown in virtual mailbox table"), "hard", "user_unknown"),
    ("bounced", None, "5.1.2", "Host unknown (Name server: outlook.comm: host not found)",
     "hard", "host_unknown"),
    ("bounced", "556", "5.1.10", "556 5.1.10 Recipient address has null MX", "hard",
     "host_unknown"),
    ("bounced", "552", "5.3.4", "552 5.3.4 Message size exceeds fixed limit", "hard",
     "message_too_big"),
    ("deferred", "535", "4.7.8", ("delivery temporarily suspended: SASL authentication failed; "
     "server smtp.example.com[192.0.2.10] said: 535 5.7.8 Error: authentication failed: "
     "authentication failure"), "soft", "smtp_auth"),
    ("deferred", "421", "4.4.0", "421 4.4.0 Remote server response was not RFC", "soft",
     "protocol"),
    # codes only: enhanced subject.detail, then the basic code
    ("deferred", "451", "4.3.5", "451 4.3.5 Server configuration problem", "soft", "unavailable"),
    ("bounced", "550", "5.1.1", "550 5.1.1 gone", "hard", "user_unknown"),
    # Postfix's synthesised 4.0.0 names no cause: the basic code 421 does
    ("deferred", "421", "4.0.0", "421 Service not available", "soft", "unavailable"),
    # an unregistered detail falls back to its subject (X.7.X); Microsoft's 5.7.606-649 are bans
    ("bounced", "550", "5.7.606", "550 5.7.606 Access denied", "hard", "blocklisted"),
    ("bounced", "550", "5.7.999", "550 5.7.999 Access denied", "hard", "policy_blocked"),
    ("bounced", "550", None, "550 Perm error", "hard", "other"),
    ("deferred", None, None, "retry time not reached", "soft", "other"),
    # kind is what the MTA decided, whatever the first digit says
    ("deferred", "554", None, "host mx.example.com[192.0.2.3] refused to talk to me: 554 go away",
     "soft", "policy_blocked"),
    ("bounced", "452", "4.2.2", "452 4.2.2 Mailbox full", "hard", "mailbox_full"),
    # expired keeps the cause when one is known
    ("expired", "431", "4.3.1", ("431 4.3.1 STOREDRV.Deliver; disk is full and the server cannot "
     "accept new messages"), "soft", "system_full"),
    ("expired", None, None, "retry timeout exceeded", "soft", "expired"),
    ("expired", None, None, "status=expired, returned to sender", "soft", "expired"),
    ("expired", "550", "4.4.7", ("550 4.4.7 QUEUE.Expired; message expired in unreachable "
     "destination queue. Reason: "), "soft", "expired"),
    # provider rules that override the registry's meaning of a reused code
    ("deferred", "421", "4.7.27", ("421-4.7.27 Your email has been rate limited because SPF "
     "authentication 421-4.7.27 didn't pass for this message."), "soft", "sender_auth"),
    ("deferred", "421", "4.7.29", "421-4.7.29 ... wasn't sent over a TLS connection", "soft",
     "tls"),
    # ...but only with the provider's words: the registry's X.7.27 (sender null MX) otherwise
    ("bounced", "550", "5.7.27", ("550 5.7.27 <a@example.com>: Sender address rejected: Domain "
     "example.com does not accept mail (nullMX)"), "hard", "sender_rejected"),
    ("bounced", "550", "5.7.27", "550 5.7.27 rejected", "hard",
     "sender_rejected"),
    ("bounced", "553", "5.7.2", ("553 5.7.2 [TSS09] All messages from 192.0.2.66 will be "
     "permanently deferred; Retrying will NOT succeed."), "hard", "blocklisted"),
    ("bounced", "554", "5.7.9", "554 5.7.9 Message not accepted for policy reasons.", "hard",
     "policy_blocked"),  # the registry's X.7.9 would say a weak AUTH mechanism
    ("bounced", "550", "5.4.1", ("550 5.4.1 Recipient address rejected: Access denied. "
     "AS(201806281)"), "hard", "user_unknown"),
    ("deferred", "432", "4.3.2", "432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded",
     "soft", "rate_limited"),
    ("deferred", None, "4.4.1", "connect to private/dovecot-lmtp: Connection refused", "soft",
     "local"),
    ("deferred", None, None, "mail for example.com loops back to myself", "soft", "local"),
]


@pytest.mark.parametrize(("status", "code", "enhanced", "text", "kind", "category"), CASES)
def test_classify_table(classifier, status, code, enhanced, text, kind, category):
    assert classifier.classify(status, code, enhanced, text) == Classification(kind, category)


def test_disk_full_431_deferred_is_soft_system_full(classifier):
    assert classifier.classify("deferred", "431", "4.3.1", "") == Classification("soft",
                                                                               "system_full")
    assert classifier.classify("deferred", "431", "4.3.1", "431 4.3.1 Insufficient system "
                               "storage") == Classification("soft", "system_full")


def test_sent_is_never_a_failure_whatever_the_text(classifier):
    assert classifier.classify("sent", "250", "2.0.0", "250 2.0.0 Ok: queued as 4HnkK7") == \
        Classification(None, "none")
    assert classifier.classify("sent", "250", None, "mailbox full, connection refused") == \
        Classification(None, "none")


def test_kind_of_follows_the_status(classifier):
    assert classifier.kind_of("sent") is None
    assert classifier.kind_of("deferred") == "soft"
    assert classifier.kind_of("expired") == "soft"
    assert classifier.kind_of("bounced") == "hard"
    with pytest.raises(ValueError, match="unknown delivery status 'queued'"):
        classifier.kind_of("queued")
    with pytest.raises(ValueError):
        classifier.classify("queued", None, None, "")


def test_categories_is_the_catalogs_closed_set(classifier):
    assert classifier.categories == tuple(classifier.catalog.categories)
    assert classifier.categories[0] == "none"
    assert "system_full" in classifier.categories


def test_format_samples_kind_matches_the_expectation(classifier):
    checked = 0
    exceptions_seen = set()
    for sample in samples():
        expect = sample["expect"]
        if expect["soft"] is None:
            continue
        status = EVENT_STATUS[sample["event"]]
        verdict = classifier.classify(status, expect["code"], expect["enhanced"], sample["line"])
        assert classifier.kind_of(status) == verdict.kind
        if sample["line"] in KIND_EXCEPTIONS:
            exceptions_seen.add(sample["line"])
            assert verdict.kind == "soft"
            continue
        assert verdict.kind == ("soft" if expect["soft"] else "hard"), sample["line"]
        checked += 1
    assert exceptions_seen == KIND_EXCEPTIONS
    assert checked >= 80


def test_no_sample_gets_a_category_outside_the_closed_set(classifier):
    for sample in samples():
        expect = sample["expect"]
        for status in ("sent", "deferred", "bounced", "expired"):
            verdict = classifier.classify(status, expect["code"], expect["enhanced"],
                                          sample["line"])
            assert verdict.category in classifier.categories


def test_code_less_failures_get_a_transport_or_local_cause(classifier):
    for sample in samples():
        if sample["event"] == "conn_fail":
            verdict = classifier.classify("deferred", None, None, sample["line"])
            assert verdict.category in {"network", "dns", "tls", "local"}, sample["line"]


def test_extra_rules_come_before_the_catalog(tmp_path):
    classifier = Classifier.load(extra_text_rules=[
        {"name": "our_relay_disk", "pattern": r"disk is full", "category": "local"},
        {"name": "ms_5xx", "code": "550", "enhanced": r"5\.7\.6\d\d", "category": "rate_limited"},
    ])
    text = "431 4.3.1 STOREDRV.Deliver; disk is full"
    assert classifier.classify("deferred", "431", "4.3.1", text).category == "local"
    # a constraint-only rule matches any text, but only with its codes
    assert classifier.classify("bounced", "550", "5.7.606", "anything").category == "rate_limited"
    assert classifier.classify("bounced", "550", "5.7.1", "anything").category == "policy_blocked"
    assert classifier.decided_by("550", "5.7.606", "x").name == "ms_5xx"


def test_decided_by_names_the_rule_or_code(classifier):
    assert classifier.decided_by(None, None, "Connection refused").name == "network"
    assert classifier.decided_by("431", "4.3.1", "no text rule here").code == "X.3.1"
    assert classifier.decided_by("421", "4.0.0", "no text rule here").code == "421"
    assert classifier.decided_by(None, None, "nothing at all") is None


def naive_first_rule(classifier: Classifier, code, enhanced, text) -> str | None:
    """The definition the fast matcher must agree with: every rule in order, re.IGNORECASE."""
    for rule in classifier.rules:
        if rule.code and not (code and re.fullmatch(rule.code, code)):
            continue
        if rule.enhanced and not (enhanced and re.fullmatch(rule.enhanced, enhanced)):
            continue
        if rule.pattern is None or re.search(rule.pattern, text, re.IGNORECASE):
            return rule.name
    return None


def corpus_texts() -> list[tuple[str | None, str | None, str]]:
    texts = {(s["expect"]["code"], s["expect"]["enhanced"], s["line"]) for s in samples()}
    for log in sorted((CORPUS / "real").glob("*.log")):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            reply = re.search(r"\b([245]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})?", line)
            code, enhanced = (reply.group(1), reply.group(2)) if reply else (None, None)
            texts.add((code, enhanced, re.sub(r"[0-9A-F]{10,}", "ID", line)))
    for case in CASES:
        texts.add((case[1], case[2], case[3]))
    from .test_explain import PROVIDER_CASES, SISIMAI_DISAGREEMENTS

    for text, code, enhanced, *_ in PROVIDER_CASES:
        texts.add((code, enhanced, text))
    for text, *_ in SISIMAI_DISAGREEMENTS:
        texts.add((*find_reply_in_line(text), text))
    return sorted(texts, key=repr)


def test_the_fast_matcher_agrees_with_trying_every_rule_in_order(classifier):
    texts = corpus_texts()
    assert len(texts) > 300
    for code, enhanced, text in texts:
        rule = classifier.decided_by(code, enhanced, text)
        fast = rule.name if rule is not None and hasattr(rule, "pattern") else None
        assert fast == naive_first_rule(classifier, code, enhanced, text), text


def test_classify_is_fast_enough_for_the_hot_path(classifier):
    # The naive one-alternation version took ~300 us a reply; the prefiltered one a few us.
    # The bound is loose on purpose (shared CI machines): it catches a return to the slow path.
    replies = [(EVENT_STATUS[s["event"]], s["expect"]["code"], s["expect"]["enhanced"],
                s["line"][-200:]) for s in samples()]
    best = float("inf")
    for _ in range(5):
        classifier._memo.clear()  # measure the matching, not the memo of repeated replies
        start = time.perf_counter()
        for status, code, enhanced, text in replies:
            classifier.classify(status, code, enhanced, text)
        best = min(best, (time.perf_counter() - start) / len(replies))
    assert best < 60e-6


def test_repeated_replies_are_remembered_and_the_memo_is_bounded(classifier):
    from bounce_exporter.classify import classifier as classify

    text = "host mx[192.0.2.1] said: 431 4.3.1 STOREDRV.Deliver; disk is full"
    first = classifier.classify("deferred", "431", "4.3.1", text)
    assert classifier._memo[("431", "4.3.1", text)] == "system_full"
    assert classifier.classify("bounced", "431", "4.3.1", text) == Classification("hard",
                                                                                  "system_full")
    assert first == Classification("soft", "system_full")
    # the fallback still follows the status when the memo says "no cause"
    assert classifier.classify("expired", None, None, "zzz").category == "expired"
    assert classifier.classify("deferred", None, None, "zzz").category == "other"
    long_text = "x" * (classify._MEMO_TEXT + 1)
    classifier.classify("deferred", None, None, long_text)
    assert (None, None, long_text) not in classifier._memo
    fresh = Classifier.load()
    for i in range(classify._MEMO_LIMIT + 10):
        fresh.classify("deferred", "450", None, f"450 try again {i}")
    assert len(fresh._memo) <= classify._MEMO_LIMIT


def test_a_code_bound_rule_costs_nothing_to_other_replies(classifier):
    """The prefilter of replies that meet no constraint leaves out provider rules bound to codes
    (their keys "spf", "tls" would otherwise be looked for in every reply)."""
    plain = classifier._scope("250", "2.0.0").prefilter
    bound = classifier._scope("421", "4.7.27").prefilter
    assert "spf" not in plain._by_key and "spf" in bound._by_key
