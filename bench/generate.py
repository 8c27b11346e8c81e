"""A deterministic generator of realistic Postfix logs, and the exact counts they must give.

    python -m bench.generate --lines 1000000 --seed 1 --out /tmp/bench/mail.log
    (writes mail.log and mail.truth.json beside it)

One Postfix instance (``postfix``, host ``mx1``) is simulated in log time, one line at a time:
- outbound mail (smtpd or submission/smtpd, cleanup, opendkim, qmgr, smtp, qmgr removed), inbound
  mail delivered by LMTP, cron mail delivered by ``local``, and the bounce/delay notices Postfix
  sends back to the sender;
- recipient domains drawn from 3,000 domains with Zipf weights (a few big providers take most);
- each recipient has a fate: delivered at once, deferred a few times then delivered (greylisting,
  throttling, a busy or unreachable server), deferred until the queue lifetime runs out (expired),
  or bounced; a dozen (code, enhanced) replies, plus failures without an SMTP reply (timeouts,
  DNS); two domains run out of disk (431 4.3.1) for a while: one recovers, one does not;
- retries follow Postfix's backoff (300 s doubling to 4,000 s); the queue lifetime is one day;
- noise that is not a delivery: scanners (connect, lost connection, NOQUEUE reject, SASL
  failures), TLS lines, anvil, dovecot;
- the first half of the lines has traditional stamps (``Jan  6 10:11:12``, written in UTC), the
  second half RFC 3339 stamps (``2025-01-06T10:11:12.123456+00:00``), as after an upgrade to
  Debian 12's rsyslog. Read the log with ``TZ=UTC`` to get the simulated times back.

The truth file holds what bounce-exporter must count (per domain, normalised: lower case, IDNA),
every failure per (domain, kind, code, enhanced, category) where the category is what the code
catalog says of that reply (written down in REPLIES, not computed by the exporter's classifier),
the persistent deferrals flagged at the end under the default rule (431 or 4.3.1, 3 attempts over
30 minutes, cleared by a delivery or 2 hours without one), and per kind of line the counts the
peers (mtail's postfix.mtail, postfix_exporter) can be compared on.
Same arguments, same bytes: only ``random.Random(seed)`` decides.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

START = 1736121600.0  # 2025-01-06T00:00:00Z
SPAN = 2 * 86400.0  # log time the whole file covers, whatever its size
QUEUE_LIFETIME = 86400.0
MIN_BACKOFF, MAX_BACKOFF = 300.0, 4000.0
HOST = "mx1"
OUR_DOMAIN = "example.org"
OUR_IP = "203.0.113.25"
LINES_PER_MESSAGE = 12.6  # lines per message, noise included (measured): spreads them over SPAN
NOISE_PER_MESSAGE = 1.25  # noise events per message: about 13% of all lines are deliveries

# -- persistent-deferral rule (the exporter's default) ------------------------------------------
RULE_CODE, RULE_ENHANCED = "431", "4.3.1"
MIN_ATTEMPTS, MIN_DURATION, CLEAR_AFTER = 3, 1800.0, 7200.0


@dataclass(frozen=True)
class Reply:
    """One reply (or code-less failure) as Postfix logs it, and what the exporter must make of it."""

    status: str  # sent | deferred | bounced
    code: str | None  # basic reply code the exporter must find, None without an SMTP reply
    enhanced: str | None  # the dsn= Postfix logs
    category: str  # the catalog's category (config/catalog.yaml) for this reply
    text: str  # inside status=...(...); {mx} {ip} {rcpt} {domain} {id} are filled in


REPLIES: dict[str, Reply] = {
    "ok": Reply("sent", "250", "2.0.0", "none", "250 2.0.0 Ok: queued as {id}"),
    "ok_gmail": Reply("sent", "250", "2.0.0", "none",
                      "250 2.0.0 OK  1736121600 {id}.{id} - gsmtp"),
    "ok_outlook": Reply("sent", "250", "2.6.0", "none",
                        "250 2.6.0 <{id}@{our}> [InternalId={id}, Hostname=AM0PR01MB1234."
                        "eurprd01.prod.outlook.com] Queued mail for delivery"),
    "throttle_yahoo": Reply("deferred", "421", "4.7.0", "rate_limited",
                            "host {mx}[{ip}] said: 421 4.7.0 [TSS04] Messages from {our_ip} "
                            "temporarily deferred due to unexpected volume or user complaints - "
                            "4.16.55.1; see https://postmaster.yahooinc.com/error-codes (in reply "
                            "to MAIL FROM command)"),
    "throttle_gmail": Reply("deferred", "450", "4.2.1", "rate_limited",
                            "host {mx}[{ip}] said: 450-4.2.1 The user you are trying to contact is "
                            "receiving mail at a rate that 450-4.2.1 prevents additional messages "
                            "from being delivered. Please resend your 450-4.2.1 message at a later "
                            "date. {id} - gsmtp (in reply to RCPT TO command)"),
    "greylisted": Reply("deferred", "450", "4.2.0", "greylisted",
                        "host {mx}[{ip}] said: 450 4.2.0 <{rcpt}>: Recipient address rejected: "
                        "Greylisted, see http://postgrey.schweikert.ch/help/{domain}.html "
                        "(in reply to RCPT TO command)"),
    "quota_soft": Reply("deferred", "452", "4.2.2", "mailbox_full",
                        "host {mx}[{ip}] said: 452 4.2.2 <{rcpt}>: Recipient address rejected: "
                        "Mailbox over quota (in reply to RCPT TO command)"),
    "disk_full": Reply("deferred", "431", "4.3.1", "system_full",
                       "host {mx}[{ip}] said: 431 4.3.1 Insufficient system storage "
                       "(in reply to RCPT TO command)"),
    "busy": Reply("deferred", "451", "4.3.0", "unavailable",
                  "host {mx}[{ip}] said: 451 4.3.0 Temporary local problem - please try later "
                  "(in reply to end of DATA command)"),
    "timeout": Reply("deferred", None, "4.4.1", "network",
                     "connect to {mx}[{ip}]:25: Connection timed out"),
    "lost": Reply("deferred", None, "4.4.2", "network",
                  "lost connection with {mx}[{ip}] while receiving the initial server greeting"),
    "dns_soft": Reply("deferred", None, "4.4.3", "dns",
                      "Host or domain name not found. Name service error for name={domain} "
                      "type=MX: Host not found, try again"),
    "dns_hard": Reply("bounced", None, "5.4.4", "dns",
                      "Host or domain name not found. Name service error for name={domain} "
                      "type=A: Host not found"),
    "no_user": Reply("bounced", "550", "5.1.1", "user_unknown",
                     "host {mx}[{ip}] said: 550-5.1.1 The email account that you tried to reach "
                     "does not exist. Please try 550-5.1.1 double-checking the recipient's email "
                     "address for typos or 550-5.1.1 unnecessary spaces. {id} - gsmtp "
                     "(in reply to RCPT TO command)"),
    "unauthenticated": Reply("bounced", "550", "5.7.26", "sender_auth",
                             "host {mx}[{ip}] said: 550-5.7.26 This mail has been blocked because "
                             "the sender is unauthenticated. {id} - gsmtp (in reply to end of DATA "
                             "command)"),
    "quota_hard": Reply("bounced", "552", "5.2.2", "mailbox_full",
                        "host {mx}[{ip}] said: 552 5.2.2 <{rcpt}>: Mailbox full "
                        "(in reply to RCPT TO command)"),
    "blocklisted": Reply("bounced", "554", "5.7.1", "blocklisted",
                         "host {mx}[{ip}] said: 554 5.7.1 Service unavailable; Client host "
                         "[{our_ip}] blocked using zen.spamhaus.org (in reply to RCPT TO command)"),
    # Inbound mail and notices to our senders (LMTP to dovecot), cron mail (local).
    "lmtp_ok": Reply("sent", "250", "2.0.0", "none", "250 2.0.0 <{rcpt}> {id} Saved"),
    "local_ok": Reply("sent", None, "2.0.0", "none", "delivered to mailbox"),
}

# Recipient fates on an ordinary domain: (weight, deferrals before the end, end); end None means
# the same deferral until the message expires.
FATES: list[tuple[float, tuple[str, ...], str | None]] = [
    (92.0, (), "ok"),
    (1.5, (), "no_user"),
    (0.5, (), "quota_hard"),
    (0.5, (), "blocklisted"),
    (0.3, (), "unauthenticated"),
    (0.6, ("quota_soft",) * 3, "ok"),
    (0.6, (), None),  # "quota_soft" until it expires
    (1.2, ("busy",), "ok"),
    (1.2, ("lost",), "ok"),
    (0.8, ("timeout", "timeout"), "ok"),
    (0.8, ("dns_soft",), "ok"),
]
BIG_PROVIDERS = [
    ("gmail.com", "gmail-smtp-in.l.google.com", "ok_gmail", "throttle_gmail"),
    ("outlook.com", "outlook-com.olc.protection.outlook.com", "ok_outlook", "busy"),
    ("yahoo.com", "mta5.am0.yahoodns.net", "ok", "throttle_yahoo"),
    ("hotmail.com", "hotmail-com.olc.protection.outlook.com", "ok_outlook", "busy"),
    ("icloud.com", "mx01.mail.icloud.com", "ok", "busy"),
    ("gmx.de", "mx00.emig.gmx.net", "ok", "throttle_yahoo"),
    ("web.de", "mx-ha03.web.de", "ok", "throttle_yahoo"),
    ("orange.fr", "smtp-in.orange.fr", "ok", "busy"),
    ("aol.com", "mx-aol.mail.gm0.yahoodns.net", "ok", "throttle_yahoo"),
    ("googlemail.com", "gmail-smtp-in.l.google.com", "ok_gmail", "throttle_gmail"),
]
N_DOMAINS = 3000
ZIPF_S = 1.07
# Disk-full windows, as fractions of SPAN: one domain recovers, one is still full at the end.
DISK_FULL = {13: (0.20, 0.45), 21: (0.70, 1.01)}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass
class Domain:
    name: str  # as written in the log (may have upper case, or be Unicode)
    label: str  # what the exporter must report: lower case, IDNA A-labels
    mx: str
    ip: str
    kind: str  # ordinary | greylisting | unreachable | nonexistent | provider
    sent_reply: str = "ok"
    soft_reply: str = "busy"  # a provider's throttling reply
    disk_full: tuple[float, float] | None = None  # log-time window of 431 4.3.1


@dataclass
class Recipient:
    address: str
    domain: Domain
    plan: list[str]  # deferrals still to come, then `end`
    end: str | None
    stuck: str  # the deferral repeated when `end` is None
    done: bool = False
    deferred: Reply | None = None  # the last reply, while the last attempt was a deferral


@dataclass
class Message:
    qid: str
    sender: str
    recipients: list[Recipient]
    arrival: float
    agent: str  # smtp | lmtp | local
    backoff: float = MIN_BACKOFF
    notify: bool = True  # a notice to the sender follows a bounce (not for notices themselves)


@dataclass
class Truth:
    """What the exporter must count, built line by line as the lines are written."""

    attempts: Counter = field(default_factory=Counter)
    deliveries: Counter = field(default_factory=Counter)
    expired: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    lines_by_kind: Counter = field(default_factory=Counter)
    lines_by_kind_bsd: Counter = field(default_factory=Counter)  # those with traditional stamps
    streaks: dict = field(default_factory=dict)  # (domain, code) -> [since, last, attempts]
    now: float = float("-inf")

    def delivery(self, when: float, domain: str, reply: Reply) -> None:
        self.events[reply.status] += 1
        self.attempts[domain] += 1
        self._tick(when)
        if reply.status == "sent":
            self.deliveries[domain] += 1
            for key in [k for k, s in self.streaks.items() if k[0] == domain and s[0] <= when]:
                del self.streaks[key]
            return
        kind = "soft" if reply.status == "deferred" else "hard"
        self.failures[(domain, kind, reply.code or "none", reply.enhanced or "none",
                       reply.category)] += 1
        if reply.status == "deferred" and (reply.code == RULE_CODE
                                           or reply.enhanced == RULE_ENHANCED):
            if when + CLEAR_AFTER < self.now:
                return  # timed out already
            streak = self.streaks.setdefault((domain, reply.code or "none"), [when, when, 0])
            streak[0], streak[1] = min(streak[0], when), max(streak[1], when)
            streak[2] += 1

    def expiry(self, when: float, domain: str) -> None:
        self.events["expired"] += 1
        self.expired[domain] += 1
        self._tick(when)

    def _tick(self, when: float) -> None:
        self.now = max(self.now, when)
        for key in [k for k, s in self.streaks.items() if s[1] + CLEAR_AFTER < self.now]:
            del self.streaks[key]

    def persistent(self) -> list[list[str]]:
        return sorted([list(key) for key, (since, last, attempts) in self.streaks.items()
                       if attempts >= MIN_ATTEMPTS and last - since >= MIN_DURATION])


class Stop(Exception):
    """The requested number of lines is written."""


class Generator:
    def __init__(self, lines: int, seed: int, rfc3339_from: float = 0.5):
        self.rng = random.Random(seed)
        self.limit = lines
        self.rfc3339_at = int(lines * rfc3339_from)
        self.written = 0
        self.out: list[str] = []
        self.truth = Truth()
        self.domains = self._domains()
        self.remote = self.domains[1:]  # recipient domains of outbound mail: not ours
        self.local = Domain(f"{HOST}.{OUR_DOMAIN}", f"{HOST}.{OUR_DOMAIN}", "local", "", "ours")
        self._cum = list(itertools.accumulate(1.0 / (k ** ZIPF_S)
                                              for k in range(1, len(self.remote) + 1)))
        self._fate_cum = list(itertools.accumulate(w for w, _, _ in FATES))
        self._queue: list[tuple[float, int, object]] = []
        self._seq = itertools.count()
        self._qids = itertools.count(1)
        self._pids = {name: 1000 + 97 * i for i, name in enumerate(
            ("smtpd", "submission/smtpd", "cleanup", "qmgr", "smtp", "lmtp", "local", "bounce",
             "pickup", "anvil"))}
        messages = lines / LINES_PER_MESSAGE
        self.message_gap = SPAN / max(messages, 1.0)
        self.noise_gap = self.message_gap / NOISE_PER_MESSAGE

    # -- the world ------------------------------------------------------------------------------

    def _domains(self) -> list[Domain]:
        rng = self.rng
        out = [Domain(OUR_DOMAIN, OUR_DOMAIN, f"mail.{OUR_DOMAIN}", "private/dovecot-lmtp",
                      "ours")]
        for name, mx, sent, soft in BIG_PROVIDERS:
            out.append(Domain(name, name, mx, _ip(rng), "provider", sent, soft))
        syllables = ["al", "ba", "co", "da", "el", "fi", "go", "ha", "in", "jo", "ka", "lu", "mi",
                     "no", "or", "pa", "qu", "ri", "sa", "ta", "un", "ve", "wo", "xi", "yo", "ze"]
        tlds = ["com", "net", "org", "de", "fr", "nl", "co.uk", "it", "es", "io", "ch", "at"]
        seen = {d.label for d in out}
        unicode_names = ["bücher.example", "müller-bau.de", "straße.example"]
        while len(out) < N_DOMAINS:
            rank = len(out)
            if rank in (150, 420, 1500):
                name = unicode_names[(150, 420, 1500).index(rank)]
                label = name.encode("idna").decode("ascii")
            else:
                base = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
                name = label = f"{base}{rng.choice(['', '-mail', 'corp', '-online', ''])}" \
                               f".{rng.choice(tlds)}"
                if label in seen:
                    continue
                if rank % 97 == 5:  # some domains written in mixed case
                    name = name.capitalize()
            seen.add(label)
            roll = rng.random()
            kind = ("greylisting" if roll < 0.05 else "unreachable" if roll < 0.055
                    else "nonexistent" if roll < 0.06 else "ordinary")
            out.append(Domain(name, label, f"mx.{label}", _ip(rng), kind))
        for rank, (start, end) in DISK_FULL.items():
            out[rank].kind = "ordinary"
            out[rank].disk_full = (START + start * SPAN, START + end * SPAN)
        return out

    def _domain(self) -> Domain:
        pick = self.rng.random() * self._cum[-1]
        return self.remote[bisect.bisect_left(self._cum, pick)]

    def _recipient(self, domain: Domain) -> Recipient:
        rng = self.rng
        local = f"{rng.choice(['info', 'j.smith', 'anna', 'sales', 'm.rossi', 'kontakt', 'bob'])}" \
                f"{rng.randint(1, 999)}"
        address = f"{local}@{domain.name}"
        if domain.kind == "unreachable":
            return Recipient(address, domain, [], None, "timeout")
        if domain.kind == "nonexistent":
            return (Recipient(address, domain, [], "dns_hard", "dns_soft") if rng.random() < 0.5
                    else Recipient(address, domain, [], None, "dns_soft"))
        _, plan, end = FATES[bisect.bisect_left(self._fate_cum,
                                                rng.random() * self._fate_cum[-1])]
        plan = list(plan)
        if domain.kind == "greylisting":
            plan.insert(0, "greylisted")
        if domain.kind == "provider" and rng.random() < 0.04:
            plan[:0] = [domain.soft_reply] * rng.randint(1, 3)
        if end == "ok":
            end = domain.sent_reply
        return Recipient(address, domain, plan, end, "quota_soft")

    def _qid(self) -> str:
        # A bijection of a counter onto 10 hex digits: unique, and looks like Postfix's.
        return f"{(next(self._qids) * 0x9E3779B1) % (1 << 40):010X}"

    def _id(self) -> str:
        return "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))

    # -- writing --------------------------------------------------------------------------------

    def emit(self, when: float, program: str, message: str, kind: str | None = None) -> None:
        if self.written >= self.limit:
            raise Stop
        self.out.append(f"{self._stamp(when)} {HOST} {program}: {message}\n")
        self.written += 1
        if kind:
            self.truth.lines_by_kind[kind] += 1
            if self.written <= self.rfc3339_at:
                self.truth.lines_by_kind_bsd[kind] += 1

    def _stamp(self, when: float) -> str:
        whole = int(when)
        if self.written < self.rfc3339_at:
            return _bsd(whole)
        year, month, day, hh, mm, ss = _gmtime(whole)
        micros = int((when - whole) * 1_000_000)
        return f"{year:04d}-{month:02d}-{day:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{micros:06d}+00:00"

    def logged_time(self, when: float) -> float:
        """The time the exporter reads back from the stamp of the next line (with TZ=UTC)."""
        whole = int(when)
        if self.written < self.rfc3339_at:
            return float(whole)
        return whole + int((when - whole) * 1_000_000) / 1_000_000

    def prog(self, service: str) -> str:
        """``postfix/smtp[1234]``: a few processes per service (qmgr is one)."""
        pid = self._pids[service]
        if service not in ("qmgr", "anvil"):
            pid += self.rng.randrange(6)
        return f"postfix/{service}[{pid}]"

    # -- the simulation -------------------------------------------------------------------------

    def at(self, when: float, action: object) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def run(self) -> None:
        self.at(START, ("arrival",))
        self.at(START + 0.5, ("noise",))
        try:
            while self._queue:
                when, _, action = heapq.heappop(self._queue)
                name, *args = action
                getattr(self, f"_do_{name}")(when, *args)
        except Stop:
            pass

    def _do_arrival(self, when: float) -> None:
        self.at(when + self.rng.expovariate(1.0 / self.message_gap), ("arrival",))
        roll = self.rng.random()
        if roll < 0.62:
            self._outbound(when)
        elif roll < 0.97:
            self._inbound(when)
        else:
            self._cron(when)

    def _outbound(self, when: float) -> None:
        rng = self.rng
        submission = rng.random() < 0.5
        service = "submission/smtpd" if submission else "smtpd"
        kind = "submission" if submission else "smtpd"
        client = "unknown[198.51.100.77]" if submission else "app1.example.org[192.0.2.10]"
        sender = f"{rng.choice(['news', 'billing', 'alerts', 'j.doe', 'support'])}@{OUR_DOMAIN}"
        qid = self._qid()
        count = 1 if rng.random() < 0.8 else rng.randint(2, 5)
        recipients = [self._recipient(self._domain()) for _ in range(count)]
        t = when
        smtpd = self.prog(service)  # one process serves the whole session
        self.emit(t, smtpd, f"connect from {client}", f"{kind}:connect")
        if submission:
            self.emit(t + 0.01, smtpd, f"Anonymous TLS connection established from "
                      f"{client}: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) "
                      f"key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest "
                      f"SHA256", f"{kind}:tls")
            self.emit(t + 0.05, smtpd, f"{qid}: client={client}, sasl_method=PLAIN, "
                      f"sasl_username={sender}", f"{kind}:client_sasl")
        else:
            self.emit(t + 0.05, smtpd, f"{qid}: client={client}", f"{kind}:client")
        self._queued(t + 0.1, qid, sender, recipients, dkim=True)
        self.emit(t + 0.2, smtpd, f"disconnect from {client} ehlo=1 "
                  f"{'starttls=1 auth=1 ' if submission else ''}mail=1 rcpt={count} data=1 quit=1 "
                  f"commands={6 + count if submission else 4 + count}", f"{kind}:disconnect")
        message = Message(qid, sender, recipients, when, "smtp")
        self.at(t + 0.3 + rng.random(), ("attempt", message))

    def _inbound(self, when: float) -> None:
        rng = self.rng
        client = f"mail-{rng.choice(['ej1', 'wr1', 'pf1'])}-f{rng.randint(1, 200)}.google.com" \
                 f"[209.85.{rng.randint(128, 255)}.{rng.randint(1, 254)}]"
        qid = self._qid()
        sender = f"someone{rng.randint(1, 5000)}@{self._domain().name}"
        user = f"{rng.choice(['anna', 'bob', 'carla', 'dev', 'info', 'postmaster'])}@{OUR_DOMAIN}"
        recipients = [Recipient(user, self.domains[0], [], "lmtp_ok", "quota_soft")]
        smtpd = self.prog("smtpd")
        self.emit(when, smtpd, f"connect from {client}", "smtpd:connect")
        self.emit(when + 0.02, smtpd, f"Anonymous TLS connection established from "
                  f"{client}: TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) "
                  f"key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
                  "smtpd:tls")
        self.emit(when + 0.05, smtpd, f"{qid}: client={client}", "smtpd:client")
        self._queued(when + 0.1, qid, sender, recipients, dkim=False)
        self.emit(when + 0.2, smtpd, f"disconnect from {client} ehlo=2 starttls=1 "
                  f"mail=1 rcpt=1 data=1 quit=1 commands=7", "smtpd:disconnect")
        self.at(when + 0.25 + rng.random() * 0.2, ("attempt", Message(qid, sender, recipients,
                                                                      when, "lmtp")))

    def _cron(self, when: float) -> None:
        qid = self._qid()
        recipients = [Recipient(f"root@{HOST}.{OUR_DOMAIN}", self.local, [], "local_ok",
                                "quota_soft")]
        self.emit(when, self.prog("pickup"), f"{qid}: uid=0 from=<root>", "pickup")
        self._queued(when + 0.01, qid, f"root@{HOST}.{OUR_DOMAIN}", recipients, dkim=False)
        self.at(when + 0.05, ("attempt", Message(qid, recipients[0].address, recipients, when,
                                                 "local")))

    def _queued(self, when: float, qid: str, sender: str, recipients: list[Recipient],
                dkim: bool) -> None:
        self.emit(when, self.prog("cleanup"), f"{qid}: message-id=<{self._id()}@{OUR_DOMAIN}>",
                  "cleanup:message-id")
        if dkim:
            self.emit(when + 0.01, "opendkim[812]", f"{qid}: DKIM-Signature field added "
                      f"(s=mail, d={OUR_DOMAIN})", "opendkim")
        size = self.rng.randint(900, 60000)
        self.emit(when + 0.02, self.prog("qmgr"), f"{qid}: from=<{sender}>, size={size}, "
                  f"nrcpt={len(recipients)} (queue active)", "qmgr:inserted")

    def _do_attempt(self, when: float, message: Message) -> None:
        rng = self.rng
        t = when
        for recipient in message.recipients:
            if recipient.done:
                continue
            t += 0.05 + rng.random() * 0.3
            self._deliver(t, message, recipient)
        if all(r.done for r in message.recipients):
            self.emit(t + 0.01, self.prog("qmgr"), f"{message.qid}: removed", "qmgr:removed")
            return
        retry = t + message.backoff * (0.9 + 0.2 * rng.random())
        message.backoff = min(message.backoff * 2, MAX_BACKOFF)
        if retry - message.arrival >= QUEUE_LIFETIME:
            expiry = max(message.arrival + QUEUE_LIFETIME, t + 1.0)
            self.at(expiry + rng.random() * 60, ("expire", message))
        else:
            self.at(retry, ("attempt", message))

    def _reply_for(self, when: float, recipient: Recipient) -> str:
        window = recipient.domain.disk_full
        if window and window[0] <= when < window[1]:
            return "disk_full"
        if recipient.plan:
            return recipient.plan.pop(0)
        return recipient.end or recipient.stuck

    def _deliver(self, when: float, message: Message, recipient: Recipient) -> None:
        domain = recipient.domain
        if message.agent == "lmtp":
            reply = REPLIES["lmtp_ok"]
            relay = f"mail.{OUR_DOMAIN}[private/dovecot-lmtp]"
        elif message.agent == "local":
            reply = REPLIES["local_ok"]
            relay = "local"
        else:
            name = self._reply_for(when, recipient)
            reply = REPLIES[name]
            relay = "none" if name in ("timeout", "dns_soft", "dns_hard") else \
                f"{domain.mx}[{domain.ip}]:25"
        text = reply.text.format(mx=domain.mx, ip=domain.ip, rcpt=recipient.address,
                                 domain=domain.name, id=self._id(), our=OUR_DOMAIN,
                                 our_ip=OUR_IP)
        if message.agent == "smtp" and reply.status == "sent" and self.rng.random() < 0.7:
            self.emit(when - 0.01, self.prog("smtp"), f"Trusted TLS connection established to "
                      f"{domain.mx}[{domain.ip}]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 "
                      f"(256/256 bits) key-exchange X25519 server-signature ECDSA (P-256) "
                      f"server-digest SHA256", "smtp:tls")
        age = when - message.arrival
        rnd = self.rng.random
        delays = "/".join(_seconds(x) for x in (max(age - 0.5, 0), rnd() * 0.05, rnd() * 0.3,
                                                  rnd() * 0.4))
        orig = f"orig_to=<{recipient.address.split('@')[0]}>, " if message.agent == "local" else ""
        logged = self.logged_time(when)
        self.emit(when, self.prog(message.agent), f"{message.qid}: to=<{recipient.address}>, "
                  f"{orig}relay={relay}, delay={_seconds(age)}, delays={delays}, "
                  f"dsn={reply.enhanced}, status={reply.status} ({text})",
                  f"{message.agent}:{reply.status}")
        self.truth.delivery(logged, domain.label, reply)
        if reply.status == "deferred":
            recipient.deferred = reply
            return
        recipient.done = True
        recipient.deferred = None
        if reply.status == "bounced" and message.notify:
            self._notice(when + 0.02, message, "non-delivery")

    def _do_expire(self, when: float, message: Message) -> None:
        logged = self.logged_time(when)
        self.emit(when, self.prog("qmgr"), f"{message.qid}: from=<{message.sender}>, "
                  f"status=expired, returned to sender", "qmgr:expired")
        for recipient in message.recipients:
            if not recipient.done and recipient.deferred is not None:
                self.truth.expiry(logged, recipient.domain.label)
            recipient.done = True
        if message.notify:
            self._notice(when + 0.01, message, "non-delivery")
        self.emit(when + 0.05, self.prog("qmgr"), f"{message.qid}: removed", "qmgr:removed")

    def _notice(self, when: float, message: Message, what: str) -> None:
        """The bounce daemon's notice to the sender: a new message, delivered by LMTP."""
        qid = self._qid()
        self.emit(when, self.prog("bounce"), f"{message.qid}: sender {what} notification: {qid}",
                  "bounce")
        self.emit(when + 0.01, self.prog("cleanup"), f"{qid}: message-id=<{self._id()}@{HOST}."
                  f"{OUR_DOMAIN}>", "cleanup:message-id")
        size = self.rng.randint(3000, 9000)
        self.emit(when + 0.02, self.prog("qmgr"), f"{qid}: from=<>, size={size}, nrcpt=1 "
                  f"(queue active)", "qmgr:inserted")
        recipients = [Recipient(message.sender, self.domains[0], [], "lmtp_ok", "quota_soft")]
        self.at(when + 0.1, ("attempt", Message(qid, "", recipients, when, "lmtp",
                                                notify=False)))

    def _do_noise(self, when: float) -> None:
        rng = self.rng
        self.at(when + rng.expovariate(1.0 / self.noise_gap), ("noise",))
        ip = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}." \
             f"{rng.randint(1, 254)}"
        client = f"unknown[{ip}]"
        roll = rng.random()
        smtpd = self.prog("smtpd")
        if roll < 0.45:  # a scanner: connect, give up, disconnect
            self.emit(when, smtpd, f"connect from {client}", "smtpd:connect")
            after = rng.choice(["CONNECT", "EHLO", "AUTH", "STARTTLS"])
            self.emit(when + 1.5, smtpd, f"lost connection after {after} from {client}",
                      "smtpd:lost")
            self.emit(when + 1.5, smtpd, f"disconnect from {client} ehlo=1 auth=0/1 "
                      f"commands=1/2", "smtpd:disconnect")
        elif roll < 0.60:  # a spam source, rejected before queueing
            self.emit(when, smtpd, f"connect from {client}", "smtpd:connect")
            self.emit(when + 0.3, smtpd, f"NOQUEUE: reject: RCPT from {client}: 554 5.7.1 "
                      f"Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; "
                      f"from=<spam@{self._domain().name}> to=<anna@{OUR_DOMAIN}> proto=ESMTP "
                      f"helo=<[{ip}]>", "smtpd:reject")
            self.emit(when + 0.4, smtpd, f"disconnect from {client} ehlo=1 mail=1 rcpt=0/1 "
                      f"quit=1 commands=3/4", "smtpd:disconnect")
        elif roll < 0.70:  # password guessing
            self.emit(when, smtpd, f"warning: {client}: SASL LOGIN authentication failed: "
                      f"UGFzc3dvcmQ6", "smtpd:sasl_failed")
        elif roll < 0.75:
            self.emit(when, self.prog("anvil"), f"statistics: max connection rate 3/60s for "
                      f"(smtp:{ip}) at {_bsd(when)}", "anvil")
        else:  # the mailbox users reading their mail
            user = f"{rng.choice(['anna', 'bob', 'carla', 'dev'])}@{OUR_DOMAIN}"
            session = self._id()
            self.emit(when, "dovecot", f"imap-login: Login: user=<{user}>, method=PLAIN, "
                      f"rip={ip}, lip=192.0.2.1, mpid={rng.randint(2000, 60000)}, TLS, "
                      f"session=<{session}>", "dovecot")
            self.emit(when + 30, "dovecot", f"imap({user})<{rng.randint(2000, 60000)}>"
                      f"<{session}>: Disconnected: Logged out in=312 out=2411 deleted=0 "
                      f"expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0",
                      "dovecot")



def _ip(rng: random.Random) -> str:
    return f"{rng.randint(11, 199)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}." \
           f"{rng.randint(1, 254)}"


def _seconds(value: float) -> str:
    """Postfix's way with delays: two significant digits, no exponent ("0.03", "8.2", "3605")."""
    if value >= 10:
        return str(round(value))
    return f"{value:.2f}".rstrip("0").rstrip(".") if value >= 0.01 else "0"


def _bsd(when: float) -> str:
    _, month, day, hh, mm, ss = _gmtime(int(when))
    return f"{_MONTHS[month - 1]} {day:2d} {hh:02d}:{mm:02d}:{ss:02d}"


def _gmtime(seconds: int) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(seconds)
    return t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec


def generate(lines: int, seed: int = 1, rfc3339_from: float = 0.5) -> tuple[str, dict]:
    """The log text and its truth."""
    gen = Generator(lines, seed, rfc3339_from)
    gen.run()
    truth = gen.truth
    failures = [[*key, count] for key, count in sorted(truth.failures.items())]
    deliveries = sum(truth.lines_by_kind[k] for k in truth.lines_by_kind
                     if k.split(":")[0] in ("smtp", "lmtp", "local") and k != "smtp:tls")
    return "".join(gen.out), {
        "seed": seed,
        "lines": gen.written,
        "delivery_lines": deliveries,
        "domains": len(truth.attempts.keys() | truth.expired.keys()),
        "events": dict(sorted(truth.events.items())),
        "attempts": dict(sorted(truth.attempts.items())),
        "deliveries": dict(sorted(truth.deliveries.items())),
        "expired": dict(sorted(truth.expired.items())),
        "failures": failures,
        "persistent": truth.persistent(),
        "last_time": truth.now,
        "lines_by_kind": dict(sorted(truth.lines_by_kind.items())),
        "lines_by_kind_bsd": dict(sorted(truth.lines_by_kind_bsd.items())),
    }


def write(path: str, lines: int, seed: int = 1, rfc3339_from: float = 0.5) -> dict:
    """Write the log to ``path`` and its truth to ``path`` with ``.truth.json``; return the truth."""
    text, truth = generate(lines, seed, rfc3339_from)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    # Stamps without a year are placed no later than the file's mtime: make it the log's end.
    os.utime(path, (truth["last_time"], truth["last_time"]))
    with open(truth_path(path), "w", encoding="utf-8") as handle:
        json.dump({"generator": {"lines": lines, "seed": seed, "rfc3339_from": rfc3339_from},
                   **truth}, handle, indent=1, ensure_ascii=False)
    return truth


def truth_path(path: str) -> str:
    base, _ = os.path.splitext(path)
    return base + ".truth.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rfc3339-from", type=float, default=0.5,
                        help="fraction of the lines after which stamps are RFC 3339 (default 0.5)")
    parser.add_argument("--out", required=True, help="log file to write (truth beside it)")
    args = parser.parse_args(argv)
    truth = write(args.out, args.lines, args.seed, args.rfc3339_from)
    print(f"{args.out}: {truth['lines']} lines, {truth['delivery_lines']} delivery lines "
          f"({truth['delivery_lines'] / max(truth['lines'], 1):.1%}), {truth['domains']} domains, "
          f"events {truth['events']}, persistent {truth['persistent']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
