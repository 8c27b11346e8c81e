"""Microsoft Exchange message tracking logs (``MSGTRK*.LOG``): CSV lines under a ``#Fields:`` header.

    #Fields: date-time,client-ip,...,event-id,internal-message-id,message-id,network-message-id,
        recipient-address,recipient-status,...
    2026-11-28T12:22:38.307Z,...,SMTP,DEFER,29519319995411,<...>,...,u@disk-full.example,
        431 4.3.1 STOREDRV.Deliver; disk is full,...

- Columns are found by name from the file's ``#Fields:`` header: the parser is stateful per
  source and learns the header whenever it sees one (each new log file starts with its own).
  Until it has seen one (following a file from its end skips the header), it uses the known
  layout with as many columns as the line: Exchange 2010 (26), 2013 (27), 2016/2019 (30).
- ``event-id``: ``DELIVER`` (to a mailbox) and ``SEND`` (to the next hop) are ``sent``, ``DEFER``
  is ``deferred``, ``FAIL`` is ``bounced`` — or ``expired`` when its status is
  ``QUEUE.Expired``. Other events (RECEIVE, SUBMIT, DSN, SUBMITDEFER, ...) give nothing.
- ``recipient-address`` may list several recipients separated by ``;``: one event each. Their
  statuses are split from ``recipient-status`` only where a new reply starts (a status text itself
  holds ``;``: ``431 4.3.1 STOREDRV.Deliver; disk is full``); otherwise every recipient gets the
  whole status.
- The reply is read at the start of a recipient's status, or after ``LED=`` (the last error of the
  ``[{LRT=...};{LED=...};{FQDN=...};{IP=...}]`` form) or ``SmtpResponse:``.
- The relay (the remote host) is that form's ``FQDN=``, else, for ``SEND`` (to the next hop), the
  ``server-hostname`` column; a line without either names none.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from datetime import datetime

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.domains import domain_of
from bounce_exporter.parsers.relay import relay_host
from bounce_exporter.parsers.reply import reply_at_or_after

MTA = "exchange"
STATUS_OF = {"DELIVER": "sent", "SEND": "sent", "DEFER": "deferred", "FAIL": "bounced"}
FIELDS_2010 = (
    "date-time", "client-ip", "client-hostname", "server-ip", "server-hostname", "source-context",
    "connector-id", "source", "event-id", "internal-message-id", "message-id", "recipient-address",
    "recipient-status", "total-bytes", "recipient-count", "related-recipient-address", "reference",
    "message-subject", "sender-address", "return-path", "message-info", "directionality",
    "tenant-id", "original-client-ip", "original-server-ip", "custom-data",
)
FIELDS_2016 = (
    *FIELDS_2010[:11], "network-message-id", *FIELDS_2010[11:],
    "transport-traffic-type", "log-id", "schema-version",
)
KNOWN_LAYOUTS = {len(FIELDS_2010): FIELDS_2010, 27: FIELDS_2016[:27], len(FIELDS_2016): FIELDS_2016}
UTF8_BOM = b"\xef\xbb\xbf"
_EVENT_TAGS = (b"DEFER", b"FAIL", b"DELIVER", b"SEND")  # the event-id column decides
_REPLY_START = re.compile(r"(?:LED=|SmtpResponse:)")
_NEXT_STATUS = re.compile(r";(?=\s*(?:[2-5]\d\d[ -]|\[?\{))")
_LED_END = re.compile(r"\};|\}\]")
_FQDN = re.compile(r"\{FQDN=(?P<host>[^};]*)")  # the remote host of a [{LRT=...};{FQDN=...}] status


def exchange_reply(status: str) -> tuple[str | None, str | None]:
    """(code, enhanced) of one recipient's status: at its start, after ``LED=`` or
    ``SmtpResponse:``."""
    return reply_at_or_after(status, _REPLY_START)


def _reply_text(status: str) -> str:
    """The readable part of a status: the ``LED=`` text of the bracketed form, else all of it."""
    at = status.find("LED=")
    if at < 0:
        return status
    end = _LED_END.search(status, at)
    return status[at + 4:end.start() if end else len(status)]


class ExchangeParser:
    mta = MTA
    # the reasons of its LineNotUnderstood and its counters(): series that start at 0
    not_understood_reasons = (
        "malformed_csv", "no_fields_header", "field_count", "missing_field", "bad_stamp",
        "no_recipient")
    not_attempt_reasons: tuple[str, ...] = ()

    def __init__(self, reference: float | None = None):
        self._columns: dict[str, int] | None = None
        self._learned_width = 0

    def state(self) -> dict:
        """Parser state (JSON-ready): the columns of the last ``#Fields:`` header read."""
        return {"mta": MTA, "columns": self._columns, "width": self._learned_width}

    def restore(self, state: dict) -> None:
        """Carry on from a saved ``state()`` (one of another MTA's parser is ignored)."""
        columns, width = state.get("columns"), state.get("width")
        if (state.get("mta") == MTA and isinstance(width, int) and isinstance(columns, dict)
                and all(isinstance(k, str) and isinstance(v, int) for k, v in columns.items())):
            self._columns, self._learned_width = dict(columns), width

    @property
    def pending_evictions(self) -> int:
        """Always 0: Exchange's expiry (``FAIL`` with ``QUEUE.Expired``) names its recipients, so
        nothing of a deferral is remembered."""
        return 0

    def counters(self) -> dict[str, int]:
        return {}

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]:
        raw = raw.removeprefix(UTF8_BOM)  # the start of a log file
        if raw.startswith(b"#"):
            if raw.startswith(b"#Fields:"):
                self.learn_header(raw.decode("utf-8", "replace"))
            return ()
        if not any(tag in raw for tag in _EVENT_TAGS):
            return ()
        line = raw.decode("utf-8", "replace")
        try:
            row = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            raise LineNotUnderstood("malformed_csv") from None
        columns = self._columns
        if columns is None or len(row) < self._learned_width:
            layout = KNOWN_LAYOUTS.get(len(row))
            if layout is None:
                if columns is None:
                    raise LineNotUnderstood("no_fields_header")
                raise LineNotUnderstood("field_count")
            columns = {name: i for i, name in enumerate(layout)}
        return self.parse_row(row, columns)

    def learn_header(self, line: str) -> None:
        """Remember the column of each field named by a ``#Fields:`` line."""
        names = [name.strip() for name in line[len("#Fields:"):].strip().split(",")]
        self._columns = {name: i for i, name in enumerate(names)}
        self._learned_width = max(
            (self._columns.get(name, -1) for name in
             ("date-time", "event-id", "recipient-address", "recipient-status")), default=-1) + 1

    def parse_row(self, row: list[str], columns: dict[str, int]) -> Sequence[DeliveryEvent]:
        try:
            event_id = row[columns["event-id"]]
            status = STATUS_OF.get(event_id)
            if status is None:
                return ()
            stamp = row[columns["date-time"]]
            addresses = row[columns["recipient-address"]]
            recipient_status = row[columns["recipient-status"]]
        except (KeyError, IndexError):
            raise LineNotUnderstood("missing_field") from None
        try:
            when = datetime.fromisoformat(stamp).timestamp()
        except (ValueError, OverflowError):
            raise LineNotUnderstood("bad_stamp") from None
        qid_column = columns.get("internal-message-id")
        qid = row[qid_column] if qid_column is not None and qid_column < len(row) else None
        server_column = columns.get("server-hostname")
        next_hop = (row[server_column] if event_id == "SEND" and server_column is not None
                    and server_column < len(row) else None)
        recipients = [address.strip() for address in addresses.split(";") if address.strip()]
        if not recipients:
            raise LineNotUnderstood("no_recipient")
        statuses = _NEXT_STATUS.split(recipient_status) if len(recipients) > 1 else []
        if len(statuses) != len(recipients):
            statuses = [recipient_status] * len(recipients)
        events = []
        for recipient, text in zip(recipients, statuses):
            text = text.strip()
            code, enhanced = exchange_reply(text)
            final = "expired" if status == "bounced" and "QUEUE.Expired" in text else status
            fqdn = _FQDN.search(text)
            relay = relay_host(fqdn.group("host") if fqdn else next_hop)
            events.append(DeliveryEvent(when, MTA, qid or None, recipient, domain_of(recipient),
                                        final, code, enhanced, _reply_text(text), relay))
        return events
