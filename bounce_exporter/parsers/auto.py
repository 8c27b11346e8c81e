"""``--log.format auto``: sniff a source's lines until one shows its format, then delegate to it.

Recognised, line by line (the first line that matches decides, for good, for this source):
- Exchange message tracking: a ``#Software: Microsoft Exchange`` or ``#Fields: date-time,...``
  header, or a CSV line that starts with an ISO stamp and has an Exchange event id;
- Exim's own main log: an Exim stamp followed by a message id or ``exim <version> daemon``;
- syslog lines, by program: ``postfix*/<daemon>`` (and any ``name/<postfix daemon>``: multiple
  instances choose their syslog name) → postfix; ``exim``/``exim4`` → exim; ``sendmail``,
  ``sm-mta``, ``sm-msp-queue`` (``sm-*``) → sendmail; ``smtpd`` (no slash) with an OpenSMTPD
  message (``<16 hex> smtp|mta|mda ...``, ``relay: ...``, ``info: OpenSMTPD ...``) → opensmtpd.
Lines before the decision give no events. The line that decides is parsed by the chosen parser.

``AutoParser`` is a ``Parser`` with every optional member (``select``, ``parse_block``), each
forwarded to the chosen parser's when it has one (its ``capabilities``), else done line by line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import (
    PARSERS,
    Capabilities,
    Failed,
    Parser,
    ParserBase,
    capabilities,
    make_parser,
)
from bounce_exporter.parsers.ledger import LedgerView
from bounce_exporter.parsers.syslog import StampReader, parse_header

POSTFIX_DAEMONS = frozenset({
    "anvil", "bounce", "cleanup", "discard", "dnsblog", "error", "flush", "lmtp", "local",
    "master", "oqmgr", "pickup", "pipe", "postdrop", "postfix-script", "postlog", "postmap",
    "postqueue", "postscreen", "postsuper", "proxymap", "qmgr", "qmqpd", "relay", "retry",
    "scache", "sendmail", "showq", "smtp", "smtpd", "spawn", "tlsmgr", "tlsproxy",
    "trivial-rewrite", "verify", "virtual",
})
UTF8_BOM = b"\xef\xbb\xbf"  # Exchange log files start with one
_EXCHANGE_ROW = re.compile(
    rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z,.*,(?:RECEIVE|SEND|DELIVER|DEFER|FAIL|DSN|SUBMIT"
    rb"|EXPAND|RESOLVE|REDIRECT|TRANSFER|AGENTINFO|HAREDIRECT|HARECEIVE|BADMAIL|DROP|POISONMESSAGE"
    rb"|SUBMITDEFER|NOTIFYMAPI|PROCESS),")
_EXIM_LINE = re.compile(
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [+-]\d{4})?(?: \[\d+\])? "
    rb"(?:[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4}) "
    rb"|exim \d|Start queue run|End queue run)")
_OPENSMTPD_MESSAGE = re.compile(
    r"[0-9a-f]{16} (?:smtp|mta|mda) |(?:relay|delivery): \w+ for |info: OpenSMTPD |smtp-out: ")


def sniff(raw: bytes) -> str | None:
    """The log format a single line shows, or None."""
    raw = raw.removeprefix(UTF8_BOM)
    if raw.startswith(b"#"):
        if raw.startswith((b"#Software: Microsoft Exchange", b"#Fields: date-time,")):
            return "exchange"
        return None
    first = raw[:1]
    if first.isdigit():
        if _EXIM_LINE.match(raw):
            return "exim"
        if raw[10:11] == b"T" and _EXCHANGE_ROW.match(raw):
            return "exchange"
    header = parse_header(raw.decode("utf-8", "replace"), StampReader(0.0))
    if header is None:
        return None
    program = header.program
    if "/" in program:
        instance, _, daemon = program.rpartition("/")
        if instance.startswith("postfix") or daemon in POSTFIX_DAEMONS:
            return "postfix"
        return None
    if program in ("exim", "exim4"):
        return "exim"
    if program == "sendmail" or program.startswith("sm-"):
        return "sendmail"
    if program == "smtpd" and _OPENSMTPD_MESSAGE.match(header.message):
        return "opensmtpd"
    return None


class AutoParser(ParserBase):
    """Delegates to the parser of the first recognised format; ``()`` until then."""

    def __init__(self, reference: float | None = None, *, max_pending: int | None = None):
        self._reference = reference
        self._max_pending = max_pending  # the chosen parser's ledger cap
        self.format: str | None = None
        self.delegate: Parser | None = None
        self._caps: Capabilities | None = None  # the delegate's

    @property
    def mta(self) -> str:
        return self.delegate.mta if self.delegate is not None else "auto"

    # Before the first line the format is not known: the reasons of every format start at 0.
    @property
    def not_understood_reasons(self) -> tuple[str, ...]:
        return _every_format()[0]

    @property
    def not_attempt_reasons(self) -> tuple[str, ...]:
        return _every_format()[1]

    def counters(self) -> Mapping[str, int]:
        return self._caps.counters() if self._caps is not None else {}

    @property
    def pending_evictions(self) -> int:
        if self.delegate is None or self._caps is None or self._caps.evictions is None:
            return 0
        return self._caps.evictions(self.delegate)

    # the chosen parser's not-attempt counters, by name, for people and tests reading them
    @property
    def retry_not_reached(self) -> int:
        return self._counter("retry_not_reached")

    @property
    def queued_only(self) -> int:
        return self._counter("queued_only")

    @property
    def tempfail_without_session(self) -> int:
        return self._counter("tempfail_without_session")

    def _counter(self, name: str) -> int:
        counts = self.counters()
        if name not in counts:
            raise AttributeError(name)
        return counts[name]

    def in_flight(self) -> LedgerView:
        """The delegate's ledger view ([] before a format is chosen, or for one without)."""
        caps = self._caps
        return caps.in_flight() if caps is not None and caps.in_flight is not None else []

    def state(self) -> dict:
        """The chosen format and its parser's state (nothing chosen yet: nothing to carry on)."""
        delegate = self.delegate
        return {"mta": "auto", "format": self.format,
                "delegate": delegate.state() if delegate is not None else None}

    def saved_state(self) -> dict:
        """``state()`` as a snapshot keeps it: the delegate's own ``saved_state``."""
        caps = self._caps
        return {"mta": "auto", "format": self.format,
                "delegate": caps.saved_state() if caps is not None else None}

    def restore(self, state: dict) -> None:
        """Carry on with a saved choice and its parser's state (one not right is ignored)."""
        found, saved = state.get("format"), state.get("delegate")
        if state.get("mta") != "auto" or found not in PARSERS or found == "auto":
            return
        delegate = self._choose(found)
        if isinstance(saved, dict):
            delegate.restore(saved)

    def _choose(self, found: str) -> Parser:
        self.format = found
        delegate = self.delegate = make_parser(found, self._reference,
                                               max_pending=self._max_pending)
        self._caps = capabilities(delegate)
        return delegate

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]:
        delegate = self.delegate
        if delegate is None:
            found = sniff(raw)
            if found is None:
                return ()
            delegate = self._choose(found)
        return delegate.parse(raw)

    def select(self, lines: list[bytes]) -> list[bytes]:
        """All lines until a format is chosen (each may decide), then the chosen parser's."""
        caps = self._caps
        if caps is None or caps.select is None:
            return lines
        return caps.select(lines)

    def parse_block(self, block: bytes, failed: Failed) -> list[DeliveryEvent]:
        """The chosen parser's ``parse_block`` once there is one that has it; else (and for the
        lines until the choice) line by line."""
        caps = self._caps
        if caps is not None and caps.parse_block is not None:
            return caps.parse_block(block, failed)
        events: list[DeliveryEvent] = []
        start = 0
        while start < len(block):
            end = block.index(b"\n", start) + 1
            raw = block[start:end - 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                events += self.parse(raw)
            except Exception as error:  # noqa: BLE001 - handed to failed, as parse_block's contract
                failed(raw, error)
            start = end
            caps = self._caps
            if caps is not None and caps.parse_block is not None:
                if start < len(block):
                    events += caps.parse_block(block[start:], failed)
                break
        return events


@functools.cache
def _every_format() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The reasons (not understood, not attempts) named by the parser of any format, sorted."""
    caps = [capabilities(make_parser(name)) for name in PARSERS if name != "auto"]
    return (tuple(sorted({r for c in caps for r in c.not_understood_reasons})),
            tuple(sorted({r for c in caps for r in c.not_attempt_reasons})))
