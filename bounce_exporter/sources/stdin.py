"""Standard input as a log source (``--log.file -``).

A background thread reads standard input (never blocking the read loop) and queues its complete
lines (``lines.LineSplitter``); at end of input the last partial line is handed over and ``up``
goes to 0 (``serve`` goes on serving). Its batches carry no position: a pipe cannot be resumed, so
nothing is saved for it.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from bounce_exporter.sources.lines import CHUNK_SIZE, Batch, Block, LineSplitter, SplitsLines

log = logging.getLogger(__name__)

STDIN_NAMES = ("-", "stdin")
QUEUED_CHUNKS = 256


class StdinSource(SplitsLines):
    """Reads lines from standard input (or ``stream``) in a background thread."""

    path = None  # nothing to watch: the reader thread wakes the loop itself

    def __init__(self, stream: BinaryIO | None = None, *, name: str = "-",
                 max_line_bytes: int = 65536, on_data: Callable[[], None] | None = None):
        self.stream = stream
        self.name = name
        self._lines = LineSplitter(max_line_bytes)  # used by the reader thread
        self.on_data = on_data
        self.up = False
        self.eof = False
        self.read_errors = 0
        self.lines_too_long = 0
        self.truncations = 0
        self.rotations = 0
        self.position = None
        self._queue: queue.Queue[tuple[list[bytes], int]] = queue.Queue(QUEUED_CHUNKS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, saved: object = None) -> None:
        """Start reading (nothing saved applies to a pipe)."""
        if self._thread is None:
            if self.stream is None:
                self.stream = sys.stdin.buffer
            self.up = True
            self._thread = threading.Thread(target=self._run, name="stdin reader", daemon=True)
            self._thread.start()

    def read_batches(self) -> Iterator[Batch]:
        if self._thread is None:
            self.begin()
        while True:
            try:
                lines, too_long = self._queue.get_nowait()
            except queue.Empty:
                return
            self.lines_too_long += too_long
            yield Batch(lines, None, too_long)

    def close(self) -> Batch:
        """Stop handing over lines (the thread may stay blocked in a read of a pipe still open:
        it is a daemon thread)."""
        self._stop.set()
        return Batch([], None)

    def _run(self) -> None:
        stream = self.stream
        assert stream is not None
        read = stream.read1 if hasattr(stream, "read1") else stream.read
        splitter = self._lines
        while not self._stop.is_set():
            try:
                chunk = read(CHUNK_SIZE)
            except (OSError, ValueError) as err:
                self.read_errors += 1
                log.error("standard input: read error: %s", err)
                chunk = b""
            if not chunk:
                flushed = splitter.flush()
                if flushed is not None:
                    self._put(*flushed)
                break
            split = splitter.feed(chunk)
            if split is not None:
                self._put(split[0], split[1])
        self.eof = True
        self.up = False
        log.info("standard input: end of input; serving on")
        self._wake()

    def _put(self, data: bytes, too_long: int) -> None:
        lines = Block(data, None, too_long).batch()
        while not self._stop.is_set():
            try:
                self._queue.put((lines, too_long), timeout=0.5)
                break
            except queue.Full:
                continue
        self._wake()

    def _wake(self) -> None:
        if self.on_data is not None:
            self.on_data()


def is_stdin(path: str) -> bool:
    return path in STDIN_NAMES
