"""Log sources: follow a log file by path and hand over its complete lines, with their position.

The tailer's rules (mtail's, plus copytruncate and restarts, which mtail leaves out):

1. Start. With a saved position (rule 7) resume from it. Otherwise the first open of a file seeks
   to the end of its last complete line, or to its start with ``from_start``; a file missing at
   start, appearing later or replacing another is read from its start.
2. After each read of the live file, and at its end, check the open file itself: smaller than the
   read offset, or its first bytes no longer its fingerprint, means it was truncated (copytruncate;
   what that read returned is dropped: it may be the new content at the old offset). The bytes
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
   ``mail.log.2.gz``, read through gzip); beside a symlink target, also the target's family (the
   same name with other digits: ``mail.20261204.log`` after ``mail.20261203.log``). "Newer"
   means a later modification time.
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

import logging
import os
import zlib
from collections.abc import Iterator
from dataclasses import replace

from bounce_exporter.sources.lines import CHUNK_SIZE, Batch, Block, LineSplitter, SplitsLines
from bounce_exporter.sources.opening import NotRegular, Reader, open_file
from bounce_exporter.sources.position import FINGERPRINT_BYTES, START, Position
from bounce_exporter.sources.rotation import RotatedFiles

log = logging.getLogger(__name__)

_TRUNCATED = "truncated"
_ROTATED = "rotated"


class FileSource(SplitsLines):
    """Follows one log file by path. Call ``read_batches()`` whenever it may have grown."""

    def __init__(self, path: str, *, from_start: bool = False, max_line_bytes: int = 65536,
                 chunk_size: int = CHUNK_SIZE):
        self.path = path
        self.name = path
        self.chunk_size = chunk_size
        self._buffer = bytearray()  # read into, chunk after chunk (``_read``)
        self.up = False
        self.down_reason: str | None = None
        self.read_errors = 0
        self.lines_too_long = 0
        self.truncations = 0
        self.rotations = 0
        self.bytes_read = 0  # from the files on disk (compressed bytes of a .gz): with unread(),
        # the progress of a catch-up
        self.position: Position | None = None  # after the last line handed over
        self._from_start = from_start
        self._begun = False
        self._cur: Reader | None = None
        self._queue: list[Reader] = []  # read these, in order, before opening the path again
        self._next_open: str | Position = "start"  # how the path is opened next
        self._finished: Reader | None = None  # a rotated-away file just finished: catch up after it
        self._lines = LineSplitter(max_line_bytes)
        self._rotated = RotatedFiles(path)

    # -- public -------------------------------------------------------------------------------

    def begin(self, saved: Position | None = None) -> Position:
        """Open the file at its starting point (rule 1, or resume from ``saved``) without reading;
        return the starting position (what has been counted so far)."""
        self._begun = True
        if saved is not None:
            self._rotated.restore(saved.done)
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
        for reader in self._rotated.candidates():
            if reader.ident not in queued:
                self._rotated.remember(reader)
            reader.close()
        self.position = replace(self.position, done=self._rotated.saved)
        return self.position

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
            if chunk and cur.live and self._truncated(cur):
                # truncated before this read, or while it ran: the chunk may be the new content
                # at the old offset. A reader that never reaches the end (a busy log) would
                # otherwise never look: dropped, read again from the start (rule 2)
                cur.offset -= len(chunk)
                self._on_truncation(cur)
                continue
            if chunk:
                block = self._block(cur, chunk)
                if block is not None:
                    yield block
                    block = None  # let go of its data before the next read makes another
                continue
            if not cur.live:  # a rotated file read to its end: it is done
                block = self._flush(cur)
                cur.refresh_mtime()
                cur.close()
                self._rotated.remember(cur)
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

    def unread(self) -> int:
        """Bytes of the files open to be read not read yet (``Reader.unread``): the current one
        and those queued (rotated files to catch up on, then the live one)."""
        return sum(reader.unread() for reader in [self._cur, *self._queue] if reader is not None)

    # -- opening -------------------------------------------------------------------------------

    def _open_live(self, mode: str) -> Reader | None:
        """Open the path: at its start, or at the end of its last complete line; None if it
        cannot be opened now (``up`` goes to False, logged once per reason)."""
        try:
            reader = open_file(self.path, live=True)
        except NotRegular:
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

    def _seek_last_line_end(self, reader: Reader) -> None:
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
            self._lines.skipping = True

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
            self._queue = self._rotated.newer(finished.mtime_ns, exclude, same_time=True)
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
        found = self._rotated.find(saved.fingerprint, saved.offset, exclude, prefer=saved.ident,
                           hint=saved.file)
        if found is not None:
            found.seek(saved.offset)
            queue = [found, *self._rotated.newer(found.mtime_ns, exclude | {found.ident})]
            if found.ident != saved.ident and saved.ident not in exclude:
                # found a copy: the original, truncated since and rotated away, holds what
                # followed, even if written within the copy's file-time tick
                original = self._rotated.open_ident(saved.ident, saved.file)
                if original is not None and all(r.ident != original.ident for r in queue):
                    queue.append(original)
                    queue[1:] = sorted(queue[1:], key=lambda r: (r.mtime_ns, r is not original))
                elif original is not None:
                    original.close()
            log.info("log source %s: resuming in rotated file %s at byte %d", self.path,
                     found.name, saved.offset)
        else:
            queue = self._rotated.newer(saved.mtime_ns, exclude)
            if saved.offset or saved.fingerprint:
                self._warn_gap(saved, queue, live)
        if live is not None:
            queue.append(live)
        if not queue:
            self._next_open = saved  # nothing there yet: try again at the next read
            return
        self._next_open = "start"
        self._queue = queue
        self._cur = self._queue.pop(0)

    def _warn_gap(self, saved: Position, newer: list[Reader], live: Reader | None) -> None:
        """The saved file is nowhere (deleted, or rotated out of reach): what it held past the
        saved byte cannot be read. Said once, with what is read instead and its bytes."""
        instead = [f"{r.name} ({r.unread()} bytes)" for r in newer]
        if live is not None:
            instead.append(f"{live.name} from its start ({live.unread()} bytes)")
        log.warning("log source %s: the file of the saved position (%s, read to byte %d of it) "
                    "is gone: whatever it held past byte %d is not read; reading instead %s",
                    self.path, saved.file, saved.offset, saved.offset,
                    ", then ".join(instead) or "nothing yet (no file there)")

    def _holds(self, reader: Reader, saved: Position) -> bool:
        """Does this file still hold the saved position's bytes (same first bytes, long enough)?"""
        try:
            size = os.fstat(reader.fd).st_size
        except OSError:
            return False
        return size >= saved.offset and reader.fingerprint.startswith(saved.fingerprint)

    # -- reading and end-of-file decisions ------------------------------------------------------

    def _read(self, cur: Reader) -> memoryview | None:
        """The next chunk of ``cur``: a view of the reused read buffer, valid until the next read
        (``LineSplitter.feed`` copies what it keeps, once: one copy fewer than ``read()``)."""
        if len(self._buffer) != self.chunk_size:
            self._buffer = bytearray(self.chunk_size)
        before = cur.on_disk()
        try:
            size = cur.handle.readinto(self._buffer)
        except (OSError, EOFError, zlib.error) as err:
            self.read_errors += 1
            log.error("read error on %s: %s", cur.name, err)
            cur.close()
            self._cur = None
            self._lines.reset()
            if cur.live:
                self._down(f"read error: {getattr(err, 'strerror', None) or err}")
                self._next_open = cur.position()  # resume there once readable
            return None
        size = size or 0
        cur.offset += size
        self.bytes_read += cur.on_disk() - before
        return memoryview(self._buffer)[:size]

    def _truncated(self, cur: Reader) -> bool:
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

    def _check(self, cur: Reader) -> str | None:
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

    def _on_truncation(self, cur: Reader) -> None:
        """Rule 2: read the unread rest from the copy, then the live file from its start."""
        self.truncations += 1
        start = cur.line_start
        self._lines.reset()  # that line is read again, from the copy
        copy = self._rotated.find(cur.fingerprint, start, {cur.ident}) if cur.fingerprint else None
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

    def _block(self, cur: Reader, chunk: memoryview) -> Block | None:
        """The complete lines that end in this chunk (``LineSplitter``), at their position."""
        split = self._lines.feed(chunk)
        if split is None:
            return None
        data, too_long, held = split
        cur.line_start = cur.offset - held
        self.lines_too_long += too_long
        block = Block(data, replace(cur.position(), done=self._rotated.saved), too_long)
        self.position = block.position
        return block

    def _flush(self, cur: Reader) -> Block | None:
        """The held partial line as a block (its file is done), or None."""
        cur.line_start = cur.offset
        flushed = self._lines.flush()
        if flushed is None:
            return None
        data, too_long = flushed
        self.lines_too_long += too_long
        block = Block(data, replace(cur.position(), done=self._rotated.saved), too_long)
        self.position = block.position
        return block
