"""The catalog's sections beside the codes and rules, checked like the rest (catalog.py, which
loads the file and calls these): the categories, severities and kinds explain describes, what the
MTA decided by event status (``status_kinds``), the categories that name no cause
(``uninformative_categories``), how explain judges a reply (``judging``), and the default
persistent-deferral rules (``default_persistent_deferrals``, plain data for
bounce_exporter.state.deferrals, which checks the rules themselves).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bounce_exporter.checks import unknown_fields
from bounce_exporter.event import STATUSES

# A text rule's optional kind: what MTAs do with such a failure when it comes without a reply code.
RULE_KINDS = ("soft", "hard")
JUDGING_FIELDS = ("kinds", "by_digit", "no_code", "highest_subject", "notes")
# The notes explain writes, each with the fields its text may name ({code}, {rule!r}, ...).
NOTE_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "basic_wins": ("code", "enhanced", "where", "by_basic", "by_enhanced"),
    "dsn_where": (),
    "unregistered_code": ("code",),
    "unregistered_detail": ("enhanced", "subject", "detail", "entry"),
    "undefined_subject": ("enhanced", "subject"),
    "rule_kind": ("kind", "rule"),
    "no_kind": (),
    "mta_decided": ("status", "kind", "by_code"),
})
# The classifier itself names these three; every catalog must define them.
REQUIRED_CATEGORIES = ("none", "other", "expired")
CATEGORY_FIELDS = {"description", "severity", "sender_action", "recipient_action"}
SEVERITY_FIELDS = {"description"}
KIND_FIELDS = {"description", "mta_next"}
CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_]*")
_DIGIT = re.compile(r"[1-5]")


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    description: str
    severity: str = ""  # a key of Catalog.severities
    sender_action: str = ""
    recipient_action: str = ""


@dataclass(frozen=True, slots=True)
class Kind:
    """What explain says about a soft, hard, success or unknown reply."""

    name: str
    description: str
    mta_next: str


@dataclass(frozen=True, slots=True)
class Judging:
    """How explain judges a reply that comes without an MTA decision."""

    kinds: tuple[str, ...]  # all it can judge a reply to be; each has a catalog `kinds` entry
    by_digit: Mapping[str, str]  # a code's first digit -> kind
    no_code: str  # the kind of a reply without a code when no rule names one
    highest_subject: int  # of enhanced codes (RFC 3463: 7); above, only the class entry applies
    notes: Mapping[str, str]  # NOTE_FIELDS key -> text, a str.format template


def parse_severities(raw: Any, source: str, problems: list[str]) -> dict[str, str]:
    where = f"{source}: severities"
    return {name: body["description"] for name, body in
            _described(raw, where, SEVERITY_FIELDS, ("description",), problems).items()}


def parse_kinds(raw: Any, source: str, problems: list[str],
                judged: tuple[str, ...] | None) -> dict[str, Kind]:
    """``kinds``: one entry for each kind of judging.kinds (None: judging is broken, not checked)."""
    where = f"{source}: kinds"
    kinds = {name: Kind(name, body["description"], body["mta_next"]) for name, body in
             _described(raw, where, KIND_FIELDS, ("description", "mta_next"), problems).items()}
    if judged is None:
        return kinds
    for name in kinds:
        if name not in judged:
            problems.append(f"{where}: unknown kind {name!r} (kinds are {', '.join(judged)})")
    if raw is not None:
        for name in judged:
            if name not in kinds:
                problems.append(f"{where}: kind {name!r} is required (explain uses it)")
    return kinds


def _described(raw: Any, where: str, allowed: set[str], required: tuple[str, ...],
               problems: list[str]) -> dict[str, dict[str, str]]:
    """A mapping of snake_case names to mappings of required non-empty strings."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of name to {{{', '.join(required)}}}")
        return {}
    found: dict[str, dict[str, str]] = {}
    for name, body in raw.items():
        at = f"{where}.{name}"
        if not (isinstance(name, str) and CATEGORY_NAME.fullmatch(name)):
            problems.append(f"{where}: name {name!r} must be snake_case")
            continue
        body = body if isinstance(body, dict) else {}
        unknown_fields(body, allowed, at, problems)
        values = {}
        for key in required:
            value = body.get(key)
            if not (isinstance(value, str) and value.strip()):
                problems.append(f"{at}: missing field {key!r}")
                value = ""
            values[key] = value
        found[name] = values
    return found


def parse_categories(raw: Any, source: str, problems: list[str],
                     severities: Mapping[str, str] | None = None) -> dict[str, Category]:
    where = f"{source}: categories"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of name to {{description}}")
        return {}
    categories: dict[str, Category] = {}
    for name, body in raw.items():
        at = f"{where}.{name}"
        if not (isinstance(name, str) and CATEGORY_NAME.fullmatch(name)):
            problems.append(f"{where}: category name {name!r} must be snake_case")
            continue
        body = body if isinstance(body, dict) else {}
        unknown_fields(body, CATEGORY_FIELDS, at, problems)
        texts = {}
        for key in ("description", "severity", "sender_action", "recipient_action"):
            value = body.get(key)
            if not (isinstance(value, str) and value.strip()):
                problems.append(f"{at}: missing field {key!r}")
                value = ""
            texts[key] = value
        if texts["severity"] and severities is not None and texts["severity"] not in severities:
            problems.append(f"{at}: unknown severity {texts['severity']!r}")
        categories[name] = Category(name, **texts)
    for name in REQUIRED_CATEGORIES:
        if name not in categories:
            problems.append(f"{where}: category {name!r} is required (the classifier uses it)")
    return categories


def parse_status_kinds(raw: Any, source: str, problems: list[str]) -> dict[str, str | None]:
    """``status_kinds``: every event status -> soft | hard | null (no kind: a delivery)."""
    where = f"{source}: status_kinds"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of status to soft, hard or null")
        return {}
    kinds: dict[str, str | None] = {}
    for status, kind in raw.items():
        if status not in STATUSES:
            problems.append(f"{where}: unknown status {status!r} (statuses are "
                            f"{', '.join(STATUSES)})")
        elif kind is not None and kind not in RULE_KINDS:
            problems.append(f"{where}.{status}: kind {kind!r} is not one of "
                            f"{', '.join(RULE_KINDS)} (or null: no kind)")
        else:
            kinds[status] = kind
    for status in STATUSES:
        if status not in raw:
            problems.append(f"{where}: status {status!r} is required (events have it)")
    return kinds


def parse_uninformative(raw: Any, source: str, categories: Mapping[str, Any],
                        problems: list[str]) -> frozenset[str]:
    """``uninformative_categories``: a list of category names."""
    where = f"{source}: uninformative_categories"
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        problems.append(f"{where}: must be a list of category names")
        return frozenset()
    found = set()
    for index, name in enumerate(raw):
        if isinstance(name, str) and name in categories:
            found.add(name)
        else:
            problems.append(f"{where}[{index}]: unknown category {name!r}")
    return frozenset(found)


def parse_judging(raw: Any, source: str, problems: list[str]) -> Judging | None:
    """``judging``: {kinds, by_digit, no_code, highest_subject, notes}; None when unusable."""
    where = f"{source}: judging"
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with {', '.join(JUDGING_FIELDS)}")
        return None
    before = len(problems)
    unknown_fields(raw, JUDGING_FIELDS, where, problems)
    for key in JUDGING_FIELDS:
        if key not in raw:
            problems.append(f"{where}: missing field {key!r}")
    kinds = _judged_kinds(raw.get("kinds"), f"{where}.kinds", problems)
    by_digit = _by_digit(raw.get("by_digit"), f"{where}.by_digit", kinds, problems)
    no_code = raw.get("no_code")
    if "no_code" in raw and no_code not in kinds:
        problems.append(f"{where}.no_code: {no_code!r} is not one of judging.kinds")
    highest = raw.get("highest_subject")
    if "highest_subject" in raw and (isinstance(highest, bool) or not isinstance(highest, int)
                                     or not 0 <= highest <= 999):
        problems.append(f"{where}.highest_subject: must be a whole number 0-999")
    notes = _notes(raw.get("notes"), f"{where}.notes", problems)
    if len(problems) > before:
        return None
    return Judging(kinds=kinds, by_digit=MappingProxyType(by_digit), no_code=no_code,
                   highest_subject=highest, notes=MappingProxyType(notes))


def _judged_kinds(raw: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not (isinstance(raw, list) and raw and all(isinstance(k, str) and CATEGORY_NAME.fullmatch(k)
                                                  for k in raw)):
        problems.append(f"{where}: must be a list of snake_case kind names")
        return ()
    if len(set(raw)) != len(raw):
        problems.append(f"{where}: a kind is listed twice")
    for kind in RULE_KINDS:
        if kind not in raw:
            problems.append(f"{where}: kind {kind!r} is required (text rules may name it)")
    return tuple(dict.fromkeys(raw))


def _by_digit(raw: Any, where: str, kinds: tuple[str, ...],
              problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of a code's first digit to a kind")
        return {}
    found: dict[str, str] = {}
    for key, kind in raw.items():
        digit = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
        if not (isinstance(digit, str) and _DIGIT.fullmatch(digit)):
            problems.append(f"{where}: {key!r} is not a digit 1-5")
        elif kind not in kinds:
            problems.append(f"{where}[{digit!r}]: {kind!r} is not one of judging.kinds")
        else:
            found[digit] = kind
    return found


def _notes(raw: Any, where: str, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of note name to text")
        return {}
    notes: dict[str, str] = {}
    for key in raw:
        if key not in NOTE_FIELDS:
            problems.append(f"{where}: unknown note {key!r}")
    for key, fields in NOTE_FIELDS.items():
        text = raw.get(key)
        if not (isinstance(text, str) and text.strip()):
            problems.append(f"{where}.{key}: missing, or not a non-empty string")
            continue
        try:
            text.format(**dict.fromkeys(fields, ""))
        except (KeyError, IndexError, ValueError) as exc:
            bad = f"{{{exc.args[0]}}}" if isinstance(exc, KeyError) else str(exc)
            names = ", ".join(f"{{{field}}}" for field in fields) or "none"
            problems.append(f"{where}.{key}: bad placeholder {bad}; it may use {names}")
            continue
        notes[key] = text
    return notes


def parse_default_deferrals(raw: Any, source: str, problems: list[str]) -> tuple[Any, ...]:
    """``default_persistent_deferrals``: a list of rule mappings, in the shape of the config
    file's ``persistent_deferrals:`` (bounce_exporter.state.deferrals checks each rule)."""
    where = f"{source}: default_persistent_deferrals"
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{where}: must be a list of rules like the config's persistent_deferrals")
        return ()
    for index, rule in enumerate(raw):
        if not isinstance(rule, dict):
            problems.append(f"{where}[{index}]: must be a mapping with name, match, "
                            f"min_attempts, min_duration and clear_after")
    return tuple(raw)
