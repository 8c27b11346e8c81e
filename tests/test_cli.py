"""The command line as users run it: a real process, its output and its exit code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter

import pytest

from bounce_exporter import __version__

from .corpus import CORPUS, REPO
from .helpers import http_get, samples, start_serving, value, wait_until

REAL_LOG = CORPUS / "real" / "postfix-3min.log"


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bounce_exporter", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, **kwargs)


def test_version():
    result = run("--version")
    assert (result.returncode, result.stdout) == (0, f"bounce-exporter {__version__}\n")


def test_help_names_the_commands_and_flags():
    result = run("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "parse" in result.stdout
    serve = run("serve", "--help").stdout
    for flag in ("--log.file", "--log.from-start", "--web.listen-address", "--web.telemetry-path",
                 "--config.file", "--state.file", "--log.level", "--log.poll-interval"):
        assert flag in serve


def test_bad_flags_and_config_name_every_problem_and_exit_2(tmp_path):
    config = tmp_path / "bad.yml"
    config.write_text("limits: {max_domains: lots}\nweb: {listen_address: nowhere}\n"
                      "persistent_deferrals: [{name: x, match: {}}]\n")
    result = run("serve", "--config.file", str(config), "--log.file", str(tmp_path / "m.log"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == "bounce-exporter: configuration problems:"
    assert "limits.max_domains: must be a whole number of at least 0, not 'lots'" in result.stderr
    assert "not a listen address: 'nowhere'" in result.stderr
    assert "persistent_deferrals[0]" in result.stderr
    assert run("serve", "--web.nonsense").returncode == 2


def test_parse_prints_every_key_of_every_event():
    result = run("parse", str(REAL_LOG))
    assert result.returncode == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    keys = ["file", "line", "time", "mta", "queue_id", "recipient", "domain", "status", "code",
            "enhanced", "kind", "category", "relay", "provider", "text", "without_attempt"]
    assert all(list(event) == keys for event in events)
    first = events[0]
    assert first["file"] == str(REAL_LOG)
    assert REAL_LOG.read_text().splitlines()[first["line"] - 1].endswith(first["text"] + ")")
    assert first["time"].startswith("2026-11-28T12:22:37")
    counts = Counter((e["domain"], e["status"]) for e in events)
    assert counts[("disk-full.example", "deferred")] == 27
    assert counts[("disk-full.example", "expired")] == 3
    assert counts[("nouser.example", "bounced")] == 3
    disk = next(e for e in events if e["domain"] == "disk-full.example")
    assert (disk["code"], disk["enhanced"], disk["kind"], disk["category"]) == (
        "431", "4.3.1", "soft", "system_full")
    assert (disk["relay"], disk["provider"]) == ("127.0.0.1", "other")  # the lab's fake MX


def test_parse_a_missing_file_says_so_and_exits_1(tmp_path):
    result = run("parse", str(tmp_path / "nope.log"))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"bounce-exporter parse: cannot read {tmp_path / 'nope.log'}: no such file\n"


def test_parse_skips_bad_bytes_and_keeps_going(tmp_path):
    log = tmp_path / "bad.log"
    good = REAL_LOG.read_bytes().splitlines(keepends=True)[14]
    log.write_bytes(b"\xff\xfe\x00 status=broken\n" + good + b"x" * 70000 + b"\n" + good)
    # the format named: auto-detection would take the first line for one of another program
    result = run("parse", "--log.format", "postfix", str(log))
    assert result.returncode == 0
    assert [json.loads(line)["line"] for line in result.stdout.splitlines()] == [2, 4]
    assert "line not understood (no_header)" in result.stderr
    assert "1 lines over 65536 bytes skipped" in result.stderr


LOWERED_RULE = ("persistent_deferrals:\n  - {name: disk-full, match: {code: \"431\"}, min_attempts: 3, "
                "min_duration: 1m, clear_after: 3650d}\n")


def start_serve(tmp_path, log, *extra: str) -> tuple[subprocess.Popen, str]:
    config = tmp_path / "config.yml"
    config.write_text(LOWERED_RULE)
    return start_serving("--config.file", str(config), "--log.file", str(log),
                         "--state.file", str(tmp_path / "state" / "state.json"), *extra)


def scrape(base: str) -> dict:
    return samples(http_get(base + "/metrics")[2])


def test_kill_9_keeps_the_flag_and_its_since(tmp_path):
    log = tmp_path / "postfix.log"
    shutil.copy(REAL_LOG, log)
    lines = len(log.read_bytes().splitlines())
    first, base = start_serve(tmp_path, log, "--log.from-start")
    try:
        found = wait_until(lambda: (f := scrape(base)) and value(
            f, "bounce_exporter_lines_read_total", source=str(log)) == lines and f,
            what="the whole log to be read")
        since = value(found, "bounce_persistent_deferral_since_timestamp_seconds",
                      domain="disk-full.example", code="431")
        assert value(found, "bounce_persistent_deferral", domain="disk-full.example", code="431") == 1
        state = tmp_path / "state" / "state.json"
        wait_until(lambda: state.exists() and "disk-full.example" in state.read_text(),
                   what="the state to be saved")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second, base = start_serve(tmp_path, tmp_path / "other.log")
    try:
        found = scrape(base)
        assert value(found, "bounce_persistent_deferral", domain="disk-full.example", code="431") == 1
        assert value(found, "bounce_persistent_deferral_since_timestamp_seconds",
                     domain="disk-full.example", code="431") == since
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0


def test_sigterm_exits_0_and_the_next_start_reads_the_partial_line_once(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("")
    process, base = start_serve(tmp_path, log)
    line = REAL_LOG.read_text().splitlines()[14]  # a delivery to ok.example
    with log.open("a") as handle:
        handle.write(line)  # no newline yet: not a line until it is finished
    wait_until(lambda: value(scrape(base), "bounce_exporter_lines_read_total", source=str(log)) == 0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "stopped" in process.stderr.read()
    with log.open("a") as handle:
        handle.write("\n")
    process, base = start_serve(tmp_path, log)
    try:
        found = wait_until(lambda: (f := scrape(base)) and value(
            f, "bounce_exporter_lines_read_total", source=str(log)) == 1 and f)
        assert value(found, "bounce_deliveries_total", domain="ok.example") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


@pytest.mark.e2e
def test_promtool_accepts_the_exposition(tmp_path):
    from .e2e.requirements import find_binary, require

    require("promtool", "promtool (Debian package prometheus) checks the exposition format")
    log = tmp_path / "postfix.log"
    shutil.copy(REAL_LOG, log)
    process, base = start_serve(tmp_path, log, "--log.from-start")
    try:
        lines = len(log.read_bytes().splitlines())
        wait_until(lambda: value(scrape(base), "bounce_exporter_lines_read_total",
                                 source=str(log)) == lines)
        exposition = http_get(base + "/metrics")[2]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    result = subprocess.run([find_binary("promtool"), "check", "metrics"], input=exposition,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert os.path.exists(tmp_path / "state" / "state.json")
