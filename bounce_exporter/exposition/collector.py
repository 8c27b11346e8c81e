"""The exposition of the counters and the deferral tracker: metric families built from a snapshot.

Stateless, client_python's custom-collector style: ``snapshot_families(snapshot)`` turns one
``state.store.Snapshot`` into fresh families, so state that must be able to vanish (a cleared
persistent deferral) does. A scrape over HTTP takes the snapshot first (the keeper saves it) and
encodes ``Exposition(snapshot, ...)``; ``MetricsCollector`` takes a fresh snapshot at each
``collect()`` for readers in the process (a registry, tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bounce_exporter import __version__
from bounce_exporter.parsers.accel import accelerated
from bounce_exporter.state.counters import (
    CounterSnapshot,
    MetricState,
    ProviderSnapshot,
    SourceStats,
)
from bounce_exporter.state.deferrals import DeferralTracker
from bounce_exporter.state.queue import QueueTotals
from bounce_exporter.state.store import DeferralView, Snapshot, Store
from bounce_exporter.state.waiting import WaitingTotals


class MetricsCollector(Collector):
    """The families of a fresh snapshot at each ``collect()``: of a ``Store`` (counters and
    deferrals) or of a bare ``MetricState`` (counters only)."""

    def __init__(self, state: MetricState | Store):
        self.source = state

    def collect(self) -> Iterator[Metric]:
        source = self.source
        if isinstance(source, Store):
            yield from snapshot_families(source.snapshot())
            return
        with source.lock:
            counters = source.snapshot()
        yield from counter_families(counters)


class Exposition(Collector):
    """What one scrape encodes (anything with ``collect()`` will do for client_python's encoders):
    the families of other collectors (the process's), then those of a snapshot already taken."""

    def __init__(self, snapshot: Snapshot, others: Iterable[Collector] = ()):
        self.snapshot = snapshot
        self.others = list(others)

    def collect(self) -> Iterator[Metric]:
        for other in self.others:
            yield from other.collect()
        yield from snapshot_families(self.snapshot)


Registry = CollectorRegistry  # what the app may hand over: client_python's registry


class ScrapeCollector(Collector):
    """The exporter's families in a registry: each ``collect()`` is a scrape (``take`` takes a
    snapshot, saved by the keeper, then exposed)."""

    def __init__(self, take: Callable[[], Snapshot]):
        self.take = take

    def collect(self) -> Iterator[Metric]:
        return snapshot_families(self.take())


def exporter_registry(take: Callable[[], Snapshot], registry: CollectorRegistry | None = None,
                      ) -> tuple[CollectorRegistry, list[Collector]]:
    """The registry /metrics is read from (a given one, with its own collectors, or a new one
    with the process's metrics), the exporter's scrape registered in it; and the collectors to
    serve before a snapshot's families when the server encodes the snapshot itself."""
    others: list[Collector] = []
    if registry is None:
        registry = CollectorRegistry()
        others.append(ProcessCollector(registry=registry))
    registry.register(ScrapeCollector(take))
    return registry, others


def snapshot_families(snapshot: Snapshot) -> Iterator[Metric]:
    yield from counter_families(snapshot.counters)
    yield from deferral_view_families(snapshot.deferrals)
    yield from waiting_families(snapshot.waiting)
    yield from queue_families(snapshot.queue)


def waiting_families(waiting: WaitingTotals) -> Iterator[Metric]:
    yield _gauge("bounce_waiting_recipients", "Recipients whose latest outcome is a deferral, not "
                 "yet delivered, bounced, expired or removed (the parser's ledger), per recipient "
                 "domain and category of the latest reply.", ["domain", "category"],
                 waiting.recipients)
    yield _gauge("bounce_waiting_oldest_timestamp_seconds", "First deferral (log time) of the "
                 "recipient waiting longest, per recipient domain.", ["domain"], waiting.oldest)


def queue_families(queue: QueueTotals) -> Iterator[Metric]:
    """The Postfix queue view (postqueue -j); nothing while it is off (no Postfix here)."""
    if queue.up is None:
        return
    yield _gauge("bounce_queue_recipients", "Recipients in the Postfix queue (postqueue -j, "
                 "cached for queue.interval), per queue, recipient domain and category of the "
                 "recipient's delay reason.", ["queue", "domain", "category"], queue.recipients)
    yield _gauge("bounce_queue_oldest_timestamp_seconds", "Arrival time of the oldest message "
                 "in the Postfix queue, per queue and recipient domain.", ["queue", "domain"],
                 queue.oldest)
    yield _gauge("bounce_exporter_queue_up", "1 if the last run of the queue command "
                 "(queue.command) succeeded, 0 if it failed (exit status, timeout, bad output).",
                 [], {(): 1 if queue.up else 0})


def counter_families(counters: CounterSnapshot) -> Iterator[Metric]:
    yield _counter("bounce_delivery_attempts", "Delivery attempts logged (sent, deferred or "
                   "bounced), per recipient domain.", ["domain"], counters.attempts)
    yield _counter("bounce_deliveries", "Successful deliveries, per recipient domain.",
                   ["domain"], counters.deliveries)
    yield _counter("bounce_failures", "Failed delivery attempts per reply: kind soft (deferred) "
                   "or hard (bounced), basic and enhanced code, and reason category.",
                   ["domain", "kind", "code", "enhanced", "category"], counters.failures)
    yield _counter("bounce_expired", "Messages given up after the queue lifetime, per "
                   "recipient domain.", ["domain"], counters.expired)
    yield _counter("bounce_deferrals_without_attempt", "Deferrals the MTA decided without "
                   "contacting a server (retry time not reached, destination marked down), per "
                   "recipient domain and reason: no delivery attempts.", ["domain", "reason"],
                   counters.without_attempt)
    yield from provider_families(counters.providers)
    yield from _source_families(counters.sources)
    yield _gauge("bounce_exporter_domains", "Distinct recipient domains with their own label "
                 "value (the cap is limits.max_domains, allow-listed domains besides).",
                 [], {(): counters.labelled})
    yield _counter("bounce_exporter_domain_overflow_events",
                   "Events counted under domain=\"other\" because the domain cap was reached.",
                   [], {(): counters.overflowed})
    yield _gauge("bounce_exporter_failure_series", "Series of bounce_failures_total (the cap on "
                 "those with their own labels is limits.max_series).", [],
                 {(): len(counters.failures)})
    yield _counter("bounce_exporter_failure_series_overflow_events", "Failed attempts counted in "
                   "an overflow series of bounce_failures_total (domain=\"other\", codes folded "
                   "to their class) because limits.max_series was reached.", [],
                   {(): counters.series_overflowed})
    yield _counter("bounce_exporter_state_write_errors", "Failed writes of the state file "
                   "(retried at the next save).", [], {(): counters.state_write_errors})
    info = GaugeMetricFamily("bounce_exporter_build_info", "Version of bounce-exporter, and "
                             "whether the Postfix parser runs its compiled block scan.",
                             labels=["version", "accelerated"])
    info.add_metric([__version__, "true" if accelerated() else "false"], 1)
    yield info


def provider_families(providers: ProviderSnapshot) -> Iterator[Metric]:
    """Per provider (config/catalog.yaml providers, by relay host), every domain counted."""
    yield _counter("bounce_provider_delivery_attempts", "Delivery attempts logged (sent, deferred "
                   "or bounced), per provider that answered (by relay host; \"other\": none of "
                   "the catalog's), whatever the recipient domain's label.", ["provider"],
                   providers.attempts)
    yield _counter("bounce_provider_failures", "Failed delivery attempts per provider that "
                   "answered and reply: kind, basic and enhanced code, reason category.",
                   ["provider", "kind", "code", "enhanced", "category"], providers.failures)


def _source_families(sources: dict[str, SourceStats]) -> Iterator[Metric]:
    def per_source(field: str) -> dict:
        return {(name,): getattr(stats, field) for name, stats in sources.items()}

    def per_reason(field: str) -> dict:
        return {(name, reason): count for name, stats in sources.items()
                for reason, count in getattr(stats, field).items()}

    read, errors, up = per_source("lines_read"), per_source("read_errors"), per_source("up")
    truncations, rotations = per_source("truncations"), per_source("rotations")
    bad, not_attempts = per_reason("not_understood"), per_reason("not_attempts")
    last = {key: value for key, value in per_source("last_line_time").items() if value}
    evicted = {key: value for key, value in per_source("pending_evicted").items()
               if value is not None}  # sources whose parser has no pending_evictions: none
    yield _counter("bounce_exporter_lines_read", "Log lines read, per source.", ["source"], read)
    yield _counter("bounce_exporter_lines_not_understood", "Log lines skipped, per source and "
                   "reason: a line that looked like a delivery but could not be read, or a line "
                   "over limits.max_line_bytes.", ["source", "reason"], bad)
    yield _counter("bounce_exporter_lines_not_attempts", "Log lines about deliveries that are not "
                   "attempts to reach a server, per source and reason (Exim's retry time not "
                   "reached, OpenSMTPD's session-less temporary failures, Sendmail's queued-only).",
                   ["source", "reason"], not_attempts)
    yield _counter("bounce_exporter_pending_messages_evicted", "Pending messages (deferred, not "
                   "yet delivered or expired) forgotten because the parser's memory was full, "
                   "and recipients of one message over 1,000 not remembered.",
                   ["source"], evicted)
    yield _counter("bounce_exporter_read_errors", "Errors reading a log source.", ["source"],
                   errors)
    yield _counter("bounce_exporter_truncations", "Times the log source was found truncated "
                   "(copytruncate): the rest was read from the copy, then the file from its start.",
                   ["source"], truncations)
    yield _counter("bounce_exporter_rotations", "Times the log source's path was found to name "
                   "another file (rename, delete and recreate, symlink swap).", ["source"],
                   rotations)
    yield _gauge("bounce_exporter_source_up", "1 while the log source is open and readable.",
                 ["source"], up)
    formats = {(name, stats.format or "unknown"): 1 for name, stats in sources.items()}
    yield _gauge("bounce_exporter_source_info", "1 per source, labelled with the log format read "
                 "(with auto: the format detected from its lines; unknown until one shows it).",
                 ["source", "format"], formats)
    yield _gauge("bounce_exporter_last_line_timestamp_seconds", "Wall-clock time at which the "
                 "last line was read from the source (or following began).", ["source"], last)


def deferral_families(tracker: DeferralTracker, lock: threading.Lock) -> Iterator[Metric]:
    """The persistent-deferral families of a tracker now (read under ``lock``)."""
    with lock:
        view = DeferralView(tracker.active(), tracker.tracking(), tracker.evicted)
    yield from deferral_view_families(view)


def deferral_view_families(view: DeferralView) -> Iterator[Metric]:
    """The persistent-deferral flags, built fresh so that a cleared flag disappears."""
    active = view.active
    labels = ["domain", "code"]
    flag = {(s.domain, s.code): 1 for s in active}
    since = {(s.domain, s.code): s.since for s in active}
    last = {(s.domain, s.code): s.last for s in active}
    attempts = {(s.domain, s.code): s.attempts for s in active}
    yield _gauge("bounce_persistent_deferral", "1 while the domain's server keeps deferring mail "
                 "with this reply code (a persistent_deferrals rule holds).", labels, flag)
    yield _gauge("bounce_persistent_deferral_since_timestamp_seconds", "Log time of the first "
                 "deferral of the streak.", labels, since)
    yield _gauge("bounce_persistent_deferral_last_timestamp_seconds", "Log time of the latest "
                 "deferral of the streak.", labels, last)
    yield _gauge("bounce_persistent_deferral_attempts", "Deferred attempts in the streak.", labels,
                 attempts)
    yield _gauge("bounce_exporter_deferral_streaks", "(domain, code) streaks being tracked, "
                 "persistent or not yet.", [], {(): view.tracking})
    yield _counter("bounce_exporter_deferral_streaks_evicted", "Streaks dropped because the "
                   "tracker was full.", [], {(): view.evicted})


def _labels(key) -> list[str]:
    return list(key) if isinstance(key, tuple) else [key]


def _counter(name: str, doc: str, labels: list[str], values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(_labels(key), value)
    return family


def _gauge(name: str, doc: str, labels: list[str], values: dict) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(_labels(key), value)
    return family
