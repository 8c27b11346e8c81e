"""Deferrals per recipient domain over the last hour, for the status page's "top deferring domains".

Pure logic, fed by the Store (under its lock) like the deferral tracker, with the same clock:
"now" is the newest time seen, event times (``observe``) and wall clock (``advance``), and it never
goes back; a replayed old log shows nothing here once the wall clock has moved on. Counted in
one-minute buckets (the window is the last 60 to 61 minutes), bounded to ``max_domains`` domains
(later ones are counted under "other" until some domain's hour has passed). Not kept across
restarts: after one, the hour fills again from what is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from bounce_exporter.classify.classifier import Classification
from bounce_exporter.event import DeliveryEvent

WINDOW_SECONDS = 3600.0
BUCKET_SECONDS = 60.0
OVERFLOW = "other"  # the domain counted for domains beyond max_domains


@dataclass(frozen=True)
class RecentDomain:
    """One domain's deferrals in the window, and the latest of them."""

    domain: str
    deferrals: int
    last: float  # log time of the latest deferral
    code: str | None
    enhanced: str | None
    category: str
    text: str
    provider: str = ""  # the provider table's label of who answered the latest ("other": none)


@dataclass
class _Domain:
    buckets: dict[int, int]  # minute number -> deferrals
    total: int
    last: float
    code: str | None
    enhanced: str | None
    category: str
    text: str
    provider: str = ""


class RecentDeferrals:
    """Deferrals per domain in the last hour, by log time."""

    def __init__(self, *, window: float = WINDOW_SECONDS, max_domains: int = 1000,
                 provider: Callable[[DeliveryEvent], str] = lambda event: ""):
        self.window = window
        self.provider = provider  # who answered an event (the provider table's label)
        self.max_domains = max_domains
        self.now = float("-inf")
        self._minute = -math.inf  # the minute of `now` at the last pruning
        self._domains: dict[str, _Domain] = {}
        self._minutes: dict[int, set[str]] = {}  # minute number -> the domains with a bucket for it

    def observe(self, event: DeliveryEvent, classification: Classification) -> None:
        """Count a deferral (other statuses are ignored); caller holds the Store's lock."""
        if event.status != "deferred":
            return
        when = event.time
        if when > self.now:  # else the clock stays, and its minute was pruned when it moved
            self._tick(when)
        if when < self.now - self.window:
            return  # already out of the window
        domain = event.domain or "unknown"
        entry = self._domains.get(domain)
        if entry is None:
            if len(self._domains) >= self.max_domains:
                domain = OVERFLOW
                entry = self._domains.get(OVERFLOW)
            if entry is None:
                entry = self._domains[domain] = _Domain({}, 0, when, None, None, "", "")
        minute = int(when // BUCKET_SECONDS)
        held = entry.buckets.get(minute)
        if held is None:
            self._minutes.setdefault(minute, set()).add(domain)
        entry.buckets[minute] = (held or 0) + 1
        entry.total += 1
        if when >= entry.last or entry.total == 1:
            entry.last, entry.code, entry.enhanced = when, event.code, event.enhanced
            entry.category, entry.text = classification.category, event.text
            entry.provider = self.provider(event)

    def observe_block(self, found: list[tuple[DeliveryEvent, Classification]]) -> None:
        """``observe`` each (event, classification), in order: only deferrals count."""
        observe = self.observe
        for event, classification in found:
            if event.status == "deferred":
                observe(event, classification)

    def advance(self, now: float) -> None:
        """Move the clock to wall-clock ``now`` and forget what left the window."""
        self._tick(now)

    def top(self, n: int = 10) -> list[RecentDomain]:
        """The ``n`` domains with the most deferrals in the window, most first (then by name)."""
        ranked = sorted(self._domains.items(), key=lambda item: (-item[1].total, item[0]))
        return [RecentDomain(domain, e.total, e.last, e.code, e.enhanced, e.category, e.text,
                             e.provider) for domain, e in ranked[:n]]

    def domains(self) -> int:
        return len(self._domains)

    def _tick(self, time: float) -> None:
        if math.isfinite(time) and time > self.now:
            self.now = time
        if not math.isfinite(self.now):
            return
        minute = self.now // BUCKET_SECONDS
        if minute > self._minute:
            self._minute = minute
            self._prune()

    def _prune(self) -> None:
        """Drop the buckets wholly before the window, and the domains left with none (found by
        minute: ``_minutes``)."""
        first = int((self.now - self.window) // BUCKET_SECONDS)
        for minute in [minute for minute in self._minutes if minute < first]:
            for domain in self._minutes.pop(minute):
                entry = self._domains[domain]
                entry.total -= entry.buckets.pop(minute)
                if not entry.buckets:
                    del self._domains[domain]
