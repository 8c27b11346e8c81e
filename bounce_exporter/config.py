"""Configuration: the YAML file given by --config.file, overridden by flags, checked as a whole.

Every problem found is collected and reported together (``ConfigError``), each naming its key.

    sources:                       # log files to follow; globs allowed
      - path: /var/log/mail.log
        format: postfix
    from_start: false              # read existing files from the beginning
    poll_interval: 1s              # safety-net poll; file events wake the reader sooner
    web:
      listen_address: ":39431"
      telemetry_path: /metrics
      config_file: web-config.yml  # TLS and basic auth (exporter-toolkit format; webconfig)
    limits:
      max_domains: 500             # distinct domain label values; later domains count as "other"
      domain_allowlist: []         # domains that always get their own series
      max_line_bytes: 65536        # longer lines are skipped and counted
    state_file: /var/lib/bounce-exporter/state.json
    persistent_deferrals: [...]    # see bounce_exporter.deferrals
    classification:
      text_rules: [...]            # extra rules, checked before the packaged catalog's
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from bounce_exporter.deferrals import parse_rules
from bounce_exporter.durations import parse_duration
from bounce_exporter.errors import ConfigError
from bounce_exporter.parsers import PARSERS
from bounce_exporter.web import parse_listen_address
from bounce_exporter.webconfig import load_web_config

DEFAULT_LOG_FILES = ("/var/log/mail.log", "/var/log/maillog")
DEFAULT_STATE_FILE = "/var/lib/bounce-exporter/state.json"
LOG_LEVELS = ("debug", "info", "warning", "error")

TOP_KEYS = {"sources", "from_start", "poll_interval", "web", "limits", "state_file",
            "persistent_deferrals", "classification", "log_level"}
WEB_KEYS = {"listen_address", "telemetry_path", "config_file"}
LIMIT_KEYS = {"max_domains", "domain_allowlist", "max_line_bytes"}
SOURCE_KEYS = {"path", "format"}
CLASSIFICATION_KEYS = {"text_rules"}


@dataclass
class SourceConfig:
    path: str
    format: str = "postfix"


@dataclass
class Config:
    sources: list[SourceConfig] = field(default_factory=list)
    log_format: str | None = None  # --log.format: overrides every source's format
    from_start: bool = False
    poll_interval: float = 1.0
    listen_address: str = ":39431"
    telemetry_path: str = "/metrics"
    web_config_file: str | None = None  # TLS and basic auth; see bounce_exporter.webconfig
    log_level: str = "info"
    max_domains: int = 500
    domain_allowlist: tuple[str, ...] = ()
    max_line_bytes: int = 65536
    state_file: str = DEFAULT_STATE_FILE
    persistent_deferrals: list | None = None  # raw rules, as written
    deferral_rules: list = field(default_factory=list)  # the same, checked (DeferralRule)
    text_rules: list = field(default_factory=list)  # raw rules; checked by the classifier


def load_config(path: str | None, overrides: dict[str, Any]) -> Config:
    """Read the YAML file (if any), apply flag ``overrides`` (None values ignored), check it all."""
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(path, problems)
    where = os.path.basename(path) if path else "config"
    config = Config()
    _apply_file(config, raw, where, problems)
    _apply_overrides(config, overrides, problems)
    if not config.sources:
        existing = [p for p in DEFAULT_LOG_FILES if os.path.exists(p)]
        config.sources = [SourceConfig(existing[0] if existing else DEFAULT_LOG_FILES[0])]
    if config.log_format is not None:  # --log.format applies to every source
        config.sources = [SourceConfig(s.path, config.log_format) for s in config.sources]
    _check(config, problems)
    if problems:
        raise ConfigError(problems)
    return config


def expand_sources(sources: list[SourceConfig]) -> list[SourceConfig]:
    """Expand globs; a pattern that matches nothing is kept as a path, followed until it appears."""
    expanded = []
    for source in sources:
        matches = sorted(glob.glob(source.path)) if glob.has_magic(source.path) else []
        for path in matches or [source.path]:
            expanded.append(SourceConfig(path, source.format))
    return expanded


def _read_yaml(path: str, problems: list[str]) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as err:
        problems.append(f"--config.file {path}: cannot read: {err.strerror or err}")
        return {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        problems.append(f"--config.file {path}: not valid YAML: {err}")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"--config.file {path}: the top level must be a mapping of keys")
        return {}
    return data


def _section(raw: dict, key: str, allowed: set[str], where: str, problems: list[str]) -> dict:
    value = raw.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: {key}: must be a mapping")
        return {}
    for unknown in sorted(set(value) - allowed):
        problems.append(f"{where}: {key}.{unknown}: unknown key (known: {', '.join(sorted(allowed))})")
    return value


def _apply_file(config: Config, raw: dict, where: str, problems: list[str]) -> None:
    for unknown in sorted(set(raw) - TOP_KEYS):
        problems.append(f"{where}: {unknown}: unknown key (known: {', '.join(sorted(TOP_KEYS))})")
    config.sources = _sources(raw.get("sources"), where, problems)
    if "from_start" in raw:
        config.from_start = _bool(raw["from_start"], f"{where}: from_start", problems)
    if "poll_interval" in raw:
        config.poll_interval = _duration(raw["poll_interval"], f"{where}: poll_interval", problems)
    if "log_level" in raw:
        config.log_level = str(raw["log_level"])
    if "state_file" in raw:
        config.state_file = str(raw["state_file"])
    web = _section(raw, "web", WEB_KEYS, where, problems)
    config.listen_address = str(web.get("listen_address", config.listen_address))
    config.telemetry_path = str(web.get("telemetry_path", config.telemetry_path))
    if web.get("config_file"):
        config.web_config_file = str(web["config_file"])
    limits = _section(raw, "limits", LIMIT_KEYS, where, problems)
    if "max_domains" in limits:
        config.max_domains = _int(limits["max_domains"], f"{where}: limits.max_domains", problems)
    if "max_line_bytes" in limits:
        config.max_line_bytes = _int(limits["max_line_bytes"], f"{where}: limits.max_line_bytes",
                                     problems, minimum=256)
    allow = limits.get("domain_allowlist", [])
    if not isinstance(allow, list) or not all(isinstance(d, str) for d in allow):
        problems.append(f"{where}: limits.domain_allowlist: must be a list of domain names")
    else:
        from bounce_exporter.domains import normalise_domain

        config.domain_allowlist = tuple(normalise_domain(d) for d in allow)
    if "persistent_deferrals" in raw:
        config.persistent_deferrals = raw["persistent_deferrals"]
    classification = _section(raw, "classification", CLASSIFICATION_KEYS, where, problems)
    rules = classification.get("text_rules", [])
    if not isinstance(rules, list):
        problems.append(f"{where}: classification.text_rules: must be a list of rules")
    else:
        config.text_rules = rules


def _sources(value: Any, where: str, problems: list[str]) -> list[SourceConfig]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{where}: sources: must be a list of {{path, format}}")
        return []
    sources = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict) or "path" not in item:
            problems.append(f"{where}: sources[{i}]: needs a path")
            continue
        for unknown in sorted(set(item) - SOURCE_KEYS):
            problems.append(f"{where}: sources[{i}].{unknown}: unknown key (known: format, path)")
        sources.append(SourceConfig(str(item["path"]), str(item.get("format", "postfix"))))
    return sources


def _apply_overrides(config: Config, overrides: dict[str, Any], problems: list[str]) -> None:
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "log_files":
            config.sources = [SourceConfig(p, config.sources[0].format if config.sources else
                                           "postfix") for p in value]
        elif key == "log_format":
            config.log_format = value
        elif key == "poll_interval":
            config.poll_interval = _duration(value, "--log.poll-interval", problems)
        else:
            setattr(config, key, value)


def _check(config: Config, problems: list[str]) -> None:
    for source in config.sources:
        if source.format not in PARSERS:
            problems.append(f"source {source.path}: unknown format {source.format!r} "
                            f"(known: {', '.join(sorted(PARSERS))})")
    try:
        parse_listen_address(config.listen_address)
    except ValueError as err:
        problems.append(f"web.listen_address / --web.listen-address: {err}")
    if not config.telemetry_path.startswith("/") or config.telemetry_path in ("/", "/-/healthy"):
        problems.append(f"web.telemetry_path / --web.telemetry-path: {config.telemetry_path!r} "
                        "must be a path such as /metrics")
    if config.web_config_file:
        try:
            load_web_config(config.web_config_file)
        except ConfigError as err:
            problems.extend(err.problems)
    if config.log_level not in LOG_LEVELS:
        problems.append(f"log_level / --log.level: {config.log_level!r} is not one of "
                        f"{', '.join(LOG_LEVELS)}")
    try:
        config.deferral_rules = parse_rules(config.persistent_deferrals)
    except ConfigError as err:
        problems.extend(err.problems)


def _bool(value: Any, where: str, problems: list[str]) -> bool:
    if not isinstance(value, bool):
        problems.append(f"{where}: must be true or false, not {value!r}")
        return False
    return value


def _int(value: Any, where: str, problems: list[str], minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append(f"{where}: must be a whole number of at least {minimum}, not {value!r}")
        return minimum
    return value


def _duration(value: Any, where: str, problems: list[str]) -> float:
    try:
        return parse_duration(value)
    except ValueError as err:
        problems.append(f"{where}: {err}")
        return 1.0
