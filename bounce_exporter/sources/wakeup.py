"""Wake the reader when a followed file changes.

watchdog's events are only a hint to read sooner: rotation and truncation are decided by stat in
the source, and the poll interval stays the safety net (inotify misses events on network file
systems and drops them when its queue overflows). Watched: the folder of each path and of its
symlink target (resolved at start); an event on the path, its target, or one of their rotated names
(``mail.log.1``) wakes the reader.
"""

from __future__ import annotations

import logging
import os
import threading

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

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

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # our own reads
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path and _concerns(os.path.abspath(os.fsdecode(path)), self.paths):
                self.event.set()
                return


class Wakeup:
    """``wait(timeout)`` returns early when a followed path changes, or when ``wake()`` is called."""

    def __init__(self, paths: list[str]):
        self.event = threading.Event()
        self._observer = None
        watched = {os.path.abspath(p) for p in paths} | {os.path.realpath(p) for p in paths}
        folders = sorted({os.path.dirname(p) for p in watched if os.path.isdir(os.path.dirname(p))})
        if not folders:
            return
        try:
            observer = Observer()
            handler = _Hint(watched, self.event)
            for folder in folders:
                observer.schedule(handler, folder, recursive=False)
            observer.daemon = True
            observer.start()
        except (OSError, RuntimeError) as err:
            log.warning("file events unavailable (%s); polling only", err)
            return
        self._observer = observer

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout)
        self.event.clear()

    def wake(self) -> None:
        self.event.set()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
