"""Checking what users write: the helpers every configuration reader uses (the config file, the web
config file, the catalog, the persistent-deferral rules).

Each check appends to a ``problems`` list, one line per problem, located (``where``), so that one
``ConfigError`` names every problem at once; none raises on bad input.
Durations as users write them: 500ms, 30s, 30m, 2h, 1d (or a bare number of seconds).
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any

import yaml

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhd]?)\s*$")
_UNIT_SECONDS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Return seconds for '250ms', '30m', '2h', '1d', '45s' or a number; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use a number with s, m, h or d, e.g. 30m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def type_name(value: object) -> str:
    """How a wrong value is named in a problem: ``nothing`` for an absent one, else its type."""
    return "nothing" if value is None else type(value).__name__


def read_yaml_mapping(path: str, where: str, problems: list[str]) -> dict[str, Any] | None:
    """The YAML file's top-level mapping ({} for an empty file); None, with the problem added,
    when it cannot be read, is not YAML, or is not a mapping."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as err:
        problems.append(f"{where}: cannot read: {err.strerror or err}")
        return None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        problems.append(f"{where}: not valid YAML: {yaml_problem(err)}")
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{where}: the top level must be a mapping of keys")
        return None
    return data


def yaml_problem(err: yaml.YAMLError | UnicodeDecodeError) -> str:
    """PyYAML's several-line message as one line: where, then what ("line 2, column 3: expected
    the node content, but found '-'")."""
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.start})"
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None or not err.problem:
        return " ".join(str(err).split())
    mark = err.problem_mark
    what = f"{err.problem} ({err.context})" if err.context else err.problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}"


def unknown_keys(mapping: dict, known: set[str] | frozenset[str], where: str,
                 problems: list[str], prefix: str = "") -> None:
    """One problem per key of ``mapping`` not in ``known``, sorted: ``where: prefix.key``."""
    for unknown in sorted(set(mapping) - set(known)):
        problems.append(f"{where}: {prefix}{unknown}: unknown key (known: {', '.join(sorted(known))})")


def unknown_fields(mapping: dict, known: Container[str], at: str, problems: list[str]) -> None:
    """One problem per key of ``mapping`` not in ``known``, in the mapping's order: ``at: unknown
    field 'key'`` (the catalog's wording)."""
    for key in mapping:
        if key not in known:
            problems.append(f"{at}: unknown field {key!r}")


def mapping_at(raw: dict, key: str, where: str, problems: list[str]) -> dict:
    """``raw[key]`` as a mapping ({} when absent); a problem and {} when it is something else."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: {key}: must be a mapping")
        return {}
    return value
