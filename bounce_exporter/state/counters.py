"""Counter state: plain counters per label set, counted in dicts (cheap on the hot path).

``exposition.collector`` turns a snapshot of them into metric families at each scrape. The
``domain`` label is bounded by ``DomainLabels``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from bounce_exporter.classify.classifier import Classification
from bounce_exporter.event import DeliveryEvent

NO_VALUE = "none"  # label value for a reply without a code or enhanced code
UNKNOWN_DOMAIN = "unknown"  # label value for an event that names no recipient domain
OVERFLOW_DOMAIN = "other"  # label value for domains beyond the cap


class DomainLabels:
    """Maps domains to label values: the first ``max_domains`` distinct domains (besides the
    allow-list, which always gets its own series) keep their name, later ones become "other"."""

    def __init__(self, max_domains: int = 500, allowlist: Iterable[str] = ()):
        self.max_domains = max_domains
        self.allowlist = frozenset(allowlist)
        self._labelled: set[str] = set(self.allowlist)
        self._capped = 0  # domains given their own label that are not allow-listed
        self.overflowed_events = 0

    def label(self, domain: str | None) -> str:
        if domain is None:
            return UNKNOWN_DOMAIN
        if domain in self._labelled:
            return domain
        if self._capped < self.max_domains:
            self._capped += 1
            self._labelled.add(domain)
            return domain
        self.overflowed_events += 1
        return OVERFLOW_DOMAIN

    @property
    def labelled(self) -> int:
        return len(self._labelled)


class SourceStats:
    """Self-metrics of one log source."""

    __slots__ = (
        "format",
        "last_line_time",
        "lines_read",
        "not_attempts",
        "not_understood",
        "pending_evicted",
        "read_errors",
        "rotations",
        "truncations",
        "up",
    )

    def __init__(self) -> None:
        self.lines_read = 0
        self.not_understood: dict[str, int] = defaultdict(int)
        self.not_attempts: dict[str, int] = {}  # the parser's counters(): lines that are no attempt
        self.pending_evicted: int | None = None  # the parser's pending_evictions, if it has them
        self.last_line_time = 0.0
        self.up = 0
        self.read_errors = 0
        self.truncations = 0
        self.rotations = 0
        self.format = ""  # the log format read: the configured one, or what auto detected

    def copy(self) -> SourceStats:
        twin = SourceStats()
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(twin, name, dict(value) if isinstance(value, dict) else value)
        return twin


@dataclass(frozen=True)
class CounterSnapshot:
    """A copy of every counter of ``MetricState``, taken under its lock."""

    attempts: dict[str, int]
    deliveries: dict[str, int]
    expired: dict[str, int]
    failures: dict[tuple[str, str, str, str, str], int]
    sources: dict[str, SourceStats]
    labelled: int
    overflowed: int
    state_write_errors: int


class MetricState:
    """Every counter the exporter exposes about deliveries and its own reading."""

    def __init__(self, domains: DomainLabels | None = None):
        self.lock = threading.Lock()
        self.domains = domains or DomainLabels()
        self.attempts: dict[str, int] = defaultdict(int)
        self.deliveries: dict[str, int] = defaultdict(int)
        self.expired: dict[str, int] = defaultdict(int)
        self.failures: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
        self.sources: dict[str, SourceStats] = {}
        self.state_write_errors = 0
        for domain in sorted(self.domains.allowlist):  # series known in advance start at 0
            for counter in (self.attempts, self.deliveries, self.expired):
                counter[domain] += 0

    def record(self, event: DeliveryEvent, classification: Classification) -> None:
        """Count one delivery event (caller holds ``lock``)."""
        domain = event.domain
        if domain not in self.domains._labelled:  # a domain with its own label is its label
            domain = self.domains.label(domain)
        status = event.status
        if status == "expired":
            self.expired[domain] += 1
            return
        self.attempts[domain] += 1
        if status == "sent":
            self.deliveries[domain] += 1
            return
        key = (domain, classification.kind or NO_VALUE, event.code or NO_VALUE,
               event.enhanced or NO_VALUE, classification.category)
        self.failures[key] += 1

    def snapshot(self) -> CounterSnapshot:
        """A copy of the counters (caller holds ``lock``)."""
        return CounterSnapshot(
            dict(self.attempts), dict(self.deliveries), dict(self.expired), dict(self.failures),
            {name: stats.copy() for name, stats in self.sources.items()},
            self.domains.labelled, self.domains.overflowed_events, self.state_write_errors)

    def apply(self, max_domains: int) -> None:
        """A reloaded domain cap (caller holds ``lock``); domains labelled keep their label."""
        self.domains.max_domains = max_domains

    def source(self, name: str) -> SourceStats:
        stats = self.sources.get(name)
        if stats is None:
            stats = self.sources[name] = SourceStats()
            stats.last_line_time = time.time()  # a stall is measured from when following began
        return stats
