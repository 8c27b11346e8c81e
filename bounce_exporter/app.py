"""Wiring: build the stages from the config, consumer first, and run them."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TextIO

from prometheus_client import CollectorRegistry, ProcessCollector

from bounce_exporter.classify import Classifier
from bounce_exporter.config import Config, expand_sources
from bounce_exporter.deferrals import DeferralTracker
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.metrics import DomainLabels, MetricsCollector, MetricState, deferral_families
from bounce_exporter.parsers import LineNotUnderstood, make_parser
from bounce_exporter.persistence import StateKeeper
from bounce_exporter.pipeline import Pipeline
from bounce_exporter.source import FileSource
from bounce_exporter.wakeup import Wakeup
from bounce_exporter.web import start_server

log = logging.getLogger(__name__)


def _reference_time(path: str) -> float | None:
    """Stamps without a year are placed no later than the file's last change."""
    try:
        return os.path.getmtime(path)
    except OSError:
        return None


class Exporter:
    """The running exporter: pipeline, metric state, HTTP server and read loop."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None):
        self.config = config
        self.classifier = Classifier.load(extra_text_rules=config.text_rules)
        self.state = MetricState(DomainLabels(config.max_domains, config.domain_allowlist))
        self.tracker = DeferralTracker(config.deferral_rules)
        self.keeper = StateKeeper(config.state_file, self.tracker, self.state)
        self.pipeline = Pipeline(self.classifier, self.state, observers=[self.tracker.observe])
        for source in expand_sources(config.sources):
            self.pipeline.add(
                FileSource(source.path, from_start=config.from_start,
                           max_line_bytes=config.max_line_bytes),
                make_parser(source.format, _reference_time(source.path)),
            )
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
        self.registry = registry
        self.registry.register(MetricsCollector(
            self.state, extra=[lambda: deferral_families(self.tracker, self.state.lock)]))
        self.stopping = threading.Event()
        self.server = None
        self.wakeup = Wakeup([feed.source.path for feed in self.pipeline.feeds])

    def start(self) -> tuple[str, int]:
        """Restore the state and start serving; return the bound (host, port)."""
        self.keeper.load()
        self.server = start_server(self.config.listen_address, self.registry,
                                   telemetry_path=self.config.telemetry_path,
                                   json_routes={"/api/v1/deferrals": self.deferrals_view})
        host, port = self.server.server_address[:2]
        log.info("listening on %s:%s, following %s", host, port,
                 ", ".join(feed.source.path for feed in self.pipeline.feeds))
        return host, port

    def run(self) -> int:
        """Serve and read until stopped (SIGTERM, SIGINT); then flush, save and exit 0."""
        self.start()
        try:
            while not self.stopping.is_set():
                self.step()
                self.wakeup.wait(self.config.poll_interval)
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Count what is left (partial last lines), save the state, stop serving. Idempotent."""
        if self.server is None:
            return
        self.pipeline.pump()
        self.pipeline.drain()
        self.keeper.save()
        self.wakeup.stop()
        self.server.shutdown()
        self.server.server_close()
        self.server = None
        log.info("stopped")

    def step(self) -> int:
        """One turn of the read loop: read every source, age the tracker, save state if due."""
        lines = self.pipeline.pump()
        with self.state.lock:
            self.tracker.advance(time.time())
        self.keeper.maybe_save()
        return lines

    def deferrals_view(self) -> list[dict]:
        with self.state.lock:
            return self.tracker.api_view()

    def stop(self, *_: object) -> None:
        self.stopping.set()
        self.wakeup.wake()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)


# -- parse: one JSON object per delivery event ---------------------------------------------------

PARSE_KEYS = ("file", "line", "time", "mta", "queue_id", "recipient", "domain", "status", "code",
              "enhanced", "kind", "category", "text")


def iter_file_events(path: str, fmt: str, max_line_bytes: int
                     ) -> Iterator[tuple[int, DeliveryEvent]]:
    """(line number, event) for every delivery event of a file read from its start.

    Raises OSError when the file cannot be read. Lines not understood are logged and skipped."""
    if not os.path.isfile(path):
        raise OSError(f"{path}: {'not a regular file' if os.path.exists(path) else 'no such file'}")
    with open(path, "rb"):  # raises PermissionError before anything is printed
        pass
    source = FileSource(path, from_start=True, max_line_bytes=max_line_bytes)
    parser = make_parser(fmt, _reference_time(path))
    lineno = 0
    for batch in _chain(source.read_batches(), source):
        for raw in batch:
            lineno += 1
            try:
                events = parser.parse(raw)
            except LineNotUnderstood as err:
                log.warning("%s:%d: line not understood (%s)", path, lineno, err.reason)
                continue
            for event in events:
                yield lineno, event
    if source.lines_too_long:
        log.warning("%s: %d lines over %d bytes skipped", path, source.lines_too_long,
                    max_line_bytes)


def _chain(batches: Iterator[list[bytes]], source: FileSource) -> Iterator[list[bytes]]:
    yield from batches
    rest = source.close()
    if rest:
        yield rest


def event_record(path: str, lineno: int, event: DeliveryEvent, classifier: Classifier) -> dict:
    verdict = classifier.classify(event.status, event.code, event.enhanced, event.text)
    return {
        "file": path, "line": lineno,
        "time": datetime.fromtimestamp(event.time).astimezone().isoformat(),
        "mta": event.mta, "queue_id": event.queue_id, "recipient": event.recipient,
        "domain": event.domain, "status": event.status, "code": event.code,
        "enhanced": event.enhanced, "kind": verdict.kind, "category": verdict.category,
        "text": event.text,
    }


def parse_files(paths: list[str], config: Config, out: TextIO, err: TextIO) -> int:
    """Print every delivery event of ``paths`` as JSON Lines; 1 if a file could not be read."""
    classifier = Classifier.load(extra_text_rules=config.text_rules)
    fmt = config.sources[0].format if config.sources else "postfix"
    status = 0
    for path in paths:
        try:
            for lineno, event in iter_file_events(path, fmt, config.max_line_bytes):
                record = event_record(path, lineno, event, classifier)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as error:
            reason = f"{path}: {error.strerror}" if error.strerror else str(error)
            err.write(f"bounce-exporter parse: cannot read {reason}\n")
            status = 1
    return status
