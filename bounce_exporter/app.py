"""Wiring: build the stages from the config, consumer first, and run them."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TextIO

from bounce_exporter.classify.catalog import packaged_catalog
from bounce_exporter.classify.classifier import Classification, Classifier
from bounce_exporter.config import DEFAULT_FORMAT, Config, SourceConfig, expand_sources
from bounce_exporter.errors import ConfigError
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.exposition.collector import Exposition, Registry, exporter_registry
from bounce_exporter.exposition.http import start_server
from bounce_exporter.exposition.status_page import render_status_page
from bounce_exporter.parsers import accel, make_parser
from bounce_exporter.persistence.keeper import StateKeeper
from bounce_exporter.pipeline import Feed, Pipeline
from bounce_exporter.sources import Source
from bounce_exporter.sources.catchup import CatchUpSource
from bounce_exporter.sources.files import FileSource
from bounce_exporter.sources.journal import JournalCursor, JournalSource
from bounce_exporter.sources.position import Position
from bounce_exporter.sources.stdin import StdinSource, is_stdin
from bounce_exporter.sources.wakeup import Wakeup
from bounce_exporter.state.counters import DomainLabels, MetricState
from bounce_exporter.state.deferrals import DeferralTracker
from bounce_exporter.state.store import Snapshot, Store

log = logging.getLogger(__name__)

RESTART_ONLY = ("listen_address", "telemetry_path", "state_file", "domain_allowlist",
                "web_config_file")


def _reference_time(path: str) -> float | None:
    """Stamps without a year are placed no later than the file's last change."""
    try:
        return os.path.getmtime(path)
    except OSError:
        return None


class Exporter:
    """The running exporter: pipeline, metric state, HTTP server and read loop.

    Restarts (see ``persistence``): the state file holds the tracker and each source's read
    position as of the last scrape served; ``start()`` resumes from them, counters from zero.
    """

    def __init__(self, config: Config, registry: Registry | None = None, *,
                 loader: Callable[[], Config] | None = None):
        self.config = config
        self.loader = loader  # re-reads the configuration at SIGHUP
        self.classifier = Classifier.load(extra_text_rules=config.text_rules)
        self.state = MetricState(DomainLabels(config.max_domains, config.domain_allowlist),
                                 max_series=config.max_series)
        self.store = Store(self.state, DeferralTracker(config.deferral_rules),
                           positions=lambda: self.pipeline.positions(),
                           in_flight=lambda: self.pipeline.in_flight(),
                           category=self._category)
        self.pipeline = Pipeline(self.classifier, self.state, observers=[self.store.observe])
        self.keeper = StateKeeper(config.state_file, self.store)
        for source in expand_sources(config.sources, config.from_start):
            self._add_source(source)
        # /metrics is served by scrape(), or, with a registry given (its own collectors besides),
        # by the registry: a collect() of it is a scrape too
        self._serve_registry = registry is not None
        # _others: served on /metrics before the snapshot's families (the process's metrics)
        self.registry, self._others = exporter_registry(self.take_scrape, registry)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.server = None
        self.wakeup = Wakeup(self._watched())

    @property
    def tracker(self) -> DeferralTracker:
        return self.store.tracker

    def scrape(self) -> Exposition:
        """What /metrics encodes: the process's own metrics, then the families of a snapshot
        saved first (``take_scrape``)."""
        return Exposition(self.take_scrape(), self._others)

    def take_scrape(self) -> Snapshot:
        """A scrape's snapshot, recorded and written by the keeper before anything of it is
        exposed (see persistence.keeper)."""
        snapshot = self.store.snapshot()
        self.keeper.record(snapshot.saved)
        self.keeper.write()
        return snapshot

    def _watched(self) -> list[str]:
        """Files to watch; journal and stdin sources wake the loop themselves."""
        return [feed.source.path for feed in self.pipeline.feeds if feed.source.path]

    def _wake(self) -> None:
        self.wakeup.wake()  # the current Wakeup (replaced at reload)

    def _add_source(self, source: SourceConfig) -> Feed:
        path, limit = source.path, self.config.max_line_bytes
        reader: Source
        if source.journal is not None:
            j = source.journal
            reader = JournalSource(j.units, j.identifier, namespace=j.namespace,
                                   directory=j.directory, from_start=self.config.from_start,
                                   max_line_bytes=limit, on_data=self._wake)
            return self.pipeline.add(reader, make_parser(source.format, None))
        if is_stdin(path):
            reader = StdinSource(name=path, max_line_bytes=limit, on_data=self._wake)
            return self.pipeline.add(reader, make_parser(source.format, None))
        if source.catch_up_of is not None:
            reader = CatchUpSource(path, max_line_bytes=limit, live_path=source.catch_up_of or None)
            return self.pipeline.add(reader, make_parser(source.format, _reference_time(path)))
        return self.pipeline.add(
            FileSource(path, from_start=self.config.from_start, max_line_bytes=limit),
            make_parser(source.format, _reference_time(path)),
        )

    def _saved_positions(self) -> dict:
        """The keeper's file positions and journal cursors; catch-up files not begun while their
        live file has a position are an earlier lifetime's: skipped."""
        positions: dict = dict(self.keeper.load())
        for feed in self.pipeline.feeds:
            source = feed.source
            if (isinstance(source, CatchUpSource) and source.name not in positions
                    and source.live_path in positions):
                source.skip = True
        return positions

    def start(self) -> tuple[str, int]:
        """Restore the state, open the sources where they were left, start serving; return the
        bound (host, port)."""
        if self.config.sources_chosen:
            log.info("%s", self.config.sources_chosen)
        # which Postfix block scan runs; a warning when the C extension was not built
        log.log(logging.INFO if accel.compiled() else logging.WARNING, "%s", accel.describe())
        positions = self._saved_positions()
        self.pipeline.begin(positions)
        self._tell_resumed(positions)
        with self.state.lock:
            self.keeper.take()  # the starting point, written at the first scrape or save
        self.server = start_server(self.config.listen_address, self.registry,
                                   telemetry_path=self.config.telemetry_path,
                                   json_routes={"/api/v1/deferrals": self.deferrals_view,
                                                "/api/v1/waiting": self.store.waiting_view},
                                   web_config_file=self.config.web_config_file,
                                   scrape=None if self._serve_registry else self.scrape,
                                   page=self.status_page)
        host, port = self.server.server_address[:2]
        log.info("listening on %s:%s, following %s", host, port,
                 ", ".join(feed.source.name for feed in self.pipeline.feeds))
        return host, port

    def _tell_resumed(self, positions: dict) -> None:
        """One line per source started from a saved position rather than its first-open rule:
        what the state file did, and that --log.from-start does not apply to it."""
        ignored = "; --log.from-start does not apply" if self.config.from_start else ""
        for feed in self.pipeline.feeds:
            saved, start = positions.get(feed.source.name), feed.counted
            if isinstance(saved, JournalCursor):
                log.info("%s: resuming after the journal cursor saved in %s%s", feed.source.name,
                         self.config.state_file, ignored)
            elif isinstance(saved, Position) and isinstance(start, Position):
                log.info("resuming at byte %d of %s (saved in %s)%s", start.offset,
                         start.file or feed.source.name, self.config.state_file, ignored)

    def run(self) -> int:
        """Serve and read until stopped (SIGTERM, SIGINT); SIGHUP reloads the configuration.
        Then save and exit 0."""
        self.start()
        try:
            while not self.stopping.is_set():
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
                self.step()
                self.wakeup.wait(self.config.poll_interval)
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Stop serving, write the state of the last scrape, let go of the files. Idempotent.

        Nothing more is read or counted: no scrape could expose it. What was read since the last
        scrape, a partial last line included, is read again (whole) by the next start."""
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        self.server = None
        if not self.keeper.write():
            self.keeper.write()  # one retry; the previous state file is intact either way
        self.wakeup.stop()
        self.pipeline.close()
        log.info("stopped")

    def step(self) -> int:
        """One turn of the read loop: read every source, age the tracker, save state if due."""
        lines = self.pipeline.pump()
        self.store.advance(time.time())
        self.keeper.maybe_save()
        return lines

    def _category(self, event: DeliveryEvent) -> str:
        """The category of a waiting recipient's last reply (the current classifier's)."""
        return self.pipeline.classifier.classify(event.status, event.code, event.enhanced,
                                                 event.text).category

    def deferrals_view(self) -> list[dict]:
        return self.store.deferrals_view()

    def status_page(self) -> str:
        """The HTML of "/": sources, persistent deferrals explained, the last hour's top
        deferring domains (exposition.status_page)."""
        with self.store.lock:
            formats = {feed.source.name: feed.parser.mta for feed in self.pipeline.feeds}
        return render_status_page(self.store.status(), self.classifier, formats=formats,
                                  telemetry_path=self.config.telemetry_path,
                                  routes=["/api/v1/deferrals"])

    def stop(self, *_: object) -> None:
        self.stopping.set()
        self.wakeup.wake()

    def request_reload(self, *_: object) -> None:
        self.reload_requested.set()
        self.wakeup.wake()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    # -- SIGHUP ---------------------------------------------------------------------------------

    def reload(self, config: Config | None = None) -> bool:
        """Apply a new configuration (re-read by ``loader`` unless given): sources added are
        followed (from their end, like any first open), sources removed are let go; the poll
        interval, log level, line limit, domain cap, text rules and deferral rules take effect.
        The listen address, telemetry path, state file, allow-list and web config file need a
        restart. A bad configuration is logged and the running one kept."""
        try:
            if config is None:
                if self.loader is None:
                    log.warning("SIGHUP: no configuration to reload")
                    return False
                config = self.loader()
            classifier = Classifier.load(extra_text_rules=config.text_rules)
        except ConfigError as err:
            log.error("reload refused, keeping the running configuration: %s",
                      "; ".join(err.problems))
            return False
        config = _keep_restart_only(config, self.config)
        self.config = config
        logging.getLogger("bounce_exporter").setLevel(config.log_level.upper())
        self._apply_sources(config)
        self.store.apply(config.max_domains, config.deferral_rules, config.max_series)
        self.pipeline.apply(classifier, config.max_line_bytes)
        self.classifier = classifier
        self.wakeup.stop()
        self.wakeup = Wakeup(self._watched())
        log.info("configuration reloaded")
        return True

    def _apply_sources(self, config: Config) -> None:
        """Let go of the sources no longer configured, follow the new ones."""
        expanded = expand_sources(config.sources, config.from_start)
        wanted = {s.path: s for s in expanded if s.catch_up_of is None}  # rotated: at start only
        following = {feed.source.name for feed in self.pipeline.feeds}
        for name in following - {s.path for s in expanded}:
            log.info("reload: no longer following %s", name)
            self.pipeline.remove(name)
        for path in [p for p in wanted if p not in following]:
            log.info("reload: following %s", path)
            self.pipeline.begin_feed(self._add_source(wanted[path]))


def _keep_restart_only(config: Config, old: Config) -> Config:
    """``config``, given the running values of the settings that take effect at a restart only."""
    new = (config.listen_address, config.telemetry_path, config.state_file,
           config.domain_allowlist, config.web_config_file)
    running = (old.listen_address, old.telemetry_path, old.state_file, old.domain_allowlist,
               old.web_config_file)
    for key, now, before in zip(RESTART_ONLY, new, running):
        if now != before:
            log.warning("reload: %s changed; it takes effect at the next restart", key)
    (config.listen_address, config.telemetry_path, config.state_file, config.domain_allowlist,
     config.web_config_file) = running
    return config


# -- parse: one JSON object per delivery event ---------------------------------------------------

EventSink = Callable[[int, DeliveryEvent, Classification], None]
OneShot = FileSource | CatchUpSource | StdinSource


def _one_shot_source(path: str, max_line_bytes: int, on_data: Callable[[], None]) -> OneShot:
    """The source of a one-shot read: standard input ("-"), a file through gzip, a file.

    Raises OSError, before anything is read, when the file cannot be read."""
    if is_stdin(path):
        return StdinSource(name=path, max_line_bytes=max_line_bytes, on_data=on_data)
    if not os.path.isfile(path):
        raise OSError(f"{path}: {'not a regular file' if os.path.exists(path) else 'no such file'}")
    with open(path, "rb"):  # raises PermissionError before anything is printed
        pass
    if path.endswith(".gz"):  # a rotated, compressed log: read through gzip
        return CatchUpSource(path, max_line_bytes=max_line_bytes)
    return FileSource(path, from_start=True, max_line_bytes=max_line_bytes)


def read_file_events(path: str, fmt: str, max_line_bytes: int, classifier: Classifier,
                     on_event: EventSink, on_read: Callable[[int], None] | None = None) -> None:
    """Read a file from its start ("-": standard input to its end) through a one-source
    ``Pipeline`` (source → parser → classification), handing every delivery event to
    ``on_event(line number, event, verdict)`` and the offset reached to ``on_read(offset)``.

    Raises OSError, before anything is read, when the file cannot be read. Lines not understood
    are logged and skipped; a file none of whose lines gives an event says so."""
    data = threading.Event()
    source = _one_shot_source(path, max_line_bytes, data.set)
    pipeline = Pipeline(classifier, MetricState())
    reference = None if isinstance(source, StdinSource) else _reference_time(path)
    feed = pipeline.add(source, make_parser(fmt, reference), on_event=on_event, on_read=on_read)
    pipeline.begin_feed(feed)
    if isinstance(source, CatchUpSource) and source.read_errors:
        raise OSError(f"{path}: not a readable gzip file")
    if isinstance(source, StdinSource):
        while not source.eof:
            data.wait(1.0)
            data.clear()
            pipeline.pump()
    pipeline.pump()  # all of a file; what standard input held when it ended
    pipeline.drain()
    pipeline.tell_nothing_understood(feed, at_end=True)
    if source.lines_too_long:
        log.warning("%s: %d lines over %d bytes skipped", path, source.lines_too_long,
                    max_line_bytes)


def iter_file_events(path: str, fmt: str, max_line_bytes: int
                     ) -> Iterator[tuple[int, DeliveryEvent]]:
    """(line number, event) for every delivery event of a file read from its start (the
    ``parse`` command's read, see ``read_file_events``)."""
    found: list[tuple[int, DeliveryEvent]] = []
    read_file_events(path, fmt, max_line_bytes, Classifier.load(),
                     lambda number, event, _verdict: found.append((number, event)))
    yield from found


def event_record(path: str, lineno: int, event: DeliveryEvent, verdict: Classification) -> dict:
    return {
        "file": path, "line": lineno,
        "time": datetime.fromtimestamp(event.time).astimezone().isoformat(),
        "mta": event.mta, "queue_id": event.queue_id, "recipient": event.recipient,
        "domain": event.domain, "status": event.status, "code": event.code,
        "enhanced": event.enhanced, "kind": verdict.kind, "category": verdict.category,
        "relay": event.relay,
        "provider": packaged_catalog().providers.of(event.relay, event.text, event.domain),
        "text": event.text,
    }


def parse_files(paths: list[str], config: Config, out: TextIO, err: TextIO) -> int:
    """Print every delivery event of ``paths`` as JSON Lines; 1 if a file could not be read.
    With ``err`` a terminal, a progress line on it (``Progress``). A closed ``out`` (``| head``)
    raises BrokenPipeError to the caller."""
    classifier = Classifier.load(extra_text_rules=config.text_rules)
    fmt = config.log_format or DEFAULT_FORMAT
    progress = Progress(err, paths) if _is_terminal(err) else None
    status = 0
    for path in paths:
        def printed(lineno: int, event: DeliveryEvent, verdict: Classification,
                    path: str = path) -> None:
            record = event_record(path, lineno, event, verdict)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")

        try:
            read_file_events(path, fmt, config.max_line_bytes, classifier, printed,
                             progress.at if progress is not None else None)
        except BrokenPipeError:
            raise
        except OSError as error:
            reason = f"{path}: {error.strerror}" if error.strerror else str(error)
            if progress is not None:
                progress.clear()
            err.write(f"bounce-exporter parse: cannot read {reason}\n")
            status = 1
        if progress is not None:
            progress.file_done(path)
    if progress is not None:
        progress.finish()
    return status


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """The progress line of a long one-shot read, redrawn on a terminal at most every
    ``INTERVAL`` seconds, the first time after ``INTERVAL`` (a short read shows none): bytes done
    of the total of the files (a .gz counts when done), the rate, and the file being read."""

    INTERVAL = 0.5

    def __init__(self, err: TextIO, paths: list[str], clock: Callable[[], float] = time.monotonic):
        self.err, self.paths, self.clock = err, paths, clock
        self.sizes = [_size(path) for path in paths]
        self.total = sum(self.sizes)
        self.index = 0  # of the file being read
        self.finished = 0  # bytes of the files read
        self.offset = 0  # in the file being read
        self.started = clock()
        self.due = self.started + self.INTERVAL
        self.shown = False

    def at(self, offset: int) -> None:
        if self.paths[self.index].endswith(".gz"):
            return  # an uncompressed offset: no part of the compressed total
        self.offset = offset
        if self.clock() >= self.due:
            self.draw()

    def file_done(self, path: str) -> None:
        self.finished += self.sizes[self.index]
        self.offset = 0
        self.index = min(self.index + 1, len(self.paths) - 1)
        if self.clock() >= self.due:
            self.draw()

    def draw(self) -> None:
        done = self.finished + self.offset
        elapsed = max(self.clock() - self.started, 1e-6)
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        files = f", file {self.index + 1} of {len(self.paths)}" if len(self.paths) > 1 else ""
        self.err.write(f"\rparse: {_megabytes(done)} of {_megabytes(self.total)}{share}, "
                       f"{_megabytes(done / elapsed)}/s{files}\x1b[K")
        self.err.flush()
        self.shown = True
        self.due = self.clock() + self.INTERVAL

    def clear(self) -> None:
        """Before another message on the terminal: the progress line's place, emptied."""
        if self.shown:
            self.err.write("\r\x1b[K")

    def finish(self) -> None:
        """The last state of the line, kept on the terminal, if it was shown at all."""
        if self.shown:
            self.draw()
            self.err.write("\n")
            self.err.flush()


def _size(path: str) -> int:
    try:
        return 0 if is_stdin(path) else os.path.getsize(path)
    except OSError:
        return 0


def _megabytes(count: float) -> str:
    return f"{count / 1e6:.1f} MB"
