"""OpenSMTPD: ``mta``/``mda`` delivery lines, envelope expiry, and session errors without envelopes.

    Nov 28 12:22:45 mail smtpd[14390]: 912fc4270770288f mta delivery evpid=ce2b550ff77d09a5
        from=<app@sender.example> to=<u@disk-full.example> rcpt=<-> source="127.0.0.1"
        relay="127.0.0.1 (localhost)" delay=0s result="TempFail" stat="431 4.3.1 disk is full"
    Nov 28 12:24:58 mail smtpd[14391]: relay: Expire for 4bed225b561b1303: from=<app@...>,
        to=<u@busy.example>, rcpt=<->, delay=2m8s, stat=Envelope expired
    Nov 28 12:22:55 mail smtpd[14390]: 912fc469d917b761 mta error reason=BANNER rejected:
        421 4.3.2 mx.busy.example Service not available, too busy

- ``result=`` decides: ``Ok`` sent, ``TempFail`` deferred, ``PermFail`` and ``Loop`` bounced,
  never the reply's first digit. ``relay: Expire for <evpid>: ..., stat=Envelope expired`` is
  expired (carrying the envelope's last reply when seen); the 5.x form ``relay: TempFail for
  <evpid>: ...`` is read like the 6.x lines. The reply is read at the start of ``stat=`` (or after
  an LMTP/SMTP ``server error: `` inside it, as ``mda`` lines have it).
- A delivery line whose session id is ``0000000000000000`` was written without any SMTP session:
  OpenSMTPD failed the envelope from its route state ("Network error on destination MXs" once its
  MXs failed or the route is disabled), without asking a server. A ``TempFail`` of that kind is no
  attempt: a ``deferred`` event with ``without_attempt="destination_suspended"`` (a deferral
  without attempt, of the recipient's domain; the envelope waits in the ledger), counted in
  ``tempfail_without_session`` too. (A ``PermFail`` is still a bounce.)
- A session that fails before any envelope was handed to it logs ``mta error reason=...`` with no
  recipient: OpenSMTPD logs these per connection, and none of its lines names the connection's
  domain. What ties it to one is its server address (``mta connecting address=...``, port
  included): when sessions to that address carried envelopes of exactly one recipient domain, the
  failure is that domain's; otherwise (never an envelope through it, or several domains: a relay
  host) it has no domain (the ``unknown`` label). The envelope lines without session name only
  the host, without port, so they cannot tie it. Such a line gives one ``deferred`` event without
  recipient when it is a real attempt that no envelope line reports:
  - ``<STAGE> rejected: <reply>`` (BANNER, EHLO, HELO, LHLO, STARTTLS, AUTH: before any envelope);
  - a connection that never logged ``mta connected`` (connection refused, connect timeout);
  - any other error of a connected session that has logged no delivery yet is held until the next
    line: OpenSMTPD writes the envelopes it fails because of the error (with this session id)
    right after the error line, and those lines then stand for it; otherwise the held event is
    returned with the next line.
  Errors of a session that already logged deliveries give no event (those lines said it all).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

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
from bounce_exporter.parsers.relay import opensmtpd_relay, sendmail_relay
from bounce_exporter.parsers.reply import reply_at, reply_at_or_after
from bounce_exporter.parsers.syslog import StampReader, parse_header

MTA = "opensmtpd"
NO_SESSION = "0000000000000000"
DESTINATION_SUSPENDED = "destination_suspended"  # the reason of its deferrals without attempt
MAX_SESSIONS = 10_000
MAX_DOMAINS_AT = 2  # domains remembered per server address: two already make it shared
STATUS_OF = {"Ok": "sent", "TempFail": "deferred", "PermFail": "bounced", "Loop": "bounced",
             "Expire": "expired", "Expired": "expired"}

_SESSION_LINE = re.compile(r"(?P<sid>[0-9a-f]{16}) (?P<agent>mta|mda) (?P<what>\S+)(?: (?P<rest>.*))?$",
                           re.DOTALL)
_DELIVERY = re.compile(
    r"evpid=(?P<evpid>[0-9a-f]+) from=<[^>]*> to=<(?P<to>[^>]*)> .*?"
    r"\bresult=\"?(?P<result>\w+)\"? stat=(?P<stat>.*)$",
    re.DOTALL,
)
# 5.x and the expiry of 6.x: "relay: TempFail for <id>: from=..., to=..., ..., stat=..."
_OLD_STYLE = re.compile(
    r"(?:relay|delivery): (?P<result>\w+) for (?P<evpid>[0-9a-f]+): (?P<fields>.*?), stat=(?P<stat>.*)$",
    re.DOTALL,
)
_OLD_TO = re.compile(r"(?:^|, )to=(?:<(?P<angle>[^>]*)>|(?P<bare>[^,\s]*))")
_OLD_SESSION = re.compile(r"(?:^|, )session=(?P<sid>[0-9a-f]{16})")
_RELAY = re.compile(r' relay=(?P<relay>"[^"]*"|\S+)')  # relay="192.0.2.1 (mx.example.com)"
_OLD_RELAY = re.compile(r"(?:^|, )relay=(?P<relay>[^,]*)")  # 5.x: relay=mx.example.com [192.0.2.1]
_ADDRESS = re.compile(r"address=(?:[a-z+]+://)?(\S+)")  # "smtp+notls://[::1]:2729" -> "[::1]:2729"
_STAGE_REJECTED = re.compile(r"[A-Z]+ rejected: ")
_SERVER_ERROR = re.compile(r"(?:LMTP|SMTP) server error: ")


def stat_reply(stat: str) -> tuple[str | None, str | None]:
    """(code, enhanced) of a ``stat=`` value: a reply at its start, or after "server error: "."""
    return reply_at_or_after(stat, _SERVER_ERROR)


class _Session:
    __slots__ = ("address", "connected", "delivered")

    def __init__(self) -> None:
        self.connected = False
        self.delivered = False
        self.address: str | None = None  # "[::1]:2729", from its "mta connecting address=" line


class OpenSMTPDParser(LedgerParser):
    mta = MTA
    # the reasons of its LineNotUnderstood and its counters(): series that start at 0
    not_understood_reasons = ("no_header", "malformed_delivery")
    not_attempt_reasons = ("tempfail_without_session",)

    def __init__(self, reference: float | None = None, *,
                 max_pending: int = MAX_MESSAGES):
        self._stamps = StampReader(reference)
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._held: tuple[str, DeliveryEvent] | None = None  # (session id, its error's event)
        # envelope id -> last deferral event, least recently deferred first (a new deferral of an
        # envelope makes it the newest: refresh)
        self._pending = Ledger(max_pending, name=MTA, refresh=True)
        self.tempfail_without_session = 0
        # server address -> the recipient domains whose envelopes a session to it carried (a
        # few; more make it shared): what ties a failed session without envelope to a domain
        self._domains_at: OrderedDict[str, set[str]] = OrderedDict()

    def _more_state(self) -> dict:
        return {"sessions": [[sid, s.connected, s.delivered, s.address]
                             for sid, s in self._sessions.items()],
                "held": [self._held[0], event_to_state(self._held[1])] if self._held else None,
                "addresses": [[a, sorted(d)] for a, d in self._domains_at.items()]}

    def _restore_more(self, state: dict) -> None:
        self._sessions = OrderedDict()
        for entry in state.get("sessions") or ():
            if (isinstance(entry, list) and len(entry) in (3, 4) and isinstance(entry[0], str)
                    and all(isinstance(flag, bool) for flag in entry[1:3])):
                session = self._sessions[entry[0]] = _Session()
                session.connected, session.delivered = entry[1], entry[2]
                address = entry[3] if len(entry) == 4 else None
                session.address = address if isinstance(address, str) else None
        self._domains_at = OrderedDict()
        for entry in state.get("addresses") or ():
            if (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                    and isinstance(entry[1], list) and all(isinstance(d, str) for d in entry[1])):
                self._domains_at[entry[0]] = set(entry[1][:MAX_DOMAINS_AT])
        held = state.get("held")
        event = event_from_state(held[1]) if isinstance(held, list) and len(held) == 2 else None
        self._held = (held[0], event) if event is not None and isinstance(held[0], str) else None

    def counters(self) -> dict[str, int]:
        """Lines that were read but are not delivery attempts, by reason (for self-metrics)."""
        return {"tempfail_without_session": self.tempfail_without_session}

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]:
        if self._held is not None:
            return self._after_held(raw)
        if (b" mta " not in raw and b" mda " not in raw and b"relay: " not in raw
                and b"delivery: " not in raw):
            return ()
        header = parse_header(raw.decode("utf-8", "replace"), self._stamps)
        if header is None:
            if b" delivery " in raw or b"relay: " in raw:
                raise LineNotUnderstood("no_header")
            return ()
        return self.parse_message(header.time, header.message)

    def parse_message(self, when: float, message: str) -> Sequence[DeliveryEvent]:
        """The part after the syslog header."""
        line = _SESSION_LINE.match(message)
        if line is not None:
            return self._session_line(when, line.group("sid"), line.group("agent"),
                                      line.group("what"), line.group("rest") or "")
        old = _OLD_STYLE.match(message)
        if old is not None:
            return self._old_style(when, old)
        return ()

    def _session_line(self, when: float, sid: str, agent: str, what: str,
                      rest: str) -> Sequence[DeliveryEvent]:
        if what in ("delivery", "event=delivery"):
            match = _DELIVERY.match(rest)
            if match is None:
                raise LineNotUnderstood("malformed_delivery")
            stat = match.group("stat")
            if len(stat) >= 2 and stat[0] == '"' and stat[-1] == '"':
                stat = stat[1:-1]
            relay = _RELAY.search(rest, match.end("to"), match.start("result"))
            return self._delivery(when, sid, match.group("evpid"), match.group("to"),
                                  match.group("result"), stat,
                                  opensmtpd_relay(relay.group("relay")) if relay else None)
        if agent != "mta":
            return ()
        if what == "connecting":
            address = _ADDRESS.search(rest)
            self._session(sid).address = address.group(1) if address else None
        elif what == "connected":
            self._session(sid).connected = True
        elif what == "disconnected":
            self._sessions.pop(sid, None)
        elif what == "error" and rest.startswith("reason="):
            return self._session_error(when, sid, rest[len("reason="):])
        return ()

    def _delivery(self, when: float, sid: str | None, evpid: str, to: str, result: str,
                  stat: str, relay: str | None = None) -> Sequence[DeliveryEvent]:
        status = STATUS_OF.get(result)
        if status is None:
            return ()
        if sid == NO_SESSION and status == "deferred":
            self.tempfail_without_session += 1
            event = DeliveryEvent(when, MTA, evpid, to, domain_of(to), status, None, None, stat,
                                  relay, DESTINATION_SUSPENDED)
            self._pending.hold(evpid, "", event)
            return (event,)
        if sid is not None and sid != NO_SESSION:
            session = self._sessions.get(sid)
            if session is None:  # a session that began before the log did
                session = self._session(sid)
            session.delivered = True
            if session.address is not None:
                self._learn(session.address, domain_of(to))
        if status == "expired":
            last = self._pending.forget(evpid, "")
            if last is not None:
                return (DeliveryEvent(when, MTA, evpid, last.recipient, last.domain, "expired",
                                      last.code, last.enhanced, last.text, last.relay),)
        code, enhanced = stat_reply(stat)
        event = DeliveryEvent(when, MTA, evpid, to, domain_of(to), status, code, enhanced, stat,
                              relay)
        if status == "deferred":
            self._pending.defer(evpid, "", event)
        else:
            self._pending.forget(evpid, "")
        return (event,)

    def _old_style(self, when: float, match: re.Match[str]) -> Sequence[DeliveryEvent]:
        fields = match.group("fields")
        to = _OLD_TO.search(fields)
        if to is None:
            raise LineNotUnderstood("malformed_delivery")
        recipient = to.group("angle") if to.group("angle") is not None else to.group("bare")
        session = _OLD_SESSION.search(fields)
        relay = _OLD_RELAY.search(fields)
        return self._delivery(when, session.group("sid") if session else None,
                              match.group("evpid"), recipient, match.group("result"),
                              match.group("stat"),
                              sendmail_relay(relay.group("relay")) if relay else None)

    def _session_error(self, when: float, sid: str, reason: str) -> Sequence[DeliveryEvent]:
        session = self._sessions.pop(sid, None)
        stage = _STAGE_REJECTED.match(reason)
        code, enhanced = reply_at(reason, stage.end()) if stage else (None, None)
        event = DeliveryEvent(when, MTA, None, None, self._domain_at(session), "deferred", code,
                              enhanced, reason)
        if stage is not None or (session is not None and not session.connected):
            return (event,)
        if session is None or session.delivered:
            return ()
        self._held = (sid, event)
        return ()

    def _after_held(self, raw: bytes) -> Sequence[DeliveryEvent]:
        """The line after a held session error: its envelopes stand for it, else emit it."""
        sid, held = self._held  # type: ignore[misc]
        self._held = None
        if raw.find(sid.encode()) >= 0 and b" delivery " in raw:
            return self.parse(raw)
        return (held, *self.parse(raw))

    def _learn(self, address: str, domain: str | None) -> None:
        """A session to ``address`` carried an envelope of ``domain``."""
        domains = self._domains_at.get(address)
        if domains is None:
            domains = self._domains_at[address] = set()
            if len(self._domains_at) > MAX_SESSIONS:
                self._domains_at.popitem(last=False)
        if domain is not None and len(domains) < MAX_DOMAINS_AT:
            domains.add(domain)

    def _domain_at(self, session: _Session | None) -> str | None:
        """The one domain whose envelopes sessions to this session's server address carried;
        None when unknown or shared by several (a relay host, the lab's one port for many)."""
        if session is None or session.address is None:
            return None
        domains = self._domains_at.get(session.address)
        return next(iter(domains)) if domains is not None and len(domains) == 1 else None

    def _session(self, sid: str) -> _Session:
        session = self._sessions.get(sid)
        if session is None:
            session = self._sessions[sid] = _Session()
            if len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session
