"""The report over old logs as data (``--format json``; the tables are rendered from it): built
from what a replay left in the exporter's own stages, so that its numbers are the exporter's.

- totals and per recipient domain: the counters (``bounce_delivery_attempts_total``,
  ``bounce_deliveries_total``, ``bounce_failures_total`` by kind: soft is deferred, hard bounced,
  ``bounce_expired_total``), under the same domain cap (``unknown``, ``other``);
- per provider: the ``bounce_provider_*`` counters, and the expiries per provider;
- waiting at the end of the logs: the parsers' ledgers (``/api/v1/waiting``);
- episodes: every streak the deferral tracker kept with the configured rules, persistent or not,
  ended (by a delivery, or by its ``clear_after`` timeout, after expiries or not) or still going,
  explained from the catalog (``explain``);
- the most frequent reply texts per category (``Tally``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.classify.explain import explain
from bounce_exporter.report.tally import Tally
from bounce_exporter.state.counters import CounterSnapshot
from bounce_exporter.state.rules import DeferralRule
from bounce_exporter.state.store import Store
from bounce_exporter.state.streaks import Streak

TOP_REPLIES = 3  # per domain
TOP_TEXTS = 5  # per category


def local_time(seconds: float | None) -> str | None:
    """A log time as ``parse`` prints it: ISO 8601 in local time with its offset."""
    return None if seconds is None else datetime.fromtimestamp(seconds).astimezone().isoformat()


def build_report(store: Store, tally: Tally, classifier: Classifier, rules: list[DeferralRule],
                 files: dict[str, str], lines: int) -> dict[str, Any]:
    with store.lock:
        counters = store.state.snapshot()
        still = [row for row in store.tracker.api_view() if row["state"] != "cleared"]
    waiting = store.waiting_view()
    return {
        "files": [{"file": path, "format": fmt} for path, fmt in files.items()],
        "lines": lines, "events": tally.events,
        "first_event": local_time(tally.first) if tally.events else None,
        "last_event": local_time(tally.last) if tally.events else None,
        "totals": _totals(counters),
        "domains": _domains(counters, waiting),
        "providers": _providers(counters, tally, classifier),
        "episodes": _episodes(tally, still, classifier, {rule.name: rule for rule in rules}),
        "replies": {category: [{"text": text, "count": count} for text, count in
                               sorted(texts.items(), key=lambda i: (-i[1], i[0]))[:TOP_TEXTS]]
                    for category, texts in sorted(tally.texts.items())},
    }


def _totals(counters: CounterSnapshot) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (_domain, kind, _code, _enhanced, category), count in counters.failures.items():
        by_kind[kind][category] += count
    return {
        "attempts": sum(counters.attempts.values()),
        "delivered": sum(counters.deliveries.values()),
        "deferred": sum(by_kind.get("soft", {}).values()),
        "bounced": sum(by_kind.get("hard", {}).values()),
        "expired": sum(counters.expired.values()),
        "by_kind": {kind: dict(sorted(categories.items(), key=lambda i: (-i[1], i[0])))
                    for kind, categories in sorted(by_kind.items())},
    }


def _domains(counters: CounterSnapshot, waiting: list[dict]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}

    def row(domain: str) -> dict[str, Any]:
        if domain not in rows:
            rows[domain] = {"domain": domain, "attempts": 0, "delivered": 0, "deferred": 0,
                            "bounced": 0, "expired": 0, "waiting": 0, "oldest_waiting": None,
                            "top_replies": []}
        return rows[domain]

    for domain, count in counters.attempts.items():
        row(domain)["attempts"] = count
    for domain, count in counters.deliveries.items():
        row(domain)["delivered"] = count
    for domain, count in counters.expired.items():
        row(domain)["expired"] = count
    for (domain, kind, code, enhanced, category), count in counters.failures.items():
        row(domain)["deferred" if kind == "soft" else "bounced"] += count
        row(domain)["top_replies"].append({"code": code, "enhanced": enhanced, "kind": kind,
                                           "category": category, "count": count})
    for entry in waiting:
        found = row(entry["domain"])
        found["waiting"] = entry["recipients"]
        found["oldest_waiting"] = local_time(entry["oldest_first_deferral_seconds"])
    for found in rows.values():
        found["top_replies"] = sorted(found["top_replies"], key=lambda r: (
            -r["count"], r["code"], r["enhanced"]))[:TOP_REPLIES]
    return sorted(rows.values(), key=lambda r: (-(r["deferred"] + r["bounced"] + r["expired"]),
                                                -r["attempts"], r["domain"]))


def _providers(counters: CounterSnapshot, tally: Tally,
               classifier: Classifier) -> list[dict[str, Any]]:
    providers = counters.providers
    failed: dict[str, dict[str, int]] = defaultdict(lambda: {"soft": 0, "hard": 0})
    for (provider, kind, _code, _enhanced, _category), count in providers.failures.items():
        failed[provider][kind] += count
    rows = []
    for provider in sorted(set(providers.attempts) | set(tally.provider_expired)):
        attempts = providers.attempts.get(provider, 0)
        expired = tally.provider_expired.get(provider, 0)
        if not attempts and not expired:
            continue
        known = classifier.catalog.providers.get(provider)
        soft, hard = failed[provider]["soft"], failed[provider]["hard"]
        rows.append({"provider": provider, "name": known.name if known else None,
                     "attempts": attempts, "delivered": attempts - soft - hard,
                     "deferred": soft, "bounced": hard, "expired": expired})
    return sorted(rows, key=lambda r: (-r["attempts"], r["provider"]))


def _episodes(tally: Tally, still: list[dict], classifier: Classifier,
              rules: dict[str, DeferralRule]) -> list[dict[str, Any]]:
    going = [Streak(row["domain"], row["code"], row["rule"], row["since_seconds"],
                    row["last_seconds"], row["attempts"], row["last_text"], row["persistent"])
             for row in still]
    explained: dict[str, Any] = {}
    rows = []
    for streak in sorted([*tally.episodes, *going], key=lambda s: (s.since, s.domain, s.code)):
        end = streak.cleared_at if streak.cleared_at is not None else tally.last
        expired = tally.expired_between(streak.domain, streak.since, end)
        if streak.cleared_by == "delivery":
            ended = "delivery"
        elif streak.cleared_by == "timeout":
            ended = "expiry" if expired else "timeout"
        else:
            ended = "still going"
        if streak.last_text not in explained:
            explained[streak.last_text] = explain(streak.last_text, classifier)
        why = explained[streak.last_text]
        rule = rules.get(streak.rule)
        rows.append({
            "domain": streak.domain, "code": streak.code, "rule": streak.rule,
            "reply": streak.last_text, "from": local_time(streak.since),
            "to": local_time(streak.last), "attempts": streak.attempts,
            "persistent": streak.persistent,
            "min_attempts": rule.min_attempts if rule else None,
            "min_duration_seconds": rule.min_duration if rule else None,
            "ended": ended, "ended_at": local_time(streak.cleared_at),
            "expired": expired, "category": why.category, "meaning": why.meaning,
            "sender_action": why.sender_action, "recipient_action": why.recipient_action})
    return rows
