"""The one-shot commands' reads: ``parse`` (one JSON object per delivery event), ``report`` (a
summary of old logs) and ``backfill`` (Prometheus history from them). Each reads files from their
start through the same ``Pipeline`` as ``serve`` (source, parser, classification, counting), with a
progress line on a terminal; ``serve``'s wiring is ``app``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from bounce_exporter.classify.catalog import packaged_catalog
from bounce_exporter.classify.classifier import Classification, Classifier
from bounce_exporter.config import DEFAULT_FORMAT, Config, rotation_chains
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.exposition.backfill import Backfill
from bounce_exporter.exposition.collector import snapshot_families
from bounce_exporter.parsers import capabilities, make_parser
from bounce_exporter.parsers.ledger import LedgerView
from bounce_exporter.pipeline import Pipeline, read_through
from bounce_exporter.report.build import build_report
from bounce_exporter.report.progress import Progress, is_terminal
from bounce_exporter.report.render import render_json, render_text, write_csv
from bounce_exporter.report.tally import SteppedState, Tally
from bounce_exporter.sources.opening import reference_time
from bounce_exporter.sources.stdin import is_stdin
from bounce_exporter.state.counters import DomainLabels, MetricState
from bounce_exporter.state.deferrals import DeferralTracker
from bounce_exporter.state.store import Store

# -- parse: one JSON object per delivery event ---------------------------------------------------

EventSink = Callable[[int, DeliveryEvent, Classification], None]


def read_file_events(path: str, fmt: str, max_line_bytes: int, classifier: Classifier,
                     on_event: EventSink, on_read: Callable[[int], None] | None = None) -> None:
    """Read a file from its start ("-": standard input to its end) through a one-source
    ``Pipeline`` (source → parser → classification), handing every delivery event to
    ``on_event(line number, event, verdict)`` and the offset reached to ``on_read(offset)``.

    Raises OSError, before anything is read, when the file cannot be read. Lines not understood
    are logged and skipped; a file none of whose lines gives an event says so."""
    parser = make_parser(fmt, None if is_stdin(path) else reference_time(path))
    read_through(path, Pipeline(classifier, MetricState()), parser, max_line_bytes,
                 on_event=on_event, on_read=on_read)


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
        "text": event.text, "without_attempt": event.without_attempt,
    }


def parse_files(paths: list[str], config: Config, out: TextIO, err: TextIO) -> int:
    """Print every delivery event of ``paths`` as JSON Lines; 1 if a file could not be read.
    With ``err`` a terminal, a progress line on it (``Progress``). A closed ``out`` (``| head``)
    raises BrokenPipeError to the caller."""
    classifier = Classifier.load(extra_text_rules=config.text_rules)
    fmt = config.log_format or DEFAULT_FORMAT
    progress = Progress(err, paths) if is_terminal(err) else None
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


# -- report and backfill: old logs replayed through the exporter's own stages --------------------

@dataclass
class Replayed:
    """The exporter's stages after a replay of old logs: counters, tracker and ledgers in
    ``store``, what the report adds in ``tally``."""

    store: Store
    classifier: Classifier
    tally: Tally
    files: dict[str, str]  # file read -> its log format ("" when none showed)
    lines: int = 0
    status: int = 0  # 1 when a file could not be read


def replay_files(paths: list[str], config: Config, err: TextIO, *, label: str,
                 step: float | None = None,
                 on_step: Callable[[Store, float], None] | None = None) -> Replayed:
    """Read log files from their start through the exporter's stages (pipeline, counters,
    deferral tracker, ledgers), in log time only (no wall clock): each log's rotated files oldest
    first (``config.rotation_chains``) with one parser, as the exporter following the log across
    its rotations would. With ``step``: ``on_step(store, boundary)`` at every multiple of
    ``step`` seconds of log time, before the first event at or after it (``SteppedState``)."""
    classifier = Classifier.load(extra_text_rules=config.text_rules)
    domains = DomainLabels(config.max_domains, config.domain_allowlist)
    state = (MetricState(domains, max_series=config.max_series) if step is None else
             SteppedState(domains, max_series=config.max_series, step=step))
    state.lock = threading.RLock()  # type: ignore[assignment]  # one thread; see SteppedState
    tally = Tally(packaged_catalog().providers)
    ledgers: list[Callable[[], LedgerView]] = []
    store = Store(state, DeferralTracker(config.deferral_rules, on_clear=tally.cleared),
                  in_flight=lambda: [view() for view in ledgers],
                  category=lambda e: classifier.classify(e.status, e.code, e.enhanced,
                                                         e.text).category)
    if isinstance(state, SteppedState) and on_step is not None:
        state.on_step = lambda boundary: on_step(store, boundary)
    replayed = Replayed(store, classifier, tally, {})
    progress = Progress(err, paths, label=label) if is_terminal(err) else None
    for chain in rotation_chains(paths):
        parser = make_parser(config.log_format or DEFAULT_FORMAT,
                             None if is_stdin(chain[-1]) else reference_time(chain[-1]))
        caps = capabilities(parser)
        if caps.in_flight is not None:
            ledgers.append(caps.in_flight)
        for path in chain:
            try:
                feed = read_through(path, Pipeline(classifier, state, [store.observe,
                                                                       tally.observe]),
                                    parser, config.max_line_bytes,
                                    on_read=progress.at if progress is not None else None)
                replayed.files[path] = caps.detected() or ""
                replayed.lines += feed.lines
            except OSError as error:
                if progress is not None:
                    progress.clear()
                reason = f"{path}: {error.strerror}" if error.strerror else str(error)
                err.write(f"bounce-exporter {label}: cannot read {reason}\n")
                replayed.status = 1
            if progress is not None:
                progress.file_done(path)
    if progress is not None:
        progress.finish()
    if isinstance(state, SteppedState):
        state.finish()
    return replayed


def report_files(paths: list[str], config: Config, fmt: str, out: TextIO, err: TextIO) -> int:
    """The ``report`` command: the logs replayed, reported as ``fmt`` (text, json, csv)."""
    replayed = replay_files(paths, config, err, label="report")
    report = build_report(replayed.store, replayed.tally, replayed.classifier,
                          config.deferral_rules, replayed.files, replayed.lines)
    if fmt == "json":
        out.write(render_json(report))
    elif fmt == "csv":
        write_csv(report, out)
    else:
        out.write(render_text(report))
    return replayed.status


def backfill_files(paths: list[str], config: Config, step: float, out: TextIO,
                   err: TextIO, labels: dict[str, str] | None = None) -> int:
    """The ``backfill`` command: what a scrape at every ``step`` of log time would have exposed,
    as OpenMetrics text (``exposition.backfill``), ``labels`` added to every series."""
    backfill = Backfill(labels)

    def scrape(store: Store, boundary: float) -> None:
        store.advance(boundary)  # as the wall clock does the live tracker's timeouts
        backfill.add(boundary, snapshot_families(store.snapshot()))

    replayed = replay_files(paths, config, err, label="backfill", step=step, on_step=scrape)
    backfill.write(out)
    return replayed.status
