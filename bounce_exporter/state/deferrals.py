"""Persistent deferrals: a remote server that keeps deferring mail with the same reply (431 4.3.1,
out of disk) will not recover by itself, so flag it per (recipient domain, reply code).

Pure logic: fed DeliveryEvents and their Classification, it knows nothing of HTTP, files or
prometheus_client. The rules, written down beside the code:

- Rules (``rules``: config checking, matching): `persistent_deferrals:` in the config.
- Rules are tried in order and the first that matches takes the event (like firewall rules).
- Only status "deferred" extends a streak; the classification's kind is not consulted (the MTA
  retrying is what makes it a deferral) and only supplies `category` for matching.
- Streak key: (domain, code, rule); code is the basic reply code or "none" (no SMTP reply).
  Each matching deferral sets since (first), last (latest) and attempts += 1.
- Persistent once attempts >= min_attempts and last - since >= min_duration; it stays so until
  the streak clears.
- Status "sent" to domain D clears every streak of D that began at or before the delivery
  (a delivery logged before the streak began, by a lagging source, is not "in between").
- A streak whose last deferral is more than clear_after ago clears by timeout. "Now" is the
  newest time seen: event times (observe) and wall clock (advance); it never goes back. A
  deferral already older than clear_after when it arrives is ignored.
- "bounced" and "expired" neither extend nor clear: the mail was given up, which says nothing
  about whether the remote server recovered.
- Time comes only from event.time and advance(), so replaying an old log flags exactly what live
  tailing would have.
- Bounded: at most max_keys streaks; a new key beyond that evicts the streak with the oldest
  `last` (counted in `evicted`). Cleared persistent flags are kept for the HTTP API: the last
  keep_cleared of them, for at most KEEP_CLEARED_SECONDS.
"""


from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from bounce_exporter.checks import type_name
from bounce_exporter.classify.classifier import Classification
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.state.rules import DEFAULT_RULES, DeferralRule, parse_rules
from bounce_exporter.state.streaks import Streak, api_row, number, streak_from_state, streak_state

__all__ = ["DEFAULT_RULES", "DeferralRule", "DeferralTracker", "Streak", "parse_rules"]

log = logging.getLogger(__name__)

STATE_VERSION = 1
KEEP_CLEARED_SECONDS = 86400.0
NO_CODE = "none"


_Key = tuple[str, str, str]  # (domain, code, rule)


class DeferralTracker:
    """Streaks of matching deferrals per (domain, code, rule), and which of them are persistent."""

    def __init__(
        self, rules: list[DeferralRule], *, max_keys: int = 10000, keep_cleared: int = 100,
        on_clear: Callable[[Streak], None] | None = None,
    ):
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.rules = list(rules)
        self._rules = {rule.name: rule for rule in self.rules}
        # What any rule matches: a deferral with none of these cannot extend a streak.
        self._codes = {rule.code for rule in self.rules if rule.code is not None}
        self._enhanced = {rule.enhanced for rule in self.rules if rule.enhanced is not None}
        self._categories = {rule.category for rule in self.rules if rule.category is not None}
        self.max_keys = max_keys
        self.evicted = 0
        self.now = float("-inf")  # newest time seen (event times and advance())
        self._streaks: dict[_Key, Streak] = {}
        self._by_domain: dict[str, set[_Key]] = {}
        # Lazy heaps: an entry is current only while the streak still has that `last`.
        self._deadlines: list[tuple[float, float, _Key]] = []  # (last + clear_after, last, key)
        self._oldest: list[tuple[float, _Key]] = []  # (last, key), for eviction
        self._cleared: deque[Streak] = deque(maxlen=max(keep_cleared, 0))
        # told of every streak cleared (persistent or not), with cleared_at and cleared_by: the
        # episodes of a report over old logs
        self.on_clear = on_clear

    # -- feeding -------------------------------------------------------------------------------

    def observe(self, event: DeliveryEvent, classification: Classification | None) -> None:
        """Take one delivery event: extend, clear or ignore, then clear what timed out."""
        deadlines = self._deadlines
        if event.time > self.now or (deadlines and deadlines[0][0] < self.now):
            self._tick(event.time)  # else the clock stays and nothing is due: a no-op
        if not event.domain:
            return
        if event.status == "sent":
            if event.domain in self._by_domain:  # else it has no streak to clear
                self._clear_domain(event.domain, event.time)
        elif event.status == "deferred" and (
                event.code in self._codes or event.enhanced in self._enhanced
                or (classification is not None and classification.category in self._categories)):
            rule = next((r for r in self.rules if r.matches(event, classification)), None)
            if rule is not None:
                self._extend(rule, event)

    def observe_block(self, found: list[tuple[DeliveryEvent, Classification]]) -> None:
        """``observe`` each (event, classification), in order, with the same outcome, calling it
        only for the events that can change a streak: a delivery to a domain with one, a deferral
        with a code, enhanced code or category some rule names. The others only move the clock:
        the newest (finite) time of a run of them is ticked to at once before the next event
        observed (the streaks they time out are cleared at their deadlines either way)."""
        by_domain, codes, enhanced = self._by_domain, self._codes, self._enhanced
        categories, observe = self._categories, self.observe
        passed, newest = False, float("-inf")  # a run of events passed over, its newest time
        for event, classification in found:
            status, domain = event.status, event.domain
            if domain and ((status == "sent" and domain in by_domain) or (
                    status == "deferred" and (
                        event.code in codes or event.enhanced in enhanced
                        or (classification is not None
                            and classification.category in categories)))):
                if passed:
                    self._tick(newest)
                    passed, newest = False, float("-inf")
                observe(event, classification)
            else:
                passed = True
                if newest < event.time < math.inf:
                    newest = event.time
        if passed:
            self._tick(newest)

    def advance(self, now: float) -> None:
        """Move the clock to wall-clock `now` (while tailing) and clear what timed out."""
        self._tick(now)

    # -- reading -------------------------------------------------------------------------------

    def active(self) -> list[Streak]:
        """Persistent flags now held, at most one per (domain, code) (the oldest, should two rules
        flag the same pair), sorted by domain and code: what the gauges show."""
        best: dict[tuple[str, str], Streak] = {}
        for streak in self._streaks.values():
            if not streak.persistent:
                continue
            pair = (streak.domain, streak.code)
            held = best.get(pair)
            if held is None or (streak.since, -streak.attempts) < (held.since, -held.attempts):
                best[pair] = streak
        return [replace(best[pair]) for pair in sorted(best)]

    def tracking(self) -> int:
        """Number of streaks tracked (persistent or not); never more than max_keys."""
        return len(self._streaks)

    def api_view(self) -> list[dict]:
        """JSON-ready list: persistent flags ("state": "persistent"), streaks not yet persistent
        ("tracking"), then recently cleared flags ("cleared", newest first)."""
        self._prune_cleared()
        held = sorted(
            self._streaks.values(), key=lambda s: (not s.persistent, s.since, s.domain, s.code)
        )
        rows = [self._row(s, "persistent" if s.persistent else "tracking") for s in held]
        cleared = sorted(self._cleared, key=lambda s: -(s.cleared_at or 0.0))
        rows.extend(self._row(s, "cleared") for s in cleared)
        return rows

    def _row(self, streak: Streak, state: str) -> dict:
        return api_row(streak, state, self._rules.get(streak.rule))

    # -- state file ----------------------------------------------------------------------------

    def to_state(self) -> dict:
        """Everything needed to carry on after a restart, as JSON-ready data."""
        self._prune_cleared()
        return {
            "version": STATE_VERSION,
            "now": self.now if math.isfinite(self.now) else None,
            "evicted": self.evicted,
            "streaks": [streak_state(s) for s in self._streaks.values()],
            "cleared": [streak_state(s) for s in self._cleared],
        }

    def load_state(self, state: dict) -> None:
        """Replace what is tracked with a saved state. Garbage entries (wrong types, unknown
        rules, other versions) are skipped with a log line, never raised. Persistence is
        recomputed with the current rules, which may have changed since the save."""
        if not isinstance(state, dict):
            log.warning("ignoring deferral state that is not a mapping: %s", type_name(state))
            return
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            log.warning("ignoring deferral state of unknown version %r", state.get("version"))
            return
        self._streaks.clear()
        self._by_domain.clear()
        self._deadlines.clear()
        self._oldest.clear()
        self._cleared.clear()
        now = number(state.get("now"))
        if now is not None:
            self.now = max(self.now, now)
        evicted = state.get("evicted")
        if isinstance(evicted, int) and not isinstance(evicted, bool) and evicted >= 0:
            self.evicted = evicted
        skipped = 0
        entries = state.get("streaks")
        loaded = [s for s in map(streak_from_state, entries if isinstance(entries, list) else [])]
        skipped += loaded.count(None)
        # Newest first, so that when over max_keys (smaller limit since the save) the oldest go.
        for streak in sorted((s for s in loaded if s), key=lambda s: -s.last):
            rule = self._rules.get(streak.rule)
            key = (streak.domain, streak.code, streak.rule)
            if rule is None or streak.cleared_at is not None or key in self._streaks:
                skipped += 1
                continue
            if len(self._streaks) >= self.max_keys:
                self.evicted += 1
                continue
            streak.persistent = _is_persistent(rule, streak)
            self._insert(key, streak, rule)
        entries = state.get("cleared")
        cleared = [s for s in map(streak_from_state, entries if isinstance(entries, list) else [])]
        skipped += cleared.count(None)
        for streak in sorted(
            (s for s in cleared if s and s.cleared_at is not None),
            key=lambda s: s.cleared_at or 0.0,
        ):
            self._cleared.append(streak)
        if skipped:
            log.warning("skipped %d unusable entries in the saved deferral state", skipped)
        if math.isfinite(self.now):
            self._tick(self.now)

    # -- internals -----------------------------------------------------------------------------

    def _tick(self, time: float) -> None:
        if math.isfinite(time) and time > self.now:
            self.now = time
        self._expire()

    def _extend(self, rule: DeferralRule, event: DeliveryEvent) -> None:
        t = event.time
        if t + rule.clear_after < self.now:
            return  # already timed out: the streak it would start is cleared at once
        assert event.domain
        key = (event.domain, event.code or NO_CODE, rule.name)
        streak = self._streaks.get(key)
        if streak is None:
            if len(self._streaks) >= self.max_keys:
                self._evict_oldest()
            streak = Streak(key[0], key[1], rule.name, t, t, 0, event.text, False)
            self._insert(key, streak, rule)
        elif t >= streak.last:
            streak.last = t
            streak.last_text = event.text
            self._push(key, streak, rule)
        else:  # out of order (a lagging source): may only move `since` back
            streak.since = min(streak.since, t)
        streak.attempts += 1
        streak.persistent = streak.persistent or _is_persistent(rule, streak)

    def _insert(self, key: _Key, streak: Streak, rule: DeferralRule) -> None:
        self._streaks[key] = streak
        self._by_domain.setdefault(key[0], set()).add(key)
        self._push(key, streak, rule)

    def _push(self, key: _Key, streak: Streak, rule: DeferralRule) -> None:
        heapq.heappush(self._deadlines, (streak.last + rule.clear_after, streak.last, key))
        heapq.heappush(self._oldest, (streak.last, key))
        bound = 4 * len(self._streaks) + 64  # eviction pops _oldest only: check both heaps
        if len(self._oldest) > bound or len(self._deadlines) > bound:
            self._compact()

    def _compact(self) -> None:
        """Drop stale heap entries so the heaps stay proportional to the streaks."""
        live = [(k, s) for k, s in self._streaks.items()]
        self._deadlines = [(s.last + self._rules[k[2]].clear_after, s.last, k) for k, s in live]
        self._oldest = [(s.last, k) for k, s in live]
        heapq.heapify(self._deadlines)
        heapq.heapify(self._oldest)

    def _current(self, key: _Key, last: float) -> Streak | None:
        streak = self._streaks.get(key)
        return streak if streak is not None and streak.last == last else None

    def _expire(self) -> None:
        while self._deadlines and self._deadlines[0][0] < self.now:
            deadline, last, key = heapq.heappop(self._deadlines)
            if self._current(key, last) is not None:
                self._clear(key, deadline, "timeout")

    def _evict_oldest(self) -> None:
        while self._oldest:
            last, key = heapq.heappop(self._oldest)
            if self._current(key, last) is not None:
                self._remove(key)
                self.evicted += 1
                return

    def _clear_domain(self, domain: str, time: float) -> None:
        for key in list(self._by_domain.get(domain, ())):
            if self._streaks[key].since <= time:
                self._clear(key, time, "delivery")

    def _clear(self, key: _Key, time: float, by: str) -> None:
        streak = self._remove(key)
        if self.on_clear is not None:
            self.on_clear(replace(streak, cleared_at=time, cleared_by=by))
        if streak.persistent and self._cleared.maxlen:
            streak.cleared_at = time
            streak.cleared_by = by
            self._cleared.append(streak)

    def _remove(self, key: _Key) -> Streak:
        streak = self._streaks.pop(key)
        keys = self._by_domain[key[0]]
        keys.discard(key)
        if not keys:
            del self._by_domain[key[0]]
        return streak

    def _prune_cleared(self) -> None:
        """Forget cleared flags older than KEEP_CLEARED_SECONDS (the deque bounds the count)."""
        cutoff = self.now - KEEP_CLEARED_SECONDS
        if any((s.cleared_at or 0.0) < cutoff for s in self._cleared):
            kept = [s for s in self._cleared if (s.cleared_at or 0.0) >= cutoff]
            self._cleared.clear()
            self._cleared.extend(kept)



def _is_persistent(rule: DeferralRule, streak: Streak) -> bool:
    return streak.attempts >= rule.min_attempts and streak.last - streak.since >= rule.min_duration

