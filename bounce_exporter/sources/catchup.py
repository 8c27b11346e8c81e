"""One rotated file read once, from its start to its end: ``--log.from-start`` with a glob.

``CatchUpSource`` reads ``mail.log.1``, ``mail.log.2.gz`` (through gzip) and so on
(``config.expand_sources`` orders them oldest first, before the live file). Its position
(uncompressed offset) is saved like a file's: a restart resumes in the same file (same inode, or
same first bytes), and skips a file that is another one now (rotated since: the live file's own
resume reads what rotated while the exporter was down, source rule 7), or one never started while
the live file has a saved position (``skip``: the catch-up was an earlier lifetime's).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator

from bounce_exporter.sources.lines import CHUNK_SIZE, Batch, Block, LineSplitter, SplitsLines
from bounce_exporter.sources.opening import NotRegular, Reader, open_file
from bounce_exporter.sources.position import START, Position

log = logging.getLogger(__name__)


class CatchUpSource(SplitsLines):
    """Reads one (rotated, possibly gzip-compressed) file from its start to its end, once."""

    path = None  # read once: nothing to watch

    def __init__(self, path: str, *, max_line_bytes: int = 65536, chunk_size: int = CHUNK_SIZE,
                 live_path: str | None = None):
        self.file = path
        self.name = path
        self.live_path = live_path  # the live file this one was rotated from, if known
        self.chunk_size = chunk_size
        self.skip = False  # set before begin(): the catch-up was done by an earlier lifetime
        self.up = False
        self.done = False
        self.read_errors = 0
        self.lines_too_long = 0
        self.truncations = 0
        self.rotations = 0
        self.bytes_read = 0  # from the file on disk (compressed bytes of a .gz), as FileSource's
        self.position: Position | None = None
        self._reader: Reader | None = None
        self._lines = LineSplitter(max_line_bytes)

    def begin(self, saved: Position | None = None) -> Position | None:
        self.done = True
        try:
            reader = open_file(self.file, live=False)
        except (OSError, NotRegular) as err:
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
            before = reader.on_disk()
            try:
                chunk = reader.handle.read(self.chunk_size)
            except (OSError, EOFError, zlib.error) as err:
                self._fail(reader, err)
                return
            reader.offset += len(chunk)
            self.bytes_read += reader.on_disk() - before
            if chunk:
                split = self._lines.feed(chunk)
                if split is None:
                    continue
                data, too_long, held = split
                reader.line_start = reader.offset - held
            else:
                flushed = self._lines.flush()
                reader.line_start = reader.offset
                reader.close()
                self._reader = None
                self.done = True
                if flushed is None:
                    return
                data, too_long = flushed
            self.lines_too_long += too_long
            self.position = reader.position()
            yield Block(data, self.position, too_long).batch()

    def unread(self) -> int:
        """Bytes of the file not read yet (``Reader.unread``); 0 once done."""
        return self._reader.unread() if self._reader is not None else 0

    def close(self) -> Batch:
        """Stop; a partial last line is not handed over (read again from the saved position)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return Batch([], self.position or START)

    def _fail(self, reader: Reader, err: BaseException) -> None:
        self.read_errors += 1
        self.up = False
        log.error("catch-up: read error on %s: %s", self.file, err)
        reader.close()
        self._reader = None
        self.done = True
