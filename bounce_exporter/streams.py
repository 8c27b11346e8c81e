"""Log sources other than a followed file: standard input, and rotated files read once.

Both hand over complete lines in batches like ``FileSource`` (``begin``, ``read_batches``,
``close``, ``up``, ``name``, counters), newline and trailing CR removed, lines over
``max_line_bytes`` handed over as an empty line and counted.

- ``StdinSource`` (``--log.file -``): a background thread reads standard input (never blocking the
  read loop) and queues its complete lines; at end of input the last partial line is handed over
  and ``up`` goes to 0 (``serve`` goes on serving). Its batches carry no position: a pipe cannot be
  resumed, so nothing is saved for it.
- ``CatchUpSource``: one rotated file (``mail.log.1``, ``mail.log.2.gz``, read through gzip) read
  from its start to its end once, for ``--log.from-start`` with a glob (``config.expand_sources``
  orders them oldest first, before the live file). Its position (uncompressed offset) is saved like
  a file's: a restart resumes in the same file (same inode, or same first bytes), and skips a file
  that is another one now (rotated since: the live file's own resume reads what rotated while the
  exporter was down, source rule 7), or one never started while the live file has a saved position
  (``skip``: the catch-up was an earlier lifetime's).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from bounce_exporter.source import CHUNK_SIZE, TOO_LONG, Batch, Position, _NotRegular, _open

log = logging.getLogger(__name__)

STDIN_NAMES = ("-", "stdin")
QUEUED_CHUNKS = 256


class _Lines:
    """Splits a byte stream into complete lines, holding the partial last one."""

    def __init__(self, max_line_bytes: int):
        self.max_line_bytes = max_line_bytes
        self.partial = b""
        self.skipping = False  # inside a line over the limit
        self.pending = 0  # bytes since the last newline

    def feed(self, chunk: bytes) -> tuple[list[bytes], int]:
        lines = chunk.split(b"\n")
        tail = lines.pop()
        too_long = 0
        first = 0  # lines from here on are checked against the limit
        if lines:
            if self.skipping:  # the end of a line over the limit
                lines[0], too_long, first = TOO_LONG, 1, 1
                self.skipping = False
            elif self.partial:
                lines[0] = self.partial + lines[0]
            self.partial = b""
            self.pending = 0
        self.pending += len(tail)
        if not self.skipping:
            self.partial += tail
            if len(self.partial) > self.max_line_bytes:
                self.partial, self.skipping = b"", True
        limit = self.max_line_bytes
        for i in range(first, len(lines)):
            line = lines[i]
            if len(line) > limit:
                lines[i] = TOO_LONG
                too_long += 1
            elif line.endswith(b"\r"):
                lines[i] = line[:-1]
        return lines, too_long

    def flush(self) -> tuple[list[bytes], int]:
        partial, skipping = self.partial, self.skipping
        self.partial, self.skipping, self.pending = b"", False, 0
        if skipping:
            return [TOO_LONG], 1
        if partial:
            return [partial[:-1] if partial.endswith(b"\r") else partial], 0
        return [], 0


class StdinSource:
    """Reads lines from standard input (or ``stream``) in a background thread."""

    path = None  # nothing to watch: the reader thread wakes the loop itself

    def __init__(self, stream: BinaryIO | None = None, *, name: str = "-",
                 max_line_bytes: int = 65536, on_data: Callable[[], None] | None = None):
        self.stream = stream
        self.name = name
        self.max_line_bytes = max_line_bytes
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
            yield Batch(lines, None, too_long)  # type: ignore[arg-type]

    def close(self) -> Batch:
        """Stop handing over lines (the thread may stay blocked in a read of a pipe still open:
        it is a daemon thread)."""
        self._stop.set()
        return Batch([], None)  # type: ignore[arg-type]

    def _run(self) -> None:
        stream = self.stream
        assert stream is not None
        read = getattr(stream, "read1", None) or stream.read
        splitter = _Lines(self.max_line_bytes)
        while not self._stop.is_set():
            try:
                chunk = read(CHUNK_SIZE)
            except (OSError, ValueError) as err:
                self.read_errors += 1
                log.error("standard input: read error: %s", err)
                chunk = b""
            if not chunk:
                self._put(*splitter.flush())
                break
            self._put(*splitter.feed(chunk))
        self.eof = True
        self.up = False
        log.info("standard input: end of input; serving on")
        self._wake()

    def _put(self, lines: list[bytes], too_long: int) -> None:
        if not lines:
            return
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


class CatchUpSource:
    """Reads one (rotated, possibly gzip-compressed) file from its start to its end, once."""

    path = None  # read once: nothing to watch

    def __init__(self, path: str, *, max_line_bytes: int = 65536, chunk_size: int = CHUNK_SIZE,
                 live_path: str | None = None):
        self.file = path
        self.name = path
        self.live_path = live_path  # the live file this one was rotated from, if known
        self.max_line_bytes = max_line_bytes
        self.chunk_size = chunk_size
        self.skip = False  # set before begin(): the catch-up was done by an earlier lifetime
        self.up = False
        self.done = False
        self.read_errors = 0
        self.lines_too_long = 0
        self.truncations = 0
        self.rotations = 0
        self.position: Position | None = None
        self._reader = None
        self._lines = _Lines(max_line_bytes)

    def begin(self, saved: Position | None = None) -> Position | None:
        self.done = True
        try:
            reader = _open(self.file, live=False)
        except (OSError, _NotRegular) as err:
            self.read_errors += 1
            log.warning("catch-up: cannot read %s: %s", self.file,
                        getattr(err, "strerror", None) or err or "not a regular file")
            return saved
        self.up = True
        if saved is not None and saved.ino is not None:
            if saved.ident == reader.ident or (
                    saved.fingerprint and reader.fingerprint.startswith(saved.fingerprint)):
                try:
                    reader.seek(saved.offset)
                except (OSError, EOFError, zlib.error) as err:
                    return self._fail(reader, err)
            else:
                log.info("catch-up: %s is another file than the one read before; skipped (the "
                         "live file's resume reads what rotated meanwhile)", self.file)
                reader.close()
                self.position = saved
                return saved
        elif self.skip:
            reader.close()
            self.position = reader.position()
            return saved
        log.info("catch-up: reading %s", self.file)
        self._reader = reader
        self.done = False
        self.position = reader.position()
        return self.position

    def read_batches(self) -> Iterator[Batch]:
        while self._reader is not None:
            reader = self._reader
            try:
                chunk = reader.handle.read(self.chunk_size)
            except (OSError, EOFError, zlib.error) as err:
                self._fail(reader, err)
                return
            reader.offset += len(chunk)
            if chunk:
                lines, too_long = self._lines.feed(chunk)
                if lines:
                    reader.line_start = reader.offset - self._lines.pending
            else:
                lines, too_long = self._lines.flush()
                reader.line_start = reader.offset
                reader.close()
                self._reader = None
                self.done = True
            if lines:
                self.lines_too_long += too_long
                self.position = reader.position()
                yield Batch(lines, self.position, too_long)

    def close(self) -> Batch:
        """Stop; a partial last line is not handed over (read again from the saved position)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return Batch([], self.position or Position(None, None, 0))

    def _fail(self, reader, err: BaseException) -> None:
        self.read_errors += 1
        self.up = False
        log.error("catch-up: read error on %s: %s", self.file, err)
        reader.close()
        self._reader = None
        self.done = True


def is_stdin(path: str) -> bool:
    return path in STDIN_NAMES
