"""Configuration: every problem reported at once, each naming its key; flags override the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bounce_exporter.config import Config, SourceConfig, expand_sources, load_config
from bounce_exporter.errors import ConfigError


def test_defaults(tmp_path):
    config = load_config(None, {"log_files": [str(tmp_path / "mail.log")]})
    assert config.listen_address == ":39431"
    assert config.telemetry_path == "/metrics"
    assert (config.max_domains, config.max_line_bytes, config.poll_interval) == (500, 65536, 1.0)
    assert config.max_series == 10_000
    assert config.sources == [SourceConfig(str(tmp_path / "mail.log"), "auto")]  # issue 14
    assert config.from_start is False


def test_file_then_flags(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(
        "sources: [{path: /var/log/a.log}, /var/log/b.log]\n"
        "from_start: true\npoll_interval: 2s\n"
        "web: {listen_address: '127.0.0.1:9999'}\n"
        "limits: {max_domains: 20, max_series: 300, domain_allowlist: [Gmail.COM]}\n"
    )
    config = load_config(str(path), {"listen_address": "127.0.0.1:1", "log_level": None})
    assert config.sources == [SourceConfig("/var/log/a.log"), SourceConfig("/var/log/b.log")]
    assert (config.from_start, config.poll_interval) == (True, 2.0)
    assert config.listen_address == "127.0.0.1:1"
    assert (config.max_domains, config.domain_allowlist) == (20, ("gmail.com",))
    assert config.max_series == 300
    assert config.max_pending_messages == 40_000  # the ledger's default


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text(
        "sourcez: []\n"
        "sources: [{path: /x, format: qmail, colour: red}]\n"
        "from_start: yes please\n"
        "poll_interval: soon\n"
        "web: {listen_address: nowhere, telemetry_path: metrics}\n"
        "limits: {max_domains: -1, max_series: many, max_line_bytes: 10, extra: 1}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(str(path), {"log_level": "loud"})
    assert err.value.problems == [
        "bad.yml: sourcez: unknown key (known: classification, from_start, limits, log_level, "
        "persistent_deferrals, poll_interval, queue, sources, state_file, web)",
        "bad.yml: sources[0].colour: unknown key (known: format, path)",
        "bad.yml: from_start: must be true or false, not 'yes please'",
        "bad.yml: poll_interval: not a duration: 'soon' (use a number with s, m, h or d, e.g. 30m)",
        ("bad.yml: limits.extra: unknown key (known: domain_allowlist, max_domains, max_line_bytes, "
         "max_pending_messages, max_series)"),
        "bad.yml: limits.max_domains: must be a whole number of at least 0, not -1",
        "bad.yml: limits.max_series: must be a whole number of at least 0, not 'many'",
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


# -- issue 14: one human line per problem, defaults that fit the machine -------------------------

def test_invalid_yaml_is_one_line_saying_where_and_what(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("sources: [\n  - /var/log/mail.log\nweb: {\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(broken), {})
    assert err.value.problems == [
        (f"--config.file {broken}: not valid YAML: line 2, column 3: expected the node content, "
         "but found '-' (while parsing a flow node)")]
    tabbed = tmp_path / "tabbed.yml"
    tabbed.write_text("sources:\n\t- /var/log/mail.log\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(tabbed), {})
    assert err.value.problems == [
        (f"--config.file {tabbed}: not valid YAML: line 2, column 1: found character '\\t' that "
         "cannot start any token (while scanning for the next token)")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from .test_web_tls import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def _web_config_problems(tmp_path, cert: str, key: str) -> list[str]:
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {cert}, key_file: {key}}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(None, {"web_config_file": str(web), "log_files": [str(tmp_path / "m.log")]})
    return err.value.problems


def test_a_certificate_that_is_not_pem_is_one_line_saying_so(pki, tmp_path):
    import ssl

    der = tmp_path / "server.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(Path(pki.server_crt).read_text()))
    where = f"web.config_file / --web.config.file {tmp_path / 'web.yml'}: tls_server_config"
    assert _web_config_problems(tmp_path, str(der), pki.server_key) == [(
        f"{where}.cert_file/key_file: cannot load {der} with {pki.server_key}: {der} is not a PEM "
        f"certificate (no -----BEGIN CERTIFICATE----- line; a DER file converts with: openssl "
        f"x509 -inform der -in {der} -out server.crt)")]
    assert _web_config_problems(tmp_path, pki.server_crt, pki.server_crt) == [(
        f"{where}.cert_file/key_file: cannot load {pki.server_crt} with {pki.server_crt}: "
        f"{pki.server_crt} is not a PEM private key (no -----BEGIN PRIVATE KEY----- line, or it "
        "is encrypted)")]
    assert _web_config_problems(tmp_path, pki.server_crt, pki.client_key) == [(
        f"{where}.cert_file/key_file: cannot load {pki.server_crt} with {pki.client_key}: the key "
        f"{pki.client_key} does not belong to the certificate {pki.server_crt}")]


def test_the_default_state_file_is_one_the_user_can_write(tmp_path):
    from bounce_exporter.config import default_state_file

    system = tmp_path / "var-lib" / "bounce-exporter"
    # systemd's StateDirectory= (several are colon-separated: the first)
    assert default_state_file({"STATE_DIRECTORY": "/var/lib/x:/var/lib/y"}, str(system)) == \
        "/var/lib/x/state.json"
    # the system folder can be made (its parent is writable): there
    (tmp_path / "var-lib").mkdir()
    assert default_state_file({}, str(system)) == f"{system}/state.json"
    # it cannot: the user's XDG state folder, else ~/.local/state
    unwritable = tmp_path / "ro" / "bounce-exporter"
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.access(tmp_path / "ro", os.W_OK):  # root writes anywhere: a missing parent instead
        unwritable = tmp_path / "missing" / "bounce-exporter"
    assert default_state_file({"XDG_STATE_HOME": "/home/u/.state"}, str(unwritable)) == \
        "/home/u/.state/bounce-exporter/state.json"
    assert default_state_file({"XDG_STATE_HOME": "relative"}, str(unwritable)) == \
        os.path.expanduser("~/.local/state/bounce-exporter/state.json")


def test_load_config_takes_the_default_state_file_unless_one_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd-state"))
    log = {"log_files": [str(tmp_path / "m.log")]}
    assert load_config(None, log).state_file == str(tmp_path / "systemd-state" / "state.json")
    assert load_config(None, {**log, "state_file": "/x/s.json"}).state_file == "/x/s.json"
    path = tmp_path / "c.yml"
    path.write_text("state_file: /y/s.json\n")
    assert load_config(str(path), log).state_file == "/y/s.json"


def test_default_sources_the_mail_log_else_the_postfix_journal_else_the_mail_log(tmp_path):
    from bounce_exporter.config import default_sources

    mail, maillog = str(tmp_path / "mail.log"), str(tmp_path / "maillog")
    (tmp_path / "maillog").write_text("")
    assert default_sources((mail, maillog)) == ([SourceConfig(maillog)], (
        f"following {maillog} (the first of {mail}, {maillog} that exists; --log.file or "
        "--log.journal to choose)"))
    os.remove(maillog)
    sources, why = default_sources((mail, maillog), journalctl="sh")  # a command that exists
    assert [(s.path, s.journal.units if s.journal else None) for s in sources] == [
        ("journal:postfix@-.service,postfix.service", ())]
    assert why == (f"no {mail} or {maillog}: following the journal of the Postfix units "
                   "(journal:postfix@-.service,postfix.service); --log.file or --log.journal to "
                   "choose")
    assert default_sources((mail, maillog), journalctl="no-such-command-here") == (
        [SourceConfig(mail)], (f"no {mail} or {maillog} and no journalctl: waiting for {mail} "
                               "to appear; --log.file to choose"))


def test_the_config_file_default_is_read_only_when_it_exists(tmp_path, monkeypatch):
    from bounce_exporter import config as config_module

    assert config_module.config_file("/given.yml") == "/given.yml"
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_FILE", str(tmp_path / "config.yml"))
    assert config_module.config_file(None) is None
    (tmp_path / "config.yml").write_text("{}\n")
    assert config_module.config_file(None) == str(tmp_path / "config.yml")
