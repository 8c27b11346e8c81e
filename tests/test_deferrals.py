"""The persistent-deferral tracker: when a streak becomes persistent, what clears it, its bounds,
rule validation and the saved state."""

from __future__ import annotations

import json
import logging

import pytest

from bounce_exporter.classify.classifier import Classification
from bounce_exporter.errors import ConfigError
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.state.deferrals import (
    DEFAULT_RULES,
    DeferralRule,
    DeferralTracker,
    Streak,
    parse_rules,
)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
MIN = 60.0
SOFT = Classification(kind="soft", category="mailbox_full")
DISK = Classification(kind="soft", category="system_storage")
SENT = Classification(kind=None, category="delivered")
HARD = Classification(kind="hard", category="no_such_user")
TEXT_431 = "host mx.full.example[192.0.2.1] said: 431 4.3.1 Insufficient system storage"


def event(
    time: float,
    status: str = "deferred",
    domain: str | None = "full.example",
    code: str | None = "431",
    enhanced: str | None = "4.3.1",
    text: str = TEXT_431,
) -> DeliveryEvent:
    return DeliveryEvent(
        time=time,
        mta="postfix",
        queue_id="4F9D21C0A2",
        recipient=f"user@{domain}" if domain else None,
        domain=domain,
        status=status,
        code=code,
        enhanced=enhanced,
        text=text,
    )


def sent(time: float, domain: str = "full.example") -> DeliveryEvent:
    return event(time, "sent", domain, "250", "2.0.0", "250 2.0.0 Ok: queued as 1234")


def default_tracker(**kwargs) -> DeferralTracker:
    return DeferralTracker(parse_rules(None), **kwargs)


def defer_every(tracker: DeferralTracker, times: list[float], **kwargs) -> None:
    for t in times:
        tracker.observe(event(t, **kwargs), DISK)


# -- when a streak becomes persistent ------------------------------------------------------------


def test_persistent_exactly_at_third_attempt_when_span_reaches_min_duration():
    tracker = default_tracker()
    tracker.observe(event(T0), DISK)
    tracker.observe(event(T0 + 15 * MIN), DISK)
    assert tracker.active() == []
    assert tracker.tracking() == 1
    tracker.observe(event(T0 + 30 * MIN), DISK)
    assert tracker.active() == [
        Streak(
            domain="full.example",
            code="431",
            rule="disk-full",
            since=T0,
            last=T0 + 30 * MIN,
            attempts=3,
            last_text=TEXT_431,
            persistent=True,
        )
    ]


def test_not_persistent_while_span_is_below_min_duration_even_with_many_attempts():
    tracker = default_tracker()
    defer_every(tracker, [T0 + i * MIN for i in range(30)])  # 30 attempts over 29 minutes
    assert tracker.active() == []
    tracker.observe(event(T0 + 30 * MIN - 0.001), DISK)
    assert tracker.active() == []
    tracker.observe(event(T0 + 30 * MIN), DISK)
    [flag] = tracker.active()
    assert (flag.since, flag.last, flag.attempts) == (T0, T0 + 30 * MIN, 32)


def test_not_persistent_with_two_attempts_over_a_long_span():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 90 * MIN])
    assert tracker.active() == []


def test_enhanced_alone_matches_the_default_rule_and_no_code_is_labelled_none():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], code=None)
    [flag] = tracker.active()
    assert (flag.code, flag.rule, flag.attempts) == ("none", "disk-full", 3)


def test_code_alone_matches_the_default_rule():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], enhanced=None)
    assert [f.code for f in tracker.active()] == ["431"]


def test_other_deferrals_and_events_without_domain_are_not_tracked():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], code="421", enhanced="4.4.2")
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain=None)
    assert (tracker.active(), tracker.tracking()) == ([], 0)


def test_streaks_are_kept_per_domain_and_code():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain="a.example")
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain="b.example", code="452")
    defer_every(tracker, [T0, T0 + 20 * MIN], domain="b.example")
    assert [(f.domain, f.code) for f in tracker.active()] == [
        ("a.example", "431"),
        ("b.example", "452"),
    ]
    assert tracker.tracking() == 3


def test_category_rule_and_first_matching_rule_takes_the_event():
    rules = parse_rules(
        [
            {
                "name": "storage",
                "match": {"category": "system_storage"},
                "min_attempts": 2,
                "min_duration": "10m",
            },
            {"name": "any-431", "match": {"code": 431}},
        ]
    )
    tracker = DeferralTracker(rules)
    defer_every(tracker, [T0, T0 + 10 * MIN])
    [flag] = tracker.active()
    assert (flag.rule, flag.attempts) == ("storage", 2)
    assert tracker.tracking() == 1
    tracker.observe(event(T0 + 11 * MIN), SOFT)  # category mailbox_full: falls through to any-431
    assert sorted(s["rule"] for s in tracker.api_view()) == ["any-431", "storage"]


def test_active_reports_one_flag_per_domain_and_code_the_oldest():
    rules = parse_rules(
        [
            {
                "name": "by-enhanced",
                "match": {"enhanced": "4.3.1"},
                "min_attempts": 1,
                "min_duration": 0,
            },
            {"name": "by-code", "match": {"code": "431"}, "min_attempts": 1, "min_duration": 0},
        ]
    )
    tracker = DeferralTracker(rules)
    tracker.observe(event(T0), DISK)
    tracker.observe(event(T0 + MIN, enhanced="4.3.0"), DISK)
    assert tracker.tracking() == 2
    [flag] = tracker.active()
    assert (flag.rule, flag.since) == ("by-enhanced", T0)


def test_bounced_and_expired_neither_extend_nor_clear():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN])
    tracker.observe(event(T0 + 50 * MIN, status="bounced", code="550", enhanced="5.1.1"), HARD)
    tracker.observe(event(T0 + 60 * MIN, status="expired"), DISK)
    [flag] = tracker.active()
    assert (flag.attempts, flag.last) == (3, T0 + 40 * MIN)


# -- what clears a streak ----------------------------------------------------------------------


def test_flaky_server_431_three_times_then_250_clears():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN])
    assert len(tracker.active()) == 1
    tracker.observe(sent(T0 + 45 * MIN), SENT)
    assert (tracker.active(), tracker.tracking()) == ([], 0)
    [row] = tracker.api_view()
    assert (row["state"], row["cleared_by"], row["cleared_at_seconds"]) == (
        "cleared",
        "delivery",
        T0 + 45 * MIN,
    )
    assert row["cleared_at"] == "2023-11-14T22:58:20Z"


def test_delivery_clears_every_streak_of_that_domain_only():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain="a.example")
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain="a.example", code=None)
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain="b.example")
    tracker.observe(sent(T0 + 41 * MIN, "a.example"), SENT)
    assert [(f.domain, f.code) for f in tracker.active()] == [("b.example", "431")]


def test_streak_restarts_after_a_delivery():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN])
    tracker.observe(sent(T0 + 25 * MIN), SENT)
    defer_every(tracker, [T0 + 30 * MIN, T0 + 40 * MIN, T0 + 50 * MIN])
    assert tracker.active() == []
    [row] = tracker.api_view()
    assert (row["state"], row["since_seconds"], row["attempts"]) == ("tracking", T0 + 30 * MIN, 3)


def test_a_delivery_logged_before_the_streak_began_does_not_clear_it():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN])
    tracker.observe(sent(T0 - 1), SENT)  # a lagging second log source
    assert len(tracker.active()) == 1


def test_advance_clears_by_timeout_strictly_after_clear_after():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN])
    last = T0 + 40 * MIN
    tracker.advance(last + 2 * 3600)
    assert len(tracker.active()) == 1
    tracker.advance(last + 2 * 3600 + 1)
    assert (tracker.active(), tracker.tracking()) == ([], 0)
    [row] = tracker.api_view()
    assert (row["cleared_by"], row["cleared_at_seconds"]) == ("timeout", last + 2 * 3600)


def test_observe_clears_timed_out_streaks_with_the_event_time():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain="a.example")
    tracker.observe(sent(T0 + 40 * MIN + 3 * 3600, "other.example"), SENT)
    assert tracker.active() == []


def test_a_gap_longer_than_clear_after_starts_a_new_streak():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 20 * MIN + 2 * 3600 + 1, T0 + 3 * 3600])
    [row] = tracker.api_view()
    assert (row["since_seconds"], row["attempts"], row["persistent"]) == (
        T0 + 20 * MIN + 2 * 3600 + 1,
        2,
        False,
    )


def test_advance_never_moves_the_clock_back():
    tracker = default_tracker()
    tracker.advance(T0 + 10 * 3600)
    tracker.advance(T0)
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN])  # already timed out: ignored
    assert (tracker.active(), tracker.tracking()) == ([], 0)


def test_replay_flags_what_live_tailing_would():
    times = [T0, T0 + 20 * MIN, T0 + 40 * MIN, T0 + 60 * MIN]
    replay = default_tracker()
    defer_every(replay, times)
    live = default_tracker()
    for t in times:
        live.advance(t - 1)
        live.observe(event(t), DISK)
        live.advance(t + 5)
    assert replay.active() == live.active()


def test_recently_cleared_are_bounded_in_number_and_age():
    tracker = default_tracker(keep_cleared=2)
    for i, domain in enumerate(["a.example", "b.example", "c.example"]):
        defer_every(tracker, [T0 + i, T0 + i + 20 * MIN, T0 + i + 40 * MIN], domain=domain)
        tracker.observe(sent(T0 + i + 41 * MIN, domain), SENT)
    assert [r["domain"] for r in tracker.api_view()] == ["c.example", "b.example"]
    tracker.advance(T0 + 1 + 41 * MIN + 86400 + 0.5)
    assert [r["domain"] for r in tracker.api_view()] == ["c.example"]


def test_a_streak_that_never_became_persistent_is_not_kept_as_cleared():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + MIN])
    tracker.observe(sent(T0 + 2 * MIN), SENT)
    assert tracker.api_view() == []


# -- bounds ------------------------------------------------------------------------------------


def test_eviction_drops_the_oldest_last_and_never_grows_beyond_max_keys():
    tracker = default_tracker(max_keys=3)
    tracker.observe(event(T0 + 5, domain="a.example"), DISK)
    tracker.observe(event(T0 + 1, domain="b.example"), DISK)
    tracker.observe(event(T0 + 3, domain="c.example"), DISK)
    tracker.observe(event(T0 + 6, domain="b.example"), DISK)  # b is now newer than c
    tracker.observe(event(T0 + 7, domain="d.example"), DISK)
    assert tracker.tracking() == 3
    assert tracker.evicted == 1
    assert sorted(r["domain"] for r in tracker.api_view()) == [
        "a.example",
        "b.example",
        "d.example",
    ]
    for i in range(100):
        tracker.observe(event(T0 + 10 + i, domain=f"x{i}.example"), DISK)
        assert tracker.tracking() <= 3
    assert tracker.evicted == 101
    assert sorted(r["domain"] for r in tracker.api_view()) == [
        "x97.example",
        "x98.example",
        "x99.example",
    ]


def test_heaps_stay_bounded_under_a_long_streak():
    tracker = default_tracker(max_keys=2)
    defer_every(tracker, [T0 + i for i in range(5000)])
    assert len(tracker._oldest) <= 4 * 2 + 64 + 1
    assert len(tracker._deadlines) <= 4 * 2 + 64 + 1


# -- api view ----------------------------------------------------------------------------------


def test_api_view_rows_are_json_ready_and_say_their_state():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain="a.example")
    tracker.observe(
        event(T0 + 41 * MIN, domain="b.example", enhanced=None, text="431 try later"), DISK
    )
    rows = tracker.api_view()
    json.dumps(rows)
    assert rows[0] == {
        "state": "persistent",
        "domain": "a.example",
        "code": "431",
        "rule": "disk-full",
        "persistent": True,
        "attempts": 3,
        "min_attempts": 3,
        "since": "2023-11-14T22:13:20Z",
        "since_seconds": T0,
        "last": "2023-11-14T22:53:20Z",
        "last_seconds": T0 + 40 * MIN,
        "duration_seconds": 40 * MIN,
        "last_text": TEXT_431,
        "cleared_at": None,
        "cleared_at_seconds": None,
        "cleared_by": None,
    }
    assert (rows[1]["state"], rows[1]["domain"], rows[1]["last_text"]) == (
        "tracking",
        "b.example",
        "431 try later",
    )


# -- rules -------------------------------------------------------------------------------------


def test_default_rules_when_key_absent():
    assert (
        parse_rules(None)
        == list(DEFAULT_RULES)
        == [
            DeferralRule(
                name="disk-full",
                code="431",
                enhanced="4.3.1",
                category=None,
                min_attempts=3,
                min_duration=1800.0,
                clear_after=7200.0,
            )
        ]
    )


def test_rules_as_in_the_issue():
    assert parse_rules(
        [
            {
                "name": "disk-full",
                "match": {"code": "431"},
                "min_attempts": 3,
                "min_duration": "30m",
                "clear_after": "2h",
            }
        ]
    ) == [DeferralRule("disk-full", "431", None, None, 3, 1800.0, 7200.0)]


def test_empty_list_disables_tracking():
    tracker = DeferralTracker(parse_rules([]))
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN])
    assert tracker.tracking() == 0


def test_rules_validation_lists_every_problem_with_its_location():
    raw = [
        {"name": "ok", "match": {"code": "431"}},
        {"name": "late", "match": {"code": "421"}, "min_duration": "soon"},
        {"match": {}, "min_attempts": 0, "clear_after": "0s", "colour": "red"},
        {"name": "ok", "match": {"code": "43", "enhanced": "4.3", "category": "", "severity": "x"}},
        "disk-full",
        {"name": "", "match": "431", "min_attempts": True},
    ]
    with pytest.raises(ConfigError) as info:
        parse_rules(raw)
    assert info.value.problems == [
        "persistent_deferrals[1].min_duration: not a duration: 'soon' (use a number with s, m, h or d, e.g. 30m)",
        "persistent_deferrals[2]: unknown key 'colour' (expected: name, match, min_attempts, min_duration, clear_after)",
        "persistent_deferrals[2]: missing name",
        "persistent_deferrals[2].match: empty; give at least one of code, enhanced, category",
        "persistent_deferrals[2].min_attempts: expected a whole number >= 1, got 0",
        "persistent_deferrals[2].clear_after: must be more than 0, got '0s'",
        "persistent_deferrals[3].match.code: not a 3-digit reply code: '43'",
        "persistent_deferrals[3].match.enhanced: not an enhanced status code like 4.3.1: '4.3'",
        "persistent_deferrals[3].match.category: expected a non-empty string, got ''",
        "persistent_deferrals[3].match: unknown key 'severity' (expected: code, enhanced, category)",
        "persistent_deferrals[3].name: duplicate name 'ok' (also persistent_deferrals[0])",
        "persistent_deferrals[4]: expected a mapping, got str",
        "persistent_deferrals[5].name: expected a non-empty string, got ''",
        "persistent_deferrals[5].match: expected a mapping of code, enhanced, category; got str",
        "persistent_deferrals[5].min_attempts: expected a whole number >= 1, got True",
    ]
    assert str(info.value).startswith(
        "persistent_deferrals[1].min_duration: not a duration: 'soon'"
    )


def test_rules_missing_match_and_not_a_list():
    with pytest.raises(ConfigError) as info:
        parse_rules([{"name": "x"}])
    assert info.value.problems == [
        "persistent_deferrals[0]: missing match (give code, enhanced or category)"
    ]
    with pytest.raises(ConfigError) as info:
        parse_rules({"name": "x"})
    assert info.value.problems == ["persistent_deferrals: expected a list of rules, got dict"]


# -- saved state -------------------------------------------------------------------------------


def test_state_round_trip_preserves_since_and_everything_else():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain="a.example")
    defer_every(tracker, [T0 + 10 * MIN], domain="b.example", code=None)
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN], domain="c.example")
    tracker.observe(sent(T0 + 45 * MIN, "c.example"), SENT)
    tracker.evicted = 7
    state = json.loads(json.dumps(tracker.to_state()))

    restored = default_tracker()
    restored.load_state(state)
    assert restored.active() == tracker.active()
    assert restored.active()[0].since == T0
    assert restored.api_view() == tracker.api_view()
    assert (restored.tracking(), restored.evicted, restored.now) == (2, 7, T0 + 45 * MIN)
    # and it carries on: one more deferral extends the restored streak
    restored.observe(event(T0 + 50 * MIN, domain="b.example", code=None), DISK)
    assert [r["attempts"] for r in restored.api_view() if r["domain"] == "b.example"] == [2]


def test_load_state_recomputes_persistence_with_current_rules():
    tracker = default_tracker()
    defer_every(tracker, [T0, T0 + 20 * MIN, T0 + 40 * MIN])
    stricter = DeferralTracker([DeferralRule("disk-full", "431", "4.3.1", None, 5, 1800.0, 7200.0)])
    stricter.load_state(tracker.to_state())
    assert (stricter.active(), stricter.tracking()) == ([], 1)


def test_load_state_respects_max_keys_keeping_the_newest():
    tracker = default_tracker()
    for i in range(5):
        tracker.observe(event(T0 + i, domain=f"d{i}.example"), DISK)
    small = default_tracker(max_keys=2)
    small.load_state(tracker.to_state())
    assert sorted(r["domain"] for r in small.api_view()) == ["d3.example", "d4.example"]
    assert small.evicted == 3


GOOD = {
    "domain": "a.example",
    "code": "431",
    "rule": "disk-full",
    "since": T0,
    "last": T0 + 40 * MIN,
    "attempts": 3,
    "last_text": "431",
    "persistent": True,
}


@pytest.mark.parametrize(
    "state",
    [None, [], "x", 42, {"version": 99, "streaks": [GOOD]}, {"version": "1"}],
)
def test_load_state_ignores_a_whole_state_that_is_garbage(state, caplog):
    tracker = default_tracker()
    defer_every(tracker, [T0], domain="kept.example")
    with caplog.at_level(logging.WARNING, logger="bounce_exporter.state.deferrals"):
        tracker.load_state(state)
    assert [r["domain"] for r in tracker.api_view()] == ["kept.example"]


def test_load_state_skips_garbage_entries_and_keeps_the_good_one(caplog):
    bad_entries = [
        None,
        "a.example",
        [],
        {},
        {**GOOD, "domain": ""},
        {**GOOD, "domain": 5},
        {**GOOD, "code": None},
        {**GOOD, "rule": "no-such-rule"},
        {**GOOD, "since": "yesterday"},
        {**GOOD, "since": float("nan")},
        {**GOOD, "last": float("inf")},
        {**GOOD, "since": T0 + 50 * MIN},  # after last
        {**GOOD, "attempts": 0},
        {**GOOD, "attempts": True},
        {**GOOD, "attempts": 2.5},
        {**GOOD, "last_text": None},
        {**GOOD, "cleared_at": T0, "cleared_by": "magic"},
    ]
    state = {
        "version": 1,
        "now": "soon",
        "evicted": -3,
        "streaks": [*bad_entries, GOOD],
        "cleared": [*bad_entries, 17],
    }
    tracker = default_tracker()
    with caplog.at_level(logging.WARNING, logger="bounce_exporter.state.deferrals"):
        tracker.load_state(state)
    [flag] = tracker.active()
    assert (flag.domain, flag.since, flag.attempts) == ("a.example", T0, 3)
    assert tracker.evicted == 0
    assert [r["state"] for r in tracker.api_view()] == ["persistent"]
    assert "skipped" in caplog.text


def test_load_state_with_wrong_container_types_loads_nothing():
    tracker = default_tracker()
    tracker.load_state({"version": 1, "streaks": {"a": GOOD}, "cleared": "none"})
    assert (tracker.tracking(), tracker.api_view()) == (0, [])
