"""Counter state: plain counters per label set, counted in dicts (cheap on the hot path).

``exposition.collector`` turns a snapshot of them into metric families at each scrape. Labels are
made here, bounded: the ``domain`` label by ``DomainLabels``, ``code`` and ``enhanced`` by
``CodeLabels`` (codes the catalog does not know are folded to their class), and the number of
``bounce_failures_total`` series by ``MetricState.max_series`` (new label sets beyond it are
counted in overflow series: no event is lost, the totals stay exact). The ``provider`` label
(``ProviderCounters``) is bounded by the catalog's provider table, and it counts every event,
whatever its domain label.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from bounce_exporter.classify.catalog import Catalog, packaged_catalog
from bounce_exporter.classify.classifier import Classification
from bounce_exporter.classify.providers import ProviderTable
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.state.grouped import grouped

log = logging.getLogger(__name__)

NO_VALUE = "none"  # label value for a reply without a code or enhanced code
UNKNOWN_DOMAIN = "unknown"  # label value for an event that names no recipient domain
OVERFLOW_DOMAIN = "other"  # label value for domains beyond the cap (and for series beyond theirs)
DEFAULT_MAX_SERIES = 10_000  # limits.max_series: bounce_failures_total series with their own labels


class DomainLabels:
    """Maps domains to label values: the first ``max_domains`` distinct domains (besides the
    allow-list, which always gets its own series) keep their name, later ones become "other"."""

    def __init__(self, max_domains: int = 500, allowlist: Iterable[str] = ()):
        self.max_domains = max_domains
        self.allowlist = frozenset(allowlist)
        self._labelled: set[str] = set(self.allowlist)
        self._capped = 0  # domains given their own label that are not allow-listed
        self.overflowed_events = 0

    def label(self, domain: str | None, events: int = 1) -> str:
        """The domain's label value, given it now if the cap allows; ``events`` past the cap are
        counted in ``overflowed_events``."""
        value = self._own(domain)
        if value is None:
            self.overflowed_events += events
            return OVERFLOW_DOMAIN
        return value

    def view_label(self, domain: str | None) -> str:
        """``label`` without counting an overflow event (the waiting view: a domain first seen
        in a ledger gets its label like any other)."""
        value = self._own(domain)
        return OVERFLOW_DOMAIN if value is None else value

    def _own(self, domain: str | None) -> str | None:
        """The domain's own label value (given now if the cap allows), or None past the cap."""
        if domain is None:
            return UNKNOWN_DOMAIN
        if domain in self._labelled:
            return domain
        if self._capped < self.max_domains:
            self._capped += 1
            self._labelled.add(domain)
            return domain
        return None

    @property
    def labelled(self) -> int:
        return len(self._labelled)


def code_class(code: str) -> str:
    """``499`` → ``4xx``: the class value of a basic code."""
    return f"{code[0]}xx"


def enhanced_class(enhanced: str) -> str:
    """``4.9.123`` → ``4.x.x``: the class value of an enhanced code."""
    return f"{enhanced[0]}.x.x"


class CodeLabels:
    """Label values of ``code`` and ``enhanced``: a code the catalog knows (``knows_code``,
    ``knows_enhanced``) keeps its value; any other is folded to its class (``499`` → ``4xx``,
    ``4.9.123`` → ``4.x.x``), so a remote server cannot make a series per made-up code. A reply
    without one: ``none``. Decisions are cached, the cache of enhanced codes (which a remote
    server chooses) emptied when it holds ``cache_size``."""

    def __init__(self, catalog: Catalog | None = None, cache_size: int = 4096):
        self.catalog = catalog or packaged_catalog()
        self.cache_size = cache_size
        self._codes: dict[str, str] = {}  # at most 400: a code is [2-5][0-9][0-9]
        self._enhanced: dict[str, str] = {}

    def code(self, code: str | None) -> str:
        if not code:
            return NO_VALUE
        label = self._codes.get(code)
        if label is None:
            label = self._codes[code] = code if self.catalog.knows_code(code) else code_class(code)
        return label

    def enhanced(self, enhanced: str | None) -> str:
        if not enhanced:
            return NO_VALUE
        label = self._enhanced.get(enhanced)
        if label is None:
            if len(self._enhanced) >= self.cache_size:
                self._enhanced.clear()
            label = enhanced if self.catalog.knows_enhanced(enhanced) else enhanced_class(enhanced)
            self._enhanced[enhanced] = label
        return label


class SourceStats:
    """Self-metrics of one log source."""

    __slots__ = (
        "format",
        "last_line_time",
        "lines_read",
        "not_attempts",
        "not_understood",
        "pending_evicted",
        "read_errors",
        "rotations",
        "truncations",
        "up",
    )

    def __init__(self) -> None:
        self.lines_read = 0
        self.not_understood: dict[str, int] = defaultdict(int)
        self.not_attempts: dict[str, int] = {}  # the parser's counters(): lines that are no attempt
        self.pending_evicted: int | None = None  # the parser's pending_evictions, if it has them
        self.last_line_time = 0.0
        self.up = 0
        self.read_errors = 0
        self.truncations = 0
        self.rotations = 0
        self.format = ""  # the log format read: the configured one, or what auto detected

    def copy(self) -> SourceStats:
        twin = SourceStats()
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(twin, name, dict(value) if isinstance(value, dict) else value)
        return twin


class ProviderCounters:
    """Attempts and failures per provider (classify.providers): who answered, by relay host. Not
    capped by domain: a customer's Workspace domain past the domain cap is still "google"."""

    def __init__(self, table: ProviderTable | None = None):
        self.table = table if table is not None else packaged_catalog().providers
        self.attempts: dict[str, int] = defaultdict(int)
        self.failures: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
        for name in self.table.names:  # the table is known in advance: series start at 0
            self.attempts[name] += 0

    def record(self, event: DeliveryEvent, classification: Classification,
               codes: CodeLabels, events: int = 1) -> None:
        """Count one attempt (sent, deferred, bounced; an expiry is no attempt), or ``events``
        alike, its codes folded as the domain series' are (``codes``): the provider label is
        bounded by the table, the codes by the catalog."""
        status = event.status
        if status == "expired" or event.without_attempt is not None:
            return
        provider = self.table.of(event.relay, event.text, event.domain)
        self.attempts[provider] += events
        if status != "sent":
            self.failures[(provider, classification.kind or NO_VALUE, codes.code(event.code),
                           codes.enhanced(event.enhanced), classification.category)] += events

    def snapshot(self) -> ProviderSnapshot:
        return ProviderSnapshot(dict(self.attempts), dict(self.failures))


@dataclass(frozen=True)
class ProviderSnapshot:
    attempts: dict[str, int]  # provider -> attempts
    failures: dict[tuple[str, str, str, str, str], int]  # (provider, kind, code, enhanced, category)


@dataclass(frozen=True)
class CounterSnapshot:
    """A copy of every counter of ``MetricState``, taken under its lock."""

    attempts: dict[str, int]
    deliveries: dict[str, int]
    expired: dict[str, int]
    failures: dict[tuple[str, str, str, str, str], int]
    sources: dict[str, SourceStats]
    labelled: int
    overflowed: int
    state_write_errors: int
    series_overflowed: int = 0  # failures counted in an overflow series (max_series reached)
    providers: ProviderSnapshot = ProviderSnapshot({}, {})
    without_attempt: dict[tuple[str, str], int] = field(default_factory=dict)  # (domain, reason)


class MetricState:
    """Every counter the exporter exposes about deliveries and its own reading."""

    def __init__(self, domains: DomainLabels | None = None, *,
                 max_series: int = DEFAULT_MAX_SERIES, codes: CodeLabels | None = None,
                 providers: ProviderCounters | None = None):
        self.lock = threading.Lock()
        self.domains = domains or DomainLabels()
        self.providers = providers if providers is not None else ProviderCounters()
        self.codes = codes or CodeLabels()
        self.max_series = max_series  # failure series with their own labels (limits.max_series)
        self.series_overflowed = 0  # failures counted in an overflow series instead
        self.attempts: dict[str, int] = defaultdict(int)
        self.deliveries: dict[str, int] = defaultdict(int)
        self.expired: dict[str, int] = defaultdict(int)
        self.failures: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
        # deferrals decided without contacting a server, per (domain, reason): no attempts
        self.without_attempt: dict[tuple[str, str], int] = defaultdict(int)
        self.sources: dict[str, SourceStats] = {}
        self.state_write_errors = 0
        for domain in sorted(self.domains.allowlist):  # series known in advance start at 0
            for counter in (self.attempts, self.deliveries, self.expired):
                counter[domain] += 0

    def record(self, event: DeliveryEvent, classification: Classification,
               events: int = 1) -> None:
        """Count one delivery event, or ``events`` alike (caller holds ``lock``)."""
        self.providers.record(event, classification, self.codes, events)
        domain = event.domain
        if domain not in self.domains._labelled:  # a domain with its own label is its label
            domain = self.domains.label(domain, events)
        status = event.status
        if status == "expired":
            self.expired[domain] += events
            return
        if event.without_attempt is not None:
            self.without_attempt[(domain, event.without_attempt)] += events
            return
        self.attempts[domain] += events
        if status == "sent":
            self.deliveries[domain] += events
            return
        codes = self.codes
        key = (domain, classification.kind or NO_VALUE, codes.code(event.code),
               codes.enhanced(event.enhanced), classification.category)
        failures = self.failures
        if key in failures or len(failures) < self.max_series:
            failures[key] += events
        else:
            self._overflow(key, events)

    def record_block(self, found: list[tuple[DeliveryEvent, Classification]]) -> None:
        """Count a block's events, in order (caller holds ``lock``): what ``record`` of each
        gives, counted once per group of events alike (``grouped``)."""
        record = self.record
        for event, classification, events in grouped(found, self.providers.table.decides):
            record(event, classification, events)

    def _overflow(self, key: tuple[str, str, str, str, str], events: int = 1) -> None:
        """A new failure label set beyond ``max_series``: counted in its overflow series, domain
        "other" and the codes' class values (a few per kind and category, whatever the cap)."""
        _, kind, code, enhanced, category = key
        overflow = (OVERFLOW_DOMAIN, kind, code if code == NO_VALUE else code_class(code),
                    enhanced if enhanced == NO_VALUE else enhanced_class(enhanced), category)
        self.failures[overflow] += events
        first = self.series_overflowed == 0
        # a key that is its own overflow series ("other" with class codes) is one from now on:
        # of ``events`` alike, only the first overflows
        self.series_overflowed += 1 if overflow == key else events
        if first:
            log.warning("more than %d bounce_failures_total series (limits.max_series): new label "
                        'sets are counted under domain="other" with their codes\' class values '
                        "(bounce_exporter_failure_series_overflow_events_total)", self.max_series)

    def snapshot(self) -> CounterSnapshot:
        """A copy of the counters (caller holds ``lock``)."""
        return CounterSnapshot(
            dict(self.attempts), dict(self.deliveries), dict(self.expired), dict(self.failures),
            {name: stats.copy() for name, stats in self.sources.items()},
            self.domains.labelled, self.domains.overflowed_events, self.state_write_errors,
            self.series_overflowed, self.providers.snapshot(), dict(self.without_attempt))

    def apply(self, max_domains: int, max_series: int | None = None) -> None:
        """A reloaded domain cap and series cap (caller holds ``lock``); domains labelled keep
        their label, series made keep counting."""
        self.domains.max_domains = max_domains
        if max_series is not None:
            self.max_series = max_series

    def source(self, name: str) -> SourceStats:
        stats = self.sources.get(name)
        if stats is None:
            stats = self.sources[name] = SourceStats()
            stats.last_line_time = time.time()  # a stall is measured from when following began
        return stats
