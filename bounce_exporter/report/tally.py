"""What a report over old logs needs besides the exporter's own state, gathered from the same
events as they pass (a pipeline observer beside the store's), and the stepped counting of a replay.

The counts themselves are not here: per domain and provider they are the exporter's counters
(``state.counters``), the episodes the deferral tracker's streaks (``state.deferrals``), what waits
the parsers' ledgers (``state.waiting``). Here: the reply texts per category, the expiries per
domain (how an episode ended), the span of the logs.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable

from bounce_exporter.classify.classifier import Classification
from bounce_exporter.classify.providers import ProviderTable
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.state.counters import UNKNOWN_DOMAIN, MetricState
from bounce_exporter.state.streaks import Streak

TEXTS_PER_CATEGORY = 1000  # distinct reply texts kept per category; later ones counted together
OTHER_TEXTS = "(other texts)"
_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")  # an address in a reply: one text for all


def reply_text(text: str) -> str:
    """A reply text as the report groups it: addresses replaced by ``<address>``."""
    return _ADDRESS.sub("<address>", text)


class Tally:
    """A pipeline observer: per category the failed attempts' reply texts, per domain the times of
    its expiries, per provider its expiries; and (``cleared``, the tracker's ``on_clear``) every
    deferral streak that ended."""

    def __init__(self, providers: ProviderTable):
        self.providers = providers
        self.events = 0
        self.first, self.last = math.inf, -math.inf  # log times of the first and last event
        self.texts: dict[str, dict[str, int]] = {}  # category -> reply text -> failed attempts
        self.expiries: dict[str, list[float]] = {}  # domain -> expiry times, as logged
        self.provider_expired: dict[str, int] = {}
        self.episodes: list[Streak] = []  # streaks cleared, with cleared_at and cleared_by

    def observe(self, event: DeliveryEvent, classification: Classification) -> None:
        self.events += 1
        time, status = event.time, event.status
        self.first = min(self.first, time)
        self.last = max(self.last, time)
        if status == "sent" or event.without_attempt is not None:  # no failed attempt
            return
        if status == "expired":
            self.expiries.setdefault(event.domain or UNKNOWN_DOMAIN, []).append(time)
            provider = self.providers.of(event.relay, event.text, event.domain)
            self.provider_expired[provider] = self.provider_expired.get(provider, 0) + 1
            return
        texts = self.texts.setdefault(classification.category, {})
        text = reply_text(event.text)
        if text not in texts and len(texts) >= TEXTS_PER_CATEGORY:
            text = OTHER_TEXTS
        texts[text] = texts.get(text, 0) + 1

    def cleared(self, streak: Streak) -> None:
        self.episodes.append(streak)

    def expired_between(self, domain: str, start: float, end: float) -> int:
        """Expiries of ``domain`` logged from ``start`` to ``end``."""
        return sum(1 for t in self.expiries.get(domain, ()) if start <= t <= end)


class SteppedState(MetricState):
    """The exporter's counters, counted by a replay that wants them at step boundaries of log
    time: before counting an event whose time reaches the next boundary, ``on_step(boundary)`` is
    called for every boundary reached, so that it sees what a scrape at that time would have seen
    (the events logged before it). ``finish()`` reaches the boundary after the last event.

    Boundaries are multiples of ``step`` seconds. One thread only: the lock is reentrant, so that
    ``on_step`` can take a snapshot while the pipeline counts under the lock."""

    def __init__(self, *args, step: float, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.lock = threading.RLock()  # type: ignore[assignment]
        self.step = step
        self.next: float | None = None  # the next boundary
        self.newest = -math.inf
        self.on_step: Callable[[float], None] = lambda boundary: None

    def record(self, event: DeliveryEvent, classification: Classification) -> None:
        time = event.time
        if self.next is None:
            self.next = (time // self.step + 1) * self.step
        elif time >= self.next:
            self.reach(time)
        self.newest = max(self.newest, time)
        super().record(event, classification)

    def record_block(self, found: list[tuple[DeliveryEvent, Classification]]) -> None:
        """Event by event: a boundary may fall inside the block."""
        for event, classification in found:
            self.record(event, classification)

    def reach(self, time: float) -> None:
        """Call ``on_step`` for every boundary up to ``time``."""
        while self.next is not None and self.next <= time:
            self.on_step(self.next)
            self.next += self.step

    def finish(self) -> None:
        """The end of the logs: the boundaries up to the first one after the last event."""
        if self.next is not None:
            self.reach(self.newest + self.step)
