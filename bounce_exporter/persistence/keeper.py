"""What survives a restart, and when it is saved: the deferral tracker's state, each source's read
position and its parser's state as of that position (the ledger of messages in flight, the year
of its stamps, ...): ``{"version": 1, "deferrals": {...}, "positions": {source: position},
"parsers": {source: state}}``. Parsing happens under the state lock, so a position and its
parser's state always match.

The rule: **what is saved is what was last exposed.** At each scrape one snapshot is taken under
the state lock (``state.store``): the counters to expose, the tracker and every source's *counted*
position (where the next line not yet counted starts). The keeper records its saved part and
writes it (atomically: ``statefile``); then the exposition is built from that same snapshot and the
response goes out. A restart resumes from there,
with counters from zero. So every line is in the counters of exactly one lifetime's last served
scrape: lines counted after the last scrape (never exposed, whether the end is SIGTERM or
``kill -9``) are read again by the next lifetime, and no exposed line is read twice. The only
window is a kill between the write and the response reaching Prometheus (lines since the previous
scrape then lost), or a failed write followed by a kill (lines since the last written snapshot
counted again).

- At start a snapshot of the starting point (saved positions, or where the tailer began) is taken
  and written at once: a first start that ends (or is killed) before its first scrape resumes
  where it began, not at the file's end again.
- A snapshot holds each parser's ledger frozen (references, never a second copy), encoded as the
  file is written and let go once it is (``release_streamed``): only what tells whether the next
  snapshot saves anything new stays.
- A snapshot that saves what the file holds already (the deferral tracker's clock aside: it is
  moved on by the wall clock at each loop) is not written again: a scrape of an unchanged state
  writes 0 bytes (``same_but_the_clock``).
- A failed write (full disk, read-only directory) is counted in
  ``bounce_exporter_state_write_errors_total``, logged (once until it works again) and retried
  every ``interval`` seconds and at each scrape; serving goes on.
- Snapshots are numbered in the order taken: of two concurrent scrapes the newer is kept, whichever
  records first.
- ``save()`` snapshots *now* (counters possibly not yet exposed) and writes it: for tools and tests.
- A missing, unreadable or corrupt file at start is logged by ``statefile`` and the exporter starts
  empty; unusable positions are skipped with a warning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bounce_exporter.persistence.statefile import read_state, release_streamed, write_state
from bounce_exporter.sources.journal import JournalCursor
from bounce_exporter.sources.position import Position
from bounce_exporter.state.store import STATE_VERSION, Saved, Snapshot, Store

log = logging.getLogger(__name__)

__all__ = ["SAVE_INTERVAL", "STATE_VERSION", "StateKeeper"]

SAVE_INTERVAL = 5.0
# A scrape whose snapshot and write took more than SLOW_SAVE seconds (a ledger of many thousand
# messages) is served again to the scrapes of the next REUSE_FACTOR times as long, at most
# MAX_REUSE seconds: see StateKeeper.scrape.
SLOW_SAVE = 0.02
REUSE_FACTOR = 20.0
MAX_REUSE = 2.0


class StateKeeper:
    def __init__(self, path: str, store: Store, *, interval: float = SAVE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.store = store
        self.interval = interval
        self.clock = clock
        self._last_attempt = clock()
        self._lock = threading.Lock()  # guards the newest snapshot and its number
        self._write_lock = threading.Lock()  # one writer at a time; the newest snapshot wins
        self._snapshot: dict | None = None
        self._taken = 0  # sequence number of the newest snapshot
        self._written = 0  # sequence number of the newest snapshot on disk
        self._on_disk: dict | None = None  # what this lifetime last wrote
        self._failing = False
        self.parser_states: dict[str, dict] = {}  # as loaded: restored with their positions
        self._scrape_lock = threading.Lock()  # one scrape's snapshot at a time
        self._served: Snapshot | None = None  # the last scrape's, served again until _reuse_until
        self._reuse_until = 0.0

    def load(self) -> dict[str, Position | JournalCursor]:
        """Restore the tracker; return the saved read positions (file positions, journal cursors)
        by source name. The parsers' saved states are kept in ``parser_states``."""
        data = read_state(self.path)
        parsers = data.get("parsers")
        self.parser_states = {str(name): entry for name, entry in parsers.items()
                              if isinstance(entry, dict)} if isinstance(parsers, dict) else {}
        deferrals = data.get("deferrals")
        if isinstance(deferrals, dict):
            streaks = self.store.load(deferrals)
            log.info("state restored from %s: %d streaks", self.path, streaks)
        saved = data.get("positions")
        positions: dict[str, Position | JournalCursor] = {}
        if isinstance(saved, dict):
            for name, entry in saved.items():
                position = JournalCursor.from_state(entry) or Position.from_state(entry)
                if position is None:
                    log.warning("ignoring the unusable saved position of %s: %r", name, entry)
                else:
                    positions[str(name)] = position
        elif saved is not None:
            log.warning("ignoring saved positions that are not a mapping")
        return positions

    # -- snapshots -----------------------------------------------------------------------------

    def scrape(self) -> Snapshot:
        """A scrape's snapshot, recorded and written before anything of it is exposed. When the
        last one took more than ``SLOW_SAVE`` seconds to take and write (a big ledger), the
        scrapes of the next ``REUSE_FACTOR`` times as long (at most ``MAX_REUSE`` s) get that one
        again, nothing taken or written: fast or many scrapers cannot make the exporter spend its
        time saving (nor the reader fall behind the log). What is exposed is still what is on
        disk, so the exactly-once rule holds; those scrapes show the same values twice."""
        with self._scrape_lock:
            began = self.clock()
            if self._served is not None and began < self._reuse_until:
                return self._served
            snapshot = self.store.snapshot()
            self.record(snapshot.saved)
            self.write()
            took = self.clock() - began
            self._served = snapshot
            self._reuse_until = began + min(REUSE_FACTOR * took, MAX_REUSE) \
                if took > SLOW_SAVE else 0.0
            return snapshot

    def take(self) -> None:
        """Snapshot the tracker and the counted positions now (caller holds the state lock)."""
        self.record(self.store.saved())

    def record(self, saved: Saved) -> None:
        """Keep a snapshot's saved part for the next write, unless a newer one is kept already."""
        with self._lock:
            if saved.seq > self._taken:
                self._snapshot, self._taken = saved.data, saved.seq

    def write(self) -> bool:
        """Write the newest snapshot unless it is on disk already; False if the write failed."""
        with self._write_lock:
            with self._lock:
                snapshot, taken = self._snapshot, self._taken
            if snapshot is None or taken <= self._written:
                return True
            if self._on_disk is not None and same_but_the_clock(snapshot, self._on_disk):
                self._written = taken  # what the file holds already: nothing written
                return True
            self._last_attempt = self.clock()
            try:
                write_state(self.path, snapshot)
            except OSError as err:
                with self.store.lock:
                    self.store.state.state_write_errors += 1
                level = logging.DEBUG if self._failing else logging.ERROR
                log.log(level, "cannot save state to %s: %s (will retry)", self.path, err)
                self._failing = True
                return False
            if self._failing:
                log.info("state saved to %s again", self.path)
                self._failing = False
            self._written, self._on_disk = taken, snapshot
            release_streamed(snapshot)  # the ledger's messages: the file holds them now
            return True

    @property
    def unwritten(self) -> bool:
        return self._snapshot is not None and self._taken > self._written

    def maybe_save(self) -> None:
        """Write an unwritten snapshot (the start's, or one whose write failed) once ``interval``
        seconds have passed since the last attempt."""
        if self.unwritten and self.clock() - self._last_attempt >= self.interval:
            self.write()

    def save(self) -> bool:
        """Snapshot now and write it."""
        with self.store.lock:
            self.take()
        return self.write()


def same_but_the_clock(new: dict, old: dict) -> bool:
    """Does ``new`` save what ``old`` does, but for the deferral tracker's clock (``now``, moved
    on by the wall clock at each loop)? A restart from ``old`` then gives what one from ``new``
    would: the tracker's clock is moved on by the wall clock again at once, and a streak that
    time ended would differ in its streaks, not only in ``now``."""
    if new.keys() != old.keys():
        return False
    for key, value in new.items():
        if key == "deferrals" and isinstance(value, dict) and isinstance(old[key], dict):
            if {k: v for k, v in value.items() if k != "now"} != \
                    {k: v for k, v in old[key].items() if k != "now"}:
                return False
        elif value != old[key]:
            return False
    return True
