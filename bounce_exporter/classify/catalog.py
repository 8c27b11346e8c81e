"""The SMTP reply catalog (config/catalog.yaml): loaded, checked as a whole, frozen.

Every fact about reply codes lives in the YAML file; this module only reads it into plain frozen
dataclasses and reports every problem found at once (``ConfigError``), each naming its location,
e.g. ``catalog.yaml: text_rules[3] (name 'x'): invalid regex: ...``.

Besides the codes and rules the classifier uses, the catalog carries what ``explain`` shows: each
category's severity and default actions, the severity levels, and per kind what the MTA does next.
Those sections, and the other facts (what each event status means, the categories that name no
cause, how explain judges a reply, the default persistent-deferral rules), are checked in facts.py;
the provider table (who answered, by relay host) in providers.py. This module loads the file,
checks the codes and text rules, and builds the Catalog.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from bounce_exporter.checks import unknown_fields
from bounce_exporter.classify.facts import (
    RULE_KINDS,
    Category,
    Judging,
    Kind,
    parse_categories,
    parse_default_deferrals,
    parse_judging,
    parse_kinds,
    parse_severities,
    parse_status_kinds,
    parse_uninformative,
)
from bounce_exporter.classify.providers import ProviderTable, parse_providers
from bounce_exporter.errors import ConfigError

SECTIONS = ("categories", "severities", "kinds", "status_kinds", "uninformative_categories",
            "judging", "basic_codes", "enhanced_codes", "text_rules",
            "default_persistent_deferrals", "providers")
INTENDED = ("success", "transient", "permanent", "either")
ENHANCED_CLASSES = (2, 4, 5)

CODE_FIELDS = {"meaning", "category", "intended", "ref", "sender_action", "recipient_action",
               "mta_action"}
ENHANCED_FIELDS = CODE_FIELDS | {"classes"}
ACTION_FIELDS = ("sender_action", "recipient_action", "mta_action")
RULE_FIELDS = {"name", "pattern", "category", "code", "enhanced", "note", "meaning", "kind",
               *ACTION_FIELDS}

BASIC_KEY = re.compile(r"[2-5][0-9][0-9]")
# "X.3.1" (subject.detail), "X.3.X" (subject), "4.X.X" (class)
ENHANCED_KEY = re.compile(r"X\.[0-7]\.(?:[1-9][0-9]{0,2}|0|X)|[245]\.X\.X")
# The classifier splits a pattern into its top-level alternatives: group numbers would shift.
BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")

PACKAGE_DATA = "bounce_exporter.data"
CATALOG_FILE = "catalog.yaml"


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """One basic ("431") or enhanced ("X.3.1", "X.3.X", "4.X.X") code."""

    code: str
    meaning: str
    category: str
    intended: str  # success | transient | permanent | either
    ref: str | None = None
    classes: tuple[int, ...] | None = None  # enhanced codes only: the registry's classes
    sender_action: str | None = None
    recipient_action: str | None = None
    mta_action: str | None = None


@dataclass(frozen=True, slots=True)
class TextRule:
    name: str
    category: str
    pattern: str | None  # None: matches any text (only with a code/enhanced constraint)
    code: str | None = None  # regex the whole basic code must match
    enhanced: str | None = None  # regex the whole enhanced code must match
    note: str | None = None
    origin: str = ""  # where it was defined, e.g. "catalog.yaml: text_rules[3]"
    meaning: str | None = None  # what explain shows when this rule decides
    sender_action: str | None = None
    recipient_action: str | None = None
    mta_action: str | None = None
    kind: str | None = None  # soft | hard when the text carries no reply code (explain only)


@dataclass(frozen=True, slots=True, eq=False)
class Catalog:
    source: str
    categories: Mapping[str, Category]
    basic_codes: Mapping[str, CodeInfo]
    enhanced_codes: Mapping[str, CodeInfo]
    text_rules: tuple[TextRule, ...]
    severities: Mapping[str, str]  # level -> description
    kinds: Mapping[str, Kind]
    status_kinds: Mapping[str, str | None]  # event status -> soft | hard | None (a delivery)
    uninformative: frozenset[str]  # categories that name no cause: their codes are passed over
    judging: Judging | None  # None only in a catalog with problems
    default_persistent_deferrals: tuple[Any, ...]  # rule mappings (state.deferrals checks them)
    providers: ProviderTable  # who answered: by relay host (providers.py)

    def basic(self, code: str | None) -> CodeInfo | None:
        return self.basic_codes.get(code) if code else None

    def enhanced(self, enhanced: str | None) -> CodeInfo | None:
        """The entry for "4.3.1": its subject.detail "X.3.1", else its subject "X.3.X"."""
        parts = _enhanced_parts(enhanced)
        if parts is None:
            return None
        info = self.enhanced_codes.get(f"X.{parts[1]}.{parts[2]}")
        if info is None:
            info = self.enhanced_codes.get(f"X.{parts[1]}.X")
        return info

    def enhanced_class(self, enhanced: str | None) -> CodeInfo | None:
        """The class entry ("4.X.X") of an enhanced code."""
        parts = _enhanced_parts(enhanced)
        return None if parts is None else self.enhanced_codes.get(f"{parts[0]}.X.X")

    def knows_code(self, code: str) -> bool:
        """Whether the basic code has an entry of its own (``basic_codes``)."""
        return code in self.basic_codes

    def knows_enhanced(self, enhanced: str) -> bool:
        """Whether the catalog names this enhanced code itself, as written: its subject.detail
        has an entry (X.3.1 for 4.3.1, not only the subject's X.3.X), written without leading
        zeros, in one of the entry's classes or as a failure (4 or 5: servers send 552 5.2.2 for
        the registry's transient-only X.2.2, and a class adds at most one series per entry); or a text rule that names enhanced codes on their
        own (an ``enhanced`` constraint, no ``code`` one) accepts it: Microsoft's 4.7.500-699,
        Gmail's 4.7.27. A rule that needs a basic code too (``421`` with any ``4.7.N``) describes
        a reply, not the codes it allows."""
        parts = _enhanced_parts(enhanced)
        if parts is not None and enhanced == ".".join(parts):
            info = self.enhanced_codes.get(f"X.{parts[1]}.{parts[2]}")
            if info is not None and int(parts[0]) in {*(info.classes or ENHANCED_CLASSES), 4, 5}:
                return True
        return any(rule.enhanced is not None and rule.code is None
                   and re.fullmatch(rule.enhanced, enhanced) for rule in self.text_rules)


def _enhanced_parts(enhanced: str | None) -> tuple[str, str, str] | None:
    parts = enhanced.split(".") if enhanced else []
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    return parts[0], str(int(parts[1])), str(int(parts[2]))


def default_catalog_path() -> Path:
    """The packaged catalog; in a source checkout, the repository's config/catalog.yaml."""
    try:
        resource = resources.files(PACKAGE_DATA) / CATALOG_FILE
        if resource.is_file():
            return Path(str(resource))
    except (ModuleNotFoundError, TypeError, OSError):
        pass
    return Path(__file__).resolve().parents[2] / "config" / CATALOG_FILE


def __getattr__(name: str) -> Any:
    """``KINDS``: what explain can judge a reply to be (the packaged catalog's judging.kinds)."""
    if name == "KINDS":
        judging = packaged_catalog().judging
        return judging.kinds if judging is not None else ()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def packaged_catalog() -> Catalog:
    """The packaged catalog, read and checked once per process (it is frozen): the default
    deferral rules, KINDS and the default classifier all use this one."""
    return load_catalog()


def default_deferral_rules_raw() -> list[dict]:
    """The packaged catalog's ``default_persistent_deferrals``: rule mappings in the shape of the
    config file's ``persistent_deferrals:`` (a fresh copy each call)."""
    return copy.deepcopy(list(packaged_catalog().default_persistent_deferrals))


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and check a catalog file; raises ConfigError listing every problem."""
    path = default_catalog_path() if path is None else Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the catalog: {exc.strerror or exc}"]) from None
    problems: list[str] = []
    try:
        data = yaml.load(text, Loader=_loader(source, problems))  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from None
    catalog = parse_catalog(data, source, problems)
    if problems:
        raise ConfigError(problems)
    return catalog


def parse_catalog(data: Any, source: str, problems: list[str] | None = None) -> Catalog:
    """Check parsed YAML; appends problems to ``problems`` (raises ConfigError if not given)."""
    raise_here = problems is None
    problems = [] if problems is None else problems
    if not isinstance(data, dict):
        problems.append(f"{source}: must be a mapping with sections {', '.join(SECTIONS)}")
        data = {}
    for key in data:
        if key not in SECTIONS:
            problems.append(f"{source}: unknown section {key!r}")
    for key in SECTIONS:
        if key not in data:
            problems.append(f"{source}: missing section {key!r}")

    severities = parse_severities(data.get("severities"), source, problems)
    judging = parse_judging(data.get("judging"), source, problems)
    kinds = parse_kinds(data.get("kinds"), source, problems,
                        judging.kinds if judging is not None else None)
    status_kinds = parse_status_kinds(data.get("status_kinds"), source, problems)
    categories = parse_categories(data.get("categories"), source, problems, severities)
    uninformative = parse_uninformative(data.get("uninformative_categories"), source, categories,
                                        problems)
    names = set(categories)
    basic = _parse_codes(data.get("basic_codes"), f"{source}: basic_codes", BASIC_KEY,
                         CODE_FIELDS, names, problems, enhanced=False)
    enhanced = _parse_codes(data.get("enhanced_codes"), f"{source}: enhanced_codes", ENHANCED_KEY,
                            ENHANCED_FIELDS, names, problems, enhanced=True)
    rules = parse_text_rules(data.get("text_rules"), f"{source}: text_rules", names, problems)
    deferrals = parse_default_deferrals(data.get("default_persistent_deferrals"), source, problems)
    providers = parse_providers(data.get("providers"), source, problems)
    if raise_here and problems:
        raise ConfigError(problems)
    return Catalog(source=source, categories=MappingProxyType(categories),
                   basic_codes=MappingProxyType(basic), enhanced_codes=MappingProxyType(enhanced),
                   text_rules=tuple(rules), severities=MappingProxyType(severities),
                   kinds=MappingProxyType(kinds), status_kinds=MappingProxyType(status_kinds),
                   uninformative=uninformative, judging=judging,
                   default_persistent_deferrals=deferrals, providers=providers)


def parse_text_rules(raw: Any, where: str, categories: set[str] | Mapping[str, Any],
                     problems: list[str]) -> list[TextRule]:
    """Check a list of text rules (the catalog's, or extra ones from the config file)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"{where}: must be a list of rules")
        return []
    rules: list[TextRule] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{at}: must be a mapping with name, pattern and category")
            continue
        name = item.get("name")
        if isinstance(name, str) and name:
            at = f"{at} (name {name!r})"
            if name in seen:
                problems.append(f"{at}: duplicate rule name (also {where}[{seen[name]}])")
            seen.setdefault(name, index)
        else:
            problems.append(f"{at}: 'name' must be a non-empty string")
        rules.append(_parse_rule(item, at, f"{where}[{index}]", categories, problems))
    return rules


def _parse_rule(item: dict, at: str, origin: str, categories: set[str] | Mapping[str, Any],
                problems: list[str]) -> TextRule:
    """One text rule's fields; ``at`` names the rule in problems, ``origin`` in explanations."""
    name = item.get("name")
    unknown_fields(item, RULE_FIELDS, at, problems)
    pattern = item.get("pattern")
    if pattern is None:
        if item.get("code") is None and item.get("enhanced") is None:
            problems.append(f"{at}: missing field 'pattern' (required unless 'code' or "
                            f"'enhanced' is given)")
    elif not (isinstance(pattern, str) and pattern):
        problems.append(f"{at}: 'pattern' must be a non-empty regex string")
        pattern = None
    else:
        _check_regex(pattern, at, problems)
    fields: dict[str, str | None] = {}
    for key in ("code", "enhanced"):
        value = item.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is not None and not (isinstance(value, str) and value):
            problems.append(f"{at}: {key!r} must be a regex string")
            value = None
        if value is not None:
            _check_regex(value, f"{at}: {key}", problems)
        fields[key] = value
    category = _check_category(item.get("category"), at, categories, problems)
    texts: dict[str, str | None] = {}
    for key in ("note", "meaning", *ACTION_FIELDS):
        value = item.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            problems.append(f"{at}: {key!r} must be a non-empty string")
            value = None
        texts[key] = value
    kind = item.get("kind")
    if kind is not None and kind not in RULE_KINDS:
        problems.append(f"{at}: kind {kind!r} is not one of {', '.join(RULE_KINDS)}")
        kind = None
    return TextRule(name=name if isinstance(name, str) else "", category=category or "",
                    pattern=pattern, code=fields["code"], enhanced=fields["enhanced"],
                    note=texts["note"], origin=origin, meaning=texts["meaning"],
                    sender_action=texts["sender_action"],
                    recipient_action=texts["recipient_action"], mta_action=texts["mta_action"],
                    kind=kind)


def _parse_codes(raw: Any, where: str, key_form: re.Pattern[str], allowed: set[str],
                 categories: set[str], problems: list[str], *,
                 enhanced: bool) -> dict[str, CodeInfo]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of code to entry")
        return {}
    codes: dict[str, CodeInfo] = {}
    for key, body in raw.items():
        code = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
        at = f"{where}[{code!r}]"
        if not (isinstance(code, str) and key_form.fullmatch(code)):
            form = '"X.3.1", "X.3.X" or "4.X.X"' if enhanced else 'three digits like "431"'
            problems.append(f"{at}: a code must look like {form}")
            continue
        if not isinstance(body, dict):
            problems.append(f"{at}: must be a mapping with meaning, category and intended")
            continue
        unknown_fields(body, allowed, at, problems)
        texts: dict[str, str | None] = {}
        for field in ("meaning", "ref", "sender_action", "recipient_action", "mta_action"):
            value = body.get(field)
            if field == "meaning" and value is None:
                problems.append(f"{at}: missing field 'meaning'")
            elif value is not None and not (isinstance(value, str) and value.strip()):
                problems.append(f"{at}: {field!r} must be a non-empty string")
                value = None
            texts[field] = value
        category = _check_category(body.get("category"), at, categories, problems)
        intended = body.get("intended")
        if intended is None:
            problems.append(f"{at}: missing field 'intended'")
        elif intended not in INTENDED:
            problems.append(f"{at}: intended {intended!r} is not one of {', '.join(INTENDED)}")
            intended = None
        classes = None
        if enhanced:
            classes = _check_classes(body.get("classes"), intended, at, problems)
        codes[code] = CodeInfo(code=code, meaning=texts["meaning"] or "", category=category or "",
                               intended=intended or "", ref=texts["ref"], classes=classes,
                               sender_action=texts["sender_action"],
                               recipient_action=texts["recipient_action"],
                               mta_action=texts["mta_action"])
    return codes


def _check_classes(raw: Any, intended: str | None, at: str,
                   problems: list[str]) -> tuple[int, ...] | None:
    if raw is None:
        problems.append(f"{at}: missing field 'classes'")
        return None
    if not (isinstance(raw, list) and all(c in ENHANCED_CLASSES and not isinstance(c, bool)
                                          for c in raw)):
        problems.append(f"{at}: 'classes' must be a list drawn from 2, 4, 5")
        return None
    classes = tuple(sorted(set(raw)))
    expected = intended_for_classes(classes)
    if intended and expected and intended != expected:
        problems.append(f"{at}: intended {intended!r} disagrees with classes "
                        f"{list(classes)} (expected {expected!r})")
    return classes


def intended_for_classes(classes: tuple[int, ...]) -> str | None:
    """What an enhanced code is meant for, from the classes the registry allows it in."""
    if 4 in classes and 5 in classes:
        return "either"
    if 4 in classes:
        return "transient"
    if 5 in classes:
        return "permanent"
    if 2 in classes:
        return "success"
    return None  # deprecated entry without classes


def _check_category(value: Any, at: str, categories: set[str] | Mapping[str, Any],
                    problems: list[str]) -> str | None:
    if value is None:
        problems.append(f"{at}: missing field 'category'")
        return None
    if not isinstance(value, str) or value not in categories:
        problems.append(f"{at}: unknown category {value!r}")
        return None
    return value


def _check_regex(pattern: str, at: str, problems: list[str]) -> None:
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        problems.append(f"{at}: invalid regex: {exc}")
        return
    if compiled.search(""):
        problems.append(f"{at}: regex matches empty text (it would match every reply)")
    if BACKREFERENCE.search(pattern):
        problems.append(f"{at}: back-references are not allowed")


def _loader(source: str, problems: list[str]) -> type[yaml.SafeLoader]:
    """A safe loader that reports duplicate mapping keys instead of keeping the last one."""
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[valid-type,misc]
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode,
                          deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in mapping:
                line = key_node.start_mark.line + 1
                problems.append(f"{source}: line {line}: duplicate key {key!r}")
            mapping[key] = loader.construct_object(value_node, deep=deep)
        return mapping

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader
