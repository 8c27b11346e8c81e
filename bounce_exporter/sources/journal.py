"""A log source that follows the systemd journal through ``journalctl --follow --output=json``.

No Python binding is used: ``systemd-python`` needs the systemd headers to build, while
``journalctl`` is on every systemd host. Its rules:

1. What is followed: units (``-u``, by default ``postfix@-.service`` *and* ``postfix.service``:
   Debian 12 runs Postfix as the instance ``postfix@-``, other systems as ``postfix``; matching
   both costs nothing) or a syslog identifier (``-t``); optionally a journal namespace
   (``--namespace``) or a directory of journal files (``--directory``).
2. Start: after the saved cursor (``--after-cursor``); without one, only new entries
   (``--lines=0``), or every entry (``--no-tail``) with ``from_start``.
3. Each JSON entry becomes one syslog-style line for the MTA's parser:
   ``<RFC 3339 time of __REALTIME_TIMESTAMP> <_HOSTNAME> <SYSLOG_IDENTIFIER>[<pid>]: <MESSAGE>``.
   MESSAGE is a string, a list of byte values (not UTF-8), or a list of those (a field logged
   more than once: the first is used); newlines inside it become spaces. A batch's position is
   the cursor (``__CURSOR``) of its last entry: saved in the state file like a file position.
4. ``journalctl`` is read in a background thread; a read returning nothing means it exited, never
   "no more for now". An exit is logged (with its stderr), sets ``up`` to False, and it is started
   again after a back-off (1 s doubling to 60 s; reset after a minute of running), after the last
   cursor seen. A cursor journalctl refuses ("Failed to seek to cursor") is dropped, logged.
5. Entries wait in a bounded queue (``QUEUE_ENTRIES``): when the reading loop is slow, the thread
   stops reading and journalctl blocks on its pipe; nothing is dropped.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from bounce_exporter.sources.lines import TOO_LONG, Batch

log = logging.getLogger(__name__)

DEFAULT_UNITS = ("postfix@-.service", "postfix.service")
QUEUE_ENTRIES = 10000
BATCH_ENTRIES = 4096
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STEADY_SECONDS = 60.0  # a journalctl that ran this long resets the back-off
# journalctl ended by one of these: most likely the whole process group is stopping (systemd's
# default KillMode signals every process of the unit), so give our own stop a moment to come;
# if it does not, start journalctl again with a warning, not an error
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE = 2.0


@dataclass(frozen=True)
class JournalCursor:
    """Where the next entry not yet counted follows: after this journal cursor."""

    cursor: str

    def to_state(self) -> dict:
        return {"cursor": self.cursor}

    @classmethod
    def from_state(cls, data: object) -> JournalCursor | None:
        if isinstance(data, dict) and isinstance(data.get("cursor"), str) and data["cursor"]:
            return cls(data["cursor"])
        return None


def source_name(units: tuple[str, ...] = (), identifier: str | None = None,
                namespace: str | None = None, directory: str | None = None) -> str:
    """The source's name (its ``source`` label and state key): ``journal:postfix@-.service``,
    ``journal:identifier=postfix``, with ``@namespace`` or ``@/directory`` appended."""
    what = f"identifier={identifier}" if identifier else ",".join(units or DEFAULT_UNITS)
    where = f"@{namespace}" if namespace else (f"@{directory}" if directory else "")
    return f"journal:{what}{where}"


def _text(value: object) -> bytes | None:
    """A journal JSON field value as bytes: a string, a list of byte values, or (a field logged
    more than once) a list of those, of which the first is taken. None for null (a value over
    journalctl's size threshold without --all) or anything else."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, list) and value:
        if all(isinstance(b, int) and 0 <= b < 256 for b in value):
            return bytes(value)
        return _text(value[0])
    return None


def entry_line(entry: dict) -> bytes | None:
    """The syslog-style line of one journal entry; None without a MESSAGE."""
    message = _text(entry.get("MESSAGE"))
    if message is None:
        return None
    message = message.rstrip(b"\n").replace(b"\r\n", b" ").replace(b"\n", b" ")
    try:
        micros = int(_text(entry.get("__REALTIME_TIMESTAMP")) or b"")
        stamp = datetime.fromtimestamp(micros / 1e6, UTC).astimezone()
        when = stamp.isoformat(timespec="microseconds").encode()
    except (ValueError, OverflowError, OSError):
        when = datetime.now(UTC).astimezone().isoformat(timespec="microseconds").encode()
    host = _text(entry.get("_HOSTNAME")) or b"localhost"
    ident = _text(entry.get("SYSLOG_IDENTIFIER")) or _text(entry.get("_COMM")) or b"journal"
    pid = _text(entry.get("SYSLOG_PID")) or _text(entry.get("_PID"))
    head = ident + (b"[" + pid + b"]" if pid and pid.isdigit() else b"")
    return b"%s %s %s: %s" % (when, host.replace(b" ", b"_"), head.replace(b" ", b"_"), message)


class JournalSource:
    """Follows journal entries through a journalctl child process; the FileSource interface
    (``begin``, ``read_batches``, ``close``, ``up``, ``name``, counters)."""

    path = None  # no file to watch: the reader thread wakes the loop itself

    def __init__(self, units: tuple[str, ...] = (), identifier: str | None = None, *,
                 namespace: str | None = None, directory: str | None = None,
                 from_start: bool = False, max_line_bytes: int = 65536,
                 journalctl: str = "journalctl", on_data: Callable[[], None] | None = None):
        self.units = tuple(units) if (units or identifier) else DEFAULT_UNITS
        self.identifier = identifier
        self.namespace = namespace
        self.directory = directory
        self.name = source_name(tuple(units), identifier, namespace, directory)
        self.from_start = from_start
        self.max_line_bytes = max_line_bytes
        self.journalctl = journalctl
        self.on_data = on_data  # called from the reader thread when entries arrive
        self.up = False
        self.read_errors = 0  # journalctl exits, and JSON lines that could not be read
        self.lines_too_long = 0
        self.truncations = 0
        self.rotations = 0
        self.restarts = 0
        self.position: JournalCursor | None = None
        self._cursor: str | None = None  # of the last entry read from journalctl
        self._queue: queue.Queue[tuple[bytes, str]] = queue.Queue(QUEUE_ENTRIES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    # -- public -------------------------------------------------------------------------------

    def begin(self, saved: object = None) -> JournalCursor | None:
        """Start journalctl after ``saved`` (a JournalCursor) or by rule 2."""
        if isinstance(saved, JournalCursor):
            self._cursor = saved.cursor
            self.position = saved
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"journal {self.name}",
                                            daemon=True)
            self._thread.start()
        return self.position

    def read_batches(self) -> Iterator[Batch]:
        if self._thread is None:
            self.begin()
        while True:
            lines: list[bytes] = []
            cursor = None
            too_long = 0
            try:
                while len(lines) < BATCH_ENTRIES:
                    line, cursor = self._queue.get_nowait()
                    if len(line) > self.max_line_bytes:
                        line, too_long = TOO_LONG, too_long + 1
                    lines.append(line)
            except queue.Empty:
                pass
            if not lines:
                return
            self.lines_too_long += too_long
            assert cursor is not None
            self.position = JournalCursor(cursor)
            yield Batch(lines, self.position, too_long)  # type: ignore[arg-type]

    def close(self) -> Batch:
        """Stop journalctl and the reader thread; entries not yet handed over are dropped (read
        again after the saved cursor by the next start)."""
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            _terminate(proc)
        try:  # unblock a reader waiting for room in the queue
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        return Batch([], self.position)  # type: ignore[arg-type]

    # -- the reader thread --------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [self.journalctl, "--follow", "--output=json", "--all", "--no-pager", "--quiet"]
        if self.namespace:
            cmd.append(f"--namespace={self.namespace}")
        if self.directory:
            cmd.append(f"--directory={self.directory}")
        if self.identifier:
            cmd.append(f"--identifier={self.identifier}")
        else:
            cmd += [f"--unit={unit}" for unit in self.units]
        if self._cursor:
            cmd.append(f"--after-cursor={self._cursor}")
        elif self.from_start:
            cmd.append("--no-tail")
        else:
            cmd.append("--lines=0")
        return cmd

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stop.is_set():
            started = time.monotonic()
            stderr, ended_by = self._follow()
            if self._stop.is_set():
                return
            if ended_by in STOP_SIGNALS and self._stop.wait(STOP_GRACE):
                return  # the process group is stopping (systemd's KillMode): so are we
            self.up = False
            self.read_errors += 1
            self.restarts += 1
            if "cursor" in stderr.lower() and self._cursor:
                log.warning("journal source %s: journalctl refused the cursor %s; following "
                            "from %s", self.name, self._cursor,
                            "the start" if self.from_start else "new entries")
                self._cursor = None
            if time.monotonic() - started >= STEADY_SECONDS:
                backoff = BACKOFF_FIRST
            level = logging.WARNING if ended_by in STOP_SIGNALS else logging.ERROR
            log.log(level, "journal source %s: journalctl exited (%s); starting it again in %.0f s",
                    self.name, stderr.strip() or "no message", backoff)
            if self.on_data is not None:
                self.on_data()  # let the loop see up = 0
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _follow(self) -> tuple[str, int | None]:
        """Run journalctl until it exits; return its stderr and the signal that ended it, if any."""
        try:
            proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL)
        except OSError as err:
            return f"cannot run {self.journalctl}: {err.strerror or err}", None
        with self._lock:
            self._proc = proc
        if self._stop.is_set():
            _terminate(proc)
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()),  # type: ignore[union-attr]
                                 daemon=True)
        drain.start()
        if not self.up:
            log.info("journal source %s: following (%s)", self.name, " ".join(self.command()[1:]))
        self.up = True
        assert proc.stdout is not None
        for raw in proc.stdout:  # ends only when journalctl exits: never at "nothing new"
            self._take(raw)
        proc.wait()
        drain.join(timeout=5)
        with self._lock:
            self._proc = None
        text = b"".join(errors).decode("utf-8", "replace")
        ended_by = -proc.returncode if proc.returncode < 0 else None
        return (f"exit status {proc.returncode}" + (f": {text.strip()}" if text.strip() else ""),
                ended_by)

    def _take(self, raw: bytes) -> None:
        try:
            entry = json.loads(raw)
        except ValueError:
            self.read_errors += 1
            log.warning("journal source %s: not a JSON entry: %r", self.name, raw[:200])
            return
        if not isinstance(entry, dict):
            return
        cursor = entry.get("__CURSOR")
        line = entry_line(entry)
        if not isinstance(cursor, str):
            return
        self._cursor = cursor
        if line is None:
            return
        while not self._stop.is_set():
            try:
                self._queue.put((line, cursor), timeout=0.5)
                break
            except queue.Full:
                continue
        if self.on_data is not None:
            self.on_data()


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            try:
                proc.kill()
            except OSError:
                pass

