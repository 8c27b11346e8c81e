"""The Postfix queue as Postfix itself reports it: ``postqueue -j``, run at scrape time.

``postqueue -j`` prints one JSON object per queued message (``queue_name``, ``queue_id``,
``arrival_time``, ``message_size``, ``sender``, ``recipients: [{address, delay_reason}]``). A
``QueueReader`` runs the configured command at most every ``interval`` seconds (a scrape in
between gets the cached reading), with a ``timeout``, outside any lock of the exporter. Its
reading is one of:

- off: the command is not there (no Postfix on this host), logged once at info; tried again at
  the next interval, so a Postfix installed later is found;
- down: the command failed (exit status other than 0, timeout, output that is not postqueue's
  JSON), logged once at error until it works again; no messages;
- up: the messages queued, as of the last run.

No metrics here: ``state.queue`` totals a reading per domain, the exposition shows it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_COMMAND = ("postqueue", "-j")
DEFAULT_INTERVAL = 30.0  # seconds between two runs of the command
DEFAULT_TIMEOUT = 10.0  # seconds a run may take before it is killed and counted as failed
SBIN_DIRS = "/usr/sbin:/usr/local/sbin:/sbin"  # where postqueue lives, not always on PATH


@dataclass(frozen=True)
class QueuedRecipient:
    address: str
    delay_reason: str  # "" when Postfix has not tried it yet


@dataclass(frozen=True)
class QueuedMessage:
    queue: str  # queue_name: maildrop, incoming, active, deferred, hold, corrupt
    queue_id: str
    arrival_time: float
    recipients: tuple[QueuedRecipient, ...]


@dataclass(frozen=True)
class QueueReading:
    up: bool | None  # None: off (no command); False: the last run failed
    messages: tuple[QueuedMessage, ...] = ()


OFF = QueueReading(None)


class QueueError(Exception):
    """The command failed or printed something that is not postqueue's JSON."""


def parse_postqueue(text: str) -> list[QueuedMessage]:
    """The messages of ``postqueue -j`` output; QueueError naming the first bad line."""
    messages = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            recipients = tuple(QueuedRecipient(str(r["address"]), str(r.get("delay_reason", "")))
                               for r in record["recipients"])
            messages.append(QueuedMessage(str(record["queue_name"]), str(record["queue_id"]),
                                          float(record["arrival_time"]), recipients))
        except (ValueError, KeyError, TypeError) as err:
            raise QueueError(f"line {number} is not a postqueue -j record ({err!r}): "
                             f"{line[:200]!r}") from None
    return messages


def resolve(command: Sequence[str]) -> list[str] | None:
    """The command with its program's path (PATH, then the sbin folders); None if not found."""
    program = command[0]
    if os.sep in program:
        return list(command) if os.access(program, os.X_OK) else None
    path = os.environ.get("PATH", "") + os.pathsep + SBIN_DIRS
    found = shutil.which(program, path=path)
    return None if found is None else [found, *command[1:]]


def run_postqueue(command: list[str], timeout: float) -> list[QueuedMessage]:
    """Run the (resolved) command; its messages, or QueueError."""
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise QueueError(f"no answer within {timeout:g}s") from None
    except OSError as err:
        raise QueueError(str(err)) from None
    if done.returncode != 0:
        error = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise QueueError(f"exit status {done.returncode}: {error[-1] if error else '(no output)'}")
    return parse_postqueue(done.stdout.decode("utf-8", "replace"))


class QueueReader:
    """The cached reading of the queue command (see the module docstring). ``reading()`` returns
    the cache; ``refresh()`` runs the command if ``interval`` seconds have passed since the last
    run (one run at a time: a scrape that comes while another runs it gets the cache)."""

    def __init__(self, command: Sequence[str] = DEFAULT_COMMAND,
                 interval: float = DEFAULT_INTERVAL, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic):
        self.command, self.interval, self.timeout = tuple(command), interval, timeout
        self.clock = clock
        self._reading = OFF
        self._last_run: float | None = None
        self._running = threading.Lock()
        self._told: str | None = None  # what was logged last: "off", "down" (once each)

    def apply(self, command: Sequence[str], interval: float) -> None:
        """A reloaded command or interval: a new command runs at the next refresh."""
        if tuple(command) != self.command:
            self._last_run = None
        self.command, self.interval = tuple(command), interval

    def reading(self) -> QueueReading:
        return self._reading

    def refresh(self) -> QueueReading:
        if not self.command:
            self._reading = OFF
            return OFF
        now = self.clock()
        if self._last_run is not None and now - self._last_run < self.interval:
            return self._reading
        if not self._running.acquire(blocking=self._last_run is None):
            return self._reading  # another scrape is running it
        try:
            self._last_run = now
            self._reading = self._run()
        finally:
            self._running.release()
        return self._reading

    def _run(self) -> QueueReading:
        command = resolve(self.command)
        if command is None:
            self._tell("off", logging.INFO, "queue view off: %s not found (no Postfix here?)",
                       self.command[0])
            return OFF
        try:
            messages = run_postqueue(command, self.timeout)
        except QueueError as err:
            self._tell("down", logging.ERROR, "queue command %s failed: %s",
                       " ".join(self.command), err)
            return QueueReading(False)
        if self._told == "down":
            log.info("queue command %s works again", " ".join(self.command))
        self._told = None
        return QueueReading(True, tuple(messages))

    def _tell(self, what: str, level: int, message: str, *args: object) -> None:
        """Log ``message`` unless the last thing told was ``what`` already."""
        if self._told != what:
            log.log(level, message, *args)
            self._told = what
