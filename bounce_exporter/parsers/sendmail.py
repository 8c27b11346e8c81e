"""Sendmail: the ``to=... stat=...`` delivery lines, and the queue-timeout notice.

    Apr  2 00:15:25 mta001 sendmail[12566]: u31FFPtp032300: to=<deferred1@example.com>,
        delay=00:00:15, xdelay=00:00:15, mailer=esmtp, pri=34527, relay=[93.184.216.34]
        [93.184.216.34], dsn=4.3.5, stat=Deferred: 451 4.3.5 Server configuration problem
    Dec  1 22:36:14 markserver sm-mta[4811]: mAO2tx04010773: mB26PuEl004811: sender notify:
        Cannot send message for 5 days

- ``stat=Sent ...`` is ``sent``, ``stat=Deferred...`` is ``deferred``, ``stat=queued`` (accepted
  into the queue, nothing tried) gives no event, any other ``stat=`` (``User unknown``,
  ``Service unavailable``, ``Host unknown ...``) is ``bounced``: Sendmail writes "Deferred" for
  every temporary failure, so soft or hard is its word, never the reply's first digit.
- ``to=`` may list several recipients (``to=<a@x>,<b@y>``): one event per recipient.
- ``enhanced`` is the ``dsn=`` field; the basic code is read only right after ``Deferred: `` (or
  at the start of another ``stat=``), so text further on never reads as a reply.
- ``delay=`` may carry days (``8+03:40:15``); it is not used.
- "sender notify: Cannot send message for N days" (Timeout.queuereturn; also written after
  "DSN:", "return to sender:" or "postmaster notify:", counted once per queue id) names no
  recipient: the parser remembers, per queue id, the recipients whose last attempt was deferred and turns the
  notice into one ``expired`` event for each, carrying the last reply (as the Postfix parser does).
  "Warning: could not send message for past ..." is only a delay warning: no event.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.domains import domain_of
from bounce_exporter.parsers.ledger import MAX_MESSAGES, Ledger, LedgerParser
from bounce_exporter.parsers.relay import sendmail_relay
from bounce_exporter.parsers.reply import DSN_FIELD, reply_at
from bounce_exporter.parsers.syslog import StampReader, parse_header

MTA = "sendmail"
MAX_EXPIRED_REMEMBERED = 10_000

_DELIVERY = re.compile(r"(?P<qid>[^\s:]+): to=(?P<to>.*?)(?:, [a-z]+=|$)", re.DOTALL)
_DSN = re.compile(r", dsn=(?P<dsn>" + DSN_FIELD + r")(?=,|$)")
_RELAY = re.compile(r", relay=(?P<relay>[^,]*)")
_EXPIRED = re.compile(
    r"(?P<qid>[^\s:]+): [^\s:]+: (?:sender notify|return to sender|postmaster notify|DSN): "
    r"(?P<text>Cannot send message for .*)$", re.DOTALL)
_ANGLE = re.compile(r"<([^<>]*)>")


def recipients_of(to: str) -> list[str]:
    """The addresses of a ``to=`` value: ``<a@x>,<b@y>``, ``a@x,b@y`` or ``"Name, X" <a@x>``."""
    if "<" in to:
        return [address for address in _ANGLE.findall(to) if address]
    return [address.strip() for address in to.split(",") if address.strip()]


class SendmailParser(LedgerParser):
    mta = MTA
    # the reasons of its LineNotUnderstood and its counters(): series that start at 0
    not_understood_reasons = ("no_header", "malformed_delivery", "no_recipient")
    not_attempt_reasons = ("queued_only",)

    def __init__(self, reference: float | None = None, *,
                 max_pending: int = MAX_MESSAGES):
        self._stamps = StampReader(reference)
        # queue id -> {recipient: last deferral event}, oldest message first
        self._pending = Ledger(max_pending, name=MTA)
        self._expired: OrderedDict[str, None] = OrderedDict()  # queue ids whose notice was read
        self.queued_only = 0  # stat=queued: accepted into the queue, no attempt

    def _more_state(self) -> dict:
        return {"expired": list(self._expired)}

    def _restore_more(self, state: dict) -> None:
        expired = state.get("expired")
        if isinstance(expired, list):
            self._expired = OrderedDict((q, None) for q in expired if isinstance(q, str))

    def counters(self) -> dict[str, int]:
        """Lines that were read but are not delivery attempts, by reason (for self-metrics)."""
        return {"queued_only": self.queued_only}

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]:
        if b"stat=" not in raw:
            if b"Cannot send message for" not in raw:
                return ()
            header = parse_header(raw.decode("utf-8", "replace"), self._stamps)
            if header is None:
                return ()
            return self.parse_expiry(header.time, header.message)
        header = parse_header(raw.decode("utf-8", "replace"), self._stamps)
        if header is None:
            raise LineNotUnderstood("no_header")
        if header.program.startswith("postfix"):
            return ()
        return self.parse_delivery(header.time, header.message)

    def parse_delivery(self, when: float, message: str) -> Sequence[DeliveryEvent]:
        """A ``QID: to=..., ..., stat=...`` message (the part after the syslog header)."""
        match = _DELIVERY.match(message)
        if match is None:
            return ()  # another program's "stat=" (a from= line has none)
        stat_at = message.find(", stat=", match.end("to"))
        if stat_at < 0:
            raise LineNotUnderstood("malformed_delivery")
        stat = message[stat_at + len(", stat="):]
        dsn = _DSN.search(message, match.end("to"), stat_at + 1)
        enhanced = dsn.group("dsn") if dsn else None
        relay_field = _RELAY.search(message, match.end("to"), stat_at + 1)
        relay = sendmail_relay(relay_field.group("relay")) if relay_field else None
        if stat.startswith("Sent"):
            status = "sent"
            code = reply_at(stat, 6)[0] if stat.startswith("Sent (") else None
        elif stat.startswith("Deferred"):
            status = "deferred"
            code = reply_at(stat, 10)[0] if stat.startswith("Deferred: ") else None
        elif stat.lower().startswith("queued"):
            self.queued_only += 1
            return ()
        else:
            status = "bounced"
            code = reply_at(stat)[0]
        qid = match.group("qid")
        recipients = recipients_of(match.group("to"))
        if not recipients:
            raise LineNotUnderstood("no_recipient")
        events = []
        for recipient in recipients:
            event = DeliveryEvent(when, MTA, qid, recipient, domain_of(recipient), status, code,
                                  enhanced, stat, relay)
            self._remember(event)
            events.append(event)
        return events

    def parse_expiry(self, when: float, message: str) -> Sequence[DeliveryEvent]:
        """``QID: NEWQID: sender notify: Cannot send message for 5 days``: one ``expired`` event
        per recipient still deferred (one without a recipient when none is known)."""
        match = _EXPIRED.match(message)
        if match is None:
            return ()
        qid = match.group("qid")
        if qid in self._expired:  # the second notice (sender and postmaster) of one expiry
            return ()
        self._expired[qid] = None
        if len(self._expired) > MAX_EXPIRED_REMEMBERED:
            self._expired.popitem(last=False)
        pending = self._pending.take(qid)
        if not pending:
            return (DeliveryEvent(when, MTA, qid, None, None, "expired", None, None,
                                  match.group("text")),)
        return tuple(
            DeliveryEvent(when, MTA, qid, last.recipient, last.domain, "expired", last.code,
                          last.enhanced, last.text, last.relay)
            for last in pending
        )

    def _remember(self, event: DeliveryEvent) -> None:
        if event.status == "deferred":
            self._pending.defer(event.queue_id or "", event.recipient or "", event)
        else:
            self._pending.forget(event.queue_id or "", event.recipient or "")
