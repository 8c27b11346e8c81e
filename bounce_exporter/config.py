"""Configuration: the YAML file given by --config.file, overridden by flags, checked as a whole.

Every problem found is collected and reported together (``ConfigError``), each naming its key.

    sources:                       # log files to follow; globs allowed (default: default_sources)
      - path: /var/log/mail.log
        format: auto               # the default: detected per source from its lines
      - path: "-"                  # standard input (a pipe, a container sidecar)
      - journal: {unit: postfix@-.service}  # or {identifier: postfix}; default units: {}
        format: postfix            # journal also takes namespace: NS or directory: DIR
    from_start: false              # read existing files from the beginning
    poll_interval: 1s              # safety-net poll; file events wake the reader sooner
    web:
      listen_address: ":39431"
      telemetry_path: /metrics
      config_file: web-config.yml  # TLS and basic auth (exporter-toolkit format; webconfig)
    limits:
      max_domains: 500             # distinct domain label values; later domains count as "other"
      max_series: 10000            # bounce_failures_total series; later label sets: overflow series
      max_pending_messages: 40000  # messages in flight each source's ledger keeps (the oldest go)
      domain_allowlist: []         # domains that always get their own series
      max_line_bytes: 65536        # longer lines are skipped and counted
    state_file: /var/lib/bounce-exporter/state.json   # default: default_state_file()
    persistent_deferrals: [...]    # see bounce_exporter.state.deferrals
    classification:
      text_rules: [...]            # extra rules, checked before the packaged catalog's
    queue:                         # the Postfix queue view (bounce_exporter.sources.postqueue)
      command: [postqueue, -j]     # [] turns it off; not found: off
      interval: 30s                # at most one run per interval (scrapes get the cached one)
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bounce_exporter.checks import mapping_at, parse_duration, read_yaml_mapping, unknown_keys
from bounce_exporter.errors import ConfigError
from bounce_exporter.exposition.http import parse_listen_address
from bounce_exporter.exposition.webconfig import load_web_config
from bounce_exporter.parsers import PARSERS
from bounce_exporter.parsers.ledger import MAX_MESSAGES
from bounce_exporter.sources.postqueue import DEFAULT_COMMAND, DEFAULT_INTERVAL
from bounce_exporter.sources.rotation import is_rotated_name
from bounce_exporter.state.counters import DEFAULT_MAX_SERIES
from bounce_exporter.state.rules import parse_rules

DEFAULT_CONFIG_FILE = "/etc/bounce-exporter/config.yml"  # read when it exists and none is given
DEFAULT_LOG_FILES = ("/var/log/mail.log", "/var/log/maillog")
DEFAULT_FORMAT = "auto"
SYSTEM_STATE_DIR = "/var/lib/bounce-exporter"
DEFAULT_STATE_FILE = f"{SYSTEM_STATE_DIR}/state.json"
STATE_FILE_NAME = "state.json"
LOG_LEVELS = ("debug", "info", "warning", "error")

MIN_POLL_INTERVAL = 0.05  # seconds

TOP_KEYS = {"sources", "from_start", "poll_interval", "web", "limits", "state_file",
            "persistent_deferrals", "classification", "log_level", "queue"}
WEB_KEYS = {"listen_address", "telemetry_path", "config_file"}
LIMIT_KEYS = {"max_domains", "max_series", "max_pending_messages", "domain_allowlist",
              "max_line_bytes"}
SOURCE_KEYS = {"path", "format", "journal"}
JOURNAL_KEYS = {"unit", "identifier", "namespace", "directory"}
CLASSIFICATION_KEYS = {"text_rules"}
QUEUE_KEYS = {"command", "interval"}


@dataclass(frozen=True)
class JournalConfig:
    """A journal source (bounce_exporter.sources.journal): units, or a syslog identifier, to follow."""

    units: tuple[str, ...] = ()  # none and no identifier: the default units
    identifier: str | None = None
    namespace: str | None = None
    directory: str | None = None  # journal files to read (journalctl --directory)


@dataclass
class SourceConfig:
    path: str  # a file, a glob, "-" (standard input), or a journal source's name
    format: str = DEFAULT_FORMAT
    journal: JournalConfig | None = None
    catch_up_of: str | None = None  # a rotated file read once before this live file


@dataclass
class Config:
    sources: list[SourceConfig] = field(default_factory=list)
    log_format: str | None = None  # --log.format: overrides every source's format
    from_start: bool = False
    poll_interval: float = 1.0
    listen_address: str = ":39431"
    telemetry_path: str = "/metrics"
    web_config_file: str | None = None  # TLS and basic auth; see bounce_exporter.exposition.webconfig
    log_level: str = "info"
    max_domains: int = 500
    max_series: int = DEFAULT_MAX_SERIES  # bounce_failures_total series with their own labels
    max_pending_messages: int = MAX_MESSAGES  # each source's ledger: messages in flight
    domain_allowlist: tuple[str, ...] = ()
    max_line_bytes: int = 65536
    state_file: str = DEFAULT_STATE_FILE
    persistent_deferrals: list | None = None  # raw rules, as written
    deferral_rules: list = field(default_factory=list)  # the same, checked (DeferralRule)
    text_rules: list = field(default_factory=list)  # raw rules; checked by the classifier
    sources_chosen: str | None = None  # how the default sources were chosen (logged at start)
    queue_command: tuple[str, ...] = DEFAULT_COMMAND  # postqueue -j; () turns the view off
    queue_interval: float = DEFAULT_INTERVAL  # seconds between two runs of it


def load_config(path: str | None, overrides: dict[str, Any]) -> Config:
    """Read the YAML file (if any), apply flag ``overrides`` (None values ignored), check it all."""
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_mapping(path, f"--config.file {path}", problems) or {}
    where = os.path.basename(path) if path else "config"
    config = Config()
    _apply_file(config, raw, where, problems)
    _apply_overrides(config, overrides, problems)
    if not config.sources:
        config.sources, config.sources_chosen = default_sources()
    if "state_file" not in raw and overrides.get("state_file") is None:
        config.state_file = default_state_file()
    if config.log_format is not None:  # --log.format applies to every source
        config.sources = [dataclasses.replace(s, format=config.log_format) for s in config.sources]
    _check(config, problems)
    if problems:
        raise ConfigError(problems)
    return config


def config_file(given: str | None) -> str | None:
    """The configuration file to read: the one given, else DEFAULT_CONFIG_FILE if it exists."""
    if given is not None:
        return given
    return DEFAULT_CONFIG_FILE if os.path.isfile(DEFAULT_CONFIG_FILE) else None


def default_sources(log_files: tuple[str, ...] = DEFAULT_LOG_FILES,
                    journalctl: str | None = "journalctl") -> tuple[list[SourceConfig], str]:
    """What to follow when nothing is configured, and a sentence saying why: the first mail log
    that exists, else (Debian 12 installs no syslog daemon) the journal of the Postfix units, else
    (no journalctl either) the first mail log, followed once it appears."""
    for path in log_files:
        if os.path.exists(path):
            return [SourceConfig(path)], (f"following {path} (the first of {', '.join(log_files)} "
                                          "that exists; --log.file or --log.journal to choose)")
    if journalctl is not None and shutil.which(journalctl):
        source = journal_source(JournalConfig())
        return [source], (f"no {' or '.join(log_files)}: following the journal of the Postfix "
                          f"units ({source.path}); --log.file or --log.journal to choose")
    return [SourceConfig(log_files[0])], (f"no {' or '.join(log_files)} and no journalctl: "
                                          f"waiting for {log_files[0]} to appear; --log.file "
                                          "to choose")


def default_state_file(environ: Mapping[str, str] = os.environ,
                       system_dir: str = SYSTEM_STATE_DIR) -> str:
    """Where the state is kept when no state_file is given, in a place this user can write:
    systemd's $STATE_DIRECTORY (StateDirectory=), else ``system_dir`` when writable (root, or a
    user given it), else $XDG_STATE_HOME/bounce-exporter, else ~/.local/state/bounce-exporter."""
    given = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if given:
        return os.path.join(given, STATE_FILE_NAME)
    if _writable_dir(system_dir):
        return os.path.join(system_dir, STATE_FILE_NAME)
    base = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "bounce-exporter", STATE_FILE_NAME)


def _writable_dir(path: str) -> bool:
    """``path`` is a directory this process can make files in, or can be made."""
    if os.path.isdir(path):
        return os.access(path, os.W_OK | os.X_OK)
    parent = os.path.dirname(path.rstrip("/"))
    return not os.path.exists(path) and os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)


def expand_sources(sources: list[SourceConfig], from_start: bool = False) -> list[SourceConfig]:
    """Expand globs; a pattern that matches nothing is kept as a path, followed until it appears.

    Among a glob's matches, rotated names of another match (``mail.log.1``, ``mail.log.2.gz`` beside
    ``mail.log``) and ``.gz`` files are not followed: with ``from_start`` they are read once
    (``catch_up_of``), oldest first (``.N`` descending, dated names ascending) before their live
    file; without it they are left out (the live file's tailer reads what rotates from now on)."""
    expanded: list[SourceConfig] = []
    for source in sources:
        if source.journal is not None or not glob.has_magic(source.path):
            expanded.append(source)
            continue
        matches = sorted(glob.glob(source.path))
        if not matches:
            expanded.append(source)
            continue
        live = [m for m in matches if _live_of(m, matches) is None and not m.endswith(".gz")]
        for path in live:
            if from_start:
                rotated = sorted((m for m in matches if _live_of(m, matches) == path),
                                 key=lambda m, p=path: _age_key(m, p))
                expanded += [SourceConfig(m, source.format, catch_up_of=path) for m in rotated]
            expanded.append(SourceConfig(path, source.format))
        if from_start:  # .gz files whose live file is not among the matches: read once too
            expanded += [SourceConfig(m, source.format, catch_up_of="")
                         for m in matches if m.endswith(".gz") and _live_of(m, matches) is None]
    return expanded


def rotation_chains(paths: list[str]) -> list[list[str]]:
    """Files given one by one (``report``, ``backfill``), grouped into the logs they are: each live
    file with its rotated names among ``paths`` (``mail.log.1``, ``mail.log.2.gz``,
    ``mail.log-20260101``; the live file itself need not be given), oldest first, as
    ``expand_sources`` orders them. Chains in the order their first file was given."""
    chains: dict[str, list[str]] = {}
    for path in paths:
        live = _live_of(path, paths) or _rotated_stem(path)
        chains.setdefault(live, []).append(path)
    return [sorted(dict.fromkeys(files),
                   key=lambda m, live=live: (1,) if m == live else (0, *_age_key(m, live)))
            for live, files in chains.items()]


def _rotated_stem(path: str) -> str:
    """``mail.log.2.gz`` -> ``mail.log``; a name with no rotation suffix is its own stem."""
    found = re.fullmatch(r"(.+)[.-]\d+", path.removesuffix(".gz"))
    return found.group(1) if found else path


def _live_of(path: str, matches: list[str]) -> str | None:
    """The match ``path`` is a rotated name of (the longest such name), or None."""
    found = None
    for other in matches:
        if (other != path and is_rotated_name(path, other)
                and os.path.dirname(other) == os.path.dirname(path)
                and (found is None or len(other) > len(found))):
            found = other
    return found


def _age_key(path: str, live: str) -> tuple:
    """Sorts rotated names oldest first: mail.log.10.gz, mail.log.2.gz, mail.log.1; dated names
    (mail.log-20260101) in ascending order."""
    suffix = path[len(live) + 1:]
    suffix = suffix.removesuffix(".gz")
    if suffix.isdigit() and len(suffix) < 6:  # a rotation number, not a date (dateext)
        return (0, -int(suffix), path)
    return (1, 0, suffix)


def _section(raw: dict, key: str, allowed: set[str], where: str, problems: list[str]) -> dict:
    value = mapping_at(raw, key, where, problems)
    unknown_keys(value, allowed, where, problems, prefix=f"{key}.")
    return value


def _apply_file(config: Config, raw: dict, where: str, problems: list[str]) -> None:
    unknown_keys(raw, TOP_KEYS, where, problems)
    config.sources = _sources(raw.get("sources"), where, problems)
    if "from_start" in raw:
        config.from_start = _bool(raw["from_start"], f"{where}: from_start", problems)
    if "poll_interval" in raw:
        config.poll_interval = _poll_interval(raw["poll_interval"], f"{where}: poll_interval",
                                              problems)
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
    if "max_series" in limits:
        config.max_series = _int(limits["max_series"], f"{where}: limits.max_series", problems)
    if "max_pending_messages" in limits:
        config.max_pending_messages = _int(limits["max_pending_messages"],
                                           f"{where}: limits.max_pending_messages", problems, 1)
    if "max_line_bytes" in limits:
        config.max_line_bytes = _int(limits["max_line_bytes"], f"{where}: limits.max_line_bytes",
                                     problems, minimum=256)
    allow = limits.get("domain_allowlist", [])
    if not isinstance(allow, list) or not all(isinstance(d, str) for d in allow):
        problems.append(f"{where}: limits.domain_allowlist: must be a list of domain names")
    else:
        from bounce_exporter.parsers.domains import normalise_domain

        config.domain_allowlist = tuple(normalise_domain(d) for d in allow)
    if "persistent_deferrals" in raw:
        config.persistent_deferrals = raw["persistent_deferrals"]
    classification = _section(raw, "classification", CLASSIFICATION_KEYS, where, problems)
    rules = classification.get("text_rules", [])
    if not isinstance(rules, list):
        problems.append(f"{where}: classification.text_rules: must be a list of rules")
    else:
        config.text_rules = rules
    _queue(config, _section(raw, "queue", QUEUE_KEYS, where, problems), where, problems)


def _queue(config: Config, queue: dict, where: str, problems: list[str]) -> None:
    if "command" in queue:
        config.queue_command = _command(queue["command"], f"{where}: queue.command", problems)
    if "interval" in queue:
        config.queue_interval = _duration(queue["interval"], f"{where}: queue.interval", problems)


def _command(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    """A command as a list of words, or a string split as a shell would; empty or null: none."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as err:
            problems.append(f"{where}: {err}")
            return ()
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        problems.append(f"{where}: must be a list of words such as [postqueue, -j]")
        return ()
    return tuple(value)


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
        if not isinstance(item, dict) or ("path" in item) == ("journal" in item):
            problems.append(f"{where}: sources[{i}]: needs a path or a journal (not both)")
            continue
        for unknown in sorted(set(item) - SOURCE_KEYS):
            known = "format, journal" if "journal" in item else "format, path"
            problems.append(f"{where}: sources[{i}].{unknown}: unknown key (known: {known})")
        fmt = str(item.get("format", DEFAULT_FORMAT))
        if "journal" in item:
            journal = _journal(item["journal"], f"{where}: sources[{i}].journal", problems)
            if journal is not None:
                sources.append(journal_source(journal, fmt))
            continue
        sources.append(SourceConfig(str(item["path"]), fmt))
    return sources


def journal_source(journal: JournalConfig, fmt: str = DEFAULT_FORMAT) -> SourceConfig:
    from bounce_exporter.sources.journal import source_name

    name = source_name(journal.units, journal.identifier, journal.namespace, journal.directory)
    return SourceConfig(name, fmt, journal=journal)


def _journal(value: Any, where: str, problems: list[str]) -> JournalConfig | None:
    """``{unit: U or [U, ...]}``, ``{identifier: I}``, ``{}`` (the default units); with
    ``namespace`` or ``directory``."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a mapping such as {{unit: postfix@-.service}}")
        return None
    for unknown in sorted(set(value) - JOURNAL_KEYS):
        problems.append(f"{where}.{unknown}: unknown key (known: {', '.join(sorted(JOURNAL_KEYS))})")
    units = value.get("unit", [])
    units = [units] if isinstance(units, str) else units
    if not isinstance(units, list) or not all(isinstance(u, str) and u for u in units):
        problems.append(f"{where}.unit: must be a unit name or a list of them")
        return None
    fields = {}
    for key in ("identifier", "namespace", "directory"):
        if value.get(key) is not None:
            if not isinstance(value[key], str) or not value[key]:
                problems.append(f"{where}.{key}: must be a non-empty string")
                return None
            fields[key] = value[key]
    if units and "identifier" in fields:
        problems.append(f"{where}: unit and identifier: give one of them")
        return None
    if "namespace" in fields and "directory" in fields:
        problems.append(f"{where}: namespace and directory: give one of them")
        return None
    return JournalConfig(tuple(units), **fields)


def _apply_overrides(config: Config, overrides: dict[str, Any], problems: list[str]) -> None:
    files, units = overrides.get("log_files"), overrides.get("journal_units")
    directory = overrides.get("journal_directory")
    journals = [s for s in config.sources if s.journal is not None]
    if files is None and units is None and directory is not None and journals:
        config.sources = [journal_source(dataclasses.replace(s.journal, directory=directory,
                                                             namespace=None), s.format)
                          if s.journal is not None else s for s in config.sources]
    elif files is not None or units is not None or directory is not None:  # replace the list
        fmt = config.sources[0].format if config.sources else DEFAULT_FORMAT
        flagged = [SourceConfig(p, fmt) for p in files or []]
        if units is not None or directory is not None:
            flagged += [journal_source(JournalConfig(tuple(units or ()), directory=directory), fmt)]
        config.sources = flagged
    for key, value in overrides.items():
        if value is None or key in ("log_files", "journal_units", "journal_directory"):
            continue
        if key == "log_format":
            config.log_format = value
        elif key == "poll_interval":
            config.poll_interval = _poll_interval(value, "--log.poll-interval", problems)
        elif key == "queue_command":
            config.queue_command = _command(value, "--queue.command", problems)
        elif key == "queue_interval":
            config.queue_interval = _duration(value, "--queue.interval", problems)
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
    _check_state_file(config.state_file, problems)


def _check_state_file(path: str, problems: list[str]) -> None:
    """The state file, if there is one already, must be a regular file: opening a FIFO would
    block the start for good."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing (made at the first save) or unreadable (logged when read)
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "not a regular file"
        problems.append(f"state_file / --state.file {path}: {what}; give the path of a JSON file "
                        "(made at the first save)")


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


def _poll_interval(value: Any, where: str, problems: list[str]) -> float:
    """At least MIN_POLL_INTERVAL: 0 would spin a CPU (file events wake the reader sooner)."""
    seconds = _duration(value, where, problems)
    if seconds < MIN_POLL_INTERVAL:
        problems.append(f"{where}: {value!r} is too short (at least {MIN_POLL_INTERVAL * 1000:.0f}ms;"
                        " file events wake the reader sooner anyway)")
    return seconds


def _duration(value: Any, where: str, problems: list[str]) -> float:
    try:
        return parse_duration(value)
    except ValueError as err:
        problems.append(f"{where}: {err}")
        return 1.0
