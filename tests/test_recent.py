"""The last hour's deferrals per domain (state.recent): the status page's "top deferring domains"."""

from __future__ import annotations

from bounce_exporter.classify.classifier import Classification
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.state.recent import OVERFLOW, RecentDeferrals, RecentDomain

SOFT = Classification("soft", "system_full")
T0 = 1_700_000_000.0


def deferral(domain: str, when: float, code: str | None = "431", text: str = "431 4.3.1 full",
             status: str = "deferred") -> DeliveryEvent:
    return DeliveryEvent(when, "postfix", "Q1", f"u@{domain}", domain, status, code,
                         "4.3.1" if code else None, text)


def test_deferrals_are_counted_per_domain_most_first_with_the_latest_reply():
    recent = RecentDeferrals()
    for i in range(3):
        recent.observe(deferral("disk-full.example", T0 + i, text=f"431 4.3.1 try {i}"), SOFT)
    recent.observe(deferral("busy.example", T0 + 5, code="421", text="421 busy"), SOFT)
    recent.observe(deferral("a.example", T0 + 6, code="421", text="421 busy"), SOFT)
    assert recent.top() == [
        RecentDomain("disk-full.example", 3, T0 + 2, "431", "4.3.1", "system_full",
                     "431 4.3.1 try 2"),
        RecentDomain("a.example", 1, T0 + 6, "421", "4.3.1", "system_full", "421 busy"),
        RecentDomain("busy.example", 1, T0 + 5, "421", "4.3.1", "system_full", "421 busy"),
    ]
    assert [entry.domain for entry in recent.top(1)] == ["disk-full.example"]


def test_only_deferrals_count():
    recent = RecentDeferrals()
    for status in ("sent", "bounced", "expired"):
        recent.observe(deferral("x.example", T0, status=status), SOFT)
    assert recent.top() == []


def test_an_out_of_order_deferral_counts_but_keeps_the_latest_reply():
    recent = RecentDeferrals()
    recent.observe(deferral("x.example", T0 + 10, text="later"), SOFT)
    recent.observe(deferral("x.example", T0 + 5, text="earlier"), SOFT)
    assert recent.top() == [RecentDomain("x.example", 2, T0 + 10, "431", "4.3.1", "system_full",
                                         "later")]


def test_what_is_older_than_the_hour_goes_by_the_wall_clock_or_later_events():
    recent = RecentDeferrals()
    start = 60.0 * 1_000_000  # the start of a minute
    recent.observe(deferral("old.example", start), SOFT)
    recent.observe(deferral("new.example", start + 1800), SOFT)
    recent.advance(start + 3600 + 59)  # old.example's minute is still within the window
    assert [e.domain for e in recent.top()] == ["new.example", "old.example"]
    recent.advance(start + 3600 + 60)  # its minute is now wholly before the window
    assert [(e.domain, e.deferrals) for e in recent.top()] == [("new.example", 1)]
    recent.observe(deferral("new.example", start + 1800 + 3600 + 120), SOFT)  # moves the clock
    assert [(e.domain, e.deferrals) for e in recent.top()] == [("new.example", 1)]
    assert recent.now == start + 1800 + 3600 + 120


def test_a_deferral_already_out_of_the_window_is_ignored_and_the_clock_never_goes_back():
    recent = RecentDeferrals()
    recent.advance(T0)
    recent.observe(deferral("replayed.example", T0 - 3601), SOFT)
    recent.advance(T0 - 100)
    assert (recent.top(), recent.now) == ([], T0)


def test_domains_beyond_the_cap_are_counted_as_other():
    recent = RecentDeferrals(max_domains=2)
    for i, domain in enumerate(["a.example", "b.example", "c.example", "d.example"]):
        recent.observe(deferral(domain, T0 + i), SOFT)
    assert [(e.domain, e.deferrals) for e in recent.top()] == [
        (OVERFLOW, 2), ("a.example", 1), ("b.example", 1)]
    assert recent.domains() == 3


def test_what_left_the_window_is_gone_whatever_the_order_of_deferrals():
    """Pruning by minute: after each deferral (in and out of time order, past the domain cap),
    every bucket is within the window, each domain's total is its buckets' sum, and the counts
    are those of the deferrals a brute-force count keeps."""
    import random

    rng = random.Random(5)
    recent = RecentDeferrals(max_domains=8)
    kept: list[float] = []  # the times of the deferrals counted and not yet out of the window
    for i in range(3000):
        when = T0 + i * 7 - rng.choice((0, 0, 0, 90, 1800, 3700))
        recent.observe(deferral(f"d{rng.randrange(12)}.example", when), SOFT)
        first = int((recent.now - recent.window) // 60)
        held = recent._domains
        if when >= recent.now - recent.window:
            kept.append(when)
        kept = [t for t in kept if int(t // 60) >= first]
        for entry in held.values():
            assert entry.buckets and min(entry.buckets) >= first
            assert entry.total == sum(entry.buckets.values())
        assert sum(e.total for e in held.values()) == len(kept)
    assert recent.domains() == 8 + 1 and OVERFLOW in held, "the cap bites: 8 and \"other\""
