"""The progress line of a long read on a terminal: ``parse``, ``report``, ``backfill``, and
``serve``'s catch-up at start (``report.backlog``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TextIO

from bounce_exporter.sources.stdin import is_stdin


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressLine:
    """A progress line on a terminal, ``label: done of total (share), rate`` and what ``counts``
    adds, redrawn at most every ``INTERVAL`` seconds (``tick``), the first time after
    ``INTERVAL`` (a short read shows none). ``counts`` says what is done of what."""

    INTERVAL = 0.5

    def __init__(self, err: TextIO, clock: Callable[[], float] = time.monotonic, *, label: str):
        self.err, self.clock, self.label = err, clock, label
        self.started = clock()
        self.due = self.started + self.INTERVAL
        self.shown = False

    def counts(self) -> tuple[int, int, str]:
        """(bytes done, bytes in all, what follows the rate)."""
        raise NotImplementedError

    def tick(self) -> None:
        if self.clock() >= self.due:
            self.draw()

    def draw(self) -> None:
        done, total, detail = self.counts()
        elapsed = max(self.clock() - self.started, 1e-6)
        share = f" ({100 * done / total:.0f}%)" if total else ""
        self.err.write(f"\r{self.label}: {_megabytes(done)} of {_megabytes(total)}{share}, "
                       f"{_megabytes(done / elapsed)}/s{detail}\x1b[K")
        self.err.flush()
        self.shown = True
        self.due = self.clock() + self.INTERVAL

    def clear(self) -> None:
        """Before another message on the terminal: the progress line's place, emptied."""
        if self.shown:
            self.err.write("\r\x1b[K")

    def finish(self) -> None:
        """The last state of the line, kept on the terminal, if it was shown at all."""
        if self.shown:
            self.draw()
            self.err.write("\n")
            self.err.flush()


class Progress(ProgressLine):
    """The progress line of a long one-shot read: bytes done of the total of the files (a .gz
    counts when done), the rate, and the file being read."""

    def __init__(self, err: TextIO, paths: list[str], clock: Callable[[], float] = time.monotonic,
                 *, label: str = "parse"):
        super().__init__(err, clock, label=label)
        self.paths = paths
        self.sizes = [_size(path) for path in paths]
        self.total = sum(self.sizes)
        self.index = 0  # of the file being read
        self.finished = 0  # bytes of the files read
        self.offset = 0  # in the file being read

    def at(self, offset: int) -> None:
        if self.paths[self.index].endswith(".gz"):
            return  # an uncompressed offset: no part of the compressed total
        self.offset = offset
        self.tick()

    def file_done(self, path: str) -> None:
        self.finished += self.sizes[self.index]
        self.offset = 0
        self.index = min(self.index + 1, len(self.paths) - 1)
        self.tick()

    def counts(self) -> tuple[int, int, str]:
        files = f", file {self.index + 1} of {len(self.paths)}" if len(self.paths) > 1 else ""
        return self.finished + self.offset, self.total, files


def _size(path: str) -> int:
    try:
        return 0 if is_stdin(path) else os.path.getsize(path)
    except OSError:
        return 0


def _megabytes(count: float) -> str:
    return f"{count / 1e6:.1f} MB"
