"""Log sources: follow a log file by path and hand over its complete lines, with their position.

The tailer's rules (mtail's, plus copytruncate and restarts, which mtail leaves out):

1. Start. With a saved position (rule 7) resume from it. Otherwise the first open of a file seeks
   to the end of its last complete line, or to its start with ``from_start``; a file missing at
   start, appearing later or replacing another is read from its start.
2. Read to the end of the file, then check the open file itself: smaller than the read offset, or
   its first bytes no longer its fingerprint, means it was truncated (copytruncate). The bytes
   after the last complete line handed over now exist only in the copy: it is looked up among the
   rotated names (rule 5: same first bytes, size at least that offset), its unread rest is read,
   then the live file from 0. Counted in ``truncations``; a copy not found is logged (lost bytes).
3. Then stat the *path*: a different file (rename and create, delete and recreate, symlink swap)
   means: read the old file once more to its end (the writer may have written to it between our
   last read and the swap), flush its partial last line, read every rotated file newer than it
   (two rotations between two looks), then the new file from its start. Counted in ``rotations``.
   A path that is gone (renamed, not yet recreated) keeps the old file open: look again later.
4. A partial last line is held until its newline; it is flushed when its file is done (rotated
   away) and by ``close()``. Positions only ever cover complete lines, so a restart reads a line
   that was partial at shutdown whole, once. CR before the newline is removed.
5. Rotated names: regular files beside the path, or beside its symlink target, whose names are the
   path's name followed by ``.``, ``-`` or ``_`` and anything (``mail.log.1``, ``mail.log-20260101``,
   ``mail.log.2.gz``, read through gzip). "Newer" means a later modification time.
6. Lines over ``max_line_bytes`` are never buffered whole: counted when their newline arrives and
   handed over as an empty line, so line numbers stay right.
7. Positions (``Position``): device, inode, offset of the next unread line, the file's first
   ``FINGERPRINT_BYTES`` (so a reused inode or a truncated-and-regrown file is not mistaken for the
   saved one), its modification time and real path. Resuming: the live file when device, inode and
   first bytes match and it is not shorter than the offset; else the saved file among the rotated
   names (same inode first, then same first bytes; at least offset bytes long): its rest, then the
   rotated files newer than it, then the live file from its start. A saved file found nowhere: the
   rotated files newer than its saved modification time, then the live file from its start.
8. A missing, unreadable or non-regular path (a directory; a FIFO is opened non-blocking and never
   waited on) sets ``up`` to False, logged once per reason; it is picked up when it appears or
   becomes readable. IO errors are counted and logged, never raised; after a read error on the live
   file, reading resumes at its position.
9. Filesystem events (watchdog) only wake the reader sooner; the caller's poll interval is the
   safety net.

Limits, stated: a copytruncate of a file of which not one byte had been seen (empty when opened)
cannot be told from growth; rotated files are ordered by modification time, so two rotations within
one file-time tick (a few ms) while nobody reads may be read out of order or, if the newer has the
very same time as the older, skipped; a rotated file still written to after its successor has been
opened (a writer slow to reopen) loses those late lines.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
TOO_LONG = b""  # stands in for a line over max_line_bytes
FINGERPRINT_BYTES = 256
ROTATED_SEPARATORS = (".", "-", "_")
REMEMBERED_FILES = 4096  # rotated files known to be dealt with (read, or there at start)

_TRUNCATED = "truncated"
_ROTATED = "rotated"


@dataclass(frozen=True)
class Position:
    """Where the next unread line starts. ``ino is None`` means: the path from its start."""

    dev: int | None
    ino: int | None
    offset: int
    fingerprint: bytes = b""
    mtime_ns: int = 0
    file: str | None = None  # real path of the file then: a hint where to look for it

    @property
    def ident(self) -> tuple[int | None, int | None]:
        return (self.dev, self.ino)

    def to_state(self) -> dict:
        return {"dev": self.dev, "ino": self.ino, "offset": self.offset,
                "fingerprint": self.fingerprint.hex(), "mtime_ns": self.mtime_ns, "file": self.file}

    @classmethod
    def from_state(cls, data: object) -> Position | None:
        """The position saved by ``to_state``; None for anything malformed."""
        if not isinstance(data, dict):
            return None
        dev, ino, offset = data.get("dev"), data.get("ino"), data.get("offset")
        fingerprint, mtime, file = data.get("fingerprint", ""), data.get("mtime_ns", 0), data.get("file")
        if not (_whole(offset) and _whole(mtime) and isinstance(fingerprint, str)
                and (file is None or isinstance(file, str))):
            return None
        if (dev is None) != (ino is None) or not (ino is None or (_whole(dev) and _whole(ino))):
            return None
        try:
            raw = bytes.fromhex(fingerprint)
        except ValueError:
            return None
        return cls(dev, ino, offset, raw[:FINGERPRINT_BYTES], mtime, file)


START = Position(None, None, 0)  # no file seen yet: read the path from its start when it appears


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class Batch(list):
    """Complete lines read at once, how many of them were over-long, and the position after them."""

    __slots__ = ("position", "too_long")

    def __init__(self, lines: list[bytes], position: Position, too_long: int = 0):
        super().__init__(lines)
        self.position = position
        self.too_long = too_long


class Block:
    """Complete lines read at once, as they are in the file: ``data`` holds ``lines`` lines, each
    ending with a newline (a CR before it is part of the line ending, the reader removes it). A
    line over ``max_line_bytes`` is there as an empty line and counted in ``too_long``.
    ``position`` is where the next unread line starts."""

    __slots__ = ("data", "lines", "position", "too_long")

    def __init__(self, data: bytes, position: Position, too_long: int = 0):
        self.data = data
        self.lines = data.count(b"\n")
        self.position = position
        self.too_long = too_long

    def batch(self) -> Batch:
        """The same lines as a list, newline and CR removed."""
        lines = self.data.split(b"\n")
        lines.pop()  # after the last newline: nothing
        if b"\r" in self.data:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        return Batch(lines, self.position, self.too_long)


class _Reader:
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


class _NotRegular(Exception):
    pass


def _open(path: str, live: bool) -> _Reader:
    """Open without ever blocking (a FIFO), refuse what is not a regular file; raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(path)
        raw = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    handle: BinaryIO = raw
    name = os.path.realpath(path)
    if not live and path.endswith(".gz"):
        handle = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        try:
            head = handle.read(FINGERPRINT_BYTES)
            handle.seek(0)
        except (OSError, EOFError, zlib.error):
            raw.close()
            raise OSError(f"not a readable gzip file: {path}") from None
    else:
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
    return _Reader(handle, raw, st, name, live, head)


class FileSource:
    """Follows one log file by path. Call ``read_batches()`` whenever it may have grown."""

    def __init__(self, path: str, *, from_start: bool = False, max_line_bytes: int = 65536,
                 chunk_size: int = CHUNK_SIZE):
        self.path = path
        self.name = path
        self.max_line_bytes = max_line_bytes
        self.chunk_size = chunk_size
        self.up = False
        self.down_reason: str | None = None
        self.read_errors = 0
        self.lines_too_long = 0
        self.truncations = 0
        self.rotations = 0
        self.position: Position | None = None  # after the last line handed over
        self._from_start = from_start
        self._begun = False
        self._cur: _Reader | None = None
        self._queue: list[_Reader] = []  # read these, in order, before opening the path again
        self._next_open: str | Position = "start"  # how the path is opened next
        self._finished: _Reader | None = None  # a rotated-away file just finished: catch up after it
        self._partial = b""
        self._skipping = False  # inside a line over max_line_bytes
        self._done: dict[tuple, bytes] = {}  # ident -> first bytes, oldest first

    # -- public -------------------------------------------------------------------------------

    def begin(self, saved: Position | None = None) -> Position:
        """Open the file at its starting point (rule 1, or resume from ``saved``) without reading;
        return the starting position (what has been counted so far)."""
        self._begun = True
        if saved is not None and saved.ino is not None:
            self._resume(saved)
            self.position = saved
        else:
            mode = "start" if (self._from_start or saved is not None) else "end"
            reader = self._open_live(mode)
            if reader is None:
                self._next_open = "start"
                self.position = START
            else:
                self._cur = reader
                self.position = reader.position()
        # rotated files there now and not queued are dealt with: never read them as unread later
        queued = {r.ident for r in [self._cur, *self._queue] if r is not None}
        for reader in self._candidates():
            if reader.ident not in queued:
                self._remember(reader)
            reader.close()
        return self.position

    def _dealt_with(self, reader: _Reader, done_heads: set[bytes]) -> bool:
        """Was this rotated file read to its end, or there at start and not queued? Known by its
        first bytes: the same inode with other first bytes is another file (a deleted file's
        inode number reused by a later generation), never skipped as read."""
        if reader.fingerprint in done_heads:
            return True
        head = self._done.get(reader.ident)
        return bool(head) and reader.fingerprint.startswith(head)

    def _remember(self, reader: _Reader) -> None:
        self._done.pop(reader.ident, None)
        self._done[reader.ident] = reader.fingerprint
        if len(self._done) > REMEMBERED_FILES:
            del self._done[next(iter(self._done))]

    def read_batches(self) -> Iterator[Batch]:
        """Yield batches of complete lines (newline and trailing CR removed) available now."""
        for block in self.read_blocks():
            yield block.batch()

    def read_blocks(self) -> Iterator[Block]:
        """Yield blocks of complete lines available now (``read_batches``, unsplit)."""
        if not self._begun:
            self.begin()
        checked = None
        while True:
            if self._cur is None and not self._next_reader():
                return
            cur = self._cur
            assert cur is not None
            if cur.live and cur is not checked:
                # before reading on: truncated since it was last read, or since it was opened
                # and queued behind rotated files (rule 2), even if regrown past the offset
                checked = cur
                if self._truncated(cur):
                    self._on_truncation(cur)
                    continue
            chunk = self._read(cur)
            if chunk is None:  # read error: that reader is dropped
                if cur.live:
                    return  # resumed at its position at the next call
                continue
            if chunk:
                block = self._block(cur, chunk)
                if block is not None:
                    yield block
                continue
            if not cur.live:  # a rotated file read to its end: it is done
                block = self._flush(cur)
                cur.refresh_mtime()
                cur.close()
                self._remember(cur)
                self._cur = None
                if block is not None:
                    yield block
                continue
            change = self._check(cur)
            if change is None:
                return
            if change == _TRUNCATED:
                self._on_truncation(cur)
            else:
                self.rotations += 1
                cur.live = False  # read it once more to its end, then catch up (rule 3)
                self._finished = cur

    def close(self) -> Batch:
        """Stop following; return the held partial line (if any) as a last batch."""
        block = self._flush(self._cur) if self._cur is not None else None
        for reader in [self._cur, *self._queue]:
            if reader is not None:
                reader.close()
        self._cur = None
        self._queue = []
        return block.batch() if block is not None else Batch([], self.position or START)

    # -- opening -------------------------------------------------------------------------------

    def _open_live(self, mode: str) -> _Reader | None:
        """Open the path: at its start, or at the end of its last complete line; None if it
        cannot be opened now (``up`` goes to False, logged once per reason)."""
        try:
            reader = _open(self.path, live=True)
        except _NotRegular:
            self._down("not a regular file")
            return None
        except OSError as err:
            self._down(err.strerror or str(err))
            return None
        if mode == "end":
            self._seek_last_line_end(reader)
        if not self.up:
            if self.down_reason is not None:
                log.info("log source %s is readable again", self.path)
            self.up = True
            self.down_reason = None
        return reader

    def _seek_last_line_end(self, reader: _Reader) -> None:
        """Skip what is there, but not a last line still being written (read when complete)."""
        try:
            size = os.fstat(reader.fd).st_size
            window = min(size, self.max_line_bytes + 1)
            tail = os.pread(reader.fd, window, size - window)
        except OSError:
            return
        cut = tail.rfind(b"\n")
        if cut >= 0:
            reader.seek(size - window + cut + 1)
        elif size <= self.max_line_bytes:
            reader.seek(0)
        else:  # inside a line already over the limit: skip its rest
            reader.seek(size)
            self._skipping = True

    def _down(self, reason: str) -> None:
        if self.down_reason != reason:
            log.warning("log source %s unavailable: %s", self.path, reason)
        self.down_reason = reason
        self.up = False

    def _next_reader(self) -> bool:
        """Make the next file to read current: queued rotated files, else the path."""
        if self._queue:
            self._cur = self._queue.pop(0)
            return True
        finished, self._finished = self._finished, None
        if isinstance(self._next_open, Position):
            self._resume(self._next_open)
            return self._cur is not None
        live = self._open_live(self._next_open)
        if finished is not None:
            # catch up on rotated files newer than the one just finished, then the live one
            exclude = {finished.ident} | ({live.ident} if live else set())
            self._queue = self._newer_files(finished.mtime_ns, exclude, same_time=True)
        if live is None:
            self._next_open = "start"
            if self._queue:
                self._cur = self._queue.pop(0)
                return True
            return False
        self._next_open = "start"
        self._queue.append(live)
        self._cur = self._queue.pop(0)
        return True

    def _resume(self, saved: Position) -> None:
        """Queue what follows ``saved`` (rule 7). With nothing to read yet (the path missing, the
        saved file not found), keep ``saved`` for the next attempt."""
        live = self._open_live("start")
        if live is not None and live.ident == saved.ident and self._holds(live, saved):
            live.seek(saved.offset)
            self._cur = live
            self._next_open = "start"
            return
        exclude = {live.ident} if live is not None else set()
        if live is not None and live.ident == saved.ident:
            self.truncations += 1  # same file, other content: truncated while we were away
        found = self._find(saved.fingerprint, saved.offset, exclude, prefer=saved.ident,
                           hint=saved.file)
        if found is not None:
            found.seek(saved.offset)
            queue = [found, *self._newer_files(found.mtime_ns, exclude | {found.ident})]
            if found.ident != saved.ident and saved.ident not in exclude:
                # found a copy: the original, truncated since and rotated away, holds what
                # followed, even if written within the copy's file-time tick
                original = self._open_ident(saved.ident, saved.file)
                if original is not None and all(r.ident != original.ident for r in queue):
                    queue.append(original)
                    queue[1:] = sorted(queue[1:], key=lambda r: (r.mtime_ns, r is not original))
                elif original is not None:
                    original.close()
            log.info("log source %s: resuming in rotated file %s at byte %d", self.path,
                     found.name, saved.offset)
        else:
            if saved.offset or saved.fingerprint:
                log.warning("log source %s: the file of the saved position (%s, byte %d) is gone; "
                            "reading the rotated files newer than it, then the log from its start",
                            self.path, saved.file, saved.offset)
            queue = self._newer_files(saved.mtime_ns, exclude)
        if live is not None:
            queue.append(live)
        if not queue:
            self._next_open = saved  # nothing there yet: try again at the next read
            return
        self._next_open = "start"
        self._queue = queue
        self._cur = self._queue.pop(0)

    def _holds(self, reader: _Reader, saved: Position) -> bool:
        """Does this file still hold the saved position's bytes (same first bytes, long enough)?"""
        try:
            size = os.fstat(reader.fd).st_size
        except OSError:
            return False
        return size >= saved.offset and reader.fingerprint.startswith(saved.fingerprint)

    # -- rotated names -------------------------------------------------------------------------

    def _rotated_names(self, hint: str | None = None) -> list[str]:
        """Paths of the rotated names (rule 5), the hint (a saved real path) first."""
        bases = {os.path.abspath(self.path)}
        try:
            bases.add(os.path.realpath(self.path))
        except OSError:
            pass
        if hint:
            bases.add(hint)
        names = [hint] if hint else []
        folders: dict[str, set[str]] = {}
        for base in bases:
            folders.setdefault(os.path.dirname(base), set()).add(os.path.basename(base))
        for folder, stems in folders.items():
            try:
                entries = list(os.scandir(folder))
            except OSError as err:
                log.debug("cannot list %s: %s", folder, err)
                continue
            for entry in entries:
                if any(entry.name.startswith(stem) and len(entry.name) > len(stem)
                       and entry.name[len(stem)] in ROTATED_SEPARATORS for stem in stems):
                    names.append(entry.path)
        return names

    def _candidates(self, hint: str | None = None) -> Iterator[_Reader]:
        """Open rotated files, each once (by device and inode), skipping what cannot be read."""
        seen: set[tuple[int, int]] = set()
        for name in self._rotated_names(hint):
            try:
                st = os.stat(name)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen or not stat.S_ISREG(st.st_mode):
                continue
            seen.add(ident)
            try:
                reader = _open(name, live=False)
            except (OSError, _NotRegular) as err:
                log.debug("skipping rotated file %s: %s", name, err)
                continue
            yield reader

    def _open_ident(self, ident: tuple, hint: str | None) -> _Reader | None:
        """The rotated file with this device and inode, if it is among the rotated names."""
        found = None
        for reader in self._candidates(hint):
            if reader.ident == ident and found is None:
                found = reader
            else:
                reader.close()
        return found

    def _find(self, fingerprint: bytes, min_size: int, exclude: set, *,
              prefer: tuple | None = None, hint: str | None = None) -> _Reader | None:
        """The rotated file holding these first bytes and at least ``min_size`` bytes: the one
        with inode ``prefer`` if it is among them, else the newest. Without first bytes to
        compare, only the inode ``prefer`` identifies it."""
        matches: list[_Reader] = []
        for reader in self._candidates(hint):
            same = reader.ident == prefer
            if reader.ident in exclude or not (same or fingerprint):
                reader.close()
                continue
            if not reader.fingerprint.startswith(fingerprint) or not self._long_enough(reader, min_size):
                reader.close()
                continue
            matches.append(reader)
        if not matches:
            return None
        matches.sort(key=lambda r: (r.ident == prefer, r.mtime_ns))
        best = matches.pop()
        for reader in matches:
            reader.close()
        return best

    @staticmethod
    def _long_enough(reader: _Reader, size: int) -> bool:
        if isinstance(reader.handle, gzip.GzipFile):
            return True  # its length is only known by reading it; a short one just yields nothing
        try:
            return os.fstat(reader.fd).st_size >= size
        except OSError:
            return False

    def _newer_files(self, mtime_ns: int, exclude: set, same_time: bool = False) -> list[_Reader]:
        """Rotated files modified after ``mtime_ns`` (or at that very time, with ``same_time``:
        file times are coarse, a few ms), oldest first, never one read to its end before, each
        once (a plain file and its compressed twin, with the same first bytes, count once), to be
        read from their start."""
        newer: dict[bytes, _Reader] = {}
        done_heads = {head for head in self._done.values() if head}
        for reader in self._candidates():
            older = reader.mtime_ns < mtime_ns if same_time else reader.mtime_ns <= mtime_ns
            if (reader.ident in exclude or older or not reader.fingerprint
                    or self._dealt_with(reader, done_heads)):
                reader.close()
                continue
            twin = newer.get(reader.fingerprint)
            if twin is not None and not isinstance(twin.handle, gzip.GzipFile):
                reader.close()
                continue
            if twin is not None:
                twin.close()
            newer[reader.fingerprint] = reader
        found = sorted(newer.values(), key=lambda r: (r.mtime_ns, r.ident))
        for reader in found:
            log.info("log source %s: reading rotated file %s, not read before", self.path,
                     reader.name)
        return found

    # -- reading and end-of-file decisions ------------------------------------------------------

    def _read(self, cur: _Reader) -> bytes | None:
        try:
            chunk = cur.handle.read(self.chunk_size)
        except (OSError, EOFError, zlib.error) as err:
            self.read_errors += 1
            log.error("read error on %s: %s", cur.name, err)
            cur.close()
            self._cur = None
            self._partial, self._skipping = b"", False
            if cur.live:
                self._down(f"read error: {getattr(err, 'strerror', None) or err}")
                self._next_open = cur.position()  # resume there once readable
            return None
        cur.offset += len(chunk)
        return chunk

    def _truncated(self, cur: _Reader) -> bool:
        """Is the open live file shorter than what was read, or are its first bytes others?
        If not, its fingerprint grows with it up to FINGERPRINT_BYTES."""
        try:
            fst = os.fstat(cur.fd)
            head = os.pread(cur.fd, FINGERPRINT_BYTES, 0)
        except OSError:
            return False
        if fst.st_size < cur.offset or not head.startswith(cur.fingerprint):
            return True
        cur.fingerprint = head
        cur.mtime_ns = fst.st_mtime_ns
        return False

    def _check(self, cur: _Reader) -> str | None:
        """At the end of the live file: truncated, rotated, or None (nothing more for now)."""
        if self._truncated(cur):
            return _TRUNCATED
        try:
            st = os.stat(self.path)
        except OSError:
            return None  # renamed away and not yet recreated: the old file stays open
        if (st.st_dev, st.st_ino) != cur.ident:
            return _ROTATED
        return None

    def _on_truncation(self, cur: _Reader) -> None:
        """Rule 2: read the unread rest from the copy, then the live file from its start."""
        self.truncations += 1
        start = cur.line_start
        self._partial, self._skipping = b"", False  # that line is read again, from the copy
        copy = self._find(cur.fingerprint, start, {cur.ident}) if cur.fingerprint else None
        try:
            cur.seek(0)
            cur.fingerprint = os.pread(cur.fd, FINGERPRINT_BYTES, 0)
            cur.mtime_ns = os.fstat(cur.fd).st_mtime_ns
        except OSError:
            cur.fingerprint = b""
        if copy is not None:
            log.info("log source %s was truncated; reading its rest from the copy %s, then it "
                     "from the start", self.path, copy.name)
            copy.seek(start)
            self._queue.insert(0, cur)
            self._cur = copy
        else:
            log.warning("log source %s was truncated and no copy of it was found among the "
                        "rotated names: lines written after byte %d before the truncation, if "
                        "any, are lost; reading it from the start", self.path, start)

    # -- line splitting ------------------------------------------------------------------------

    def _block(self, cur: _Reader, chunk: bytes) -> Block | None:
        """The complete lines that end in this chunk, the held partial line first; what follows
        the last newline is held (or skipped, once over the limit)."""
        end = chunk.rfind(b"\n") + 1
        if not end:
            self._hold(chunk)
            return None
        too_long = 0
        if self._skipping:  # the chunk's first line ends a line over the limit
            data = b"\n" + chunk[chunk.find(b"\n") + 1 : end]  # an empty line stands in for it
            too_long = 1
            self._skipping = False
        else:
            data = self._partial + chunk[:end] if self._partial else chunk[:end]
        self._partial = b""
        cur.line_start = cur.offset - (len(chunk) - end)
        self._hold(chunk[end:])
        data, over = _blank_long_lines(data, self.max_line_bytes)
        too_long += over
        self.lines_too_long += too_long
        block = Block(data, cur.position(), too_long)
        self.position = block.position
        return block

    def _hold(self, tail: bytes) -> None:
        """Keep the start of a partial line, unless it is already over the limit."""
        if tail and not self._skipping:
            self._partial += tail
            if len(self._partial) > self.max_line_bytes:
                self._partial = b""
                self._skipping = True

    def _flush(self, cur: _Reader) -> Block | None:
        """The held partial line as a block (its file is done), or None."""
        partial, self._partial = self._partial, b""
        skipping, self._skipping = self._skipping, False
        cur.line_start = cur.offset
        if skipping:
            self.lines_too_long += 1
            block = Block(b"\n", cur.position(), 1)
        elif partial:
            block = Block(partial + b"\n", cur.position())
        else:
            return None
        self.position = block.position
        return block


def _blank_long_lines(data: bytes, limit: int) -> tuple[bytes, int]:
    """``data`` (complete lines) with each line over ``limit`` bytes made empty, and their number.

    Exact without looking at every line: from a line start ``i``, the last newline within the next
    ``limit + 1`` bytes ends every line that starts before it, and none of those is over the limit;
    only when there is no newline there is the line at ``i`` too long. With lines much shorter than
    the limit this is one ``rfind`` per ``limit`` bytes."""
    kept: list[bytes] = []
    start = i = 0
    size = len(data)
    while size - i > limit + 1:  # room left for a line over the limit and its newline
        last = data.rfind(b"\n", i, i + limit + 1)
        if last >= 0:
            i = last + 1
            continue
        kept.append(data[start:i])
        start = i = data.index(b"\n", i + limit + 1)  # keep its newline: an empty line
        i += 1
    if not kept:
        return data, 0
    kept.append(data[start:])
    return b"".join(kept), len(kept) - 1
