"""Log sources: follow a log file and hand over its complete lines as bytes.

The tailer's rules (after mtail's):
- First open of a file that exists at start: seek to its end, unless ``from_start``. A file that
  appears later (or is replaced by rotation) is read from its start.
- Read until the end of the file; at the end, stat the *path*. A different inode (rename and create,
  delete and recreate, symlink swap) means: the old file is already drained to its end, so flush its
  partial last line, then read the new file from its start. A size below the read offset means a
  truncation (copytruncate): flush the partial line, seek to 0, count it.
- A partial last line is held until its newline; it is flushed at rotation and at ``close()``.
- Lines longer than ``max_line_bytes`` are counted (``lines_too_long``) and handed over as an empty
  line, so line numbers stay right; they are never buffered whole.
- A missing, unreadable or non-regular file sets ``up`` to False and is logged once per outage;
  it is picked up when it appears or becomes readable. IO errors are counted and logged, never raised.
- Filesystem events (watchdog) only wake the reader sooner; the caller's poll interval is the safety net.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
TOO_LONG = b""  # stands in for a line over max_line_bytes


class FileSource:
    """Follows one log file by path. Call ``read_batches()`` whenever it may have grown."""

    def __init__(self, path: str, *, from_start: bool = False, max_line_bytes: int = 65536,
                 chunk_size: int = CHUNK_SIZE):
        self.path = path
        self.name = path
        self.max_line_bytes = max_line_bytes
        self.chunk_size = chunk_size
        self.up = False
        self.read_errors = 0
        self.lines_too_long = 0
        self.truncations = 0
        self.rotations = 0
        self._file = None
        self._inode: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""
        self._skipping_long_line = False
        self._seek_end_on_open = not from_start
        self.down_reason: str | None = None

    # -- public -------------------------------------------------------------------------------

    def read_batches(self) -> Iterator[list[bytes]]:
        """Yield lists of complete lines (newline and trailing CR removed) available now."""
        if self._file is None and not self._open():
            return
        while True:
            chunk = self._read_chunk()
            if chunk is None:
                return
            if chunk:
                lines = self._split(chunk)
                if lines:
                    yield lines
                continue
            # end of file: decide by stat of the path whether to follow a rotation or truncation
            change = self._path_change()
            if change is None:
                return
            yield from self._flush_partial()
            if change == "rotated":
                self.rotations += 1
                self._file.close()
                self._file = None
                if not self._open():
                    return
            else:
                self.truncations += 1
                log.info("log source %s was truncated; reading it from the start", self.path)
                self._file.seek(0)
                self._offset = 0

    def close(self) -> list[bytes]:
        """Stop following; return the held partial line (if any) as a last line."""
        rest = list(self._flush_partial())
        if self._file is not None:
            self._file.close()
            self._file = None
        return rest[0] if rest else []

    # -- opening and end-of-file decisions -----------------------------------------------------

    def _open(self) -> bool:
        try:
            st = os.stat(self.path)
            if not stat.S_ISREG(st.st_mode):
                self._down("not a regular file")
                return False
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except OSError as err:
            self._down(err.strerror or str(err))
            return False
        fst = os.fstat(handle.fileno())
        self._file = handle
        self._inode = (fst.st_dev, fst.st_ino)
        self._offset = fst.st_size if self._seek_end_on_open else 0
        self._seek_end_on_open = False  # only the first file found at start is skipped
        handle.seek(self._offset)
        self._partial = b""
        self._skipping_long_line = False
        if not self.up:
            if self.down_reason is not None:
                log.info("log source %s is readable again", self.path)
            self.up = True
            self.down_reason = None
        return True

    def _down(self, reason: str) -> None:
        if self.down_reason != reason:
            log.warning("log source %s unavailable: %s", self.path, reason)
        self.down_reason = reason
        self.up = False
        self._seek_end_on_open = False  # when it appears, everything in it is new

    def _read_chunk(self) -> bytes | None:
        try:
            chunk = self._file.read(self.chunk_size)
        except OSError as err:
            self.read_errors += 1
            log.error("read error on %s: %s", self.path, err)
            self._file.close()
            self._file = None
            self._down(f"read error: {err.strerror or err}")
            return None
        self._offset += len(chunk)
        return chunk

    def _path_change(self) -> str | None:
        """At end of file: "rotated", "truncated", or None when there is nothing more to read."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None  # renamed away and not yet recreated: the old file stays drained and open
        if (st.st_dev, st.st_ino) != self._inode:
            return "rotated"
        if st.st_size < self._offset:
            return "truncated"
        return None

    # -- line splitting ------------------------------------------------------------------------

    def _split(self, chunk: bytes) -> list[bytes]:
        lines = chunk.split(b"\n")
        lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        if self._skipping_long_line and lines:
            lines[0] = TOO_LONG  # the end of a line already counted as too long
            self._skipping_long_line = False
        if len(self._partial) > self.max_line_bytes:
            if not self._skipping_long_line:
                self.lines_too_long += 1
            self._partial = b""
            self._skipping_long_line = True
        limit = self.max_line_bytes
        for i, line in enumerate(lines):
            if len(line) > limit:
                self.lines_too_long += 1
                lines[i] = TOO_LONG
            elif line.endswith(b"\r"):
                lines[i] = line[:-1]
        return lines

    def _flush_partial(self) -> Iterator[list[bytes]]:
        partial, self._partial = self._partial, b""
        skipping, self._skipping_long_line = self._skipping_long_line, False
        if partial and not skipping:
            yield [partial.rstrip(b"\r")]
