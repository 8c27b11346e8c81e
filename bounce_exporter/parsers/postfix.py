"""Postfix: delivery lines of the delivery agents, and qmgr's expiry line.

    Nov 28 12:22:37 mx1 postfix/smtp[14397]: 4E6AC512253: to=<u@disk-full.example>,
        relay=127.0.0.1[127.0.0.1]:2525, delay=0.02, delays=0/0/0/0.01, dsn=4.3.1,
        status=deferred (host 127.0.0.1[127.0.0.1] said: 431 4.3.1 disk is full (in reply to RCPT TO command))
    Nov 28 12:24:40 mx1 postfix/qmgr[14113]: 4E6AC512253: from=<app@sender.example>,
        status=expired, returned to sender

A deferral whose text starts with ``delivery temporarily suspended:`` (written by the ``error``
or ``retry`` agent, ``relay=none``) was decided without contacting a server: Postfix had marked
the destination (or transport) dead after earlier failures. It is a ``deferred`` event with
``without_attempt="destination_suspended"``: a deferral without attempt, not an attempt.

The expiry line names no recipient: the parser remembers, per queue id, the recipients whose last
attempt was deferred, and turns the expiry into one ``expired`` event for each of them, carrying the
last reply. Soft or hard is what Postfix decided (``status=``), never the reply's first digit.

Speed (most lines of a mail log record no delivery): ``parse_block()`` looks at a whole block of
lines with two ``bytes.find`` loops, for ``status=`` and for lines ending in ``: removed``, and cuts
out only those lines; the others cost nothing per line. ``select()`` does the same for a list of
lines, with two byte tests per line and no call. A delivery agent's line is then read by one regex,
header, message and the reply code together (``_AGENT_DELIVERY``). Anything that regex does not take
goes the general way (header, then the message by program), which gives the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.domains import domain_of
from bounce_exporter.parsers.ledger import MAX_MESSAGES, Ledger, LedgerParser
from bounce_exporter.parsers.relay import find_relay_in_line, postfix_relay
from bounce_exporter.parsers.reply import DSN_FIELD, REPLY, find_reply
from bounce_exporter.parsers.syslog import STAMP, StampReader, parse_header

MTA = "postfix"
DELIVERY_AGENTS = frozenset({"smtp", "lmtp", "local", "virtual", "pipe", "error", "retry", "discard"})
STATUS_OF = {"sent": "sent", "deferred": "deferred", "SOFTBOUNCE": "deferred", "bounced": "bounced"}
SUSPENDED = "delivery temporarily suspended: "
DESTINATION_SUSPENDED = "destination_suspended"  # the reason of its deferrals without attempt

_ADDRESS = r"(?:<(?P<{0}>[^>]*)>|(?P<{0}_bare>[^\s,]*))"
# The reply where ``find_reply`` finds it in Postfix's usual texts: at the start ("250 2.0.0 Ok"),
# or after "host NAME said: " / "host NAME refused to talk to me: " (NAME has no blank, so no earlier
# place can hold a reply). Without it in one of these places (code None), ``find_reply`` looks.
_REPLY_AT_START = r"(?:host \S+ (?:said|refused to talk to me): )?\s*" + REPLY
_DELIVERY_MESSAGE = (
    r"\s*(?P<qid>[^\s:]+): to=" + _ADDRESS.format("rcpt")
    + r", (?:orig_to=(?:<[^>]*>|[^\s,]*), )?relay=(?P<relay>[^,]*), (?:conn_use=\d+, )?delay=[\d.]+, "
    r"(?:delays=[\d./]+, )?(?:dsn=(?P<dsn>" + DSN_FIELD + r"), )?status=(?P<status>[\w-]+)"
    r"(?: \((?P<text>(?:" + _REPLY_AT_START + r")?.*)\))?\s*$"
)
_DELIVERY = re.compile(_DELIVERY_MESSAGE, re.DOTALL)
# A delivery agent's whole line: stamp, host, "instance/.../agent[pid]: ", then the message above.
_AGENT_DELIVERY = re.compile(
    STAMP + r" \S+ (?P<instance>[^\s\[:/]+)/(?:[^\s\[:/]+/)*"
    r"(?:" + "|".join(sorted(DELIVERY_AGENTS)) + r")(?:\[\d+\])?: " + _DELIVERY_MESSAGE,
    re.DOTALL,
)
_AGENT_DELIVERY_GROUPS = ("mon", "day", "hms", "iso", "instance", "qid", "rcpt", "rcpt_bare",
                          "relay", "dsn", "status", "text", "code", "enhanced")
assert tuple(_AGENT_DELIVERY.groupindex) == _AGENT_DELIVERY_GROUPS  # the order parse() unpacks
_REMOVED = b": removed"
# qmgr's expiry: the queue lifetime ran out, or ``postsuper -f`` forced it (Postfix 3.5 and later)
_EXPIRED = re.compile(r"(?P<qid>[^\s:]+): from=<[^>]*>, status=(?P<how>(?:force-)?expired), "
                      r"returned to sender\s*$")


def without_attempt(status: str, text: str) -> str | None:
    """``destination_suspended`` for a deferral Postfix decided without contacting a server
    (``delivery temporarily suspended: ...``: the destination or transport is marked dead
    after earlier failures; the text tells the earlier failure), else None."""
    if status == "deferred" and text and text.startswith(SUSPENDED):
        return DESTINATION_SUSPENDED
    return None


class PostfixParser(LedgerParser):
    mta = MTA
    # the reasons of its LineNotUnderstood and its counters(): series that start at 0
    not_understood_reasons = ("no_header", "malformed_delivery")
    not_attempt_reasons: tuple[str, ...] = ()

    def __init__(self, reference: float | None = None, *,
                 max_pending: int = MAX_MESSAGES):
        self._stamps = StampReader(reference)
        # queue id -> {"syslog-name recipient": waiting}, oldest message first. Keyed by queue
        # id alone so that a ": removed" line is checked without reading its header.
        self._pending = Ledger(max_pending, name=MTA)

    def select(self, lines: list[bytes]) -> list[bytes]:
        """The lines ``parse`` can make something of, in order: those with ``status=`` (deliveries,
        expiries) and the ``: removed`` ones. (``find`` is quicker than ``in`` on bytes.)"""
        return [raw for raw in lines if raw.find(b"status=") >= 0 or raw.endswith(_REMOVED)]

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]:
        if raw.find(b"status=") < 0:
            if raw.endswith(_REMOVED):
                self._forget_removed(raw)
            return ()
        return self._parse_status_line(raw)

    def parse_block(self, block: bytes,
                    failed: Callable[[bytes, Exception], None]) -> list[DeliveryEvent]:
        """The events of a block of complete lines (each ending with a newline), in order: what
        ``parse`` gives line by line. Only the lines with ``status=`` and those ending in
        ``: removed`` are cut out (found with ``bytes.find``, the others are never looked at); a
        line that raises is handed to ``failed(line, error)``, inside the ``except``, and skipped."""
        events: list[DeliveryEvent] = []
        find, rfind = block.find, block.rfind
        status = find(b"status=")
        removed = find(_REMOVED)
        while status >= 0 or removed >= 0:
            if removed < 0 or 0 <= status < removed:
                start = rfind(b"\n", 0, status) + 1
                end = find(b"\n", status)
                raw = block[start : end - 1 if block[end - 1] == 13 else end]  # 13: CR
                try:
                    events += self._parse_status_line(raw)
                except Exception as error:  # noqa: BLE001 - the caller decides (counts, logs)
                    failed(raw, error)
                status = find(b"status=", end)
                if 0 <= removed < end:  # inside that line: not at the end of a line
                    removed = find(_REMOVED, end)
            else:
                end = removed + len(_REMOVED)
                if block[end] == 10 or (block[end] == 13 and block[end + 1] == 10):  # LF, CR LF
                    raw = block[rfind(b"\n", 0, removed) + 1 : end]
                    try:
                        self._forget_removed(raw)
                    except Exception as error:  # noqa: BLE001
                        failed(raw, error)
                removed = find(_REMOVED, end)
        return events

    def _parse_status_line(self, raw: bytes) -> Sequence[DeliveryEvent]:
        """A line with ``status=``: a delivery, an expiry, or nothing."""
        line = raw.decode("utf-8", "replace")
        match = _AGENT_DELIVERY.match(line)
        if match is not None:  # the usual case: header, delivery and reply read at once
            (mon, day, hms, iso, instance, qid, rcpt, rcpt_bare, relay, dsn, status, text, code,
             enhanced) = match.groups()
            when = self._stamps.time_of(mon, day, hms, iso)
            if when is None:
                raise LineNotUnderstood("no_header")
            return self._delivery(when, instance, qid, rcpt, rcpt_bare, relay, dsn, status, text,
                                  code, enhanced)
        header = parse_header(line, self._stamps)
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
        qid, rcpt, rcpt_bare, relay, dsn, status, text, code, enhanced = match.group(
            "qid", "rcpt", "rcpt_bare", "relay", "dsn", "status", "text", "code", "enhanced")
        return self._delivery(when, instance, qid, rcpt, rcpt_bare, relay, dsn, status, text,
                              code, enhanced)

    def _delivery(self, when: float, instance: str, qid: str, rcpt: str | None,
                  rcpt_bare: str | None, relay: str, dsn: str | None, status: str,
                  text: str | None, code: str | None,
                  enhanced: str | None) -> Sequence[DeliveryEvent]:
        status = STATUS_OF.get(status)
        if status is None:  # address verification (deliverable/undeliverable) and the like
            return ()
        if text is None:
            text = ""
        elif code is None:  # not where the regex looks: wherever find_reply finds it
            code, enhanced = find_reply(text)
        recipient = rcpt if rcpt is not None else rcpt_bare
        # relay=none: no session, but the text names the host it tried ("connect to HOST[IP]")
        host = postfix_relay(relay) if relay != "none" else find_relay_in_line(text)
        event = DeliveryEvent(when, MTA, qid, recipient, domain_of(recipient), status, code,
                              dsn or enhanced, text, host, without_attempt(status, text))
        if status == "deferred" or qid in self._pending:  # else nothing to remember or forget
            self._remember(instance, event)
        return (event,)

    def parse_expiry(self, when: float, instance: str, message: str) -> Sequence[DeliveryEvent]:
        """qmgr's ``QID: from=<...>, status=expired, returned to sender`` (or ``force-expired``,
        by ``postsuper -f``): one event per pending recipient."""
        match = _EXPIRED.match(message)
        if match is None:
            return ()
        qid = match.group("qid")
        pending = self._take(qid, instance)
        if not pending:
            return (DeliveryEvent(when, MTA, qid, None, None, "expired", None, None,
                                  f"{match.group('how')}, returned to sender"),)
        return tuple(
            DeliveryEvent(when, MTA, qid, last.recipient, last.domain, "expired", last.code,
                          last.enhanced, last.text, last.relay)
            for last in pending
        )

    def _remember(self, instance: str, event: DeliveryEvent) -> None:
        qid, key = event.queue_id or "", f"{instance} {event.recipient or ''}"
        if event.without_attempt is not None:
            self._pending.hold(qid, key, event)
        elif event.status == "deferred":
            self._pending.defer(qid, key, event)
        else:
            self._pending.forget(qid, key)

    def _take(self, qid: str, instance: str) -> list[DeliveryEvent]:
        """Forget the recipients of the message ``qid`` of ``instance``; return their last deferrals."""
        return self._pending.take(qid, where=f"{instance} ")

    def _forget_removed(self, raw: bytes) -> None:
        end = len(raw) - len(_REMOVED)
        qid = raw[raw.rfind(b" ", 0, end) + 1 : end].decode("utf-8", "replace")
        if qid not in self._pending:
            return  # the usual case: nothing deferred is remembered for it
        header = parse_header(raw.decode("utf-8", "replace"), self._stamps)
        if header is None:
            return
        self._take(header.message[: -len(": removed")], header.program.partition("/")[0])
