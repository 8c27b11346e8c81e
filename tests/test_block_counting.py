"""Counting per block (``MetricState.record_block``, ``Store.observe_block``: what the exporter
does) against counting event by event (``record``, ``observe``: the oracle), on a generated log's
events with odd ones mixed in: every counter with its series in the same order, the domain cap and
the series cap biting, overflow counts, the deferral streaks (and the order they clear in), the
last hour's deferring domains."""

from __future__ import annotations

import random

import pytest

from bench.generate import generate
from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers.postfix import PostfixParser
from bounce_exporter.state.counters import DomainLabels, MetricState
from bounce_exporter.state.deferrals import DEFAULT_RULES, DeferralTracker
from bounce_exporter.state.store import Store

REFERENCE = 1_800_000_000.0


@pytest.fixture(scope="module")
def found() -> list:
    """The events of a generated log, classified, with odd events mixed in: no domain, relays
    that are IP addresses or none (the provider then read from the text), equal replies from
    other relays, events out of time order, a non-finite time."""
    data = generate(60_000, seed=11)[0].encode()
    events = PostfixParser(reference=REFERENCE).parse_block(data, lambda raw, error: None)
    rng = random.Random(11)
    for index in sorted(rng.sample(range(len(events)), 400), reverse=True):
        base = events[index]
        odd = DeliveryEvent(base.time - rng.choice((0, 5, 4000)), base.mta, base.queue_id,
                            base.recipient, rng.choice((base.domain, None, "gmail.com")),
                            rng.choice(("sent", "deferred", "bounced", "expired")), base.code,
                            base.enhanced, rng.choice((base.text, "421 4.7.0 try later - gsmtp")),
                            rng.choice((None, "192.0.2.7", "[2001:db8::1]", "mx.other.example")))
        events.insert(index, odd)
    for index in sorted(rng.sample(range(len(events)), 200), reverse=True):
        base = events[index]  # deferrals without attempt (issue 13): never attempts nor streaks
        events.insert(index, DeliveryEvent(
            base.time, base.mta, base.queue_id, base.recipient, base.domain, "deferred",
            base.code, base.enhanced, base.text, base.relay,
            rng.choice(("retry_time_not_reached", "destination_suspended"))))
    events.insert(len(events) // 2, DeliveryEvent(float("inf"), "postfix", "Q", "a@b.example",
                                                  "b.example", "sent", "250", "2.0.0", "ok"))
    classifier = Classifier.load()
    return [(e, classifier.classify(e.status, e.code, e.enhanced, e.text)) for e in events]


def counted(found: list, block_sizes: list[int] | None):
    """The state after counting ``found``: event by event (None), or in blocks of these sizes."""
    cleared: list = []
    state = MetricState(DomainLabels(max_domains=150, allowlist=["gmail.com"]), max_series=60)
    store = Store(state, DeferralTracker(DEFAULT_RULES, max_keys=50, on_clear=cleared.append))
    if block_sizes is None:
        for event, classification in found:
            state.record(event, classification)
            store.observe(event, classification)
    else:
        start = 0
        for size in block_sizes:
            state.record_block(found[start : start + size])
            store.observe_block(found[start : start + size])
            start += size
        assert start >= len(found)
    counters = state.snapshot()
    as_lists = [list(getattr(counters, name).items())
                for name in ("attempts", "deliveries", "expired", "failures", "without_attempt")]
    providers = [list(counters.providers.attempts.items()),
                 list(counters.providers.failures.items())]
    return (as_lists, providers, counters.labelled, counters.overflowed,
            counters.series_overflowed, store.tracker.to_state(), store.tracker.api_view(),
            store.tracker.evicted, cleared, store.recent.top(10_000), store.recent.now)


@pytest.mark.parametrize("seed", [1, 2])
def test_blocks_count_what_events_one_by_one_count(found, seed):
    rng = random.Random(seed)
    sizes = [rng.choice((1, 2, 17, 500, 3000)) for _ in range(len(found))]
    one_by_one = counted(found, None)
    assert counted(found, sizes) == one_by_one
    assert counted(found, [len(found)]) == one_by_one
    _, _, labelled, overflowed, series_overflowed, _, _, _, cleared = one_by_one[:9]
    assert labelled == 151 and overflowed > 0 and series_overflowed > 0, "both caps bite"
    assert len(cleared) >= 5, "streaks are cleared (by delivery, by timeout)"
    assert one_by_one[9], "domains deferred in the last hour"
    assert sum(count for _, count in one_by_one[0][4]) == 200, "deferrals without attempt"


def test_classify_all_is_classify_of_each(found):
    events = [event for event, _ in found]
    assert Classifier.load().classify_all(events) == found
    assert {c.kind for _, c in found} == {None, "soft", "hard"}


@pytest.mark.parametrize("code", [None, "499", "431"])
def test_events_alike_past_the_series_cap_count_as_one_by_one(code):
    """Past ``max_series``, a failure of a domain past the cap whose codes fold to their class is
    its own overflow series: the first such event overflows, the next ones find that series."""
    failures = [DeliveryEvent(REFERENCE, "postfix", "Q", f"u@{domain}", domain, "deferred", code,
                              None, "try later")
                for domain in ["first.example", *["late.example"] * 5]]  # late: past the cap
    classification = Classifier.load().classify("deferred", code, None, "try later")
    found = [(event, classification) for event in failures]

    def state() -> MetricState:
        return MetricState(DomainLabels(max_domains=1), max_series=1)

    one_by_one, per_block = state(), state()
    for event in failures:
        one_by_one.record(event, classification)
    per_block.record_block(found)
    assert per_block.snapshot() == one_by_one.snapshot()
    assert one_by_one.series_overflowed == (1 if code != "431" else 5)
