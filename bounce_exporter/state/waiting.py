"""What is waiting: recipients whose latest outcome is a deferral, per domain, read from the
parsers' ledgers at scrape time (nothing of it is kept here: the ledger is its one owner).

A recipient waits from its first deferral until it is delivered, bounced, expired or removed (the
parser takes it out of its ledger then). Per domain label (the counters' label: the domain cap and
``unknown`` apply alike) and category of its latest reply: how many recipients wait
(``bounce_waiting_recipients``); per domain, the first deferral of the one waiting longest
(``bounce_waiting_oldest_timestamp_seconds``). ``/api/v1/waiting`` lists the messages behind them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers.ledger import LedgerView, Waiting
from bounce_exporter.state.streaks import iso

Label = Callable[[str | None], str]  # a domain's label, without giving new ones
Category = Callable[[DeliveryEvent], str]  # the category of a deferral's reply

API_MESSAGES_PER_DOMAIN = 50  # messages listed per domain by /api/v1/waiting (the oldest)


@dataclass(frozen=True)
class WaitingTotals:
    recipients: dict[tuple[str, str], int]  # (domain label, category) -> recipients waiting
    oldest: dict[str, float]  # domain label -> first deferral time of the longest-waiting one


def _each(views: Iterable[LedgerView]) -> Iterator[tuple[str, Waiting]]:
    """(message, waiting recipient) of every ledger view, oldest message first."""
    for view in views:
        for message, held in view:
            for waiting in held.values():
                yield message, waiting


def waiting_totals(views: Iterable[LedgerView], label: Label, category: Category) -> WaitingTotals:
    recipients: dict[tuple[str, str], int] = {}
    oldest: dict[str, float] = {}
    for _message, waiting in _each(views):
        domain = label(waiting.last.domain)
        key = (domain, category(waiting.last))
        recipients[key] = recipients.get(key, 0) + 1
        if waiting.first < oldest.get(domain, float("inf")):
            oldest[domain] = waiting.first
    return WaitingTotals(recipients, oldest)


def waiting_api(views: Iterable[LedgerView], label: Label, category: Category,
                per_domain: int = API_MESSAGES_PER_DOMAIN) -> list[dict]:
    """JSON-ready, the longest-waiting domain first: per domain label its recipients waiting, the
    oldest first deferral, and its oldest ``per_domain`` waiting recipients with their last reply."""
    domains: dict[str, list[dict]] = {}
    for message, waiting in _each(views):
        last = waiting.last
        domains.setdefault(label(last.domain), []).append({
            "queue_id": message, "recipient": last.recipient,
            "first_deferral": iso(waiting.first), "first_deferral_seconds": waiting.first,
            "deferrals": waiting.attempts, "code": last.code, "enhanced": last.enhanced,
            "category": category(last), "text": last.text})
    rows = []
    for domain, entries in domains.items():
        entries.sort(key=lambda e: e["first_deferral_seconds"])
        rows.append({"domain": domain, "recipients": len(entries),
                     "oldest_first_deferral": entries[0]["first_deferral"],
                     "oldest_first_deferral_seconds": entries[0]["first_deferral_seconds"],
                     "messages": entries[:per_domain]})
    rows.sort(key=lambda r: (r["oldest_first_deferral_seconds"], r["domain"]))
    return rows
