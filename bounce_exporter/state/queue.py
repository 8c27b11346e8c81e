"""What the Postfix queue holds, per queue and domain: a second view of what is waiting, read
from Postfix (``sources.postqueue``) rather than from the log.

Per queue (``deferred``, ``active``, ``hold``, ...), recipient domain label (the counters'
label: the domain cap and ``unknown`` apply alike) and category of the recipient's
``delay_reason`` (through the classifier, as a deferral's reply): recipients queued
(``bounce_queue_recipients``); per queue and domain, the arrival time of the oldest message
(``bounce_queue_oldest_timestamp_seconds``). Built at scrape time from the reader's cached
reading, under the state lock (the labels' lock); the command itself runs outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers.domains import domain_of
from bounce_exporter.parsers.reply import find_reply
from bounce_exporter.sources.postqueue import QueueReading
from bounce_exporter.state.waiting import Category, Label


@dataclass(frozen=True)
class QueueTotals:
    up: bool | None = None  # None: the queue view is off (no families at all)
    recipients: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (queue, domain label, category) -> recipients queued
    oldest: dict[tuple[str, str], float] = field(default_factory=dict)
    # (queue, domain label) -> arrival time of the oldest message


def queue_totals(reading: QueueReading, label: Label, category: Category) -> QueueTotals:
    recipients: dict[tuple[str, str, str], int] = {}
    oldest: dict[tuple[str, str], float] = {}
    categories: dict[str, str] = {}  # delay_reason -> category: a queue repeats its reasons
    for message in reading.messages:
        for recipient in message.recipients:
            domain = domain_of(recipient.address)
            reason = recipient.delay_reason
            if reason not in categories:
                code, enhanced = find_reply(reason)
                event = DeliveryEvent(message.arrival_time, "postfix", message.queue_id,
                                      recipient.address, domain, "deferred", code, enhanced,
                                      reason)
                categories[reason] = category(event)
            key = (message.queue, label(domain))
            recipients[(*key, categories[reason])] = recipients.get(
                (*key, categories[reason]), 0) + 1
            if message.arrival_time < oldest.get(key, float("inf")):
                oldest[key] = message.arrival_time
    return QueueTotals(reading.up, recipients, oldest)
