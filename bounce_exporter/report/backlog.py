"""``serve``'s catch-up at start, on a terminal: the progress line (``progress.ProgressLine``) of
the backlog its file sources read before they are at the live end (``--log.from-start`` on a big
file, a saved position far behind the end, rotated files to catch up on), from the sources' own
byte counts: what they have read from disk (``bytes_read``) and what their open files still hold
(``unread()``), so a live file that grows meanwhile grows the total.

Shown only when standard error is a terminal and the backlog is at least ``SHOWN_FROM`` bytes: at
once (the total is known), then at most every ``INTERVAL`` seconds while the first read runs, and
a last time, kept, once it is done; a log record written meanwhile first empties the line's place.
Standard error not a terminal (journald, a file): nothing is written and nothing is hooked. The
reading itself is untouched: the line is drawn from the pipeline's ``on_read`` hook of each file
source's feed, removed again once caught up.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from bounce_exporter.report.progress import ProgressLine, is_terminal
from bounce_exporter.sources import Source
from bounce_exporter.sources.catchup import CatchUpSource
from bounce_exporter.sources.files import FileSource

SHOWN_FROM = 1_000_000  # bytes of backlog; less is read in a blink
ReadsFiles = FileSource | CatchUpSource


class Feed(Protocol):
    """What of a pipeline's feed the catch-up line uses (``pipeline.Feed``)."""

    source: Source
    on_read: Callable[[int], None] | None


class CatchUp(ProgressLine):
    """The catch-up's progress line: bytes the file sources read since it began, of those plus
    what their open files still hold; its first frame drawn at once."""

    def __init__(self, err: TextIO, sources: list[ReadsFiles],
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(err, clock, label="catch-up")
        self.sources = sources
        self.base = sum(source.bytes_read for source in sources)
        self.due = self.started

    def counts(self) -> tuple[int, int, str]:
        done = sum(source.bytes_read for source in self.sources) - self.base
        return done, done + sum(source.unread() for source in self.sources), ""


class _Clearing(logging.Filter):
    """On the handler writing to the line's terminal: empties the line's place before a record."""

    def __init__(self, line: ProgressLine):
        super().__init__()
        self.line = line

    def filter(self, record: logging.LogRecord) -> bool:
        self.line.clear()
        return True


def catch_up_progress(feeds: list[Feed], err: TextIO | None = None) -> Callable[[], None]:
    """Show the catch-up of the file sources of ``feeds`` (begun, not read yet) on ``err``
    (standard error) if it is a terminal and they have a backlog. Returns what to call once the
    first read of every source is done (after the read loop's first turn): the last frame, kept,
    and the hooks removed; later calls do nothing."""
    err = sys.stderr if err is None else err
    hooked, sources = [], []
    for feed in feeds:
        if isinstance(feed.source, (FileSource, CatchUpSource)) and feed.on_read is None:
            hooked.append(feed)
            sources.append(feed.source)
    if not is_terminal(err) or sum(source.unread() for source in sources) < SHOWN_FROM:
        return lambda: None
    line = CatchUp(err, sources)
    clearing = _Clearing(line)
    handlers = [handler for handler in logging.getLogger().handlers
                if isinstance(handler, logging.StreamHandler) and handler.stream is err]
    for handler in handlers:
        handler.addFilter(clearing)
    for feed in hooked:
        feed.on_read = lambda _offset: line.tick()
    line.draw()

    def caught_up() -> None:
        if not hooked:
            return
        for feed in hooked:
            feed.on_read = None
        hooked.clear()
        for handler in handlers:
            handler.removeFilter(clearing)
        line.finish()

    return caught_up
