"""The read path: log source → lines → per-MTA parser → delivery events → classification → metric state.

Each batch of lines is parsed and counted, and its position (where the next unread line starts)
recorded as the feed's ``counted`` position, under the state lock: a snapshot taken under that lock
(at a scrape) holds counters, positions and the parsers' ledgers (what is waiting) as of the same
line. (A scrape waits at most for one block's parsing: a few milliseconds.)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bounce_exporter.classify.classifier import Classification, Classifier
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import (
    PARSERS,
    Capabilities,
    DetectingParser,
    Failed,
    LineNotUnderstood,
    Parser,
    capabilities,
)
from bounce_exporter.parsers.ledger import LedgerView
from bounce_exporter.sources import BlockSource, Resumable, Source
from bounce_exporter.sources.catchup import CatchUpSource
from bounce_exporter.sources.files import FileSource
from bounce_exporter.sources.lines import Batch, Block
from bounce_exporter.sources.position import Position
from bounce_exporter.sources.stdin import StdinSource, is_stdin
from bounce_exporter.state.counters import MetricState

log = logging.getLogger(__name__)

# Reasons of lines not understood that the pipeline gives itself, whatever the parser; with the
# parser's own (``Capabilities.not_understood_reasons``) their series start at 0 for each source.
TOO_LONG, PARSER_ERROR = "too_long", "parser_error"
LOGGED_SKIPS_PER_REASON = 10  # per source; later skips of the same reason are logged at debug level
NOTHING_UNDERSTOOD_LINES = 1000  # a source with no event in this many lines says so, once

LineObserver = Callable[[int, DeliveryEvent, Classification], None]  # (line number, event, verdict)
# told each block's (event, verdict) pairs, in order, once they are counted
BlockObserver = Callable[[list[tuple[DeliveryEvent, Classification]]], None]


@dataclass
class Feed:
    """A source and its parser, joined by what each offers (found once, at ``Pipeline.add``)."""

    source: Source
    parser: Parser
    counted: Resumable | None = None  # where the next line not yet counted starts
    # Numbered (the ``parse`` command): every line through ``parse``, in order, and each event
    # handed to ``on_event`` with its line number (1 for the source's first line).
    on_event: LineObserver | None = None
    # told the offset reached: the progress of a one-shot read, or of serve's catch-up at start
    on_read: Callable[[int], None] | None = None
    lines: int = 0  # lines counted so far
    events: int = 0  # delivery events found so far
    told_nothing_understood: bool = False
    caps: Capabilities = field(init=False)
    # (read_blocks, parse_block) when the source reads blocks and the parser parses them
    blocks: tuple[Callable[[], Iterator[Block]], Callable[[bytes, Failed], list[DeliveryEvent]]] \
        | None = field(init=False)

    def __post_init__(self) -> None:
        self.caps = capabilities(self.parser)
        source, parse_block = self.source, self.caps.parse_block
        self.blocks = None
        if isinstance(source, BlockSource) and parse_block is not None and self.on_event is None:
            self.blocks = (source.read_blocks, parse_block)

    def apply(self, max_line_bytes: int) -> None:
        """A reloaded line limit."""
        self.source.max_line_bytes = max_line_bytes


class Pipeline:
    """Reads every source to its current end and counts what it finds."""

    def __init__(self, classifier: Classifier, state: MetricState,
                 observers: list[Callable] | None = None, clock: Callable[[], float] = time.time,
                 block_observers: list[BlockObserver] | None = None):
        self.classifier = classifier
        self.state = state
        # called as observer(event, classification) under the lock, each after its event is
        # counted: with them, events are counted one by one (else per block, state.record_block)
        self.observers = observers or []
        self.block_observers = block_observers or []  # observer(found) under the lock
        self.clock = clock
        self.feeds: list[Feed] = []
        self._logged: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, source: Source, parser: Parser, on_event: LineObserver | None = None,
            on_read: Callable[[int], None] | None = None) -> Feed:
        """Follow ``source`` with ``parser``; ``on_event``: a numbered feed, ``on_read``: told the
        file offset after each batch (see ``Feed``)."""
        feed = Feed(source, parser, on_event=on_event, on_read=on_read)
        with self.state.lock:
            self.feeds.append(feed)
            stats = self.state.source(source.name)
            for reason in (*feed.caps.not_understood_reasons, TOO_LONG, PARSER_ERROR):
                stats.not_understood[reason] += 0  # present from the start: rate() is 0, not empty
            stats.not_attempts = {**dict.fromkeys(feed.caps.not_attempt_reasons, 0),
                                  **stats.not_attempts}
            self.state.source(source.name).format = feed.caps.detected() or ""
        return feed

    def apply(self, classifier: Classifier, max_line_bytes: int) -> None:
        """A reloaded configuration: its classifier (for what is counted from now on) and line
        limit."""
        for feed in self.feeds:
            feed.apply(max_line_bytes)
        with self.state.lock:
            self.classifier = classifier

    def begin(self, positions: dict[str, Resumable] | None = None,
              parsers: dict[str, dict] | None = None) -> None:
        """Open every source at its starting point: its saved position, else the tailer's rule;
        a source resumed from a saved position carries on with its parser's saved state (the
        ledger of messages in flight as of that position)."""
        positions, parsers = positions or {}, parsers or {}
        for feed in self.feeds:
            name = feed.source.name
            self.begin_feed(feed, positions.get(name),
                            parsers.get(name) if name in positions else None)

    def begin_feed(self, feed: Feed, position: Resumable | None = None,
                   parser_state: dict | None = None) -> None:
        start = feed.source.begin(position)
        with self.state.lock:
            if parser_state is not None:
                feed.parser.restore(parser_state)  # a format chosen before is chosen again
                self.state.source(feed.source.name).format = feed.caps.detected() or ""
            feed.counted = start
        self._sync_source_stats(feed)

    def positions(self) -> dict[str, dict]:
        """Each source's counted position, JSON-ready (caller holds the state lock)."""
        return {feed.source.name: feed.counted.to_state() for feed in self.feeds
                if feed.counted is not None}

    def parser_states(self) -> dict[str, dict]:
        """Each source's parser state as of its counted position, as a snapshot keeps it
        (``saved_state``: a ledger frozen, encoded when the state file is written; caller holds
        the state lock: parsing happens under it, so state and position match)."""
        return {feed.source.name: feed.caps.saved_state() for feed in self.feeds
                if feed.counted is not None}

    def in_flight(self) -> list[LedgerView]:
        """Each source's ledger view (caller holds the state lock): what is waiting."""
        return [feed.caps.in_flight() for feed in self.feeds if feed.caps.in_flight is not None]

    def remove(self, name: str) -> None:
        """Stop following a source (config reload); its series go with it."""
        for feed in [f for f in self.feeds if f.source.name == name]:
            feed.source.close()
            with self.state.lock:
                self.feeds.remove(feed)
                self.state.sources.pop(name, None)

    def close(self) -> None:
        """Let go of every file without counting anything more (shutdown)."""
        for feed in self.feeds:
            feed.source.close()

    def pump(self, until: Callable[[], bool] | None = None) -> int:
        """Read what every source has now; return the number of lines read. ``until``, asked
        after each block or batch, ends the read early when it says so (a stop requested during
        a long catch-up: what is not read yet is read by the next start, as after any stop)."""
        total = 0
        for feed in self.feeds:
            total += self.pump_feed(feed, until)
            if until is not None and until():
                break
        return total

    def pump_feed(self, feed: Feed, until: Callable[[], bool] | None = None) -> int:
        total = 0
        if feed.blocks is not None:
            # whole blocks: the parser finds its lines in them, no per-line work for the rest
            read_blocks, parse_block = feed.blocks
            for block in read_blocks():
                self._count_block(feed, block, parse_block)
                total += block.lines
                # let go of the block's data before the next read makes the next one: the
                # allocator then reuses its memory instead of getting (and faulting in) fresh pages
                del block
                if until is not None and until():
                    break
        else:
            for batch in feed.source.read_batches():
                self._count_batch(feed, batch)
                total += len(batch)
                if until is not None and until():
                    break
        self._sync_source_stats(feed)
        return total

    def drain(self) -> int:
        """The end of a one-shot read: count each source's held partial line, let go of the files.
        (``serve`` does not: a partial line at shutdown is read whole by the next start.)"""
        total = 0
        for feed in self.feeds:
            rest = feed.source.close()
            if rest:
                self._count_batch(feed, rest)
                total += len(rest)
            self._sync_source_stats(feed)
        return total

    def _count_batch(self, feed: Feed, batch: list[bytes]) -> None:
        if feed.on_event is not None:
            self._count_numbered(feed, batch)
            return
        parse = feed.parser.parse
        # A parser may drop, with cheap bytes tests, the lines it would make nothing of (most of
        # a mail log) before they cost a call each.
        select = feed.caps.select
        events: list[DeliveryEvent] = []
        skipped: dict[str, int] = defaultdict(int)
        with self.state.lock:
            for raw in batch if select is None else select(batch):
                try:
                    events += parse(raw)
                except Exception as error:  # noqa: BLE001 - _skip counts and logs it
                    self._skip(feed, skipped, raw, error)
            self._count(feed, batch, len(batch), events, skipped)

    def _count_numbered(self, feed: Feed, batch: list[bytes]) -> None:
        parse = feed.parser.parse
        events: list[DeliveryEvent] = []
        numbers: list[int] = []
        skipped: dict[str, int] = defaultdict(int)
        with self.state.lock:
            for number, raw in enumerate(batch, feed.lines + 1):
                try:
                    found = parse(raw)
                except Exception as error:  # noqa: BLE001 - _skip counts and logs it
                    self._skip(feed, skipped, raw, error, number)
                    continue
                events += found
                numbers += [number] * len(found)
            self._count(feed, batch, len(batch), events, skipped, numbers)

    def _count_block(self, feed: Feed, block: Block,
                     parse_block: Callable[[bytes, Failed], list[DeliveryEvent]]) -> None:
        skipped: dict[str, int] = defaultdict(int)

        def failed(raw: bytes, error: Exception) -> None:
            self._skip(feed, skipped, raw, error)

        with self.state.lock:
            events = parse_block(block.data, failed)
            self._count(feed, block, block.lines, events, skipped)

    def _skip(self, feed: Feed, skipped: dict[str, int], raw: bytes, error: Exception,
              number: int | None = None) -> None:
        """A line the parser raised on (called inside the ``except``): counted, logged (with its
        number in a numbered feed, every time), skipped. A parser bug must not stop the reading
        either."""
        if isinstance(error, LineNotUnderstood):
            skipped[error.reason] += 1
            if number is not None:
                log.warning("%s:%d: line not understood (%s)", feed.source.name, number,
                            error.reason)
            else:
                self._log_skip(feed.source.name, error.reason, raw)
        else:
            skipped[PARSER_ERROR] += 1
            log.exception("%s: parser %s failed on %r", feed.source.name,
                          feed.parser.mta, raw[:300])

    def _count(self, feed: Feed, read: Batch | Block | list[bytes], lines: int,
               events: list[DeliveryEvent], skipped: dict[str, int],
               numbers: list[int] | None = None) -> None:
        """Classify the events of what was read (``lines`` lines), count them and the lines, and
        take its position (a plain list has none) as the feed's counted one (caller holds the
        state lock, and parsed under it). A numbered feed's events (``numbers``: their line
        numbers) go to its ``on_event`` too."""
        found = self.classifier.classify_all(events)
        state = self.state
        fmt = feed.caps.detected()  # found while parsing these lines: shown with their counts
        stats = state.source(feed.source.name)
        if fmt is not None and fmt != stats.format:
            stats.format = fmt
            log.info("%s: log format detected: %s", feed.source.name, fmt)
        stats.lines_read += lines
        stats.last_line_time = self.clock()
        for reason, count in skipped.items():
            stats.not_understood[reason] += count
        if isinstance(read, (Batch, Block)):
            if read.too_long:
                stats.not_understood[TOO_LONG] += read.too_long
            feed.counted = read.position
        feed.lines += lines
        feed.events += len(found)
        record, observers = state.record, self.observers
        if observers:
            for event, classification in found:
                record(event, classification)
                for observe in observers:
                    observe(event, classification)
        else:
            state.record_block(found)
        for observe_block in self.block_observers:
            observe_block(found)
        if feed.on_event is not None and numbers is not None:
            for number, (event, classification) in zip(numbers, found):
                feed.on_event(number, event, classification)
        if feed.on_read is not None and isinstance(read, (Batch, Block)) \
                and isinstance(read.position, Position):
            feed.on_read(read.position.offset)

    def tell_nothing_understood(self, feed: Feed, at_end: bool = False) -> None:
        """Log, once per source, that its first NOTHING_UNDERSTOOD_LINES lines (with ``at_end``:
        all of a one-shot read) gave no delivery event: most likely the wrong format."""
        if feed.told_nothing_understood or feed.events or not feed.lines or not (
                at_end or feed.lines >= NOTHING_UNDERSTOOD_LINES):
            return
        fmt = feed.caps.detected()
        if fmt is not None and isinstance(feed.parser, DetectingParser):
            return  # a line showed its format: a quiet stretch of a known log
        feed.told_nothing_understood = True
        if fmt is None:
            known = ", ".join(name for name in sorted(PARSERS) if name != "auto")
            log.warning("%s: none of its %d lines shows a known log format (%s): nothing is "
                        "counted; name the format with --log.format or sources[].format",
                        feed.source.name, feed.lines, known)
        else:
            log.warning("%s: no delivery event in its %d lines read as %s; if it is another "
                        "MTA's log, leave the format to auto-detection (--log.format auto)",
                        feed.source.name, feed.lines, fmt)

    def _sync_source_stats(self, feed: Feed) -> None:
        source = feed.source
        self.tell_nothing_understood(feed)
        with self.state.lock:
            stats = self.state.source(source.name)
            stats.up = 1 if source.up else 0
            stats.read_errors = source.read_errors
            stats.truncations = source.truncations
            stats.rotations = source.rotations
            stats.not_attempts = {**dict.fromkeys(feed.caps.not_attempt_reasons, 0),
                                  **feed.caps.counters()}
            if feed.caps.evictions is not None:
                stats.pending_evicted = feed.caps.evictions(feed.parser)

    def _log_skip(self, source: str, reason: str, raw: bytes) -> None:
        key = (source, reason)
        self._logged[key] += 1
        level = logging.WARNING if self._logged[key] <= LOGGED_SKIPS_PER_REASON else logging.DEBUG
        log.log(level, "%s: line not understood (%s): %r", source, reason, raw[:300])


# -- one-shot reads (parse, report, backfill) -----------------------------------------------------

OneShot = FileSource | CatchUpSource | StdinSource


def one_shot_source(path: str, max_line_bytes: int, on_data: Callable[[], None]) -> OneShot:
    """The source of a one-shot read: standard input ("-"), a file through gzip, a file.

    Raises OSError, before anything is read, when the file cannot be read."""
    if is_stdin(path):
        return StdinSource(name=path, max_line_bytes=max_line_bytes, on_data=on_data)
    if not os.path.isfile(path):
        raise OSError(f"{path}: {'not a regular file' if os.path.exists(path) else 'no such file'}")
    with open(path, "rb"):  # raises PermissionError before anything is printed
        pass
    if path.endswith(".gz"):  # a rotated, compressed log: read through gzip
        return CatchUpSource(path, max_line_bytes=max_line_bytes)
    return FileSource(path, from_start=True, max_line_bytes=max_line_bytes)


def read_through(path: str, pipeline: Pipeline, parser: Parser, max_line_bytes: int, *,
                 on_event: LineObserver | None = None,
                 on_read: Callable[[int], None] | None = None) -> Feed:
    """Read one file (or standard input) to its end with ``parser`` into ``pipeline``, its
    partial last line included; the feed it was read by. Raises OSError before anything is read
    when the file cannot be read."""
    data = threading.Event()
    source = one_shot_source(path, max_line_bytes, data.set)
    feed = pipeline.add(source, parser, on_event=on_event, on_read=on_read)
    pipeline.begin_feed(feed)
    if isinstance(source, CatchUpSource) and source.read_errors:
        raise OSError(f"{path}: not a readable gzip file")
    if isinstance(source, StdinSource):
        while not source.eof:
            data.wait(1.0)
            data.clear()
            pipeline.pump()
    pipeline.pump()  # all of a file; what standard input held when it ended
    pipeline.drain()
    pipeline.tell_nothing_understood(feed, at_end=True)
    if source.lines_too_long:
        log.warning("%s: %d lines over %d bytes skipped", path, source.lines_too_long,
                    max_line_bytes)
    return feed
