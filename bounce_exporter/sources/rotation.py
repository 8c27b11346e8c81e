"""Rotated files: the rotated-name rule, and finding a log's rotated generations among them.

Rotated names (source rule 5): regular files beside the path, or beside its symlink target, whose
names are the path's name followed by ``.``, ``-`` or ``_`` and anything (``mail.log.1``,
``mail.log-20260101``, ``mail.log.2.gz``, read through gzip). Beside a symlink target, the
target's family too: the same name with other digits, in the target's folder (``rotatelogs -L``
swapping ``mail.log`` from ``mail.20261203.log`` to ``mail.20261204.log``; targets in a folder of
their own), so that a restart over two swaps finds the files in between. A file is known by its
device and inode *and* its first bytes: a deleted file's inode number is reused by later files.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import stat
from collections.abc import Iterator

from bounce_exporter.sources.opening import NotRegular, Reader, open_file
from bounce_exporter.sources.position import DONE_SAVED, Done, head_digest

log = logging.getLogger("bounce_exporter.sources.files")

ROTATED_SEPARATORS = (".", "-", "_")
SCAN_PASSES = 5  # listings of the rotated names at most, while files are renamed under them
REMEMBERED_FILES = 4096  # rotated files known to be dealt with (read, or there at start)


_DIGITS = re.compile(r"\d+")


def family_of(name: str) -> str:
    """A name with its digits masked: ``mail.20261203.log`` and ``mail.20261204.log`` are one
    family."""
    return _DIGITS.sub("#", name)


def _of_family(name: str, families: set[str]) -> bool:
    shape = family_of(name)
    return any(shape == family or is_rotated_name(shape, family) for family in families)


def is_rotated_name(name: str, stem: str) -> bool:
    """Is ``name`` a rotated name of ``stem`` (both base names, or both paths in one folder)?"""
    return len(name) > len(stem) and name.startswith(stem) and name[len(stem)] in ROTATED_SEPARATORS


class RotatedFiles:
    """The rotated files of one log path, and the memory of those already dealt with."""

    def __init__(self, path: str):
        self.path = path
        self._done: dict[tuple, bytes] = {}  # ident -> first bytes, oldest first
        self.saved: Done = ()  # the newest of them as a position saves them (immutable)
        self._restored: set[tuple[int, str]] = set()  # (head length, digest) of a saved position's

    def restore(self, done: Done) -> None:
        """The files a saved position had dealt with: never read again after a restart."""
        self.saved = done
        self._restored = {(length, digest) for _dev, _ino, length, digest in done}

    def _dealt_with(self, reader: Reader, done_heads: set[bytes]) -> bool:
        """Was this rotated file read to its end, or there at start and not queued? Known by its
        first bytes: the same inode with other first bytes is another file (a deleted file's
        inode number reused by a later generation), never skipped as read."""
        if reader.fingerprint in done_heads:
            return True
        if self._restored:
            head = reader.fingerprint
            digests = {n: head_digest(head[:n]) for n, _ in self._restored if len(head) >= n}
            if any(digests.get(n) == digest for n, digest in self._restored):
                return True  # dealt with before the restart (or a copy of one)
        head = self._done.get(reader.ident)
        return bool(head) and reader.fingerprint.startswith(head)

    def remember(self, reader: Reader) -> None:
        self._done.pop(reader.ident, None)
        self._done[reader.ident] = reader.fingerprint
        if len(self._done) > REMEMBERED_FILES:
            del self._done[next(iter(self._done))]
        if reader.fingerprint:
            entry = (*reader.ident, len(reader.fingerprint), head_digest(reader.fingerprint))
            kept = [e for e in self.saved if e[:2] != entry[:2]]
            self.saved = (*kept[-(DONE_SAVED - 1):], entry)

    def names(self, hint: str | None = None) -> list[str]:
        """Paths of the rotated names (rule 5), the hint (a saved real path) first. Beside a
        symlink target (the path's, or the saved file's), files of the target's family count
        too: the same name with other digits (``rotatelogs -L`` writing ``mail.20261203.log``,
        then ``mail.20261204.log``), and their rotated names."""
        link = os.path.abspath(self.path)
        bases = {link}
        try:
            bases.add(os.path.realpath(self.path))
        except OSError:
            pass
        if hint:
            bases.add(hint)
        names = [hint] if hint else []
        folders: dict[str, set[str]] = {}
        families: dict[str, set[str]] = {}
        for base in bases:
            folder, stem = os.path.split(base)
            folders.setdefault(folder, set()).add(stem)
            if base != link and _DIGITS.search(stem):
                families.setdefault(folder, set()).add(family_of(stem))
        for folder, stems in folders.items():
            try:
                entries = list(os.scandir(folder))
            except OSError as err:
                log.debug("cannot list %s: %s", folder, err)
                continue
            shapes = families.get(folder, set())
            for entry in entries:
                if any(is_rotated_name(entry.name, stem) for stem in stems) or (
                        shapes and entry.name not in stems and _of_family(entry.name, shapes)):
                    names.append(entry.path)
        return names

    def candidates(self, hint: str | None = None) -> Iterator[Reader]:
        """Open rotated files, each once (by device and inode), skipping what cannot be read.

        The names are listed again after opening what they named, until a listing finds the
        files where the one before had them (at most ``SCAN_PASSES`` listings): logrotate
        renaming ``mail.log.1`` to ``mail.log.2`` while the names are opened one by one could
        otherwise hide a file under neither name (the torture test lost a copytruncate copy so,
        480 lines, on a loaded machine)."""
        opened: dict[tuple[int, int], Reader] = {}
        listing = self._listing(hint)
        for _ in range(SCAN_PASSES):
            for name, ident in listing:
                if ident in opened:
                    continue
                try:
                    reader = open_file(name, live=False)
                except (OSError, NotRegular) as err:
                    log.debug("skipping rotated file %s: %s", name, err)
                    continue
                if reader.ident in opened:  # renamed since listed: opened under its new name
                    reader.close()
                    continue
                opened[reader.ident] = reader
            again = self._listing(hint)
            if again == listing:
                break
            listing = again
        yield from opened.values()

    def _listing(self, hint: str | None) -> list[tuple[str, tuple[int, int]]]:
        """The rotated names that are regular files now, with their device and inode."""
        found = []
        for name in self.names(hint):
            try:
                st = os.stat(name)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((name, (st.st_dev, st.st_ino)))
        return found

    def open_ident(self, ident: tuple, hint: str | None) -> Reader | None:
        """The rotated file with this device and inode, if it is among the rotated names."""
        found = None
        for reader in self.candidates(hint):
            if reader.ident == ident and found is None:
                found = reader
            else:
                reader.close()
        return found

    def find(self, fingerprint: bytes, min_size: int, exclude: set, *,
              prefer: tuple | None = None, hint: str | None = None) -> Reader | None:
        """The rotated file holding these first bytes and at least ``min_size`` bytes: the one
        with inode ``prefer`` if it is among them, else the newest. Without first bytes to
        compare, only the inode ``prefer`` identifies it."""
        matches: list[Reader] = []
        for reader in self.candidates(hint):
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
    def _long_enough(reader: Reader, size: int) -> bool:
        if isinstance(reader.handle, gzip.GzipFile):
            return True  # its length is only known by reading it; a short one just yields nothing
        try:
            return os.fstat(reader.fd).st_size >= size
        except OSError:
            return False

    def newer(self, mtime_ns: int, exclude: set, same_time: bool = False) -> list[Reader]:
        """Rotated files modified after ``mtime_ns`` (or at that very time, with ``same_time``:
        file times are coarse, a few ms), oldest first, never one read to its end before, each
        once (a plain file and its compressed twin, with the same first bytes, count once), to be
        read from their start."""
        newer: dict[bytes, Reader] = {}
        done_heads = {head for head in self._done.values() if head}
        for reader in self.candidates():
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
