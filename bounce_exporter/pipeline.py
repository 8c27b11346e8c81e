"""The read path: log source → lines → per-MTA parser → delivery events → classification → metric state."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from bounce_exporter.classify import Classifier
from bounce_exporter.metrics import MetricState
from bounce_exporter.parsers import LineNotUnderstood, Parser
from bounce_exporter.source import FileSource

log = logging.getLogger(__name__)

LOGGED_SKIPS_PER_REASON = 10  # per source; later skips of the same reason are logged at debug level


@dataclass
class Feed:
    source: FileSource
    parser: Parser
    too_long_counted: int = 0


class Pipeline:
    """Reads every source to its current end and counts what it finds."""

    def __init__(self, classifier: Classifier, state: MetricState,
                 observers: list[Callable] | None = None, clock: Callable[[], float] = time.time):
        self.classifier = classifier
        self.state = state
        self.observers = observers or []  # called as observer(event, classification) under the lock
        self.clock = clock
        self.feeds: list[Feed] = []
        self._logged: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, source: FileSource, parser: Parser) -> None:
        self.feeds.append(Feed(source, parser))
        with self.state.lock:
            self.state.source(source.name)

    def pump(self) -> int:
        """Read what every source has now; return the number of lines read."""
        return sum(self.pump_feed(feed) for feed in self.feeds)

    def pump_feed(self, feed: Feed) -> int:
        total = 0
        for batch in feed.source.read_batches():
            self._count_batch(feed, batch)
            total += len(batch)
        self._sync_source_stats(feed)
        return total

    def drain(self) -> int:
        """At shutdown: count each source's held partial line."""
        total = 0
        for feed in self.feeds:
            rest = feed.source.close()
            if rest:
                self._count_batch(feed, rest)
                total += len(rest)
            self._sync_source_stats(feed)
        return total

    def _count_batch(self, feed: Feed, batch: list[bytes]) -> None:
        parse = feed.parser.parse
        classify = self.classifier.classify
        found = []
        skipped: dict[str, int] = defaultdict(int)
        for raw in batch:
            try:
                events = parse(raw)
            except LineNotUnderstood as err:
                skipped[err.reason] += 1
                self._log_skip(feed.source.name, err.reason, raw)
                continue
            for event in events:
                found.append((event, classify(event.status, event.code, event.enhanced, event.text)))
        state = self.state
        with state.lock:
            stats = state.source(feed.source.name)
            stats.lines_read += len(batch)
            stats.last_line_time = self.clock()
            for reason, count in skipped.items():
                stats.not_understood[reason] += count
            for event, classification in found:
                state.record(event, classification)
                for observe in self.observers:
                    observe(event, classification)

    def _sync_source_stats(self, feed: Feed) -> None:
        source = feed.source
        too_long = source.lines_too_long - feed.too_long_counted
        feed.too_long_counted = source.lines_too_long
        with self.state.lock:
            stats = self.state.source(source.name)
            stats.up = 1 if source.up else 0
            stats.read_errors = source.read_errors
            if too_long:
                stats.not_understood["too_long"] += too_long

    def _log_skip(self, source: str, reason: str, raw: bytes) -> None:
        key = (source, reason)
        self._logged[key] += 1
        level = logging.WARNING if self._logged[key] <= LOGGED_SKIPS_PER_REASON else logging.DEBUG
        log.log(level, "%s: line not understood (%s): %r", source, reason, raw[:300])
