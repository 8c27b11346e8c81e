"""Exim: the main log's delivery lines, with Exim's own stamp or through syslog.

    2026-11-28 12:22:37 1xXHRt-0003ks-27 => u@ok.example R=lab_route T=remote_smtp S=516
        H=127.0.0.1 [127.0.0.1]:2625 C="250 2.0.0 Ok: queued as FAKE000001" QT=0s DT=0s
    2026-11-28 12:22:38 1xXHRu-0003l1-0v == u@disk-full.example R=lab_route T=remote_smtp
        defer (-44) H=127.0.0.1 [127.0.0.1]:2625 DT=0s: SMTP error from remote mail server after
        RCPT TO:<u@disk-full.example>: 431 4.3.1 STOREDRV.Deliver; disk is full
    2026-11-28 12:22:40 1xXHRw-0003lS-0X ** u@nouser.example R=lab_route T=remote_smtp
        H=127.0.0.1 [127.0.0.1]:2625: SMTP error from remote mail server after RCPT TO:<...>:
        550 5.1.1 User unknown DT=0s
    2026-11-28 12:24:41 1xXHRu-0003l1-0v ** u@disk-full.example: retry timeout exceeded

- ``=>`` (first recipient of a delivery) and ``->`` (further recipients of the same transaction)
  are ``sent``; ``==`` is ``deferred``; ``**`` is ``bounced``, except "retry timeout exceeded" and
  "all hosts for '...' have been failing for a long time", which are ``expired``. Soft or hard is
  the flag Exim wrote, never the reply's first digit.
- ``==`` lines whose error is "retry time not reached" (routing, local or host retry, errno -52,
  -53, -54) record that Exim did *not* try: no server was contacted. Each gives a ``deferred``
  event with ``without_attempt="retry_time_not_reached"`` (a deferral without attempt, of the
  recipient's domain) and is counted in ``retry_not_reached`` too; the recipient stays waiting
  in the ledger with its last server's reply.
- Host-level lines without a flag (``1abc-... H=host [ip]: SMTP error ...``, ``... Connection
  refused``) are held per message id: the per-recipient ``==``/``**`` line that follows says the
  same (the last host's error), so it stands for it. A host error no recipient line reports (the
  message then delivered through another host, ``=>``; an earlier host of several; a retry-time
  skip or expiry next) is one failed attempt of the recipient of that next line, and of the
  message's other recipients waiting in the ledger whose last reply came from that host.
- ``=> :blackhole: <address> R=router``: discarded by Exim itself, no server asked: no event
  (counted in ``blackholed``); the recipient leaves the ledger.
- The reply is read only where Exim puts it: inside ``C="..."`` on deliveries, and after
  ``SMTP error from remote mail server after <command>: [host H [ip]: ]`` on failures.
- An expiry carries the last reply of the recipient's last deferral when it was seen (as the
  Postfix parser does); the parser remembers, per message id and recipient, the last deferral.
- Message ids of 16 (``1xXHRt-0003ks-27``) and 23 characters (Exim 4.97+,
  ``1rAbCd-000000005vi-0000``); stamps with milliseconds (``+millisec``), a UTC offset
  (``log_timezone``) and a ``[pid]`` (``+pid``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.domains import domain_of
from bounce_exporter.parsers.ledger import (
    MAX_MESSAGES,
    Ledger,
    LedgerParser,
    event_from_state,
    event_to_state,
)
from bounce_exporter.parsers.relay import relay_host
from bounce_exporter.parsers.reply import reply_at
from bounce_exporter.parsers.syslog import StampReader, parse_header

MTA = "exim"
RETRY_ERRNOS = frozenset({-52, -53, -54})  # ERRNO_RRETRY, ERRNO_LRETRY, ERRNO_HRETRY
RETRY_TIME_NOT_REACHED = "retry_time_not_reached"  # the reason of its deferrals without attempt

_STAMP = re.compile(
    r"(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)(?: (?P<tz>[+-]\d{4}))?(?: \[\d+\])? "
)
# A message id: 16 characters (``1xXHRt-0003ks-27``) or, from Exim 4.97 on, 23
# (``1rAbCd-000000005vi-0000``).
MESSAGE_ID = r"[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4})"

_BODY = re.compile(
    r"(?P<id>" + MESSAGE_ID + r") "
    r"(?P<flag>=>|->|==|\*\*) (?P<rest>.*)",
    re.DOTALL,
)
# A host-level line: "<id> H=name [ip]:port: <error>" (or "... [ip] Connection refused"), no flag
# (not a line about a message received: those name the client's HELO in parentheses, the sender
# with F=<...>, or an ACL's Warning)
_HOST_LINE = re.compile(
    r"(?P<id>" + MESSAGE_ID + r") H=(?P<host>[^\s\[(]*) ?\[(?P<ip>[^\]]*)\](?::\d+)?:? "
    r"(?!F=|Warning: |U=|P=)(?P<message>.*)",
    re.DOTALL,
)
_BLACKHOLE = ":blackhole: "
_ANGLE_ADDRESS = re.compile(r"<([^>]*)>")
MAX_HOST_ERRORS = 10_000  # messages with host-level errors not yet tied to a recipient
# The address, then an optional "(parent)" and "<original address>", then a space, ":" or the end.
_ADDRESS = re.compile(r"(?P<addr>\S+?)(?: \((?P<parent>[^)]*)\))?(?: <(?P<orig>[^>]*)>)?(?=:? |:?$)")
_CONFIRM = re.compile(r' C="(?P<reply>(?:[^"\\]|\\.)*)"')
_DEFER = re.compile(r"(?:^| )defer \((?P<errno>-?\d+)\)")
# After "defer (errno)": [": strerror" when errno > 0] [" H=name [ip]:port"] [" DT=time"] [": message"]
_DEFER_TAIL = re.compile(
    r"(?:: (?P<strerror>[^:]*?)(?= H=| DT=|: |$))?"
    r"(?: H=\S+ \[[^\]]*\](?::\d+)?)?(?: DT=\S+?)?(?:: (?P<message>.*))?$",
    re.DOTALL,
)
_DEFER_TAIL_NO_ERRNO = re.compile(
    r"(?: H=\S+ \[[^\]]*\](?::\d+)?)?(?: DT=\S+?)?(?:: (?P<message>.*))?$", re.DOTALL)
_REMOTE_ERROR = re.compile(
    r"(?:SMTP|LMTP) error (?:from remote (?:mail server|mailer) )?after (?:[^:]|:(?! ))*: "
    r"(?:host \S+ \[[^\]]*\](?::\d+)?: )?"
)
_TRAILING_DT = re.compile(r" DT=\S+$")
# The host of the delivery: " H=name [ip]:port" (Exim writes the address as the name when it has
# none, and "H=[ip]" for an IP literal)
_HOST_FIELD = re.compile(r" H=(?P<host>[^\s\[]*)(?: ?\[(?P<ip>[^\]]*)\])?")


def remote_reply(message: str) -> tuple[str | None, str | None]:
    """(code, enhanced) of the remote reply in an Exim error message, (None, None) if none."""
    match = _REMOTE_ERROR.search(message)
    if match is None:
        return None, None
    return reply_at(message, match.end())


def is_expiry(text: str) -> bool:
    """A ``**`` line's text that means "given up after the retry period", not a refusal."""
    return text.startswith("retry timeout exceeded") or (
        text.startswith("all hosts") and "have been failing for a long time" in text)


class EximParser(LedgerParser):
    mta = MTA
    # the reasons of its LineNotUnderstood and its counters(): series that start at 0
    not_understood_reasons = (
        "no_header", "malformed_delivery", "malformed_deferral", "bad_stamp")
    not_attempt_reasons = ("retry_not_reached", "blackholed")

    def __init__(self, reference: float | None = None, *,
                 max_pending: int = MAX_MESSAGES):
        self._stamps = StampReader(reference)
        self._stamp_key: tuple[str, str | None] | None = None
        self._stamp_value = 0.0
        # message id -> {recipient: last deferral event}, oldest message first
        self._pending = Ledger(max_pending, name=MTA)
        self.retry_not_reached = 0  # "==" lines of recipients Exim skipped: no server contacted
        self.blackholed = 0  # "=> :blackhole:" lines: discarded by Exim, no server contacted
        # message id -> its host-level errors not yet tied to a recipient, oldest message first
        self._host_errors: OrderedDict[str, list[DeliveryEvent]] = OrderedDict()

    def counters(self) -> dict[str, int]:
        """Lines that were read but are not delivery attempts, by reason (for self-metrics)."""
        return {"retry_not_reached": self.retry_not_reached, "blackholed": self.blackholed}

    def _more_state(self) -> dict:
        return {"host_errors": [[qid, [event_to_state(e) for e in held]]
                                for qid, held in self._host_errors.items()]}

    def _restore_more(self, state: dict) -> None:
        self._host_errors = OrderedDict()
        for entry in state.get("host_errors") or ():
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) \
                    and isinstance(entry[1], list):
                held = [event_from_state(e) for e in entry[1]]
                if held and all(e is not None for e in held):
                    self._host_errors[entry[0]] = held  # type: ignore[assignment]

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]:
        if (b" => " not in raw and b" == " not in raw and b" ** " not in raw and b" -> " not in raw
                and b" H=" not in raw):
            return ()
        line = raw.decode("utf-8", "replace")
        stamp = _STAMP.match(line)
        if stamp is not None:
            when = self._time(stamp.group("stamp"), stamp.group("tz"))
            text, start = line, stamp.end()
        else:
            header = parse_header(line, self._stamps)
            if header is None:
                raise LineNotUnderstood("no_header")
            if not header.program.startswith("exim"):
                return ()
            text = header.message
            stamp = _STAMP.match(text)  # syslog_timestamp: Exim's own stamp after the header
            when = self._time(stamp.group("stamp"), stamp.group("tz")) if stamp else header.time
            start = stamp.end() if stamp else 0
        body = _BODY.match(text, start)
        if body is None:  # host-level lines, "<=" lines whose subject holds " => ", ...
            host = _HOST_LINE.match(text, start)
            if host is not None:
                self._host_error(when, host)
            return ()
        return self.parse_body(when, body.group("id"), body.group("flag"), body.group("rest"))

    def parse_body(self, when: float, qid: str, flag: str, rest: str) -> Sequence[DeliveryEvent]:
        """The part after the message id and the flag: ``rcpt [<orig>] R=... T=... ...``."""
        address = _ADDRESS.match(rest)
        if address is None:
            raise LineNotUnderstood("malformed_delivery")
        if flag == "=>" and rest.startswith(_BLACKHOLE):
            return self._blackholed(qid, rest)
        recipient = _recipient(address.group("addr"), address.group("parent"),
                               address.group("orig"))
        tail = rest[address.end():]
        host = _HOST_FIELD.search(tail)
        relay = relay_host(host.group("host"), host.group("ip")) if host else None
        if flag in ("=>", "->"):
            confirm = _CONFIRM.search(tail)
            text = confirm.group("reply") if confirm else ""
            code, enhanced = reply_at(text) if text else (None, None)
            unreported = self._unreported(qid, recipient, stood_for=False)
            return (*unreported,
                    self._event(when, qid, recipient, "sent", code, enhanced, text, relay))
        if flag == "==":
            return self._deferral(when, qid, recipient, tail, relay)
        text = _failure_text(tail)
        if is_expiry(text):
            unreported = self._unreported(qid, recipient, stood_for=False)
            return (*unreported, self._expiry(when, qid, recipient, text))
        code, enhanced = remote_reply(text)
        unreported = self._unreported(qid, recipient, stood_for=True)
        return (*unreported,
                self._event(when, qid, recipient, "bounced", code, enhanced, text, relay))

    def _blackholed(self, qid: str, rest: str) -> Sequence[DeliveryEvent]:
        """``=> :blackhole: <address> R=router``: discarded by Exim itself, no server asked, no
        attempt (counted in ``blackholed``); the recipient is done."""
        address = _ANGLE_ADDRESS.match(rest, len(_BLACKHOLE))
        self.blackholed += 1
        if address is not None:
            self._pending.forget(qid, address.group(1))
        return ()

    def _host_error(self, when: float, host: re.Match[str]) -> None:
        """A host-level line (a connection, greeting or MAIL-stage failure of one host): held
        until a line of its message says whom it was for (``_unreported``)."""
        qid, message = host.group("id"), _TRAILING_DT.sub("", host.group("message"))
        code, enhanced = remote_reply(message)
        event = DeliveryEvent(when, MTA, qid, None, None, "deferred", code, enhanced, message,
                              relay_host(host.group("host"), host.group("ip")))
        held = self._host_errors.get(qid)
        if held is None:
            held = self._host_errors[qid] = []
            if len(self._host_errors) > MAX_HOST_ERRORS:
                self._host_errors.popitem(last=False)
        held.append(event)

    def _unreported(self, qid: str, recipient: str, *, stood_for: bool) -> list[DeliveryEvent]:
        """The held host-level errors of ``qid`` that no recipient line reports: all of them,
        or (``stood_for``: the line read now is a failed attempt, reporting the last host's
        error) all but the last. Each is one failed attempt of ``recipient`` (the recipient of
        the delivery that follows it) and of the message's other recipients waiting in the
        ledger whose last reply came from that host."""
        held = self._host_errors.pop(qid, None)
        if not held or (stood_for and len(held) == 1):
            return []
        waiting = self._pending.recipients(qid)
        return [self._event(h.time, qid, address, "deferred", h.code, h.enhanced, h.text, h.relay)
                for h in (held[:-1] if stood_for else held)
                for address in [recipient, *(e.recipient for e in waiting if e.relay == h.relay
                                             and e.recipient and e.recipient != recipient)]]

    def _deferral(self, when: float, qid: str, recipient: str, tail: str,
                  relay: str | None) -> Sequence[DeliveryEvent]:
        defer = _DEFER.search(tail)
        if defer is None:
            raise LineNotUnderstood("malformed_deferral")
        errno = int(defer.group("errno"))
        after = tail[defer.end():]
        strerror = None
        if errno > 0:
            parts = _DEFER_TAIL.match(after)
            if parts is not None:
                strerror = parts.group("strerror")
        else:
            parts = _DEFER_TAIL_NO_ERRNO.match(after)
        message = parts.group("message") if parts is not None else after.lstrip(": ")
        message = message or ""
        text = ": ".join(part for part in (strerror, message) if part)
        if errno in RETRY_ERRNOS or message.startswith("retry time not reached"):
            self.retry_not_reached += 1
            unreported = self._unreported(qid, recipient, stood_for=False)
            event = DeliveryEvent(when, MTA, qid, recipient, domain_of(recipient), "deferred",
                                  None, None, text, relay, RETRY_TIME_NOT_REACHED)
            self._pending.hold(qid, recipient, event)
            return (*unreported, event)
        code, enhanced = remote_reply(message)
        unreported = self._unreported(qid, recipient, stood_for=True)
        return (*unreported,
                self._event(when, qid, recipient, "deferred", code, enhanced, text, relay))

    def _event(self, when: float, qid: str, recipient: str, status: str, code: str | None,
               enhanced: str | None, text: str, relay: str | None = None) -> DeliveryEvent:
        event = DeliveryEvent(when, MTA, qid, recipient, domain_of(recipient), status, code,
                              enhanced, text, relay)
        if status == "deferred":
            self._pending.defer(qid, recipient, event)
        else:
            self._pending.forget(qid, recipient)
        return event

    def _expiry(self, when: float, qid: str, recipient: str, text: str) -> DeliveryEvent:
        last = self._pending.forget(qid, recipient)
        if last is None:
            return DeliveryEvent(when, MTA, qid, recipient, domain_of(recipient), "expired",
                                 None, None, text)
        return DeliveryEvent(when, MTA, qid, recipient, last.domain, "expired", last.code,
                             last.enhanced, last.text, last.relay)

    def _time(self, stamp: str, tz: str | None) -> float:
        key = (stamp, tz)
        if key == self._stamp_key:
            return self._stamp_value
        try:
            moment = datetime.fromisoformat(stamp)
            if tz is not None:
                offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5]))
                moment = moment.replace(tzinfo=timezone(-offset if tz[0] == "-" else offset))
            value = moment.timestamp()  # a naive stamp is local time, like Exim's default
        except (ValueError, OverflowError):
            raise LineNotUnderstood("bad_stamp") from None
        self._stamp_key, self._stamp_value = key, value
        return value


def _recipient(addr: str, parent: str | None, orig: str | None) -> str:
    """The address a domain is read from: the delivered one, else the parent or original one
    (local deliveries log a file or pipe first: ``=> /var/mail/u <u@example.org>``)."""
    for candidate in (addr, parent, orig):
        if candidate and "@" in candidate and candidate[0] not in "/|":
            return candidate
    return addr


def _failure_text(tail: str) -> str:
    """The message of a ``**`` line: after the first ": " outside quotes (``DN="..."`` may hold
    one), without the trailing ``DT=`` that Exim 4.96 appends."""
    start = 0
    while True:
        colon = tail.find(": ", start)
        if colon < 0:
            return ""
        if tail.count('"', 0, colon) % 2 == 0:
            return _TRAILING_DT.sub("", tail[colon + 2:])
        start = colon + 2
