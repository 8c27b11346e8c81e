"""The progress line of a long one-shot read (``parse``, ``report``, ``backfill``) on a terminal."""

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


class Progress:
    """The progress line of a long one-shot read, redrawn on a terminal at most every
    ``INTERVAL`` seconds, the first time after ``INTERVAL`` (a short read shows none): bytes done
    of the total of the files (a .gz counts when done), the rate, and the file being read."""

    INTERVAL = 0.5

    def __init__(self, err: TextIO, paths: list[str], clock: Callable[[], float] = time.monotonic,
                 *, label: str = "parse"):
        self.err, self.paths, self.clock, self.label = err, paths, clock, label
        self.sizes = [_size(path) for path in paths]
        self.total = sum(self.sizes)
        self.index = 0  # of the file being read
        self.finished = 0  # bytes of the files read
        self.offset = 0  # in the file being read
        self.started = clock()
        self.due = self.started + self.INTERVAL
        self.shown = False

    def at(self, offset: int) -> None:
        if self.paths[self.index].endswith(".gz"):
            return  # an uncompressed offset: no part of the compressed total
        self.offset = offset
        if self.clock() >= self.due:
            self.draw()

    def file_done(self, path: str) -> None:
        self.finished += self.sizes[self.index]
        self.offset = 0
        self.index = min(self.index + 1, len(self.paths) - 1)
        if self.clock() >= self.due:
            self.draw()

    def draw(self) -> None:
        done = self.finished + self.offset
        elapsed = max(self.clock() - self.started, 1e-6)
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        files = f", file {self.index + 1} of {len(self.paths)}" if len(self.paths) > 1 else ""
        self.err.write(f"\r{self.label}: {_megabytes(done)} of {_megabytes(self.total)}{share}, "
                       f"{_megabytes(done / elapsed)}/s{files}\x1b[K")
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


def _size(path: str) -> int:
    try:
        return 0 if is_stdin(path) else os.path.getsize(path)
    except OSError:
        return 0


def _megabytes(count: float) -> str:
    return f"{count / 1e6:.1f} MB"
