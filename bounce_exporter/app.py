"""Wiring: build the stages from the config, consumer first, and run them."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.config import (
    Config,
    SourceConfig,
    expand_sources,
)
from bounce_exporter.errors import ConfigError
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.exposition.collector import (
    Exposition,
    Registry,
    exporter_registry,
)
from bounce_exporter.exposition.http import start_server
from bounce_exporter.exposition.status_page import render_status_page
from bounce_exporter.parsers import accel, make_parser
from bounce_exporter.persistence.keeper import StateKeeper
from bounce_exporter.pipeline import Feed, Pipeline
from bounce_exporter.report.backlog import catch_up_progress
from bounce_exporter.sources import Source
from bounce_exporter.sources.catchup import CatchUpSource
from bounce_exporter.sources.files import FileSource
from bounce_exporter.sources.journal import JournalCursor, JournalSource
from bounce_exporter.sources.lines import use_line_counter
from bounce_exporter.sources.opening import reference_time
from bounce_exporter.sources.position import Position
from bounce_exporter.sources.postqueue import QueueReader
from bounce_exporter.sources.stdin import StdinSource, is_stdin
from bounce_exporter.sources.wakeup import Wakeup
from bounce_exporter.state.counters import DomainLabels, MetricState
from bounce_exporter.state.deferrals import DeferralTracker
from bounce_exporter.state.store import Snapshot, Store

log = logging.getLogger(__name__)

RESTART_ONLY = ("listen_address", "telemetry_path", "state_file", "domain_allowlist",
                "web_config_file", "max_pending_messages")


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
        self.queue = QueueReader(config.queue_command, config.queue_interval)  # run at scrapes
        self.store = Store(self.state, DeferralTracker(config.deferral_rules),
                           positions=lambda: self.pipeline.positions(),
                           parsers=lambda: self.pipeline.parser_states(),
                           in_flight=lambda: self.pipeline.in_flight(),
                           category=self._category, provider=self._provider,
                           queue=self.queue.reading)
        self.pipeline = Pipeline(self.classifier, self.state,
                                 block_observers=[self.store.observe_block])
        self.keeper = StateKeeper(config.state_file, self.store)
        use_line_counter(accel.line_counter())  # the C extension's, with the compiled scan
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

    def _provider(self, event: DeliveryEvent) -> str:
        """Who answered an event: the provider table's label (the status page names it)."""
        return self.classifier.catalog.providers.of(event.relay, event.text, event.domain)

    @property
    def tracker(self) -> DeferralTracker:
        return self.store.tracker

    def scrape(self) -> Exposition:
        """What /metrics encodes: the process's own metrics, then the families of a snapshot
        saved first (``take_scrape``)."""
        return Exposition(self.take_scrape(), self._others)

    def take_scrape(self) -> Snapshot:
        """A scrape's snapshot, recorded and written by the keeper before anything of it is
        exposed (see persistence.keeper); the queue command first, outside every lock."""
        self.queue.refresh()
        return self.keeper.scrape()

    def _watched(self) -> list[str]:
        """Files to watch; journal and stdin sources wake the loop themselves."""
        return [feed.source.path for feed in self.pipeline.feeds if feed.source.path]

    def _wake(self) -> None:
        self.wakeup.wake()  # the current Wakeup (replaced at reload)

    def _add_source(self, source: SourceConfig) -> Feed:
        path, limit = source.path, self.config.max_line_bytes
        pending = self.config.max_pending_messages  # the ledger's cap (at a restart only)
        reader: Source
        if source.journal is not None:
            j = source.journal
            reader = JournalSource(j.units, j.identifier, namespace=j.namespace,
                                   directory=j.directory, from_start=self.config.from_start,
                                   max_line_bytes=limit, on_data=self._wake)
            return self.pipeline.add(reader, make_parser(source.format, None, max_pending=pending))
        if is_stdin(path):
            reader = StdinSource(name=path, max_line_bytes=limit, on_data=self._wake)
            return self.pipeline.add(reader, make_parser(source.format, None, max_pending=pending))
        if source.catch_up_of is not None:
            reader = CatchUpSource(path, max_line_bytes=limit, live_path=source.catch_up_of or None)
            return self.pipeline.add(reader, make_parser(source.format, reference_time(path),
                                                         max_pending=pending))
        return self.pipeline.add(
            FileSource(path, from_start=self.config.from_start, max_line_bytes=limit),
            make_parser(source.format, reference_time(path), max_pending=pending),
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
        # which Postfix block scan runs; pure Python is a supported way to run (the warning of a
        # build without a compiler is the installer's), so an info line, not a warning
        log.info("%s", accel.describe())
        positions = self._saved_positions()
        self.pipeline.begin(positions, self.keeper.parser_states)
        self._tell_resumed(positions)
        with self.state.lock:
            self.keeper.take()  # the starting point, written at once: nothing is counted yet
        self.keeper.write()  # (a first start that ends before its first scrape resumes there)
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
        caught_up = catch_up_progress(self.pipeline.feeds)  # on a terminal: report.backlog
        try:
            while not self.stopping.is_set():
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
                self.step()
                caught_up()
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
        lines = self.pipeline.pump(until=self.stopping.is_set)  # a stop ends a long catch-up
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
        self.queue.apply(config.queue_command, config.queue_interval)
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
           config.domain_allowlist, config.web_config_file, config.max_pending_messages)
    running = (old.listen_address, old.telemetry_path, old.state_file, old.domain_allowlist,
               old.web_config_file, old.max_pending_messages)
    for key, now, before in zip(RESTART_ONLY, new, running):
        if now != before:
            log.warning("reload: %s changed; it takes effect at the next restart", key)
    (config.listen_address, config.telemetry_path, config.state_file, config.domain_allowlist,
     config.web_config_file, config.max_pending_messages) = running
    return config
