"""Providers: the catalog's table, the relay host every parser reports, and the provider metrics
that count every event by who answered, whatever the domain's label."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bounce_exporter.classify import providers
from bounce_exporter.classify.catalog import load_catalog, packaged_catalog
from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.classify.explain import explain
from bounce_exporter.errors import ConfigError
from bounce_exporter.exposition.collector import MetricsCollector
from bounce_exporter.parsers.exchange import FIELDS_2016, ExchangeParser
from bounce_exporter.parsers.exim import EximParser
from bounce_exporter.parsers.ledger import event_from_state, event_to_state
from bounce_exporter.parsers.opensmtpd import OpenSMTPDParser
from bounce_exporter.parsers.postfix import PostfixParser
from bounce_exporter.parsers.relay import find_relay_in_line
from bounce_exporter.parsers.sendmail import SendmailParser
from bounce_exporter.state.counters import DomainLabels, MetricState

CATALOG = Path(__file__).parent.parent / "config" / "catalog.yaml"
# The table issue 15 asks for, at the least.
REQUIRED = ("google", "microsoft", "yahoo", "apple", "comcast", "att", "cox", "orange", "gmx",
            "mailru", "yandex", "zoho", "proton", "fastmail", "tonline", "qq", "netease",
            "mimecast", "proofpoint", "barracuda", "cisco")

POSTFIX_GOOGLE = (
    "Nov 28 12:22:37 mx1 postfix/smtp[14397]: 4E6AC512253: to=<ann@customer.example>, "
    "relay=alt1.aspmx.l.google.com[192.0.2.1]:25, delay=0.4, delays=0/0/0.2/0.2, dsn=4.7.28, "
    "status=deferred (host alt1.aspmx.l.google.com[192.0.2.1] said: 421-4.7.28 Gmail has "
    "detected an unusual rate of unsolicited email originating from your IP address. - gsmtp "
    "(in reply to end of DATA command))")
POSTFIX_SENT = (
    "Nov 28 12:22:38 mx1 postfix/smtp[14397]: 5F7BD512254: to=<bob@{domain}>, "
    "relay={relay}, delay=0.4, delays=0/0/0.2/0.2, dsn=2.0.0, status=sent (250 2.0.0 OK)")


@pytest.fixture(scope="module")
def table():
    return packaged_catalog().providers


def test_the_table_holds_every_required_provider_with_hosts_and_a_postmaster_page(table):
    assert set(REQUIRED) <= set(table.names)
    for name in table.names:
        provider = table.get(name)
        assert provider.hosts and provider.postmaster.startswith("https://"), name
        assert provider.name.strip(), name
    assert "other" not in table.names  # the label of "none of them"


@pytest.mark.parametrize(("relay", "provider"), [
    ("alt1.aspmx.l.google.com", "google"), ("gmail-smtp-in.l.google.com", "google"),
    ("customer-com.mail.protection.outlook.com", "microsoft"),
    ("hotmail-com.olc.protection.outlook.com", "microsoft"),
    ("mta7.am0.yahoodns.net", "yahoo"), ("mx-att.mail.am0.yahoodns.net", "yahoo"),
    ("mx01.mail.icloud.com", "apple"), ("mx1.comcast.net", "comcast"),
    ("al-ip4-mx-vip1.prodigy.net", "att"), ("cxr.mx.a.cloudfilter.net", "cox"),
    ("smtp-in.orange.fr", "orange"), ("mx00.emig.gmx.net", "gmx"), ("mx-ha02.web.de", "gmx"),
    ("mxs.mail.ru", "mailru"), ("mx.yandex.net", "yandex"), ("mx.zoho.com", "zoho"),
    ("mail.protonmail.ch", "proton"), ("in1-smtp.messagingengine.com", "fastmail"),
    ("mx00.t-online.de", "tonline"), ("mx1.qq.com", "qq"),
    ("163mx01.mxmail.netease.com", "netease"), ("eu-smtp-inbound-1.mimecast.com", "mimecast"),
    ("mx0a-00123401.pphosted.com", "proofpoint"), ("d123456a.ess.barracudanetworks.com",
                                                   "barracuda"),
    ("mx1.hc1234-53.iphmx.com", "cisco"),
    # a host name of none of them, whatever the reply says; look-alikes are not sub-domains
    ("mx.example.net", "other"), ("notgoogle.com", "other"), ("gmail.com.example.net", "other"),
])
def test_relay_hosts_name_their_provider(table, relay, provider):
    assert table.of(relay) == provider
    assert table.of(relay.upper() + ".", "250 2.0.0 OK - gsmtp") == provider


def test_without_a_host_name_markers_then_the_domain_decide(table):
    assert table.of(None, "421-4.7.0 Try again later, closing connection. - gsmtp") == "google"
    assert table.of("192.0.2.1", "421 4.7.0 [TSS04] Messages from 192.0.2.1 deferred") == "yahoo"
    assert table.of(None, "550 5.7.1 nope", "outlook.com") == "microsoft"
    assert table.of("192.0.2.1", "550 5.7.1 nope", "outlook.com") == "other"  # a host: not by domain
    assert table.of(None, "550 5.7.1 nope", "example.com") == "other"
    assert table.of("local") == "other"


def test_a_broken_provider_entry_is_named(tmp_path):
    raw = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    broken = copy.deepcopy(raw)
    broken["providers"]["google"]["postmaster"] = "http://example.com"
    broken["providers"]["yahoo"]["hosts"] = ["google.com", "Not A Host"]
    broken["providers"]["other"] = {"name": "x", "postmaster": "https://x", "hosts": ["x.example"]}
    broken["providers"]["zoho"]["markers"] = ["(zoho)"]
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    problems = [p.split(": ", 1)[1] for p in caught.value.problems]
    assert problems == [
        "providers.google.postmaster: must be an https:// URL",
        "providers.yahoo.hosts: 'google.com' is already 'google''s",
        "providers.yahoo.hosts: 'Not A Host' is not a lower-case host or domain name",
        "providers.zoho.markers: '(zoho)' must not match empty text nor hold groups (use (?:...))",
        "providers: label 'other' must be snake_case and not 'other'",
    ]


# --- The relay host of every parser ---------------------------------------------------------------

def test_postfix_relay_and_the_host_named_when_relay_is_none():
    (event,) = PostfixParser().parse(POSTFIX_GOOGLE.encode())
    assert event.relay == "alt1.aspmx.l.google.com"
    line = ("Nov 28 12:22:39 mx1 postfix/smtp[14397]: 6A8CD512255: to=<c@gmail.com>, relay=none, "
            "delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to "
            "gmail-smtp-in.l.google.com[192.0.2.26]:25: Connection timed out)")
    assert PostfixParser().parse(line.encode())[0].relay == "gmail-smtp-in.l.google.com"
    local = POSTFIX_SENT.format(domain="example.org", relay="local").replace("smtp[", "local[")
    assert PostfixParser().parse(local.encode())[0].relay == "local"
    lmtp = POSTFIX_SENT.format(domain="example.org", relay="mail.example.org[private/dovecot-lmtp]")
    assert PostfixParser().parse(lmtp.encode())[0].relay == "mail.example.org"


def test_postfix_expiry_keeps_the_relay_of_the_last_deferral():
    parser = PostfixParser()
    parser.parse(POSTFIX_GOOGLE.encode())
    (expired,) = parser.parse(b"Nov 30 12:24:40 mx1 postfix/qmgr[14113]: 4E6AC512253: "
                              b"from=<app@sender.example>, status=expired, returned to sender")
    assert (expired.status, expired.relay) == ("expired", "alt1.aspmx.l.google.com")


def test_exim_h_field():
    parser = EximParser()
    (sent,) = parser.parse(b"2026-11-28 12:22:37 1xXHRt-0003ks-27 => u@customer.example "
                           b"R=dnslookup T=remote_smtp S=516 H=ASPMX.L.GOOGLE.COM [192.0.2.27]:25 "
                           b'X=TLS1.3:TLS_AES_256_GCM_SHA384:256 C="250 2.0.0 OK - gsmtp" DT=0s')
    assert sent.relay == "aspmx.l.google.com"
    (deferred,) = parser.parse(
        b"2026-11-28 12:22:38 1xXHRu-0003l1-0v == u@x.example R=dnslookup T=remote_smtp "
        b"defer (-44) H=mx.x.example [192.0.2.2]:25 DT=0s: SMTP error from remote mail server "
        b"after RCPT TO:<u@x.example>: 451 4.3.0 try later")
    assert deferred.relay == "mx.x.example"
    (bounced,) = parser.parse(b"2026-11-28 12:22:40 1xXHRw-0003lS-0X ** u@y.example "
                              b"R=dnslookup T=remote_smtp H=[192.0.2.3]: SMTP error from remote "
                              b"mail server after RCPT TO:<u@y.example>: 550 5.1.1 unknown")
    assert bounced.relay == "192.0.2.3"


def test_opensmtpd_relay_field_prefers_the_ptr_name():
    line = (b'Nov 28 12:22:45 mail smtpd[14390]: 912fc4270770288f mta delivery '
            b'evpid=ce2b550ff77d09a5 from=<app@sender.example> to=<u@customer.example> rcpt=<-> '
            b'source="192.0.2.9" relay="192.0.2.26 (mx-in-f26.1e100.net)" delay=0s '
            b'result="TempFail" stat="421 4.7.0 Try again later - gsmtp"')
    (event,) = OpenSMTPDParser().parse(line)
    assert event.relay == "mx-in-f26.1e100.net"
    assert packaged_catalog().providers.of(event.relay, event.text) == "google"


def test_sendmail_relay_field():
    line = (b"Apr  2 00:15:25 mta001 sendmail[12566]: u31FFPtp032300: to=<d@customer.example>, "
            b"delay=00:00:15, xdelay=00:00:15, mailer=esmtp, pri=34527, "
            b"relay=customer-example.mail.protection.outlook.com. [192.0.2.40], dsn=4.7.500, "
            b"stat=Deferred: 451 4.7.500 Server busy. Please try again later from [192.0.2.9]")
    (event,) = SendmailParser().parse(line)
    assert event.relay == "customer-example.mail.protection.outlook.com"
    bare = line.replace(b"customer-example.mail.protection.outlook.com.", b"[192.0.2.40]")
    assert SendmailParser().parse(bare)[0].relay == "192.0.2.40"


def test_exchange_fqdn_and_the_next_hop_of_send():
    parser = ExchangeParser()
    row = dict.fromkeys(FIELDS_2016, "")
    row.update({"date-time": "2026-11-28T12:22:38.307Z", "event-id": "DEFER",
                "recipient-address": "u@customer.example", "source": "SMTP",
                "recipient-status": "[{LRT=};{LED=451 4.7.500 Server busy};"
                                    "{FQDN=Customer-Example.mail.protection.outlook.com};"
                                    "{IP=192.0.2.40}]"})
    (deferred,) = parser.parse(",".join(row.values()).encode())
    assert deferred.relay == "customer-example.mail.protection.outlook.com"
    row.update({"event-id": "SEND", "recipient-status": "250 2.0.0 OK",
                "server-hostname": "mx1.example.net"})
    (sent,) = parser.parse(",".join(row.values()).encode())
    assert sent.relay == "mx1.example.net"


def test_saved_pending_events_keep_their_relay_and_old_ones_load_without():
    (event,) = PostfixParser().parse(POSTFIX_GOOGLE.encode())
    saved = event_to_state(event)
    assert event_from_state(saved) == event
    assert event_from_state(saved[:9]).relay is None  # a state file of an earlier version


def test_find_relay_in_line():
    assert find_relay_in_line("host mx.x.example[192.0.2.1] said: 550 no") == "mx.x.example"
    assert find_relay_in_line("relay=alt1.aspmx.l.google.com[192.0.2.1]:25, delay=1") == \
        "alt1.aspmx.l.google.com"
    assert find_relay_in_line("H=Mx.Y.Example [192.0.2.1]: SMTP error") == "mx.y.example"
    assert find_relay_in_line("relay=local, delay=0") is None
    assert find_relay_in_line("550 5.1.1 user unknown") is None


# --- Metrics: every event by provider, whatever its domain label -----------------------------------

def test_a_google_relay_is_counted_as_google_whatever_the_domain_label():
    classifier = Classifier.load()
    state = MetricState(DomainLabels(max_domains=0))  # every domain past the cap: "other"
    parser = PostfixParser()
    lines = [POSTFIX_GOOGLE, POSTFIX_SENT.format(domain="customer.example",
                                                 relay="aspmx.l.google.com[192.0.2.1]:25"),
             POSTFIX_SENT.format(domain="small.example", relay="mx.small.example[192.0.2.5]:25")]
    for line in lines:
        for event in parser.parse(line.encode()):
            state.record(event, classifier.classify(event.status, event.code, event.enhanced,
                                                    event.text))
    registry = CollectorRegistry()
    registry.register(MetricsCollector(state))
    value = registry.get_sample_value
    assert value("bounce_delivery_attempts_total", {"domain": "other"}) == 3
    assert value("bounce_provider_delivery_attempts_total", {"provider": "google"}) == 2
    assert value("bounce_provider_delivery_attempts_total", {"provider": "other"}) == 1
    assert value("bounce_provider_delivery_attempts_total", {"provider": "yahoo"}) == 0
    assert value("bounce_provider_failures_total", {
        "provider": "google", "kind": "soft", "code": "421", "enhanced": "4.7.28",
        "category": "rate_limited"}) == 1
    names = {s.labels["provider"] for f in registry.collect() for s in f.samples
             if f.name == "bounce_provider_delivery_attempts"}
    assert names == {*packaged_catalog().providers.names, "other"}  # bounded by the table


def test_expiries_are_no_provider_attempts():
    classifier = Classifier.load()
    state = MetricState()
    parser = PostfixParser()
    for raw in (POSTFIX_GOOGLE.encode(), (b"Nov 30 12:24:40 mx1 postfix/qmgr[14113]: 4E6AC512253: "
                b"from=<app@sender.example>, status=expired, returned to sender")):
        for event in parser.parse(raw):
            state.record(event, classifier.classify(event.status, event.code, event.enhanced,
                                                    event.text))
    assert state.providers.attempts["google"] == 1
    assert sum(state.providers.failures.values()) == 1


# --- explain names the provider -------------------------------------------------------------------

def test_explain_names_the_provider_and_its_postmaster_page():
    classifier = Classifier.load()
    e = explain(POSTFIX_GOOGLE, classifier)
    assert (e.relay, e.provider, e.postmaster) == (
        "alt1.aspmx.l.google.com", "google", "https://support.google.com/a/answer/3726730")
    assert (e.category, e.as_dict()["provider"]) == ("rate_limited", "google")
    e = explain("550 5.7.1 nope from mx.example.net", classifier)
    assert (e.relay, e.provider, e.postmaster) == (None, "other", None)


def test_the_status_page_names_the_provider_that_answered(tmp_path):
    """Issue 15: the status page's last hour says who answered each domain's latest deferral
    (by its relay host), named as the catalog does, with its postmaster page."""
    import time as clock

    from bounce_exporter.app import Exporter

    from .helpers import exporters, local_config

    stamp = clock.strftime("%b %e %H:%M:%S")
    log = tmp_path / "mail.log"
    log.write_text(
        f"{stamp} mx1 postfix/smtp[1]: 4ABC: to=<u@example.org>, relay=gmail-smtp-in.l.google.com"
        "[142.250.1.27]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.28, status=deferred (host "
        "gmail-smtp-in.l.google.com[142.250.1.27] said: 421-4.7.28 Our system has detected an "
        "unusual rate of unsolicited mail. - gsmtp (in reply to end of DATA command))\n"
        f"{stamp} mx1 postfix/smtp[2]: 5DEF: to=<v@small.example>, relay=mx.small.example"
        "[192.0.2.9]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.3.1, status=deferred (host "
        "mx.small.example[192.0.2.9] said: 431 4.3.1 disk full (in reply to RCPT TO command))\n")
    with exporters() as start:
        exporter: Exporter = start(local_config(tmp_path, log_files=[str(log)], from_start=True))
        exporter.step()
        recent = {entry.domain: entry.provider for entry in exporter.store.status().recent}
        page = exporter.status_page()
    assert recent == {"example.org": "google", "small.example": "other"}
    assert "Google (Gmail, Google Workspace) (" in page and "support.google.com/a/answer/3726730" in page


def test_the_markers_answer_of_a_text_is_remembered_within_bounds(table):
    texts = [f"421 4.7.0 try later {n} - gsmtp" if n % 2 else f"550 5.7.1 nope {n}"
             for n in range(providers._MEMO_LIMIT + 10)]
    for _ in range(2):  # the second time from the memo: the same answers
        assert [table.of(None, text) for text in texts] == [
            "google" if n % 2 else "other" for n in range(len(texts))]
        assert len(table._marked) <= providers._MEMO_LIMIT
    long_text = "x" * (providers._MEMO_TEXT + 1) + " gsmtp"
    assert table.of("192.0.2.1", long_text) == "google"
    assert long_text not in table._marked
