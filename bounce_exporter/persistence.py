"""What survives a restart, and when it is saved: the persistent-deferral tracker's state.

Saved every ``interval`` seconds while something changed, and at shutdown. A failed write (full
disk, read-only directory) is counted in ``bounce_exporter_state_write_errors_total``, logged, and
retried at the next interval; serving goes on. A missing, unreadable or corrupt file at start is
logged by ``statefile`` and the exporter starts empty.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bounce_exporter.deferrals import DeferralTracker
from bounce_exporter.metrics import MetricState
from bounce_exporter.statefile import read_state, write_state

log = logging.getLogger(__name__)

STATE_VERSION = 1
SAVE_INTERVAL = 5.0


class StateKeeper:
    def __init__(self, path: str, tracker: DeferralTracker, state: MetricState, *,
                 interval: float = SAVE_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.tracker = tracker
        self.state = state
        self.interval = interval
        self.clock = clock
        self._last_save = clock()
        self._lock: threading.Lock = state.lock

    def load(self) -> None:
        data = read_state(self.path)
        deferrals = data.get("deferrals") if isinstance(data, dict) else None
        if isinstance(deferrals, dict):
            with self._lock:
                self.tracker.load_state(deferrals)
            log.info("state restored from %s: %d streaks", self.path, self.tracker.tracking())

    def maybe_save(self) -> None:
        if self.clock() - self._last_save >= self.interval:
            self.save()

    def save(self) -> bool:
        self._last_save = self.clock()
        with self._lock:
            data = {"version": STATE_VERSION, "deferrals": self.tracker.to_state()}
        try:
            write_state(self.path, data)
        except OSError as err:
            with self._lock:
                self.state.state_write_errors += 1
            log.error("cannot save state to %s: %s (will retry)", self.path, err)
            return False
        return True
