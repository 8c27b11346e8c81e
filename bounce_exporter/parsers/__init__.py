"""Per-MTA log parsers, registered by name.

A parser turns one raw log line (bytes, without its newline) into the delivery events it records:
an empty sequence for a line that records no delivery (most lines), or ``LineNotUnderstood`` for a
line that looks like a delivery line but cannot be read. Parsers know nothing of metrics.

Optional, for speed (most lines of a mail log record nothing): a parser may also have

- ``select(lines) -> list[bytes]``: the lines of a batch that ``parse`` can make something of, in
  order (cheap byte tests); the pipeline calls ``parse`` on those only;
- ``parse_block(block, failed) -> list[DeliveryEvent]``: the events of a block of complete lines
  (bytes, each line ending with a newline, a CR before it being part of the ending), in line order,
  exactly what ``parse`` gives line by line; a line that raises is handed to
  ``failed(line, error)``, from inside the ``except`` clause, and skipped. The pipeline uses it for
  sources that read blocks (``FileSource.read_blocks``); line numbers (the ``parse`` command) and
  other sources still go through ``parse``, which every parser must have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from bounce_exporter.event import DeliveryEvent


class LineNotUnderstood(Exception):
    """A line that should have recorded a delivery but could not be read; the reason is a short slug."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Parser(Protocol):
    mta: str

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]: ...


def _postfix(reference: float | None) -> Parser:
    from bounce_exporter.parsers.postfix import PostfixParser

    return PostfixParser(reference=reference)


def _exim(reference: float | None) -> Parser:
    from bounce_exporter.parsers.exim import EximParser

    return EximParser(reference=reference)


def _sendmail(reference: float | None) -> Parser:
    from bounce_exporter.parsers.sendmail import SendmailParser

    return SendmailParser(reference=reference)


def _opensmtpd(reference: float | None) -> Parser:
    from bounce_exporter.parsers.opensmtpd import OpenSMTPDParser

    return OpenSMTPDParser(reference=reference)


def _exchange(reference: float | None) -> Parser:
    from bounce_exporter.parsers.exchange import ExchangeParser

    return ExchangeParser(reference=reference)


def _auto(reference: float | None) -> Parser:
    from bounce_exporter.parsers.auto import AutoParser

    return AutoParser(reference=reference)


PARSERS: dict[str, Callable[[float | None], Parser]] = {
    "postfix": _postfix, "exim": _exim, "sendmail": _sendmail, "opensmtpd": _opensmtpd,
    "exchange": _exchange, "auto": _auto,
}


def make_parser(name: str, reference: float | None = None) -> Parser:
    """A fresh parser for one source; ``reference`` anchors the year of stamps that lack one."""
    return PARSERS[name](reference)
