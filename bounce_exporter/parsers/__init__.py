"""Per-MTA log parsers, registered by name.

A parser turns one raw log line (bytes, without its newline) into the delivery events it records:
an empty sequence for a line that records no delivery (most lines), or ``LineNotUnderstood`` for a
line that looks like a delivery line but cannot be read. Parsers know nothing of metrics.

Every parser satisfies ``Parser`` (``mta``, ``parse``). Counted by the pipeline where a parser has
them: ``counters()`` (lines read that are no delivery attempt, by reason: ``CountingParser``) and
``pending_evictions`` (pending messages forgotten because the parser's memory of them was full:
``EvictingParser``). A parser may also name in advance the reasons it gives, ``not_understood_reasons``
(of its ``LineNotUnderstood``) and ``not_attempt_reasons`` (the keys of its ``counters()``):
``ReasonedParser``; their series then start at 0. ``ParserBase`` gives both their defaults ({} and 0) to parsers that inherit it;
for the others ``capabilities()`` finds, once per source, which members a parser has.

Optional, for speed (most lines of a mail log record nothing): a parser may also have

- ``select(lines) -> list[bytes]``: the lines of a batch that ``parse`` can make something of, in
  order (cheap byte tests); the pipeline calls ``parse`` on those only (``SelectingParser``);
- ``parse_block(block, failed) -> list[DeliveryEvent]``: the events of a block of complete lines
  (bytes, each line ending with a newline, a CR before it being part of the ending), in line order,
  exactly what ``parse`` gives line by line (``BlockParser``); a line that raises is handed to
  ``failed(line, error)``, from inside the ``except`` clause, and skipped. The pipeline uses it for
  sources that read blocks (``FileSource.read_blocks``); line numbers (the ``parse`` command) and
  other sources still go through ``parse``, which every parser must have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bounce_exporter.event import DeliveryEvent

if TYPE_CHECKING:
    from bounce_exporter.parsers.ledger import LedgerView


class LineNotUnderstood(Exception):
    """A line that should have recorded a delivery but could not be read; the reason is a short slug."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Parser(Protocol):
    """What every parser offers (see the module docstring)."""

    @property
    def mta(self) -> str: ...

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]: ...

    def state(self) -> dict:
        """What the parser remembers across lines (its ledger, the year of its stamps, ...),
        JSON-ready: saved in the state file beside the read position it belongs to."""
        ...

    def restore(self, state: dict) -> None:
        """Carry on from a saved ``state()``; one that is not right is ignored, never raised."""
        ...


@runtime_checkable
class CountingParser(Parser, Protocol):
    def counters(self) -> Mapping[str, int]: ...


@runtime_checkable
class EvictingParser(Parser, Protocol):
    @property
    def pending_evictions(self) -> int: ...


@runtime_checkable
class InFlightParser(Parser, Protocol):
    def in_flight(self) -> LedgerView:
        """The ledger's messages now (``Ledger.view``), oldest first: what is waiting, read
        under the state lock."""
        ...


@runtime_checkable
class SnapshotParser(Parser, Protocol):
    def saved_state(self) -> dict:
        """``state()`` as a snapshot keeps it until the state file is written: parts of it may be
        frozen views (a ledger's ``FrozenLedger``: references, not copies) that the state file
        encodes with their ``json_chunks()``, and that compare equal when nothing changed."""
        ...


@runtime_checkable
class ReasonedParser(Parser, Protocol):
    @property
    def not_understood_reasons(self) -> tuple[str, ...]: ...

    @property
    def not_attempt_reasons(self) -> tuple[str, ...]: ...


@runtime_checkable
class SelectingParser(Parser, Protocol):
    def select(self, lines: list[bytes]) -> list[bytes]: ...


Failed = Callable[[bytes, Exception], None]


@runtime_checkable
class BlockParser(Parser, Protocol):
    def parse_block(self, block: bytes, failed: Failed) -> list[DeliveryEvent]: ...


class ParserBase:
    """The defaults of ``Parser``'s counting members, for parsers that inherit them."""

    def counters(self) -> Mapping[str, int]:
        return {}

    @property
    def pending_evictions(self) -> int:
        return 0


def _no_counters() -> Mapping[str, int]:
    return {}


def _evictions(parser: EvictingParser) -> int:
    return parser.pending_evictions


@runtime_checkable
class DetectingParser(Parser, Protocol):
    """A parser that finds the format of its lines (``auto``): None until a line shows it."""

    format: str | None


@dataclass(frozen=True)
class Capabilities:
    """A parser's optional members, found once (when its source is added), not at each line."""

    counters: Callable[[], Mapping[str, int]]
    evictions: Callable[[Parser], int] | None  # called with the parser: its pending_evictions
    select: Callable[[list[bytes]], list[bytes]] | None
    parse_block: Callable[[bytes, Failed], list[DeliveryEvent]] | None
    not_understood_reasons: tuple[str, ...] = ()  # named in advance: their series start at 0
    not_attempt_reasons: tuple[str, ...] = ()
    in_flight: Callable[[], LedgerView] | None = None  # the ledger's view (InFlightParser)
    detected: Callable[[], str | None] = lambda: None  # the format read now: the parser's own, or detected
    saved_state: Callable[[], dict] = dict  # the state a snapshot keeps (SnapshotParser, else state)


def capabilities(parser: Parser) -> Capabilities:
    def detected() -> str | None:
        return parser.format if isinstance(parser, DetectingParser) else parser.mta

    return Capabilities(
        detected=detected,
        counters=parser.counters if isinstance(parser, CountingParser) else _no_counters,
        evictions=_evictions if isinstance(parser, EvictingParser) else None,
        select=parser.select if isinstance(parser, SelectingParser) else None,
        parse_block=parser.parse_block if isinstance(parser, BlockParser) else None,
        not_understood_reasons=tuple(parser.not_understood_reasons)
        if isinstance(parser, ReasonedParser) else (),
        not_attempt_reasons=tuple(parser.not_attempt_reasons)
        if isinstance(parser, ReasonedParser) else (),
        in_flight=parser.in_flight if isinstance(parser, InFlightParser) else None,
        saved_state=parser.saved_state if isinstance(parser, SnapshotParser)
        else lambda: parser.state(),  # looked up when a snapshot is taken, as before
    )


def _postfix(reference: float | None, max_pending: int) -> Parser:
    from bounce_exporter.parsers.accel import scanner
    from bounce_exporter.parsers.postfix import PostfixParser

    compiled = scanner()  # the compiled block scan, unless absent or turned off (parsers.accel)
    if compiled is None:
        return PostfixParser(reference=reference, max_pending=max_pending)
    from bounce_exporter.parsers.postfix_fast import FastPostfixParser

    return FastPostfixParser(reference=reference, max_pending=max_pending, scanner=compiled)


def _exim(reference: float | None, max_pending: int) -> Parser:
    from bounce_exporter.parsers.exim import EximParser

    return EximParser(reference=reference, max_pending=max_pending)


def _sendmail(reference: float | None, max_pending: int) -> Parser:
    from bounce_exporter.parsers.sendmail import SendmailParser

    return SendmailParser(reference=reference, max_pending=max_pending)


def _opensmtpd(reference: float | None, max_pending: int) -> Parser:
    from bounce_exporter.parsers.opensmtpd import OpenSMTPDParser

    return OpenSMTPDParser(reference=reference, max_pending=max_pending)


def _exchange(reference: float | None, max_pending: int) -> Parser:  # keeps no ledger
    from bounce_exporter.parsers.exchange import ExchangeParser

    return ExchangeParser(reference=reference)


def _auto(reference: float | None, max_pending: int) -> Parser:
    from bounce_exporter.parsers.auto import AutoParser

    return AutoParser(reference=reference, max_pending=max_pending)


# each called with (reference, max_pending): the year's anchor, the ledger's cap
PARSERS: dict[str, Callable[[float | None, int], Parser]] = {
    "postfix": _postfix, "exim": _exim, "sendmail": _sendmail, "opensmtpd": _opensmtpd,
    "exchange": _exchange, "auto": _auto,
}


def make_parser(name: str, reference: float | None = None, *,
                max_pending: int | None = None) -> Parser:
    """A fresh parser for one source; ``reference`` anchors the year of stamps that lack one,
    ``max_pending`` caps its ledger of messages in flight (default ``ledger.MAX_MESSAGES``)."""
    from bounce_exporter.parsers.ledger import MAX_MESSAGES

    return PARSERS[name](reference, MAX_MESSAGES if max_pending is None else max_pending)
