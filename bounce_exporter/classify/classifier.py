"""Classification of a reply: soft or hard, and a reason category from the code catalog.

kind is what the MTA decided (the event's status, by the catalog's status_kinds), never the reply
code's first digit. category is the first of: the text rules (first match wins), the enhanced code
(subject.detail, or its subject when the detail is not registered), the basic code, then "expired"
/ "other". Codes whose category is one of the catalog's uninformative_categories ("other", "none")
name no cause and are passed over. config/catalog.yaml holds every fact; this module holds none.

Speed: classify() runs for every delivery event, so all work is done at load time. One alternation
of all rules is slow in Python's re (it tries every branch at every position: ~300 us for a reply),
so the rules are matched in two steps that give the same answer as trying them in order:
  1. the text is lower-cased and the patterns case-folded (re's fast scans do not work under
     IGNORECASE); each rule is split into its top-level alternatives ("units");
  2. for each unit, literals of which every match must contain one are read from its pattern
     text (classify/patterns.py, a small scanner: when unsure, it finds none); one trie regex of
     those literals (each cut to start at its rarest letter, so the scan enters the trie at fewer
     positions) finds the units that can match; only those are tried, in rule order. A unit
     without such literals is always tried.
A 130-character reply costs one pass of the trie regex plus two or three small searches: ~5 us.
tests/test_classify.py checks the result against trying every rule in order.
Rules with a code/enhanced constraint are filtered per (code, enhanced) pair, cached, and each set
of rules that can apply gets its own trie: a provider rule bound to "4.7.27" costs nothing to
replies with other codes (common keys such as "tls" or "spf" would otherwise slow every scan).
Replies repeat (one remote host answers every message alike), so the category of a (code, enhanced,
text) is remembered in a bounded memo: a repeated reply costs a dict lookup.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bounce_exporter.classify import patterns
from bounce_exporter.classify.catalog import (
    Catalog,
    CodeInfo,
    TextRule,
    load_catalog,
    packaged_catalog,
    parse_text_rules,
)
from bounce_exporter.errors import ConfigError
from bounce_exporter.event import DeliveryEvent

EXTRA_RULES_WHERE = "classification.text_rules"
_CACHE_LIMIT = 4096  # distinct (code, enhanced) pairs remembered; real logs have a few dozen
# Replies repeat (the same remote host gives the same answer to every message): the category of a
# (code, enhanced, text) is remembered. Bounded in entries and in text length (memory).
_MEMO_LIMIT = 8192
_MEMO_TEXT = 512
_UNSEEN = "\0unseen"  # not a category name (categories are snake_case)


@dataclass(frozen=True, slots=True)
class Classification:
    kind: str | None  # "soft" | "hard" | None (sent)
    category: str  # one of the catalog's categories


@dataclass(frozen=True, slots=True)
class _Scope:
    """The text rules that apply to one (code, enhanced) pair."""

    prefilter: _Prefilter  # the units of the rules that can win, in rule order
    default: int | None  # a constraint-only rule that matched (later rules cannot win), or None


class Classifier:
    """Classifies delivery events by the catalog. Build with ``Classifier.load()``."""

    def __init__(self, catalog: Catalog, extra_rules: Iterable[TextRule] = ()):
        self.catalog = catalog
        self.categories: tuple[str, ...] = tuple(catalog.categories)
        self.rules: tuple[TextRule, ...] = (*extra_rules, *catalog.text_rules)
        self._rule_category = tuple(rule.category for rule in self.rules)
        self._verdicts = {(kind, category): Classification(kind, category)
                          for kind in ("soft", "hard") for category in self.categories}
        self._sent = Classification(None, "none")
        # What the MTA decided, by event status; codes of uninformative categories name no cause
        # (the lookup goes on to the next source). Both from the catalog.
        self._kinds: dict[str, str | None] = dict(catalog.status_kinds)
        uninformative = catalog.uninformative
        self._detail: dict[str, str | None] = {}  # "3.1" -> category (None: names no cause)
        self._subject: dict[str, str | None] = {}  # "3" -> category
        for key, info in catalog.enhanced_codes.items():
            if key[0] != "X":
                continue  # class entries ("4.X.X") name no cause
            category = None if info.category in uninformative else info.category
            if key.endswith(".X"):
                self._subject[key[2]] = category
            else:
                self._detail[key[2:]] = category
        self._basic = {code: info.category for code, info in catalog.basic_codes.items()
                       if info.category not in uninformative}
        self._units = _Units(self.rules)
        self._constraints = [(_constraint(r.code), _constraint(r.enhanced)) for r in self.rules]
        self._constrained = any(c != (None, None) for c in self._constraints)
        self._scopes: dict[tuple[bool, ...], _Scope] = {}
        self._by_codes: dict[tuple[str | None, str | None], _Scope] = {}
        # (code, enhanced, text) -> category, or None when no rule or code names one (the fallback
        # then depends on the status).
        self._memo: dict[tuple[str | None, str | None, str], str | None] = {}
        # Built now, not at the first event: the scope with every rule (no constraints anywhere),
        # else the one for replies that meet no constraint (the usual case).
        self._all = (self._scope(None, None) if self._constrained
                     else self._scope_for((True,) * len(self.rules)))

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None,
             extra_text_rules: list[dict] | None = None) -> Classifier:
        """The catalog at ``path`` (None: the packaged one), with the config file's extra rules
        checked before the catalog's. Raises ConfigError listing every problem."""
        catalog = packaged_catalog() if path is None else load_catalog(path)
        problems: list[str] = []
        extra = parse_text_rules(extra_text_rules, EXTRA_RULES_WHERE, catalog.categories,
                                 problems)
        if problems:
            raise ConfigError(problems)
        return cls(catalog, extra)

    def kind_of(self, status: str) -> str | None:
        """sent -> None, deferred/expired -> "soft", bounced -> "hard"."""
        try:
            return self._kinds[status]
        except KeyError:
            raise ValueError(f"unknown delivery status {status!r}") from None

    def classify(self, status: str, code: str | None, enhanced: str | None,
                 text: str) -> Classification:
        try:
            kind = self._kinds[status]
        except KeyError:
            raise ValueError(f"unknown delivery status {status!r}") from None
        if kind is None:
            return self._sent
        key = (code, enhanced, text)
        category = self._memo.get(key, _UNSEEN)
        if category is _UNSEEN:  # .get, not try/except KeyError: raising costs a miss ~1 us
            category = self._category(code, enhanced, text)
            if len(text) <= _MEMO_TEXT:
                if len(self._memo) >= _MEMO_LIMIT:
                    self._memo.clear()
                self._memo[key] = category
        if category is None:
            category = "expired" if status == "expired" else "other"
        return self._verdicts[kind, category]

    def classify_all(self, events: Iterable[DeliveryEvent],
                     ) -> list[tuple[DeliveryEvent, Classification]]:
        """(event, ``classify`` of it) for each event, in order; an event of a status of no kind
        (a delivery) gets its verdict without a call."""
        classify, kinds, sent = self.classify, self._kinds, self._sent
        return [(event, sent if kinds.get(event.status, "") is None
                 else classify(event.status, event.code, event.enhanced, event.text))
                for event in events]

    def _category(self, code: str | None, enhanced: str | None, text: str) -> str | None:
        """The first text rule's category, else the codes' (None: neither names a cause)."""
        scope = self._scope(code, enhanced) if self._constrained else self._all
        rule = scope.prefilter.first(text.lower())
        if rule is None:
            rule = scope.default
        if rule is not None:
            return self._rule_category[rule]
        return self._code_category(code, enhanced)

    def decided_by(self, code: str | None, enhanced: str | None,
                   text: str) -> TextRule | CodeInfo | None:
        """The text rule or code entry that gives a failure its category (None: the fallback).
        For explanations; not on the hot path."""
        scope = self._scope(code, enhanced) if self._constrained else self._all
        rule = scope.prefilter.first(text.lower())
        if rule is None:
            rule = scope.default
        if rule is not None:
            return self.rules[rule]
        info = self.catalog.enhanced(enhanced) if _enhanced_shape(enhanced) else None
        if info is not None and info.category not in self.catalog.uninformative:
            return info
        info = self.catalog.basic(code)
        if info is not None and info.category not in self.catalog.uninformative:
            return info
        return None

    def _code_category(self, code: str | None, enhanced: str | None) -> str | None:
        if enhanced and _enhanced_shape(enhanced):
            detail = enhanced[2:]
            if detail in self._detail:
                category = self._detail[detail]
            else:
                category = self._subject.get(enhanced[2])
            if category is not None:
                return category
        if code:
            return self._basic.get(code)
        return None

    def _scope(self, code: str | None, enhanced: str | None) -> _Scope:
        key = (code, enhanced)
        scope = self._by_codes.get(key)
        if scope is None:
            allowed = tuple(
                (code_re is None or (code is not None and code_re.fullmatch(code) is not None))
                and (enhanced_re is None
                     or (enhanced is not None and enhanced_re.fullmatch(enhanced) is not None))
                for code_re, enhanced_re in self._constraints)
            scope = self._scope_for(allowed)
            if len(self._by_codes) >= _CACHE_LIMIT:
                self._by_codes.clear()
            self._by_codes[key] = scope
        return scope

    def _scope_for(self, allowed: tuple[bool, ...]) -> _Scope:
        scope = self._scopes.get(allowed)
        if scope is None:
            default = next((i for i, rule in enumerate(self.rules)
                            if allowed[i] and rule.pattern is None), None)
            limit = len(self.rules) if default is None else default
            scope = _Scope(self._units.prefilter(allowed, limit), default)
            self._scopes[allowed] = scope
        return scope


class _Units:
    """The text rules' patterns split into units, each with the literals one of which every match
    contains (module docstring). Units are numbered in rule order."""

    def __init__(self, rules: Sequence[TextRule]):
        self.rule: list[int] = []
        self.regex: list[re.Pattern[str]] = []
        self.literals: list[frozenset[str] | None] = []
        for index, rule in enumerate(rules):
            if rule.pattern is None:
                continue
            for alternative in patterns.alternatives(rule.pattern):
                folded = patterns.case_folded(alternative)
                self.rule.append(index)
                self.regex.append(re.compile(folded))
                self.literals.append(patterns.required_literals(folded))

    def prefilter(self, allowed: tuple[bool, ...], limit: int) -> _Prefilter:
        """The prefilter over the units of the allowed rules before ``limit``."""
        always: list[int] = []
        by_key: dict[str, set[int]] = {}
        for unit, rule in enumerate(self.rule):
            if rule >= limit or not allowed[rule]:
                continue
            literals = self.literals[unit]
            if literals is None:
                always.append(unit)
            else:
                for literal in literals:
                    by_key.setdefault(patterns.key_of(literal), set()).add(unit)
        return _Prefilter(self, always, by_key)


class _Prefilter:
    """One trie regex of the units' keys: finds the units that can match, tried in rule order."""

    __slots__ = ("_always", "_anchor", "_by_key", "_unit_regex", "_unit_rule")

    def __init__(self, units: _Units, always: list[int], by_key: dict[str, set[int]]):
        self._unit_rule = units.rule
        self._unit_regex = units.regex
        self._always = tuple(always)
        # A scan reports the longest key at a position; keys that are its prefixes match there too
        # (looked up prefix by prefix: a scope is made at the first reply of its codes)
        self._by_key = {key: tuple(sorted(set().union(*(by_key[key[:n]]
                                                        for n in range(len(key) + 1)
                                                        if key[:n] in by_key))))
                        for key in by_key}
        self._anchor = re.compile(patterns.trie(by_key)) if by_key else None

    def first(self, lowered: str) -> int | None:
        """Index of the first rule (in order) whose unit matches, else None."""
        units: Iterable[int] = self._always
        anchor = self._anchor
        if anchor is not None:
            found = anchor.search(lowered)
            if found is not None:
                hits = list(self._always)
                by_key = self._by_key
                while found is not None:
                    hits += by_key[found.group()]
                    found = anchor.search(lowered, found.start() + 1)
                units = sorted(set(hits))
        unit_rule, unit_regex = self._unit_rule, self._unit_regex
        for unit in units:
            if unit_regex[unit].search(lowered):
                return unit_rule[unit]
        return None


def _constraint(pattern: str | None) -> re.Pattern[str] | None:
    return None if pattern is None else re.compile(pattern, re.IGNORECASE)


def _enhanced_shape(enhanced: str | None) -> bool:
    """"4.3.1", "5.7.650": class digit, dot, subject digit, dot, detail."""
    return (enhanced is not None and len(enhanced) >= 5 and enhanced[1] == "."
            and enhanced[3] == ".")
