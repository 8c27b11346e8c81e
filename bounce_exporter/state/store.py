"""The one owner of the state lock: the counters, the deferral tracker and the counted positions,
handed out together as a ``Snapshot`` taken under that lock.

A scrape takes one snapshot; the keeper records and writes its ``saved`` part (the state file's
content), then the exposition is built from the same snapshot: what is saved is what is exposed
(see ``persistence.keeper``). Snapshots are numbered in the order they were taken, so that of two
concurrent scrapes the keeper keeps the newer one whichever records first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from bounce_exporter.classify.classifier import Classification
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers.ledger import LedgerView
from bounce_exporter.sources.postqueue import OFF, QueueReading
from bounce_exporter.state.counters import CounterSnapshot, MetricState, SourceStats
from bounce_exporter.state.deferrals import DeferralRule, DeferralTracker, Streak
from bounce_exporter.state.queue import QueueTotals, queue_totals
from bounce_exporter.state.recent import RecentDeferrals, RecentDomain
from bounce_exporter.state.waiting import Category, WaitingTotals, waiting_api, waiting_totals

STATE_VERSION = 1


@dataclass(frozen=True)
class Saved:
    """What the state file holds, as of snapshot number ``seq``."""

    seq: int
    # {"version": 1, "deferrals": {...}, "positions": {source: position},
    #  "parsers": {source: its parser's state (its ledger, ...) as of that position}}
    data: dict


@dataclass(frozen=True)
class DeferralView:
    active: list[Streak]  # copies
    tracking: int
    evicted: int


@dataclass(frozen=True)
class Snapshot:
    counters: CounterSnapshot
    deferrals: DeferralView
    saved: Saved
    waiting: WaitingTotals = field(default_factory=lambda: WaitingTotals({}, {}))
    queue: QueueTotals = field(default_factory=QueueTotals)  # the Postfix queue view


@dataclass(frozen=True)
class Status:
    """What the status page shows, read together: the sources, the persistent flags, the domains
    deferring most in the last hour (``recent``'s clock: ``now``)."""

    sources: dict[str, SourceStats]  # copies
    active: list[Streak]  # copies
    recent: list[RecentDomain]
    now: float


class Store:
    """Owns ``lock`` (the counters' own ``MetricState.lock``): the pipeline counts under it and
    ``observe`` feeds the tracker under it; everything read for a scrape is read here."""

    def __init__(self, state: MetricState, tracker: DeferralTracker,
                 positions: Callable[[], dict] = dict, parsers: Callable[[], dict] = dict,
                 in_flight: Callable[[], list[LedgerView]] = list,
                 category: Category = lambda event: "other",
                 provider: Callable[[DeliveryEvent], str] = lambda event: "",
                 queue: Callable[[], QueueReading] = lambda: OFF):
        self.state = state
        self.tracker = tracker
        self.positions = positions  # each source's counted position (called under the lock)
        self.parsers = parsers  # each source's parser state as of that position (under the lock)
        self.in_flight = in_flight  # each source's ledger view (under the lock)
        self.category = category  # the category of a waiting recipient's last reply
        self.queue = queue  # the queue command's cached reading (never runs it)
        self.lock: threading.Lock = state.lock
        self._seq = 0
        self.recent = RecentDeferrals(provider=provider)  # the status page's last hour, not saved

    def observe(self, event: DeliveryEvent, classification: Classification) -> None:
        """The pipeline's observer (called under the lock): the current tracker's. A deferral
        without attempt is no attempt: neither the tracker nor the recent view takes it."""
        if event.without_attempt is not None:
            return
        self.tracker.observe(event, classification)
        self.recent.observe(event, classification)

    def observe_block(self, found: list[tuple[DeliveryEvent, Classification]]) -> None:
        """``observe`` of each (event, classification) of a block, in order (under the lock)."""
        for event, _ in found:  # (a loop that stops: quicker than any() of a generator)
            if event.without_attempt is not None:
                found = [item for item in found if item[0].without_attempt is None]
                break
        self.tracker.observe_block(found)
        self.recent.observe_block(found)

    def saved(self) -> Saved:
        """The state file's content now (caller holds the lock)."""
        self._seq += 1
        return Saved(self._seq, {"version": STATE_VERSION, "deferrals": self.tracker.to_state(),
                                 "positions": self.positions(), "parsers": self.parsers()})

    def snapshot(self) -> Snapshot:
        """Counters, tracker and counted positions, consistent with each other; the queue
        view of the reading at hand."""
        reading = self.queue()
        with self.lock:
            tracker = self.tracker
            label = self.state.domains.view_label
            waiting = waiting_totals(self.in_flight(), label, self.category)
            return Snapshot(self.state.snapshot(),
                            DeferralView(tracker.active(), tracker.tracking(), tracker.evicted),
                            self.saved(), waiting, queue_totals(reading, label, self.category))

    def waiting_view(self) -> list[dict]:
        """/api/v1/waiting: the waiting messages per domain, with their last reply."""
        with self.lock:
            return waiting_api(self.in_flight(), self.state.domains.view_label, self.category)

    def deferrals_view(self) -> list[dict]:
        with self.lock:
            return self.tracker.api_view()

    def advance(self, now: float) -> None:
        with self.lock:
            self.tracker.advance(now)
            self.recent.advance(now)

    def status(self, top: int = 10) -> Status:
        """The status page's data now (no state-file snapshot: the page is no scrape)."""
        with self.lock:
            sources = {name: stats.copy() for name, stats in self.state.sources.items()}
            return Status(sources, self.tracker.active(), self.recent.top(top), self.recent.now)

    def load(self, deferrals: dict) -> int:
        """Restore the tracker from the state file's ``deferrals``; the streaks tracked."""
        with self.lock:
            self.tracker.load_state(deferrals)
            return self.tracker.tracking()

    def apply(self, max_domains: int, deferral_rules: list[DeferralRule],
              max_series: int | None = None) -> None:
        """A reloaded domain cap, series cap and deferral rules (a new tracker that keeps the
        streaks)."""
        with self.lock:
            self.state.apply(max_domains, max_series)
            if list(deferral_rules) != self.tracker.rules:
                tracker = DeferralTracker(deferral_rules)
                tracker.load_state(self.tracker.to_state())
                self.tracker = tracker
