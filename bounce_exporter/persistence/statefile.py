"""The state file: one JSON document, written atomically so a crash or a full disk never leaves a
half-written file behind. The caller owns the content (and its version key); this module only
does the I/O.

- write: a temporary file in the same directory (same file system, so the rename is atomic),
  write, flush, fsync, rename over the target, fsync the directory. On any failure the temporary
  file is removed, the previous state file is left as it was, and the OSError reaches the caller
  (which counts it and retries at the next save).
- what is written: JSON-ready values, and objects that encode themselves (``Streamed``: a
  parser's frozen ledger), whose pieces are written as they come, so that a snapshot never holds
  the ledger twice. ``release_streamed`` drops their content once written.
- read: a missing file is a first start ({}); a file that cannot be read or parsed is logged as a
  warning and treated as empty, never raised: losing the state only costs some history.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

log = logging.getLogger("bounce_exporter.persistence.statefile")


@runtime_checkable
class Streamed(Protocol):
    """A value of the state that writes its own JSON text, in pieces."""

    def json_chunks(self) -> Iterator[str]: ...

    def release(self) -> None:
        """Written: what it holds for the writing may go (what it is equal to stays)."""
        ...


def encode_state(data: dict) -> Iterator[str]:
    """The compact JSON text of ``data`` (keys sorted), in pieces: a mapping is walked, a
    ``Streamed`` value writes itself, anything else is encoded whole."""
    if isinstance(data, Streamed):
        yield from data.json_chunks()
        return
    if not isinstance(data, dict):
        yield json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False)
        return
    separator = "{"
    for key in sorted(data):
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, not {type(key).__name__}")
        yield separator + json.dumps(key) + ":"
        yield from encode_state(data[key])
        separator = ","
    yield "}" if separator == "," else "{}"


def release_streamed(data: object) -> None:
    """``release()`` every ``Streamed`` value of ``data`` (walking its mappings)."""
    if isinstance(data, Streamed):
        data.release()
    elif isinstance(data, dict):
        for value in data.values():
            release_streamed(value)


def write_state(path: str | os.PathLike[str], data: dict) -> None:
    """Replace the JSON file at `path` with `data` atomically, creating parent directories.

    Raises OSError when the file system refuses (full disk, read-only, permissions); the previous
    file is then intact. Data that is not JSON-serialisable raises TypeError/ValueError, the
    previous file intact too (only the temporary file, removed, was written)."""
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            # written as it is encoded, never held whole: a ledger of 100,000 messages is 35 MB
            # of text, twice that as a string and its encoding (encode_state: a ledger a batch
            # of messages at a time). Compact: with 10,000 streaks indenting costs 3x
            tmp.writelines(encode_state(data))
            tmp.write("\n")
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); skipped where directories can't be opened."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_state(path: str | os.PathLike[str]) -> dict:
    """The JSON object stored at `path`; {} when the file is missing, unreadable or corrupt (the
    last two logged as a warning). Never raises for what is in the file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open for good
            log.warning("ignoring state file %s: not a regular file", path)
            return {}
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return {}
    except RecursionError:
        log.warning("ignoring state file %s: nested too deeply", path)
        return {}
    if not isinstance(data, dict):
        log.warning(
            "ignoring state file %s: expected a JSON object, got %s", path, type(data).__name__
        )
        return {}
    return data
