"""Persistent-deferral rules: which deferrals to track, and when a streak of them is persistent.

Config: `persistent_deferrals:` is a list of rules
`{name, match: {code, enhanced, category}, min_attempts, min_duration, clear_after}`. A rule
matches an event when ANY of the match keys it gives matches (code 431 OR enhanced 4.3.1), so one
rule covers MTAs that log only one of the two. `name` and a non-empty `match` are required;
min_attempts (3), min_duration (30m) and clear_after (2h) have defaults. Key absent:
DEFAULT_RULES. An empty list disables tracking. How the tracker applies them: ``deferrals``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bounce_exporter.checks import parse_duration, type_name
from bounce_exporter.classify.catalog import default_deferral_rules_raw
from bounce_exporter.classify.classifier import Classification
from bounce_exporter.errors import ConfigError
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers.reply import is_code, is_enhanced

CONFIG_KEY = "persistent_deferrals"

_RULE_KEYS = ("name", "match", "min_attempts", "min_duration", "clear_after")
_MATCH_KEYS = ("code", "enhanced", "category")
_DEFAULT_MIN_ATTEMPTS = 3
_DEFAULT_MIN_DURATION = 30 * 60.0
_DEFAULT_CLEAR_AFTER = 2 * 3600.0


@dataclass(frozen=True)
class DeferralRule:
    """Which deferrals to track, and when a streak of them counts as persistent."""

    name: str
    code: str | None
    enhanced: str | None
    category: str | None
    min_attempts: int
    min_duration: float  # seconds
    clear_after: float  # seconds

    def matches(self, event: DeliveryEvent, classification: Classification | None) -> bool:
        """True when ANY of the given match keys equals the event's (code, enhanced, category)."""
        if self.code is not None and event.code == self.code:
            return True
        if self.enhanced is not None and event.enhanced == self.enhanced:
            return True
        return (self.category is not None and classification is not None
                and classification.category == self.category)




def parse_rules(raw: object) -> list[DeferralRule]:
    """Turn the `persistent_deferrals:` config value into rules; None (key absent) gives the
    defaults. Raise ConfigError listing every problem, each located like
    `persistent_deferrals[1].min_duration` (0-based index)."""
    if raw is None:
        return list(DEFAULT_RULES)
    return _rules(raw)


def _rules(raw: object) -> list[DeferralRule]:
    if not isinstance(raw, list):
        raise ConfigError([f"{CONFIG_KEY}: expected a list of rules, got {type_name(raw)}"])
    problems: list[str] = []
    rules: list[DeferralRule] = []
    first_seen: dict[str, str] = {}
    for index, item in enumerate(raw):
        where = f"{CONFIG_KEY}[{index}]"
        rule = _parse_rule(item, where, problems)
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name.strip():
            name = name.strip()
            if name in first_seen:
                problems.append(f"{where}.name: duplicate name {name!r} (also {first_seen[name]})")
            else:
                first_seen[name] = where
        if rule is not None:
            rules.append(rule)
    if problems:
        raise ConfigError(problems)
    return rules


def _parse_rule(item: object, where: str, problems: list[str]) -> DeferralRule | None:
    """Parse one rule, appending its problems; None when it has any."""
    if not isinstance(item, dict):
        problems.append(f"{where}: expected a mapping, got {type_name(item)}")
        return None
    before = len(problems)
    for key in item:
        if key not in _RULE_KEYS:
            problems.append(f"{where}: unknown key {key!r} (expected: {', '.join(_RULE_KEYS)})")

    name = item.get("name")
    if "name" not in item:
        problems.append(f"{where}: missing name")
    elif not isinstance(name, str) or not name.strip():
        problems.append(f"{where}.name: expected a non-empty string, got {name!r}")

    match = _parse_match(item.get("match"), "match" in item, f"{where}.match", problems)

    min_attempts: object = item.get("min_attempts", _DEFAULT_MIN_ATTEMPTS)
    if isinstance(min_attempts, bool) or not isinstance(min_attempts, int) or min_attempts < 1:
        problems.append(f"{where}.min_attempts: expected a whole number >= 1, got {min_attempts!r}")
    min_duration = _duration(item, "min_duration", _DEFAULT_MIN_DURATION, where, problems)
    clear_after = _duration(item, "clear_after", _DEFAULT_CLEAR_AFTER, where, problems)
    if clear_after is not None and clear_after <= 0:
        problems.append(
            f"{where}.clear_after: must be more than 0, got {item.get('clear_after')!r}"
        )

    if len(problems) > before:
        return None
    assert isinstance(name, str) and match is not None and isinstance(min_attempts, int)
    assert min_duration is not None and clear_after is not None
    return DeferralRule(
        name=name.strip(),
        code=match.get("code"),
        enhanced=match.get("enhanced"),
        category=match.get("category"),
        min_attempts=min_attempts,
        min_duration=min_duration,
        clear_after=clear_after,
    )


def _parse_match(
    raw: object, given: bool, where: str, problems: list[str]
) -> dict[str, str] | None:
    if not given:
        problems.append(
            f"{where.rsplit('.', 1)[0]}: missing match (give code, enhanced or category)"
        )
        return None
    if not isinstance(raw, dict):
        problems.append(
            f"{where}: expected a mapping of code, enhanced, category; got {type_name(raw)}"
        )
        return None
    if not raw:
        problems.append(f"{where}: empty; give at least one of code, enhanced, category")
        return None
    before = len(problems)
    match: dict[str, str] = {}
    for key, value in raw.items():
        if key not in _MATCH_KEYS:
            problems.append(f"{where}: unknown key {key!r} (expected: {', '.join(_MATCH_KEYS)})")
            continue
        text = (
            str(value).strip()
            if isinstance(value, (str, int)) and not isinstance(value, bool)
            else None
        )
        if key == "code" and (text is None or not is_code(text)):
            problems.append(f"{where}.code: not a 3-digit reply code: {value!r}")
        elif key == "enhanced" and (text is None or not is_enhanced(text)):
            problems.append(f"{where}.enhanced: not an enhanced status code like 4.3.1: {value!r}")
        elif key == "category" and (not isinstance(value, str) or not text):
            problems.append(f"{where}.category: expected a non-empty string, got {value!r}")
        else:
            assert text is not None
            match[key] = text
    return match if len(problems) == before else None


def _duration(
    item: dict, key: str, default: float, where: str, problems: list[str]
) -> float | None:
    try:
        return parse_duration(item.get(key, default))
    except ValueError as exc:
        problems.append(f"{where}.{key}: {exc}")
        return None


# The default rule (431 4.3.1, disk full), a fact of the catalog: config/catalog.yaml's
# default_persistent_deferrals, in the shape of the persistent_deferrals config key.
DEFAULT_RULES: tuple[DeferralRule, ...] = tuple(_rules(default_deferral_rules_raw()))
