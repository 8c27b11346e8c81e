"""`bounce-exporter explain`: what a reply, a log line or a bare code means, and what happens next.

The category comes from the same classifier as `parse` and the metrics (text rules, then the
enhanced code, then the basic code). A whole log line that a parser reads as a delivery event
(its format found as `--log.format auto` finds it) is explained as `parse` reports it: its
recipient, domain and status, the reply alone, and soft or hard as the MTA decided (its status).
Anything else has no MTA decision to follow, so soft or hard is judged from the reply itself: the
basic code's first digit, else the enhanced code's class, else (no code at all) the deciding text
rule's `kind`. When the basic and the enhanced class
disagree, the basic code wins and `note` says so (config/catalog.yaml, "How explain judges a
reply"). What a digit says, and the notes, come from the catalog's `judging`; every descriptive text
comes from the catalog: the deciding rule or code entry first, then the category's defaults, then
the kind's. The provider that answered (the catalog's provider table: by the relay host the text
names, else the reply's markers) is named with its postmaster page.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bounce_exporter.classify.catalog import CodeInfo, TextRule
from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.classify.facts import Judging
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import make_parser
from bounce_exporter.parsers.auto import sniff
from bounce_exporter.parsers.relay import find_relay_in_line
from bounce_exporter.parsers.reply import find_reply_in_line

# The JSON object's keys, in order: parse's keys where they apply, then the descriptive ones.
KEYS = ("recipient", "domain", "status", "text", "code", "enhanced", "kind", "category", "note",
        "meaning", "severity", "sender_action", "recipient_action", "mta_next", "decided_by",
        "relay", "provider", "postmaster")
_CODE_LIKE = re.compile(r"\d+(?:\.\d+)*")  # what a user types as a code: 431, 4.3.1, 999
_WIDTH = 100
_LABEL = 12


@dataclass(frozen=True, slots=True)
class Explanation:
    recipient: str | None  # these three: from a log line's delivery event, else None
    domain: str | None
    status: str | None  # the MTA's decision: sent, deferred, bounced, expired
    text: str  # the reply (of a log line: the reply alone)
    code: str | None
    enhanced: str | None
    kind: str | None  # "soft" | "hard" | None (success, or no code and no rule saying)
    category: str
    note: str | None
    meaning: str
    severity: str
    sender_action: str
    recipient_action: str
    mta_next: str
    decided_by: str
    judged: str  # soft | hard | success | unknown: the catalog's `kinds` key
    severity_description: str
    category_description: str
    kind_description: str
    relay: str | None = None  # the host the text names (relay=, H=, "host X[...]")
    provider: str = "other"  # the provider table's label ("other": none of them)
    provider_name: str | None = None
    postmaster: str | None = None  # the provider's postmaster page

    def as_dict(self) -> dict[str, str | None]:
        return {key: getattr(self, key) for key in KEYS}


def explain(text: str, classifier: Classifier) -> Explanation:
    """Explain one reply, log line or code. Raises ValueError for empty text and for a number
    that is no reply code."""
    text = text.strip()
    if not text:
        raise ValueError("nothing to explain: give a reply or log line, or a code such as 431 "
                         "or 4.3.1")
    catalog = classifier.catalog
    judging = catalog.judging
    assert judging is not None  # a catalog with problems is never loaded
    event, text, code, enhanced = _reply_of(text)
    judged, notes = _judge(judging, code, enhanced, text)
    if event is not None:
        judged, notes = _mta_decision(classifier, judging, event, judged)

    decider: TextRule | CodeInfo | None
    if judged == "success":
        category = "none"
        decider = None
    else:
        decider = classifier.decided_by(code, enhanced, text)
        category = decider.category if decider is not None else "other"
    if judged == judging.no_code and isinstance(decider, TextRule) and decider.kind:
        judged = decider.kind
        notes.append(judging.notes["rule_kind"].format(kind=judged, rule=decider.name))
    elif judged == judging.no_code:
        notes.append(judging.notes["no_kind"].format())

    entries = _code_entries(catalog, code, enhanced, notes)
    if isinstance(decider, TextRule):
        sources: list[TextRule | CodeInfo] = [decider]
    elif decider is not None:
        sources = [decider, *(e for e in entries if e is not decider and e.category == category)]
    else:
        sources = entries
    info = catalog.categories[category]

    meaning = next((s.meaning for s in sources if s.meaning), None) or info.description
    sender = next((s.sender_action for s in sources if s.sender_action), info.sender_action)
    recipient = next((s.recipient_action for s in sources if s.recipient_action),
                     info.recipient_action)
    mta_next = next((s.mta_action for s in sources if s.mta_action and _fits(s, judged)),
                    catalog.kinds[judged].mta_next)
    relay = find_relay_in_line(text)
    provider = catalog.providers.get(catalog.providers.of(relay, text))
    if event is not None and event.status == "expired":  # given up: returned to the sender now
        mta_next = catalog.kinds["hard"].mta_next
    return Explanation(
        recipient=event.recipient if event else None, domain=event.domain if event else None,
        status=event.status if event else None, text=text, code=code, enhanced=enhanced,
        kind=judged if judged in ("soft", "hard") else None,
        category=category, note="; ".join(notes) or None, meaning=meaning,
        severity=info.severity, sender_action=sender, recipient_action=recipient,
        mta_next=mta_next, decided_by=_decided_by(decider, code, enhanced, judged),
        judged=judged, severity_description=catalog.severities.get(info.severity, ""),
        category_description=info.description,
        kind_description=catalog.kinds[judged].description, relay=relay,
        provider=provider.key if provider else "other",
        provider_name=provider.name if provider else None,
        postmaster=provider.postmaster if provider else None)


def _reply_of(text: str) -> tuple[DeliveryEvent | None, str, str | None, str | None]:
    """(the delivery event of a whole log line or None, the reply, its code, its enhanced code).
    Raises ValueError for a number that is no reply code."""
    event = delivery_event(text)
    if event is not None:
        return event, event.text or text, event.code, event.enhanced
    code, enhanced = find_reply_in_line(text)
    if code is None and enhanced is None and _CODE_LIKE.fullmatch(text):
        raise ValueError(f"{text} is not an SMTP reply code: basic codes are 2xx to 5xx (such as "
                         "431), enhanced codes 2.x.x, 4.x.x or 5.x.x (such as 4.3.1)")
    return None, text, code, enhanced


def delivery_event(line: str) -> DeliveryEvent | None:
    """The delivery event a whole log line records, read by the parser of the format the line
    shows (as ``--log.format auto`` finds it); None for anything else (a reply, a code, a line
    that records no attempt, or one that needs the message's earlier lines)."""
    raw = line.encode("utf-8", "surrogateescape")
    fmt = sniff(raw)
    if fmt is None:
        return None
    try:
        events = make_parser(fmt).parse(raw)
    except Exception:  # noqa: BLE001 - a line not understood is explained as text
        return None
    return events[0] if events else None


def _mta_decision(classifier: Classifier, judging: Judging, event: DeliveryEvent,
                  by_code: str) -> tuple[str, list[str]]:
    """soft | hard | success as the MTA decided (what parse reports), with a note when the
    reply's code says otherwise."""
    kind = classifier.classify(event.status, event.code, event.enhanced, event.text).kind
    judged = kind or "success"
    notes = []
    if by_code != judged and by_code != "unknown":
        notes.append(judging.notes["mta_decided"].format(
            status=event.status, kind=judged, by_code=by_code))
    return judged, notes


def _judge(judging: Judging, code: str | None, enhanced: str | None,
           text: str) -> tuple[str, list[str]]:
    """soft | hard | success | unknown (judging.kinds) from the codes alone, with notes on a
    disagreement."""
    notes: list[str] = []
    by_basic = judging.by_digit.get(code[0]) if code else None
    by_enhanced = judging.by_digit.get(enhanced[0]) if enhanced else None
    if by_basic and by_enhanced and by_basic != by_enhanced:
        where = judging.notes["dsn_where"] if "dsn=" in text else ""
        notes.append(judging.notes["basic_wins"].format(
            code=code, enhanced=enhanced, where=where, by_basic=by_basic,
            by_enhanced=by_enhanced))
    return by_basic or by_enhanced or judging.no_code, notes


def _code_entries(catalog, code: str | None, enhanced: str | None,  # type: ignore[no-untyped-def]
                  notes: list[str]) -> list[CodeInfo]:
    """The catalog entries of the codes, most telling first: the basic code, the enhanced code's
    detail (or subject) entry, its class entry. Notes codes the catalog does not know."""
    entries: list[CodeInfo] = []
    texts = catalog.judging.notes
    if code:
        basic = catalog.basic(code)
        if basic is not None:
            entries.append(basic)
        else:
            notes.append(texts["unregistered_code"].format(code=code))
    if enhanced:
        subject, detail = (int(part) for part in enhanced.split(".")[1:])
        info = catalog.enhanced(enhanced)
        if info is not None:
            entries.append(info)
            if info.code.endswith(".X"):
                notes.append(texts["unregistered_detail"].format(
                    enhanced=enhanced, subject=subject, detail=detail, entry=info.code))
        elif not 0 <= subject <= catalog.judging.highest_subject:
            notes.append(texts["undefined_subject"].format(enhanced=enhanced, subject=subject))
        cls = catalog.enhanced_class(enhanced)
        if cls is not None:
            entries.append(cls)
    return entries


def _fits(source: TextRule | CodeInfo, judged: str) -> bool:
    """A rule's mta_action holds whatever the kind; a code entry's only for the kind it means."""
    if isinstance(source, TextRule):
        return True
    return {"transient": judged == "soft", "permanent": judged == "hard",
            "either": judged in ("soft", "hard"), "success": judged == "success"}.get(
                source.intended, False)


def _decided_by(decider: TextRule | CodeInfo | None, code: str | None, enhanced: str | None,
                judged: str) -> str:
    if isinstance(decider, TextRule):
        return f"text rule {decider.name!r} ({_short(decider.origin)})"
    if decider is not None:
        if decider.code[0] == "X":
            return f"enhanced code {enhanced} (catalog.yaml: enhanced_codes['{decider.code}'])"
        return f"basic code {code} (catalog.yaml: basic_codes['{decider.code}'])"
    if judged == "success":
        return f"the reply class ({(code or enhanced or '2')[0]}xx: success)"
    return "no rule or code names a cause (the fallback category)"


def _short(origin: str) -> str:
    """"/path/to/catalog.yaml: text_rules[3]" -> "catalog.yaml: text_rules[3]"."""
    where, sep, rest = origin.partition(": ")
    return f"{Path(where).name}{sep}{rest}" if sep else origin


def render(explanation: Explanation) -> str:
    """The human-readable form: one labelled, wrapped paragraph per field."""
    e = explanation
    rows = []
    if e.status is not None:
        rows += [("to", e.recipient or "not logged"), ("domain", e.domain or "unknown"),
                 ("status", f"{e.status} (the MTA's decision)")]
    if e.text not in (e.code, e.enhanced):
        rows.append(("reply", e.text))
    rows += [
        ("code", e.code or "none"),
        ("enhanced", e.enhanced or "none"),
        ("meaning", e.meaning),
        ("kind", f"{e.kind or e.judged}: {e.kind_description}"),
        ("category", f"{e.category}: {e.category_description}"),
        ("severity", f"{e.severity}: {e.severity_description}"),
        ("sender", e.sender_action),
        ("recipient", e.recipient_action),
        ("MTA next", e.mta_next),
        ("decided by", e.decided_by),
    ]
    if e.provider_name:
        rows.append(("provider", f"{e.provider_name} ({e.provider}); postmaster: {e.postmaster}"))
    if e.note:
        rows.append(("note", e.note))
    lines = []
    for label, value in rows:
        lines.extend(textwrap.wrap(value, width=_WIDTH, initial_indent=f"{label:<{_LABEL}}",
                                   subsequent_indent=" " * _LABEL, break_on_hyphens=False)
                     or [label])
    return "\n".join(lines) + "\n"


def run_explain(words: list[str], extra_text_rules: list | None, *, as_json: bool,
                out: TextIO, err: TextIO) -> int:
    """The command: TEXT words joined by blanks ("-" reads standard input). 0, or 2 when there is
    nothing to explain. Raises ConfigError for broken rules (the caller reports it)."""
    text = sys.stdin.read() if words == ["-"] else " ".join(words)
    classifier = Classifier.load(extra_text_rules=extra_text_rules)
    try:
        explanation = explain(text, classifier)
    except ValueError as error:
        err.write(f"bounce-exporter explain: {error}\n")
        return 2
    if as_json:
        out.write(json.dumps(explanation.as_dict(), ensure_ascii=False) + "\n")
    else:
        out.write(render(explanation))
    return 0
