"""Wake the reader when a followed file changes.

watchdog's events are only a hint to read sooner: rotation and truncation are decided by stat in
the source, and the poll interval stays the safety net (inotify misses events on network file
systems and drops them when its queue overflows). Watched: the folder of each path and of its
symlink target (resolved again at each wait, as are the folders themselves: one made later or
made again is watched from then on); an event on the path, its target, or one of their rotated
names (``mail.log.1``) wakes the reader.
"""

from __future__ import annotations

import logging
import os
import stat
import threading

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from bounce_exporter.sources.rotation import is_rotated_name

log = logging.getLogger(__name__)


def _concerns(name: str, watched: set[str]) -> bool:
    """Is ``name`` a watched path or one of its rotated names?"""
    if name in watched:
        return True
    folder, base = os.path.split(name)
    for path in watched:
        stem = os.path.basename(path)
        if os.path.dirname(path) == folder and is_rotated_name(base, stem):
            return True
    return False


class _Hint(FileSystemEventHandler):
    def __init__(self, paths: set[str], event: threading.Event):
        self.paths = paths
        self.event = event
        self.lost: set[str] = set()  # watched folders deleted or moved away: watch them again

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # our own reads
        if event.is_directory and event.event_type in ("deleted", "moved"):
            self.lost.add(os.path.abspath(os.fsdecode(event.src_path)))
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path and _concerns(os.path.abspath(os.fsdecode(path)), self.paths):
                self.event.set()
                return


class Wakeup:
    """``wait(timeout)`` returns early when a followed path changes, or when ``wake()`` is called.

    A folder that does not exist yet, or is deleted and made again, is (re)watched at the next
    ``wait``: each wait checks the folders' identities (one stat each), so a log whose folder
    appears later is read as soon as it is written, not only at the next poll."""

    def __init__(self, paths: list[str]):
        self.event = threading.Event()
        self._paths = list(paths)
        self._observer: BaseObserver | None = None
        self._watches: dict[str, tuple[tuple[int, int] | None, ObservedWatch]] = {}
        self._handler = _Hint(set(), self.event)
        self._began = False  # the first rearm: the folders there at start wake nobody
        if not self._paths:
            return
        try:
            observer = Observer()
            observer.daemon = True
            observer.start()
        except (OSError, RuntimeError) as err:
            log.warning("file events unavailable (%s); polling only", err)
            return
        self._observer = observer
        self.rearm()

    def rearm(self) -> None:
        """Watch every folder of the paths (and of their symlink targets) that exists now, again
        if it was made anew; a folder that appeared wakes the reader once."""
        observer = self._observer
        if observer is None:
            return
        watched = {os.path.abspath(p) for p in self._paths} | {os.path.realpath(p) for p in self._paths}
        self._handler.paths = watched
        for folder in sorted({os.path.dirname(p) for p in watched}):
            held = self._watches.get(folder)
            if folder in self._handler.lost:
                self._handler.lost.discard(folder)
                held = (None, held[1]) if held is not None else None  # its watch is gone
            try:
                st = os.stat(folder)
            except OSError:
                st = None
            ident = (st.st_dev, st.st_ino) if st is not None and stat.S_ISDIR(st.st_mode) else None
            if held is not None and held[0] == ident:
                continue
            if held is not None:
                del self._watches[folder]
                try:
                    observer.unschedule(held[1])
                except (KeyError, OSError):
                    pass
            if ident is None:
                continue
            try:
                watch = observer.schedule(self._handler, folder, recursive=False)
            except OSError as err:
                log.debug("cannot watch %s: %s", folder, err)
                continue
            self._watches[folder] = (ident, watch)
            if held is not None or self._began:
                log.info("watching %s for file events (%s)", folder,
                         "made again" if held is not None else "it appeared")
                self.event.set()  # files in it may be there already
        self._began = True

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout)
        self.event.clear()
        self.rearm()

    def wake(self) -> None:
        self.event.set()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
