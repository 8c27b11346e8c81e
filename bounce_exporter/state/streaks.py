"""A streak of matching deferrals, and its forms outside the tracker: the state file's entry and
the JSON API's row."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from bounce_exporter.state.rules import DeferralRule


@dataclass
class Streak:
    """Consecutive matching deferrals for one (domain, code, rule)."""

    domain: str
    code: str  # basic reply code or "none"
    rule: str
    since: float  # Unix seconds of the first deferral
    last: float  # Unix seconds of the latest deferral
    attempts: int
    last_text: str
    persistent: bool
    cleared_at: float | None = None  # the delivery's time, or last + clear_after
    cleared_by: str | None = None  # "delivery" | "timeout"



def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def streak_state(streak: Streak) -> dict:
    return {
        "domain": streak.domain,
        "code": streak.code,
        "rule": streak.rule,
        "since": streak.since,
        "last": streak.last,
        "attempts": streak.attempts,
        "last_text": streak.last_text,
        "persistent": streak.persistent,
        "cleared_at": streak.cleared_at,
        "cleared_by": streak.cleared_by,
    }



def number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def streak_from_state(entry: object) -> Streak | None:
    """A Streak from one saved entry, or None when anything in it is off."""
    if not isinstance(entry, dict):
        return None
    domain, code, rule, text = (entry.get(k) for k in ("domain", "code", "rule", "last_text"))
    since, last = number(entry.get("since")), number(entry.get("last"))
    attempts = entry.get("attempts")
    cleared_at = entry.get("cleared_at")
    cleared_by = entry.get("cleared_by")
    if not all(isinstance(v, str) and v for v in (domain, code, rule)) or not isinstance(text, str):
        return None
    if since is None or last is None or since > last:
        return None
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        return None
    if cleared_at is not None and (
        number(cleared_at) is None or cleared_by not in ("delivery", "timeout")
    ):
        return None
    assert isinstance(domain, str) and isinstance(code, str) and isinstance(rule, str)
    return Streak(
        domain=domain,
        code=code,
        rule=rule,
        since=since,
        last=last,
        attempts=attempts,
        last_text=text,
        persistent=entry.get("persistent") is True,
        cleared_at=number(cleared_at),
        cleared_by=cleared_by if cleared_at is not None else None,
    )


def api_row(streak: Streak, state: str, rule: DeferralRule | None) -> dict:
    """One row of /api/v1/deferrals: the streak, its state, and its rule's threshold."""
    return {
        "state": state,
        "domain": streak.domain,
        "code": streak.code,
        "rule": streak.rule,
        "persistent": streak.persistent,
        "attempts": streak.attempts,
        "min_attempts": rule.min_attempts if rule else None,
        "since": iso(streak.since),
        "since_seconds": streak.since,
        "last": iso(streak.last),
        "last_seconds": streak.last,
        "duration_seconds": streak.last - streak.since,
        "last_text": streak.last_text,
        "cleared_at": iso(streak.cleared_at) if streak.cleared_at is not None else None,
        "cleared_at_seconds": streak.cleared_at,
        "cleared_by": streak.cleared_by,
    }
