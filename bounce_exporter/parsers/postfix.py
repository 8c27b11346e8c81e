"""Postfix: delivery lines of the delivery agents, and qmgr's expiry line.

    Nov 28 12:22:37 mx1 postfix/smtp[14397]: 4E6AC512253: to=<u@disk-full.example>,
        relay=127.0.0.1[127.0.0.1]:2525, delay=0.02, delays=0/0/0/0.01, dsn=4.3.1,
        status=deferred (host 127.0.0.1[127.0.0.1] said: 431 4.3.1 disk is full (in reply to RCPT TO command))
    Nov 28 12:24:40 mx1 postfix/qmgr[14113]: 4E6AC512253: from=<app@sender.example>,
        status=expired, returned to sender

The expiry line names no recipient: the parser remembers, per queue id, the recipients whose last
attempt was deferred, and turns the expiry into one ``expired`` event for each of them, carrying the
last reply. Soft or hard is what Postfix decided (``status=``), never the reply's first digit.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

from bounce_exporter.domains import domain_of
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.reply import find_reply
from bounce_exporter.syslog import StampReader, parse_header

MTA = "postfix"
DELIVERY_AGENTS = frozenset({"smtp", "lmtp", "local", "virtual", "pipe", "error", "retry", "discard"})
STATUS_OF = {"sent": "sent", "deferred": "deferred", "SOFTBOUNCE": "deferred", "bounced": "bounced"}
MAX_PENDING_MESSAGES = 100_000

_ADDRESS = r"(?:<(?P<{0}>[^>]*)>|(?P<{0}_bare>[^\s,]*))"
_DELIVERY = re.compile(
    r"\s*(?P<qid>[^\s:]+): to=" + _ADDRESS.format("rcpt")
    + r", (?:orig_to=(?:<[^>]*>|[^\s,]*), )?relay=[^,]*, (?:conn_use=\d+, )?delay=[\d.]+, "
    r"(?:delays=[\d./]+, )?(?:dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), )?status=(?P<status>[\w-]+)"
    r"(?: \((?P<text>.*)\))?\s*$",
    re.DOTALL,
)
_EXPIRED = re.compile(r"(?P<qid>[^\s:]+): from=<[^>]*>, status=expired, returned to sender\s*$")


class PostfixParser:
    mta = MTA

    def __init__(self, reference: float | None = None):
        self._stamps = StampReader(reference)
        # (syslog name, queue id) -> {recipient: last deferral event}, oldest message first
        self._pending: OrderedDict[tuple[str, str], dict[str, DeliveryEvent]] = OrderedDict()
        self.pending_evicted = 0

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]:
        if b"status=" not in raw:
            if raw.endswith(b": removed"):
                self._forget_removed(raw)
            return ()
        header = parse_header(raw.decode("utf-8", "replace"), self._stamps)
        if header is None:
            raise LineNotUnderstood("no_header")
        instance, _, service = header.program.partition("/")
        service = service.rpartition("/")[2]
        if service in DELIVERY_AGENTS:
            return self.parse_delivery(header.time, instance, header.message)
        if service == "qmgr":
            return self.parse_expiry(header.time, instance, header.message)
        return ()

    def parse_delivery(self, when: float, instance: str, message: str) -> Sequence[DeliveryEvent]:
        """A delivery agent's ``QID: to=<...>, ..., status=...`` message (the part after the header)."""
        match = _DELIVERY.match(message)
        if match is None:
            raise LineNotUnderstood("malformed_delivery")
        status = STATUS_OF.get(match.group("status"))
        if status is None:  # address verification (deliverable/undeliverable) and the like
            return ()
        text = match.group("text") or ""
        code, enhanced = find_reply(text)
        recipient = match.group("rcpt") if match.group("rcpt") is not None else match.group("rcpt_bare")
        event = DeliveryEvent(
            time=when, mta=MTA, queue_id=match.group("qid"), recipient=recipient,
            domain=domain_of(recipient), status=status, code=code,
            enhanced=match.group("dsn") or enhanced, text=text,
        )
        self._remember(instance, event)
        return (event,)

    def parse_expiry(self, when: float, instance: str, message: str) -> Sequence[DeliveryEvent]:
        """qmgr's ``QID: from=<...>, status=expired, returned to sender``: one event per pending recipient."""
        match = _EXPIRED.match(message)
        if match is None:
            return ()
        qid = match.group("qid")
        pending = self._pending.pop((instance, qid), None)
        if not pending:
            return (DeliveryEvent(when, MTA, qid, None, None, "expired", None, None,
                                  "expired, returned to sender"),)
        return tuple(
            DeliveryEvent(when, MTA, qid, last.recipient, last.domain, "expired", last.code,
                          last.enhanced, last.text)
            for last in pending.values()
        )

    def _remember(self, instance: str, event: DeliveryEvent) -> None:
        key = (instance, event.queue_id or "")
        if event.status == "deferred":
            recipients = self._pending.get(key)
            if recipients is None:
                recipients = self._pending[key] = {}
                if len(self._pending) > MAX_PENDING_MESSAGES:
                    self._pending.popitem(last=False)
                    self.pending_evicted += 1
            recipients[event.recipient or ""] = event
        else:
            recipients = self._pending.get(key)
            if recipients is not None:
                recipients.pop(event.recipient or "", None)

    def _forget_removed(self, raw: bytes) -> None:
        header = parse_header(raw.decode("utf-8", "replace"), self._stamps)
        if header is None:
            return
        instance = header.program.partition("/")[0]
        self._pending.pop((instance, header.message[: -len(": removed")]), None)
