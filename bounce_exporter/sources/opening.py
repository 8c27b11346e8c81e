"""Opening a log file without ever blocking, and the state of one file being read."""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from typing import BinaryIO

from bounce_exporter.sources.position import FINGERPRINT_BYTES, Position


class Reader:
    """One open file being read: the live one (checked at its end) or a rotated one (read once)."""

    __slots__ = (
        "fd",
        "fingerprint",
        "handle",
        "ident",
        "line_start",
        "live",
        "mtime_ns",
        "name",
        "offset",
        "raw",
    )

    def __init__(self, handle: BinaryIO, raw: BinaryIO, st: os.stat_result, name: str, live: bool,
                 fingerprint: bytes):
        self.handle = handle
        self.raw = raw
        self.fd = raw.fileno()
        self.ident = (st.st_dev, st.st_ino)
        self.name = name
        self.offset = 0  # bytes read so far (uncompressed for .gz)
        self.line_start = 0  # offset of the first byte not yet handed over in a line
        self.fingerprint = fingerprint
        self.mtime_ns = st.st_mtime_ns
        self.live = live

    def seek(self, offset: int) -> None:
        self.handle.seek(offset)
        self.offset = self.line_start = offset

    def position(self) -> Position:
        return Position(self.ident[0], self.ident[1], self.line_start, self.fingerprint,
                        self.mtime_ns, self.name)

    def on_disk(self) -> int:
        """How far into the file on disk reading is: the offset, or for a .gz file the
        compressed bytes gzip has taken."""
        if self.handle is self.raw:
            return self.offset
        try:
            return os.lseek(self.fd, 0, os.SEEK_CUR)
        except OSError:
            return 0

    def unread(self) -> int:
        """Bytes of the file on disk not read yet: its size now less ``on_disk()``."""
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            return 0
        return max(size - self.on_disk(), 0)

    def refresh_mtime(self) -> None:
        try:
            self.mtime_ns = os.fstat(self.fd).st_mtime_ns
        except OSError:
            pass

    def close(self) -> None:
        for handle in (self.handle, self.raw):
            try:
                handle.close()
            except OSError:
                pass


class NotRegular(Exception):
    """The path names something other than a regular file (a directory, a FIFO)."""


def open_file(path: str, live: bool) -> Reader:
    """Open without ever blocking (a FIFO), refuse what is not a regular file; raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(path)
        raw = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    handle: BinaryIO = raw
    name = os.path.realpath(path)
    if not live and path.endswith(".gz"):
        try:
            head = gzip.GzipFile(fileobj=raw, mode="rb").read(FINGERPRINT_BYTES)
            raw.seek(0)  # a fresh reader: none of the file taken yet (``on_disk``)
            handle = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        except (OSError, EOFError, zlib.error):
            raw.close()
            raise OSError(f"not a readable gzip file: {path}") from None
    else:
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
    return Reader(handle, raw, st, name, live, head)


def reference_time(path: str) -> float | None:
    """The file's last change: stamps without a year are placed no later than it."""
    try:
        return os.path.getmtime(path)
    except OSError:
        return None
