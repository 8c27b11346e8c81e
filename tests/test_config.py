"""Configuration: every problem reported at once, each naming its key; flags override the file."""

from __future__ import annotations

import pytest

from bounce_exporter.config import Config, SourceConfig, expand_sources, load_config
from bounce_exporter.errors import ConfigError


def test_defaults(tmp_path):
    config = load_config(None, {"log_files": [str(tmp_path / "mail.log")]})
    assert config.listen_address == ":39431"
    assert config.telemetry_path == "/metrics"
    assert (config.max_domains, config.max_line_bytes, config.poll_interval) == (500, 65536, 1.0)
    assert config.sources == [SourceConfig(str(tmp_path / "mail.log"), "auto")]  # issue 14
    assert config.from_start is False


def test_file_then_flags(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(
        "sources: [{path: /var/log/a.log}, /var/log/b.log]\n"
        "from_start: true\npoll_interval: 2s\n"
        "web: {listen_address: '127.0.0.1:9999'}\n"
        "limits: {max_domains: 20, domain_allowlist: [Gmail.COM]}\n"
    )
    config = load_config(str(path), {"listen_address": "127.0.0.1:1", "log_level": None})
    assert config.sources == [SourceConfig("/var/log/a.log"), SourceConfig("/var/log/b.log")]
    assert (config.from_start, config.poll_interval) == (True, 2.0)
    assert config.listen_address == "127.0.0.1:1"
    assert (config.max_domains, config.domain_allowlist) == (20, ("gmail.com",))


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text(
        "sourcez: []\n"
        "sources: [{path: /x, format: qmail, colour: red}]\n"
        "from_start: yes please\n"
        "poll_interval: soon\n"
        "web: {listen_address: nowhere, telemetry_path: metrics}\n"
        "limits: {max_domains: -1, max_line_bytes: 10, extra: 1}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(str(path), {"log_level": "loud"})
    assert err.value.problems == [
        "bad.yml: sourcez: unknown key (known: classification, from_start, limits, log_level, "
        "persistent_deferrals, poll_interval, sources, state_file, web)",
        "bad.yml: sources[0].colour: unknown key (known: format, path)",
        "bad.yml: from_start: must be true or false, not 'yes please'",
        "bad.yml: poll_interval: not a duration: 'soon' (use a number with s, m, h or d, e.g. 30m)",
        "bad.yml: limits.extra: unknown key (known: domain_allowlist, max_domains, max_line_bytes)",
        "bad.yml: limits.max_domains: must be a whole number of at least 0, not -1",
        "bad.yml: limits.max_line_bytes: must be a whole number of at least 256, not 10",
        "source /x: unknown format 'qmail' (known: auto, exchange, exim, opensmtpd, postfix, sendmail)",
        "web.listen_address / --web.listen-address: not a listen address: 'nowhere' "
        "(use host:port or :port)",
        "web.telemetry_path / --web.telemetry-path: 'metrics' must be a path such as /metrics",
        "log_level / --log.level: 'loud' is not one of debug, info, warning, error",
    ]


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "missing.yml"), {})
    assert err.value.problems == [
        f"--config.file {tmp_path / 'missing.yml'}: cannot read: No such file or directory"]
    broken = tmp_path / "broken.yml"
    broken.write_text("sources: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(broken), {})
    assert err.value.problems[0].startswith(f"--config.file {broken}: not valid YAML:")


def test_globs_expand_sorted_and_unmatched_patterns_stay(tmp_path):
    for name in ("b.log", "a.log"):
        (tmp_path / name).write_text("")
    got = expand_sources([SourceConfig(str(tmp_path / "*.log")), SourceConfig("/nope/*.log")])
    assert [s.path for s in got] == [str(tmp_path / "a.log"), str(tmp_path / "b.log"), "/nope/*.log"]


def test_config_dataclass_defaults_match_the_documented_ones():
    assert Config().state_file == "/var/lib/bounce-exporter/state.json"


def test_a_poll_interval_under_50ms_is_refused_and_ms_are_understood(tmp_path):
    """0 would spin a CPU at 100%: file events wake the reader sooner anyway."""
    with pytest.raises(ConfigError) as err:
        load_config(None, {"poll_interval": "0"})
    assert err.value.problems == [
        "--log.poll-interval: '0' is too short (at least 50ms; file events wake the reader "
        "sooner anyway)"]
    assert load_config(None, {"poll_interval": "250ms"}).poll_interval == 0.25
    assert load_config(None, {"poll_interval": "0.05s"}).poll_interval == 0.05
