"""The Postfix parser with the compiled block scan (``parsers.accel``): the same events, faster.

``parse_block`` hands the block to the C extension, which finds the lines the pure-Python
``PostfixParser.parse_block`` looks at (``status=``, ``: removed``) and reads the delivery agents'
lines whole (fields as strings, domain and relay in their one form). What depends on order stays
here, in line order, as in the pure-Python parser: the time stamps (``StampReader``: the year of
traditional stamps), the ledger (deferrals remembered, deliveries and ``: removed`` forgetting
them). Every line the extension does not read (not printable ASCII, expiries, other shapes) goes
through the pure-Python ``_parse_status_line`` / ``_forget_removed``, so the events are exactly the
pure-Python parser's, line for line; tests/test_speedups.py compares both on whole logs.
"""

from __future__ import annotations

from types import ModuleType

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import Failed
from bounce_exporter.parsers.ledger import MAX_MESSAGES
from bounce_exporter.parsers.postfix import (
    MTA,
    PostfixParser,
    without_attempt,
)


class FastPostfixParser(PostfixParser):
    """``PostfixParser`` whose ``parse_block`` uses the compiled scan ``scanner``."""

    def __init__(self, reference: float | None = None, *,
                 max_pending: int = MAX_MESSAGES, scanner: ModuleType):
        super().__init__(reference, max_pending=max_pending)
        self._scan = scanner.scan

    def parse_block(self, block: bytes, failed: Failed) -> list[DeliveryEvent]:
        records = self._scan(block)
        if records is None:  # empty, or not ending with a newline: the pure-Python way
            return super().parse_block(block, failed)
        events: list[DeliveryEvent] = []
        pending, time_of, remember = self._pending.holds(), self._stamps.time_of, self._remember
        stamp_read = when = None  # the stamp last read by time_of, and its time
        for record in records:
            if len(record) == 12:
                (stamp, instance, qid, recipient, domain, status, code, enhanced, text, relay,
                 start, end) = record
                if stamp is not stamp_read:  # a float: read by the extension (RFC 3339)
                    when = stamp if stamp.__class__ is float else time_of(*stamp)
                    stamp_read = stamp
                if when is not None:
                    event = DeliveryEvent(when, MTA, qid, recipient, domain, status, code,
                                          enhanced, text, relay, without_attempt(status, text))
                    if status == "deferred" or pending(qid):
                        remember(instance, event)
                    events.append(event)
                    continue
                record = (start, end)  # no real time: the pure-Python way says why
            elif len(record) == 3:
                qid, start, end = record
                if qid is not None and not pending(qid):
                    continue  # the usual case: nothing deferred is remembered for it
                record = (start, end, None)
            stamp_read = None  # Python's parser reads stamps too: read the next one again
            raw = block[record[0] : record[1]]
            try:
                if len(record) == 2:
                    events += self._parse_status_line(raw)
                else:
                    self._forget_removed(raw)
            except Exception as error:  # noqa: BLE001 - the caller decides (counts, logs)
                failed(raw, error)
        return events
