"""Read positions: where the next unread line of a file starts, saved across restarts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

FINGERPRINT_BYTES = 256  # a file's first bytes: what tells it from another with the same inode
DONE_SAVED = 64  # rotated files dealt with, saved with a position (the newest)

Done = tuple[tuple[int, int, int, str], ...]  # (dev, ino, head length, head digest), oldest first


def head_digest(head: bytes) -> str:
    """What a saved position keeps of a rotated file's first bytes."""
    return hashlib.blake2b(head, digest_size=16).hexdigest()


@dataclass(frozen=True)
class Position:
    """Where the next unread line starts. ``ino is None`` means: the path from its start."""

    dev: int | None
    ino: int | None
    offset: int
    fingerprint: bytes = b""
    mtime_ns: int = 0
    file: str | None = None  # real path of the file then: a hint where to look for it
    # the rotated files dealt with (read to their end, or there at start) when this position was
    # reached: a restart never reads them again, whatever their time (a copy made later of a
    # file read before has a newer time)
    done: Done = ()

    @property
    def ident(self) -> tuple[int | None, int | None]:
        return (self.dev, self.ino)

    def to_state(self) -> dict:
        return {"dev": self.dev, "ino": self.ino, "offset": self.offset,
                "fingerprint": self.fingerprint.hex(), "mtime_ns": self.mtime_ns, "file": self.file,
                "done": [list(entry) for entry in self.done]}

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
        return cls(dev, ino, offset, raw[:FINGERPRINT_BYTES], mtime, file, _done(data.get("done")))


START = Position(None, None, 0)  # no file seen yet: read the path from its start when it appears


def _done(data: object) -> Done:
    """The saved ``done`` entries that are well-formed (others dropped: a file read again at
    worst, never one skipped)."""
    if not isinstance(data, list):
        return ()
    entries = []
    for entry in data[-DONE_SAVED:]:
        if (isinstance(entry, list) and len(entry) == 4 and all(_whole(v) for v in entry[:3])
                and isinstance(entry[3], str) and len(entry[3]) == 32):
            entries.append((entry[0], entry[1], entry[2], entry[3]))
    return tuple(entries)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

