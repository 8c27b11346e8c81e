"""The Postfix parser with the compiled block scan (``parsers.accel``): the same events, faster.

``parse_block`` hands the block to the C extension's ``Reader``, which finds the lines the
pure-Python ``PostfixParser.parse_block`` looks at (``status=``, ``: removed``), reads the delivery
agents' lines whole and makes their events itself, in line order. What depends on order is done in
that order, with this parser's own state: the time stamps (``StampReader.time_of``, called once per
hour of log for traditional stamps: its own rule), the ledger (deferrals remembered, deliveries and
``: removed`` forgetting them: ``_remember``'s choice among the ledger's ``hold``, ``defer`` and
``forget`` is made in C, and its membership looked up in its dict). Every line the extension does
not read (not printable ASCII, expiries, other shapes, a ``: removed`` line of a message the ledger
holds) goes through the pure-Python ``_parse_status_line`` / ``_forget_removed`` (``_fallback``),
so the events are exactly the pure-Python parser's, line for line; tests/test_speedups.py compares
both on whole logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from types import ModuleType

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import Failed
from bounce_exporter.parsers.ledger import MAX_MESSAGES
from bounce_exporter.parsers.postfix import (
    DESTINATION_SUSPENDED,
    MTA,
    SUSPENDED,
    PostfixParser,
)

# DeliveryEvent's fields in the order the extension fills them (it checks that each is a slot)
EVENT_FIELDS = ("time", "mta", "queue_id", "recipient", "domain", "status", "code", "enhanced",
                "text", "relay", "without_attempt")
assert tuple(f.name for f in fields(DeliveryEvent)) == EVENT_FIELDS


class FastPostfixParser(PostfixParser):
    """``PostfixParser`` whose ``parse_block`` uses the compiled scan ``scanner``."""

    def __init__(self, reference: float | None = None, *,
                 max_pending: int = MAX_MESSAGES, scanner: ModuleType):
        super().__init__(reference, max_pending=max_pending)
        self._read = scanner.Reader(DeliveryEvent, EVENT_FIELDS, MTA, SUSPENDED,
                                    DESTINATION_SUSPENDED).read

    def parse_block(self, block: bytes, failed: Failed) -> list[DeliveryEvent]:
        ledger = self._pending
        # what _remember does, done by the extension with the ledger's own methods; the messages
        # it holds looked up in their dict from C
        remember = (ledger.hold, ledger.defer, ledger.forget)
        events = self._read(block, ledger.held(), self._stamps.time_of, remember,
                            self._fallback(block, failed))
        if events is None:  # empty, or not ending with a newline: the pure-Python way
            return super().parse_block(block, failed)
        return events

    def _fallback(self, block: bytes, failed: Failed,
                  ) -> Callable[[int, int, bool], Sequence[DeliveryEvent] | None]:
        """The pure-Python way for the line ``block[start:end]``, for the extension to call."""
        def fallback(start: int, end: int, removed: bool) -> Sequence[DeliveryEvent] | None:
            raw = block[start:end]
            try:
                if removed:
                    self._forget_removed(raw)
                    return None
                return self._parse_status_line(raw)
            except Exception as error:  # noqa: BLE001 - the caller decides (counts, logs)
                failed(raw, error)
                return None

        return fallback
