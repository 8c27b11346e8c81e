"""`bounce-exporter explain`: every catalog entry explained, provider replies classified right where
the best public classifier (Sisimai) gives up, conflicts between codes resolved on purpose, and the
command as users run it (bench/sisimai_compare.py reruns the comparison over PROVIDER_CASES)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bounce_exporter.classify.catalog import KINDS
from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.classify.explain import KEYS, delivery_event, explain, render

from .corpus import CORPUS, REPO, format_samples

REAL_LOG = CORPUS / "real" / "postfix-3min.log"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bounce_exporter", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, check=False, **kwargs)


# --- 431: the reason this exporter exists ---------------------------------------------------------

def test_explain_431_reads_well_for_a_mail_admin(classifier):
    e = explain("431", classifier)
    assert (e.code, e.enhanced, e.kind, e.category, e.severity) == (
        "431", None, "soft", "system_full", "high")
    assert "out of disk space" in e.meaning and "will not recover by itself" in e.meaning
    assert "postmaster" in e.sender_action and "does not clear by itself" in e.sender_action
    assert "free disk space" in e.recipient_action
    assert "retries with back-off" in e.mta_next
    assert "until the queue lifetime" in e.mta_next and "then bounces" in e.mta_next
    assert e.decided_by == "basic code 431 (catalog.yaml: basic_codes['431'])"
    assert e.note is None
    text = render(e)
    assert text.splitlines()[:2] == ["code        431", "enhanced    none"]
    for label in ("meaning", "kind", "category", "severity", "sender", "recipient", "MTA next",
                  "decided by"):
        assert any(line.startswith(label) for line in text.splitlines()), label
    assert all(len(line) <= 100 for line in text.splitlines())


def test_431_with_its_enhanced_code_and_4_3_1_alone_say_the_same(classifier):
    for text in ("431 4.3.1", "4.3.1", ("host mx[192.0.2.1] said: 431 4.3.1 STOREDRV.Deliver; disk "
                 "is full (in reply to RCPT TO command)")):
        e = explain(text, classifier)
        assert (e.kind, e.category, e.severity) == ("soft", "system_full", "high"), text
        assert "free disk space" in e.recipient_action, text
        assert "until the queue lifetime" in e.mta_next, text


# --- Every catalog entry is reachable -------------------------------------------------------------

def test_every_basic_code_explains_with_its_meaning(classifier):
    for code, info in classifier.catalog.basic_codes.items():
        e = explain(code, classifier)
        assert (e.code, e.enhanced) == (code, None)
        assert e.meaning.strip() and e.sender_action and e.recipient_action and e.mta_next
        assert e.meaning == info.meaning, code
        expected_kind = {"2": None, "3": None, "4": "soft", "5": "hard"}[code[0]]
        assert e.kind == expected_kind, code
        assert e.category in classifier.categories


def concrete_codes(key: str, classes: tuple[int, ...] | None) -> list[str]:
    """Codes that reach a catalog key: "X.3.1" -> 4.3.1/5.3.1 (its classes), "X.3.X" -> an
    unregistered detail, "4.X.X" -> a subject RFC 3463 does not define."""
    if key[0] != "X":
        return [f"{key[0]}.9.9"]
    digits = [str(c) for c in (classes or (5,))]
    detail = "999" if key.endswith(".X") else key.split(".")[2]
    return [f"{c}.{key.split('.')[1]}.{detail}" for c in digits]


def test_every_enhanced_entry_explains_with_its_meaning(classifier):
    checked = 0
    for key, info in classifier.catalog.enhanced_codes.items():
        for enhanced in concrete_codes(key, info.classes):
            e = explain(enhanced, classifier)
            assert (e.code, e.enhanced) == (None, enhanced)
            assert e.meaning.strip() and e.sender_action and e.recipient_action and e.mta_next
            assert e.meaning == info.meaning, (key, enhanced, e.decided_by)
            assert e.kind == {"2": None, "4": "soft", "5": "hard"}[enhanced[0]]
            checked += 1
    assert checked >= 120


def test_every_catalog_rule_says_what_it_means(classifier):
    for rule in classifier.catalog.text_rules:
        assert rule.meaning and rule.meaning.strip(), rule.name


def test_every_kind_and_severity_the_explanation_names_is_in_the_catalog(classifier):
    catalog = classifier.catalog
    assert set(catalog.kinds) == set(KINDS)
    for category in catalog.categories.values():
        assert category.severity in catalog.severities, category.name
        assert category.sender_action and category.recipient_action, category.name


# --- Provider replies: right where Sisimai is right, and where it gives up ------------------------

# (reply text, code, enhanced, kind judged from the reply, category). Texts are real replies with
# example addresses. "sisimai:" names what Sisimai 4.25 answers where it differs from us
# (bench/sisimai_compare.py).
PROVIDER_CASES = [
    # Google. Sisimai: undefined (no rule for 4.7.28's text; its Rhost table lacks it).
    (("host gmail-smtp-in.l.google.com[192.0.2.26] said: 421-4.7.28 [192.0.2.4      15] Our system "
     "has detected an unusual rate of 421-4.7.28 unsolicited mail originating from your IP "
     "address. To protect our 421-4.7.28 users from spam, mail sent from your IP address has "
     "been temporarily 421-4.7.28 rate limited. - gsmtp (in reply to end of DATA command)"),
     "421", "4.7.28", "soft", "rate_limited"),
    (("421-4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your SPF "
     "domain [example.com      15]. To protect our users from spam, mail sent from your domain "
     "has been temporarily rate limited. - gsmtp"), "421", "4.7.28", "soft", "rate_limited"),
    # Google reuses X.7.27 / X.7.29 / X.7.30: the registry would say null MX / ARC / REQUIRETLS.
    # The multi-line markers split the phrase ("SPF authentication 421-4.7.27 didn't pass").
    (("421-4.7.27 Your email has been rate limited because SPF authentication 421-4.7.27 didn't "
     "pass for this message. Gmail requires all bulk email 421-4.7.27 senders to authenticate "
     "with SPF. - gsmtp"), "421", "4.7.27", "soft", "sender_auth"),
    (("550-5.7.27 Your email has been blocked because the sender is unauthenticated. 550-5.7.27 "
     "Gmail requires all senders to authenticate with either SPF or DKIM. - gsmtp"),
     "550", "5.7.27", "hard", "sender_auth"),
    (("421-4.7.29 Your email has been rate limited because this message wasn't sent 421-4.7.29 "
     "over a TLS connection. Gmail requires all bulk email senders to use 421-4.7.29 TLS/SSL "
     "for SMTP connections. - gsmtp"), "421", "4.7.29", "soft", "tls"),
    (("421-4.7.30 Your email has been rate limited because DKIM authentication didn't 421-4.7.30 "
     "pass for this message. Gmail requires all email bulk senders to 421-4.7.30 authenticate "
     "with DKIM. - gsmtp"), "421", "4.7.30", "soft", "sender_auth"),
    (("550-5.7.30 Your email has been blocked because DKIM authentication didn't pass for "
      "550-5.7.30 "
     "this message. - gsmtp"), "550", "5.7.30", "hard", "sender_auth"),
    (("550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's "
     "550-5.7.26 DMARC policy. Please contact the administrator of example.com domain. - gsmtp"),
     "550", "5.7.26", "hard", "sender_auth"),
    (("421-4.7.0 This message does not have authentication information or fails to 421-4.7.0 pass "
     "authentication checks (SPF or DKIM). - gsmtp"), "421", "4.7.0", "soft", "sender_auth"),
    ("421-4.7.0 TLS required for RCPT domain, closing connection. - gsmtp", "421", "4.7.0", "soft",
     "tls"),
    (("550-5.7.25 [192.0.2.9] The IP address sending this message does not have a 550-5.7.25 PTR "
     "record setup, or the corresponding forward DNS entry does not 550-5.7.25 point to the "
     "sending IP. - gsmtp"), "550", "5.7.25", "hard", "sender_auth"),
    ("450-4.2.1 The user you are trying to contact is receiving mail too quickly. - gsmtp",
     "450", "4.2.1", "soft", "rate_limited"),
    ("552-5.2.2 The email account that you tried to reach is over quota and inactive. - gsmtp",
     "552", "5.2.2", "hard", "mailbox_full"),
    (("550-5.7.1 [192.0.2.9] Our system has detected that this message is 550-5.7.1 likely "
     "unsolicited mail. To reduce the amount of spam sent to Gmail, 550-5.7.1 this message has "
     "been blocked. - gsmtp"), "550", "5.7.1", "hard", "spam_content"),
    # Microsoft. Sisimai: undefined for 4.7.500 "Server busy ... (S77719)" without its rhost.
    (("host outlook-com.olc.protection.outlook.com[192.0.2.3] said: 451 4.7.500 Server busy. "
      "Please "
     "try again later from [192.0.2.2]. (S77719) [AM4PEPF00012345.eurprd04.prod.outlook.com] "
     "(in reply to RCPT TO command)"), "451", "4.7.500", "soft", "rate_limited"),
    (("451 4.7.650 The mail server [192.0.2.5] has been temporarily rate limited due to IP "
     "reputation. For e-mail delivery information, see https://postmaster.live.com (S775)"),
     "451", "4.7.650", "soft", "rate_limited"),
    (("550 5.7.1 Unfortunately, messages from [192.0.2.7] weren't sent. Please contact your "
     "Internet service provider since part of their network is on our block list (S3150)."),
     "550", "5.7.1", "hard", "blocklisted"),
    (("550 5.7.606 Access denied, banned sending IP [192.0.2.8]. To request removal from this list "
     "please visit https://sender.office.com/"), "550", "5.7.606", "hard", "blocklisted"),
    ("550 5.7.705 Access denied, tenant has exceeded threshold", "550", "5.7.705", "hard",
     "blocklisted"),
    ("550 5.7.708 Access denied, traffic not accepted from this IP.", "550", "5.7.708", "hard",
     "blocklisted"),
    (("550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
     "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]"), "550", "5.4.1", "hard",
     "user_unknown"),
    ("432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded", "432", "4.3.2", "soft",
     "rate_limited"),
    ("432 4.3.2 STOREDRV.Deliver; mailbox database is offline", "432", "4.3.2", "soft",
     "unavailable"),
    ("431 4.3.1 STOREDRV.Deliver; disk is full", "431", "4.3.1", "soft", "system_full"),
    # Yahoo / AOL. Sisimai calls TSS04 "blocked"; it is a volume/complaint deferral.
    (("421 4.7.0 [TSS04] Messages from 192.0.2.66 temporarily deferred due to unexpected volume or "
     "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"),
     "421", "4.7.0", "soft", "rate_limited"),
    (("553 5.7.2 [TSS09] All messages from 192.0.2.66 will be permanently deferred; Retrying will "
     "NOT succeed. See https://postmaster.yahooinc.com/error-codes"), "553", "5.7.2", "hard",
     "blocklisted"),
    (("554 5.7.9 Message not accepted for policy reasons.  See "
     "https://postmaster.yahooinc.com/error-codes"), "554", "5.7.9", "hard", "policy_blocked"),
    (("554 delivery error: dd This user doesn't have a yahoo.com account (nobody@yahoo.com) [0] - "
     "mta1234.mail.gq1.yahoo.com"), "554", None, "hard", "user_unknown"),
    # Block lists in 5.7.1 texts.
    (("554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org; "
     "https://www.spamhaus.org/query/ip/192.0.2.9"), "554", "5.7.1", "hard", "blocklisted"),
    ("550 5.7.1 Blocked - see https://www.spamcop.net/bl.shtml?192.0.2.9", "550", "5.7.1", "hard",
     "blocklisted"),
    (("554 Service unavailable; Client host [192.0.2.9] blocked using Barracuda Reputation, see "
     "http://www.barracudanetworks.com/reputation/?r=1&ip=192.0.2.9"), "554", None, "hard",
     "blocklisted"),
    ("554 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.9", "554", None, "hard",
     "blocklisted"),
    (("550 5.7.1 JunkMail rejected - mx.example.net [192.0.2.9] is in an RBL: see "
     "http://www.spamhaus.org"), "550", "5.7.1", "hard", "blocklisted"),
    # Mailbox full, as 552 5.2.2 and as 452 4.1.1 "over quota" (4.1.1 alone reads "no such user").
    ("552 5.2.2 <nobody@example.com>: Mailbox full", "552", "5.2.2", "hard", "mailbox_full"),
    ("452 4.1.1 <nobody@example.com> user is over quota, please try again later", "452", "4.1.1",
     "soft", "mailbox_full"),
    # Without a reply code. Sisimai calls a connect timeout "expired".
    ("connect to mx.example.com[192.0.2.1]:25: Connection timed out", None, None, "soft",
     "network"),
    ("connect to mx.example.com[192.0.2.1]:25: Connection refused", None, None, "soft", "network"),
    ("connect to mx.example.com[192.0.2.1]:25: No route to host", None, None, "soft", "network"),
    ("lost connection with mx.example.com[192.0.2.1] while sending RCPT TO", None, None, "soft",
     "network"),
    (("Host or domain name not found. Name service error for name=example.com type=MX: Host not "
     "found, try again"), None, None, "soft", "dns"),
    (("Host or domain name not found. Name service error for name=hotmai.com type=A: Host found "
     "but no data record of requested type"), None, None, "hard", "dns"),
    ("TLS is required, but was not offered by host mx.example.com[192.0.2.1]", None, None, "soft",
     "tls"),
    ("Cannot start TLS: handshake failure", None, None, "soft", "tls"),
    (("certificate verification failed for mx.example.com[192.0.2.1]:25: untrusted issuer "
     "/C=US/O=Example CA/CN=R3"), None, None, "soft", "tls"),
    # Our own side: never the recipient domain's fault.
    ("delivery temporarily suspended: transport is unavailable", None, None, "soft", "local"),
    ("mail for example.com loops back to myself", None, None, "hard", "local"),
    (("delivery temporarily suspended: connect to transport private/dovecot-lmtp: Connection "
     "refused"), None, None, "soft", "local"),
    ("lost connection with /var/run/dovecot/lmtp while receiving the initial server greeting",
     None, None, "soft", "local"),
    # qmail: spaces logged as "_", the enhanced code last in "(#5.1.1)".
    ("Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/", None, "5.1.1", "hard", "user_unknown"),
    (("Connected_to_192.0.2.1_but_sender_was_rejected./Remote_host_said:_451_4.3.0_Temporary_"
     "lookup_failure/"), "451", "4.3.0", "soft", "unavailable"),
    ("511 sorry, no mailbox here by that name (#5.1.1 - chkuser)", "511", "5.1.1", "hard",
     "user_unknown"),
]


@pytest.mark.parametrize(("text", "code", "enhanced", "kind", "category"), PROVIDER_CASES,
                         ids=[f"{i:02d}" for i in range(len(PROVIDER_CASES))])
def test_provider_replies(classifier, text, code, enhanced, kind, category):
    e = explain(text, classifier)
    assert (e.code, e.enhanced, e.kind, e.category) == (code, enhanced, kind, category), (
        e.decided_by)
    # the classifier the exporter runs agrees with explain on the category
    status = {"soft": "deferred", "hard": "bounced"}[kind]
    assert classifier.classify(status, code, enhanced, text).category == category


def test_at_least_25_provider_cases():
    assert len(PROVIDER_CASES) >= 25


# Every kind of disagreement bench/sisimai_compare.py reports (Sisimai 4.25, Debian 12), with why
# our answer is the one to act on: (text, our category, Sisimai's reason, why).
SISIMAI_DISAGREEMENTS = [
    ("connect to mx.example.com[192.0.2.1]:25: Connection timed out", "network", "expired",
     "nothing expired: the MX did not answer this attempt; the MTA retries"),
    ("Deferred: Connection refused by [127.0.0.1]", "network", "blocked",
     "no listener (or a firewall) on port 25 is not a policy block; sendmail deferred it"),
    (("Host or domain name not found. Name service error for name=example.com type=MX: Host not "
     "found, try again"), "dns", "hostunknown",
     ("'try again' is a temporary resolver failure (SERVFAIL, 4.4.3): the domain may well exist, "
     "so the address must not be dropped")),
    (("Host or domain name not found. Name service error for name=hotmai.com type=A: Host found "
     "but no data record of requested type"), "dns", "hostunknown",
     ("the domain exists but has no usable MX/A record: our dns category (X.4.4) with kind hard, "
     "so it still bounces and explain says to check the address")),
    (('Error (temporary failure: "mail.lmtp: LMTP server error: 550 5.7.1 <p@forge.example> '
     'Permanent failure: unrecognized patch header format")'), "local", "securityerror",
     "our own LMTP delivery failed; the recipient domain (ours) is not under attack"),
    (("550-5.7.27 Your email has been blocked because the sender is unauthenticated. 550-5.7.27 "
     "Gmail requires all senders to authenticate with either SPF or DKIM."), "sender_auth",
     "notaccept", "Gmail reuses X.7.27 (registry: sender null MX) for failed SPF"),
    (("421-4.7.27 Your email has been rate limited because SPF authentication 421-4.7.27 didn't "
     "pass for this message."), "sender_auth", "spamdetected",
     "the fix is the SPF record, not the content"),
    (("421-4.7.29 Your email has been rate limited because this message wasn't sent 421-4.7.29 "
     "over a TLS connection."), "tls", "spamdetected", "the fix is STARTTLS on our side"),
    ("554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org",
     "blocklisted", "spamdetected",
     "an IP on a block list: delisting fixes it, not the message content"),
    ("550 5.7.1 JunkMail rejected - mx.example.net [192.0.2.9] is in an RBL", "blocklisted",
     "spamdetected", "an IP on a block list (RBL)"),
    (("host outlook-com.olc.protection.outlook.com[192.0.2.255] said: 451 4.7.650 The mail server "
     "[192.0.2.5] has been temporarily rate limited due to IP reputation. (S775)"), "rate_limited",
     "blocked", "temporary throttling that clears as reputation recovers, not a block"),
    (("host outlook-com.olc.protection.outlook.com[192.0.2.3] said: 451 4.7.500 Server busy. "
      "Please "
     "try again later from [192.0.2.2]. (S77719)"), "rate_limited", "systemerror",
     "Microsoft's reputation throttle (S77719), not a failing server"),
    (("421 4.7.0 [TSS04] Messages from 192.0.2.66 temporarily deferred due to unexpected volume or "
     "user complaints"), "rate_limited", "blocked",
     "Yahoo's volume/complaint deferral; TSS09 (permanent) is the block"),
    ("432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded", "rate_limited", "notaccept",
     ("Exchange throttles one busy mailbox; the server does accept mail (Sisimai's own Exchange "
     "table says toomanyconn, but only when it knows the remote host)")),
    (("421-4.7.0 [192.0.2.4 15] Our system has detected an unusual rate of 421-4.7.0 unsolicited "
     "mail originating from your IP address."), "rate_limited", "spamdetected",
     "a deferral that throttles the IP by reputation: slow down, nothing in this message"),
    (("host alt1.gmail-smtp-in.l.google.com[192.0.2.26] said: 450-4.2.1 The user you are trying to "
     "contact is receiving mail at a rate that 450-4.2.1 prevents additional messages from being "
     "delivered."), "rate_limited", "suspend",
     ("a per-recipient rate limit; the mailbox is not disabled (4.2.1's registry meaning). "
     "Sisimai's Google table has it, but the multi-line marker splits its phrase")),
    (("host gmail-smtp-in.l.google.com[192.0.2.27] said: 550-5.7.1 [192.0.2.9 12] Our system has "
     "detected that this 550-5.7.1 message is likely unsolicited mail."), "spam_content",
     "securityerror", "Gmail judged the content; the multi-line marker splits Sisimai's phrase"),
    # Kinds the finer category set (issue 15) and the provider replies brought:
    (("553 5.7.2 [TSS09] All messages from 192.0.2.66 will be permanently deferred; Retrying will "
      "NOT succeed."), "blocklisted", "securityerror",
     "Yahoo blocks the IP for its reputation (complaints, volume): delisting fixes it, not AUTH/TLS"),
    ("550-5.2.1 The email account that you tried to reach is inactive. - gsmtp",
     "mailbox_inactive", "filtered",
     "the mailbox is inactive (X.2.1, Gmail's DisabledUser page): stop sending, no filter to fix"),
    ("550 permanent failure for one or more recipients (nobody@customer.example:blocked)",
     "policy_blocked", "blocked",
     "a Barracuda gateway's local policy; no block list named, so delisting cannot fix it"),
    ("554 5.7.9 Message not accepted for policy reasons.", "policy_blocked", "securityerror",
     ("Yahoo's policy refusal (content, authentication or reputation); X.7.9's registry meaning "
     "(weak AUTH mechanism) does not apply: no AUTH takes place on port 25")),
    ("550 5.7.1 Sender address rejected: DMARC policy violation", "sender_auth", "rejected",
     "the sender address is fine; its domain's DMARC check failed: fix SPF/DKIM alignment"),
    ("452 4.3.1 Temporary System Error", "unavailable", "systemfull",
     "Zoho's text says a temporary error of its system (not taking mail now), not a full disk"),
    ("552 5.7.1 virus Win.Test.EICAR_HDB-1 detected by Zoho Mail", "virus", "securityerror",
     "a virus found in the message: scan it, nothing to fix in AUTH or TLS"),
    ("553 5.7.1 <sender@example.com>: Sender address rejected: not logged in", "smtp_auth",
     "rejected",
     ("the address is fine: the submission server (smtp.protonmail.ch) wants SMTP AUTH first "
      "(Postfix's reject_sender_login_mismatch wording); log in, nothing to change in the sender")),
    ("550 5.7.1 Policy rejection on the target address", "mailbox_inactive", "securityerror",
     ("Yandex: the recipient's account is blocked for User Agreement violations (its non-delivery "
      "page); stop sending to it, nothing to fix in AUTH or TLS")),
]


@pytest.mark.parametrize(("text", "category", "sisimai", "why"), SISIMAI_DISAGREEMENTS,
                         ids=[case[2] + "-" + case[1] for case in SISIMAI_DISAGREEMENTS])
def test_where_sisimai_differs_we_are_right(classifier, text, category, sisimai, why):
    assert explain(text, classifier).category == category, why


# --- Conflicts, resolved on purpose --------------------------------------------------------------

def test_basic_and_enhanced_class_disagree_the_basic_code_wins_with_a_note(classifier):
    e = explain("550 4.4.7 QUEUE.Expired; message expired in unreachable destination queue. "
                "Reason: ", classifier)
    assert (e.code, e.enhanced, e.kind, e.category) == ("550", "4.4.7", "hard", "expired")
    assert "the basic code 550 says hard, the enhanced code 4.4.7 says soft" in e.note
    assert "basic code wins" in e.note
    # ...while the exporter counts what the MTA did: Exchange expired it, a soft final failure
    assert classifier.classify("expired", "550", "4.4.7", e.text).kind == "soft"


def test_postfix_dsn_4_7_1_beside_a_554_greeting(classifier):
    line = next(line for line in REAL_LOG.read_text().splitlines()
                if "dsn=4.7.1" in line and "refused to talk to me: 554" in line)
    # The whole line: Postfix skipped the host and deferred; explain follows it, as parse does
    # (issue 14: it said hard beside parse's soft)
    e = explain(line, classifier)
    assert (e.status, e.code, e.enhanced, e.kind, e.category) == (
        "deferred", "554", "4.7.1", "soft", "blocklisted")
    assert e.note == ("the MTA decided: status=deferred, soft, although the reply's code alone "
                      "says hard (what the MTA does is what parse and the metrics count)")
    assert classifier.classify("deferred", "554", "4.7.1", line).kind == "soft"
    # The reply alone, with the dsn= beside it, has no decision to follow: the basic code wins
    reply = f"{e.text} dsn=4.7.1"
    alone = explain(reply, classifier)
    assert (alone.status, alone.kind) == (None, "hard")
    assert "4.7.1 (the MTA's own dsn=)" in alone.note and "Postfix's dsn=4.7.1" in alone.note


def test_multi_line_replies_read_their_first_code_and_match_across_the_markers(classifier):
    text = ("550-5.7.1 [192.0.2.9] Our system has detected that this 550-5.7.1 message is likely "
            "unsolicited mail.\n550 5.7.1 To reduce the amount of spam, this message has been "
            "blocked.")
    e = explain(text, classifier)
    assert (e.code, e.enhanced, e.category) == ("550", "5.7.1", "spam_content")


@pytest.mark.parametrize(("text", "kind", "category"), [
    ("400 4.4.7 Message delayed", "soft", "expired"),  # Exchange's non-standard 400, a delay DSN
    ("431", "soft", "system_full"),
    ("432", "soft", "smtp_auth"),  # RFC 4954: a password transition is needed
    ("432 4.3.2 STOREDRV.Deliver; mailbox server is too busy", "soft", "unavailable"),
    ("571 Email from 192.0.2.1 is currently blocked by Verizon Online's anti-spam system",
     "hard", "blocklisted"),
    ("571", "hard", "blocklisted"),
])
def test_codes_outside_the_standard_set(classifier, text, kind, category):
    e = explain(text, classifier)
    assert (e.kind, e.category) == (kind, category)
    assert classifier.catalog.basic(e.code) is not None and e.meaning and e.note is None


def test_an_unregistered_code_is_judged_by_its_first_digit(classifier):
    e = explain("422 try later", classifier)
    assert (e.code, e.kind, e.category) == ("422", "soft", "other")
    assert "422 is not a registered reply code" in e.note


def test_enhanced_codes_with_three_digit_fields(classifier):
    e = explain("5.7.705", classifier)
    assert (e.enhanced, e.kind, e.category) == ("5.7.705", "hard", "blocklisted")
    assert e.decided_by.startswith("text rule 'microsoft_tenant_blocked'")
    e = explain("451 4.7.650 whatever", classifier)
    assert (e.enhanced, e.category) == ("4.7.650", "rate_limited")
    e = explain("550 5.7.999 nope", classifier)  # an unregistered detail reads as its subject
    assert (e.category, e.decided_by) == (
        "policy_blocked", "enhanced code 5.7.999 (catalog.yaml: enhanced_codes['X.7.X'])")
    assert "detail 999 of subject 7 is not in the IANA registry" in e.note
    e = explain("5.100.1", classifier)  # subject 100 does not exist: the class says permanent
    assert (e.enhanced, e.kind, e.category) == ("5.100.1", "hard", "other")
    assert e.meaning == classifier.catalog.enhanced_codes["5.X.X"].meaning
    assert "subject 100 is not defined" in e.note


def test_qmail_enhanced_code_in_parentheses(classifier):
    e = explain("delivery 3: failure: Sorry,_I_couldn't_find_any_host_named_example.invalid._"
                "(#5.1.2)/", classifier)
    assert (e.code, e.enhanced, e.kind, e.category) == (None, "5.1.2", "hard", "host_unknown")


def test_success_replies_are_not_failures(classifier):
    e = explain("250 2.0.0 Ok: queued as 4HnkK7; mailbox full, connection refused", classifier)
    assert (e.kind, e.category, e.severity) == (None, "none", "info")
    assert e.mta_next == classifier.catalog.kinds["success"].mta_next


def test_a_text_without_code_or_rule_is_other_with_unknown_kind(classifier):
    e = explain("retry time not reached", classifier)
    assert (e.code, e.enhanced, e.kind, e.category) == (None, None, None, "other")
    assert "status= decides" in e.note
    assert e.mta_next == classifier.catalog.kinds["unknown"].mta_next


def test_empty_text_is_an_error(classifier):
    for text in ("", "  \n"):
        with pytest.raises(ValueError, match="nothing to explain"):
            explain(text, classifier)


# --- The corpus: every line of every MTA ---------------------------------------------------------

# Lines whose reply alone does not give the MTA's decision: their kind is checked through classify
# with the event's status (what parse reports) instead.
MTA_DECIDES = {
    "retry time not reached": "Exim's own deferral: no reply, no rule; the line is a defer (==)",
    "Tried all MXs": "Haraka's own deferral after failed attempts: 'Temp failing'",
    "refused to talk to me: 571": "5xx greeting: Postfix skips the host and defers (dsn=4.0.0)",
    "535 5.7.8": "Postfix defers on a relay AUTH failure (dsn=4.7.8) and suspends the transport",
    "mail.lmtp: LMTP server error: 550": "OpenSMTPD reports its LMTP 550 as a temporary failure",
}
EVENT_STATUS = {"sent": "sent", "deferred": "deferred", "bounced": "bounced",
                "expired": "expired", "conn_fail": "deferred", "other": "deferred"}


def test_every_format_sample_gives_its_code_enhanced_and_kind(classifier):
    checked = seen = 0
    used = set()
    for sample in format_samples():
        expect = sample["expect"]
        e = explain(sample["line"], classifier)
        assert (e.code, e.enhanced) == (expect["code"], expect["enhanced"]), sample["line"]
        if expect["soft"] is None:
            continue
        wanted = "soft" if expect["soft"] else "hard"
        exception = next((key for key in MTA_DECIDES if key in sample["line"]), None)
        if exception is None:
            assert e.kind == wanted, sample["line"]
        else:
            used.add(exception)
            verdict = classifier.classify(EVENT_STATUS[sample["event"]], e.code, e.enhanced,
                                          sample["line"])
            assert verdict.kind == wanted, sample["line"]
        checked += 1
        seen += not sample.get("fragment")
    assert used == set(MTA_DECIDES)
    assert checked >= 90 and seen >= 70


def test_explain_agrees_with_parse_on_every_real_postfix_event(classifier):
    from bounce_exporter import oneshot

    events = [event for _, event in oneshot.iter_file_events(str(REAL_LOG), "postfix", 65536)]
    assert len(events) > 100
    for event in events:
        e = explain(event.text, classifier)
        verdict = classifier.classify(event.status, event.code, event.enhanced, event.text)
        if (e.code, e.enhanced) == (event.code, event.enhanced) and event.status != "sent":
            assert e.category == verdict.category, event.text


# --- Operator rules ------------------------------------------------------------------------------

def test_operator_rules_come_first_and_are_named_in_the_explanation():
    classifier = Classifier.load(extra_text_rules=[
        {"name": "my-relay-quota", "pattern": "quota exceeded for relay",
         "category": "rate_limited",
         "meaning": "our smarthost's hourly quota", "sender_action": "Wait for the next hour."}])
    e = explain("451 4.7.1 quota exceeded for relay smtp.example.net", classifier)
    assert (e.category, e.meaning, e.sender_action) == (
        "rate_limited", "our smarthost's hourly quota", "Wait for the next hour.")
    assert e.decided_by == "text rule 'my-relay-quota' (classification.text_rules[0])"
    # what the rule does not say comes from its category
    assert e.recipient_action == classifier.catalog.categories["rate_limited"].recipient_action


# --- The command ---------------------------------------------------------------------------------

def test_cli_explain_431():
    result = run("explain", "431")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("code        431\nenhanced    none\nmeaning     ")
    assert "system_full" in result.stdout and "postmaster" in result.stdout


def test_cli_explain_json_has_parse_keys_and_the_descriptive_ones():
    result = run("explain", "--json", "host mx[192.0.2.1] said: 452 4.2.2 Mailbox full")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert tuple(record) == KEYS
    assert {key: record[key] for key in ("code", "enhanced", "kind", "category")} == {
        "code": "452", "enhanced": "4.2.2", "kind": "soft", "category": "mailbox_full"}
    assert record["note"] is None
    for key in ("meaning", "severity", "sender_action", "recipient_action", "mta_next",
                "decided_by"):
        assert record[key], key


def test_cli_explain_joins_words_and_reads_stdin():
    result = run("explain", "--json", "Connection", "refused")
    assert json.loads(result.stdout)["category"] == "network"
    result = run("explain", "--json", "-", input="421-4.7.0 [TSS04] Messages from 192.0.2.66\n"
                                                 "421 4.7.0 temporarily deferred\n")
    assert (json.loads(result.stdout)["code"], json.loads(result.stdout)["category"]) == (
        "421", "rate_limited")


def test_cli_explain_of_nothing_exits_2():
    result = run("explain", " ")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "nothing to explain" in result.stderr


def test_cli_explain_uses_the_config_files_rules(tmp_path):
    config = tmp_path / "rules.yml"
    config.write_text("classification:\n  text_rules:\n"
                      "    - {name: relay-quota, pattern: 'quota exceeded for relay', "
                      "category: rate_limited}\n")
    result = run("explain", "--json", "--config.file", str(config), "quota exceeded for relay")
    record = json.loads(result.stdout)
    assert record["category"] == "rate_limited"
    assert record["decided_by"] == "text rule 'relay-quota' (classification.text_rules[0])"


BROKEN_RULES = ("classification:\n  text_rules:\n"
                "    - {name: broken, pattern: 'unclosed (group', category: rate_limited}\n"
                "    - {name: typo, pattern: 'fine', category: rate_limitd}\n")


def test_a_broken_operator_rule_stops_serve_with_its_location_and_exit_2(tmp_path):
    config = tmp_path / "bad.yml"
    config.write_text(BROKEN_RULES)
    result = run("serve", "--config.file", str(config), "--log.file", str(tmp_path / "m.log"),
                 "--state.file", str(tmp_path / "state.json"), "--web.listen-address",
                 "127.0.0.1:0")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "bounce-exporter: configuration problems:"
    assert any(line.startswith("  - classification.text_rules[0] (name 'broken'): invalid regex")
               for line in lines)
    assert "  - classification.text_rules[1] (name 'typo'): unknown category 'rate_limitd'" in lines


def test_a_broken_operator_rule_stops_explain_too(tmp_path):
    config = tmp_path / "bad.yml"
    config.write_text(BROKEN_RULES)
    result = run("explain", "--config.file", str(config), "431")
    assert result.returncode == 2
    assert "classification.text_rules[0] (name 'broken'): invalid regex" in result.stderr
    assert "Traceback" not in result.stderr


# --- A whole log line: the MTA's decision, as parse reports it (issue 14) -------------------------

DEFERRED_550 = ("Nov 28 12:22:37 mx postfix/smtp[1]: ABC123: to=<u@ex.example>, "
                "relay=mx.ex.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=4.1.1, "
                "status=deferred (host mx.ex.example[192.0.2.1] said: 550 5.1.1 <u@ex.example>: "
                "Recipient address rejected: User unknown (in reply to RCPT TO command))")
DEFERRED_550_REPLY = ("host mx.ex.example[192.0.2.1] said: 550 5.1.1 <u@ex.example>: Recipient "
                      "address rejected: User unknown (in reply to RCPT TO command)")


def test_a_postfix_deferred_line_with_550_and_dsn_4_1_1_is_soft_as_parse_says(classifier):
    e = explain(DEFERRED_550, classifier)
    assert (e.recipient, e.domain, e.status, e.text) == (
        "u@ex.example", "ex.example", "deferred", DEFERRED_550_REPLY)
    assert (e.code, e.enhanced, e.kind, e.category) == ("550", "4.1.1", "soft", "user_unknown")
    assert e.mta_next == classifier.catalog.kinds["soft"].mta_next
    lines = render(e).splitlines()
    assert lines[:5] == [
        "to          u@ex.example",
        "domain      ex.example",
        "status      deferred (the MTA's decision)",
        ("reply       host mx.ex.example[192.0.2.1] said: 550 5.1.1 <u@ex.example>: Recipient "
         "address"),
        "            rejected: User unknown (in reply to RCPT TO command)",
    ]
    assert "postfix/smtp[1]" not in render(e)  # the reply alone, not the whole line
    assert "kind        soft: temporary failure" in render(e)


def test_explain_of_every_whole_sample_line_with_an_event_follows_its_status(classifier):
    """Every sample line a parser reads as a delivery event: explain gives parse's status and
    kind (the corpus's expectation), not the reply code's first digit."""
    checked = disagreeing = 0
    for sample in format_samples():
        if sample.get("fragment") or (event := delivery_event(sample["line"])) is None:
            continue
        e = explain(sample["line"], classifier)
        assert (e.status, e.domain) == (event.status, event.domain), sample["line"]
        want = {True: "soft", False: "hard", None: None}[sample["expect"]["soft"]]
        assert e.kind == want, sample["line"]
        checked += 1
        disagreeing += e.note is not None and "the MTA decided" in e.note
    # 62: Exim's two "retry time not reached" samples are events too (deferrals without attempt)
    assert (checked, disagreeing) == (62, 2)


def test_explain_of_every_real_postfix_event_line_says_what_parse_says(classifier):
    from bounce_exporter import oneshot

    lines = REAL_LOG.read_text().splitlines()
    verdicts = []  # what parse prints: through its own read
    oneshot.read_file_events(str(REAL_LOG), "auto", 65536, classifier,
                         lambda n, event, verdict: verdicts.append((n, event, verdict)))
    assert len(verdicts) > 100
    for number, event, verdict in verdicts:
        if event.status == "expired":
            continue  # its reply is the message's earlier deferral: not on the line itself
        e = explain(lines[number - 1], classifier)
        assert (e.status, e.kind, e.category, e.text) == (
            event.status, verdict.kind, verdict.category, event.text), lines[number - 1]


def test_explain_of_a_number_that_is_no_reply_code_says_so(classifier):
    for text in ("999", "600", "42", "6.1.1"):
        with pytest.raises(ValueError) as err:
            explain(text, classifier)
        assert str(err.value) == (
            f"{text} is not an SMTP reply code: basic codes are 2xx to 5xx (such as 431), "
            "enhanced codes 2.x.x, 4.x.x or 5.x.x (such as 4.3.1)")
    result = run("explain", "999")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("bounce-exporter explain: 999 is not an SMTP reply code: basic codes "
                             "are 2xx to 5xx (such as 431), enhanced codes 2.x.x, 4.x.x or 5.x.x "
                             "(such as 4.3.1)\n")


def test_a_hard_failure_is_never_shown_beside_clears_by_itself(classifier):
    catalog = classifier.catalog
    texts = [f"{code} {info.meaning}" for code, info in catalog.basic_codes.items()
             if code.startswith("5")]
    texts += [s["line"] for s in format_samples() if s["expect"]["soft"] is False]
    hard = [explain(text, classifier) for text in texts]
    hard = [e for e in hard if e.kind == "hard"]
    assert len(hard) == 50
    for e in hard:
        assert "by itself" not in e.severity_description, (e.text, e.severity)
        assert "by itself" not in e.kind_description, e.text
