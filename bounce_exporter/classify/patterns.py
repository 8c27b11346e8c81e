"""Preparing the text rules' patterns for the classifier's prefilter (load time only).

classifier.py splits each pattern into its top-level alternatives ("units"), matches them against
lower-cased text (case-folded patterns), and finds the units that can match a reply with one trie
regex of literals one of which every match of a unit contains. This module reads those literals
from the pattern text itself, with a small scanner of the regex syntax: when unsure it finds none,
and the unit is then always tried (slower, never wrong).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MIN_LITERAL = 3  # shorter literals filter too little; their units are always tried
_KEY_LENGTH = 8
_KEY_MIN = 4
# Characters from rare to common in mail reply texts (measured on the test corpus's replies): a key
# starts at its literal's rarest character, so the scan enters the trie at few positions.
_RARITY = {ch: rank for rank, ch in enumerate("&?+#'*<>_@[]/=;()\"qjzwhkbxvfgyupcdmlisnroate")}
_GLOBAL_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")


def case_folded(pattern: str) -> str:
    """The pattern for lower-cased text: literal letters lower-cased, escapes (\\S, \\b, \\D ...)
    kept. A pattern that does not survive folding (e.g. range [Z-a]) is matched with (?i:)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            end = i + 2
            if pattern.startswith("N{", i + 1):
                end = pattern.find("}", i) + 1 or len(pattern)
            out.append(pattern[i:end])
            i = end
        elif pattern.startswith("(?P", i):
            out.append("(?P")
            i += 3
        else:
            out.append(ch.lower())
            i += 1
    folded = "".join(out)
    try:
        re.compile(folded)
    except re.error:
        return f"(?i:{pattern})"
    return folded


def alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a pattern ("a|b(c|d)" -> ["a", "b(c|d)"])."""
    if _GLOBAL_FLAGS.match(pattern):
        return [pattern]  # flags such as (?x) apply to the whole pattern: keep it whole
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    in_class = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            if pattern.startswith("^", i + 1):
                i += 1
            if pattern.startswith("]", i + 1):
                i += 1  # a leading ] is a literal
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    try:
        for part in parts:
            re.compile(part)
    except re.error:
        return [pattern]
    return parts


def required_literals(pattern: str) -> frozenset[str] | None:
    """Strings of which every match of the (case-folded) pattern contains at least one;
    None when no such set of literals of useful length is found, or when the pattern uses syntax
    the scanner does not read (then the unit is always tried: slower, never wrong)."""
    scanner = _Scanner(pattern)
    try:
        found = scanner.alternation()
    except _Unsure:
        return None
    return found if scanner.at == len(pattern) else None


class _Unsure(Exception):
    """Syntax the scanner does not read (or reads as something else than re would)."""


# Escapes that match one of a set of characters, or a position: no literal. Other letter and digit
# escapes (\x41, \N{...}, \0, \1, \g) are not read. An escaped non-alphanumeric is that character.
_CLASS_ESCAPES = frozenset("dDsSwWbBAZ")
# A repeat count: {3}, {2,}, {2,5}, {,5}. Any other "{" is not read.
_COUNT = re.compile(r"\{(\d*)(?:,(\d*))?\}")
# The group openings the scanner descends into (their body must match) or skips (lookarounds and
# scoped flags: what they match is not simply part of the match, or not of the case-folded text).
_DESCEND = ("(?:", "(?>", "(?P<")
_SKIP = ("(?=", "(?!", "(?<=", "(?<!")
_SCOPED_FLAGS = re.compile(r"\(\?[aiLmsux]*(?:-[imsx]+)?:")


class _Scanner:
    """A reader of the regex syntax the catalog's rules use, enough to find required literals.

    Each part of a pattern is read as a literal character, or as an item with the literals one of
    which every match of it contains (None: no such literals). Sequences join consecutive literal
    characters into runs; alternatives need literals in every branch."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.at = 0

    def alternation(self) -> frozenset[str] | None:
        branches = [self.sequence()]
        while self.pattern.startswith("|", self.at):
            self.at += 1
            branches.append(self.sequence())
        if len(branches) == 1:
            return branches[0]
        if all(branches):
            return frozenset().union(*branches)  # type: ignore[arg-type]
        return None

    def sequence(self) -> frozenset[str] | None:
        options: list[frozenset[str]] = []
        run: list[str] = []
        while self.at < len(self.pattern) and self.pattern[self.at] not in "|)":
            literal, found = self.atom()
            minimum = self.repeat()
            if literal is not None and minimum is None:
                run.append(literal)
                continue
            if len(run) >= MIN_LITERAL:
                options.append(frozenset({"".join(run)}))
            run.clear()
            if minimum is not None and minimum < 1:
                found = None  # an optional part requires nothing
            if found:
                options.append(found)
        if len(run) >= MIN_LITERAL:
            options.append(frozenset({"".join(run)}))
        if not options:
            return None
        # The cheapest to scan for: keys starting at rare characters, then the longest literals.
        return min(options, key=lambda literals: (max(_rarity(key_of(lit)[0]) for lit in literals),
                                                  -min(map(len, literals)), len(literals)))

    def atom(self) -> tuple[str | None, frozenset[str] | None]:
        """One character, escape, class or group: (its literal character or None, literals)."""
        pattern, at = self.pattern, self.at
        ch = pattern[at]
        if ch == "\\":
            self.at += 2
            escaped = pattern[at + 1:at + 2]
            if escaped in _CLASS_ESCAPES:
                return None, None
            if not escaped or escaped.isalnum():
                raise _Unsure(pattern)
            return escaped, None
        if ch == "[":
            return self.char_class()
        if ch == "(":
            return None, self.group()
        if ch in "*+?{":
            raise _Unsure(pattern)  # a repeat of nothing, or a "{" that is not a count
        self.at += 1
        if ch in ".^$":
            return None, None
        return ch, None

    def repeat(self) -> int | None:
        """Reads a repeat after an atom (*, +, ?, {m,n}, and a lazy or possessive mark): its
        minimum, or None when the atom is not repeated."""
        pattern, at = self.pattern, self.at
        if pattern.startswith(("*", "?"), at):
            minimum, self.at = 0, at + 1
        elif pattern.startswith("+", at):
            minimum, self.at = 1, at + 1
        elif pattern.startswith("{", at):
            count = _COUNT.match(pattern, at)
            if count is None or count.group() == "{}":
                raise _Unsure(pattern)
            minimum, self.at = int(count.group(1) or 0), count.end()
        else:
            return None
        if pattern.startswith(("?", "+"), self.at):
            self.at += 1
        if pattern.startswith(("*", "+", "?", "{"), self.at):
            raise _Unsure(pattern)
        return minimum

    def char_class(self) -> tuple[str | None, None]:
        """Skips a [...] set; a set of one plain character ([.], [\\-]) is that character."""
        pattern = self.pattern
        start = self.at + 1
        i = start
        if pattern.startswith("^", i):
            i += 1
        if pattern.startswith("]", i):
            i += 1  # a leading ] is a literal
        while i < len(pattern) and pattern[i] != "]":
            i += 2 if pattern[i] == "\\" else 1
        if i >= len(pattern):
            raise _Unsure(pattern)
        self.at = i + 1
        body = pattern[start:i]
        if len(body) == 1 and body not in "^\\[":
            return body, None
        if len(body) == 2 and body[0] == "\\" and not body[1].isalnum():
            return body[1], None
        return None, None

    def group(self) -> frozenset[str] | None:
        """Reads a group: the literals its body requires, or None for a lookaround or a group
        with scoped flags (skipped)."""
        pattern, at = self.pattern, self.at
        descend = True
        if pattern.startswith("(?P<", at):
            end = pattern.find(">", at)
            if end < 0:
                raise _Unsure(pattern)
            self.at = end + 1
        elif pattern.startswith(_DESCEND, at):
            self.at = at + 3
        elif pattern.startswith(_SKIP, at):
            descend = False
            self.at = at + (4 if pattern.startswith("(?<", at) else 3)
        elif (flags := _SCOPED_FLAGS.match(pattern, at)) is not None:
            descend = False
            self.at = flags.end()
        elif pattern.startswith("(?", at):
            raise _Unsure(pattern)  # comments, conditionals, back-references, global flags
        else:
            self.at = at + 1
        found = self.alternation()
        if not pattern.startswith(")", self.at):
            raise _Unsure(pattern)
        self.at += 1
        return found if descend else None


def key_of(literal: str) -> str:
    """The part of a required literal the scan looks for: from its rarest character on, keeping
    at least _KEY_MIN characters (short keys match too often)."""
    if len(literal) <= _KEY_MIN:
        return literal
    start = min(range(len(literal) - _KEY_MIN + 1), key=lambda i: (_rarity(literal[i]), i))
    return literal[start:start + _KEY_LENGTH]


def _rarity(ch: str) -> int:
    return _RARITY.get(ch, len(_RARITY))


def trie(keys: Iterable[str]) -> str:
    """One regex matching any of the keys, factored by prefix; prefers the longest key."""
    root: dict = {}
    for key in keys:
        node = root
        for ch in key:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(root)
