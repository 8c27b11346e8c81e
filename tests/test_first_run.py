"""The first ten minutes (issue 14): the starter configuration, the format found by itself, what a
saved position does, `parse` in a pipeline and on a terminal, and logs that say what was chosen."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys

from bounce_exporter import oneshot
from bounce_exporter.config import default_sources, load_config

from .corpus import CORPUS, REPO
from .helpers import http_get, read_to_end, samples, start_serving, value, wait_until

REAL = CORPUS / "real"
EXAMPLE = REPO / "config" / "example.yml"


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return err


def messages(stderr: str) -> list[str]:
    """The log's messages without their time stamps."""
    return [line.split(" ", 2)[2] for line in stderr.splitlines() if line[:2] == "20"]


def test_the_example_config_loads_as_it_is_and_states_the_defaults():
    config = load_config(str(EXAMPLE), {})
    defaults = load_config(None, {})
    for key in ("sources", "from_start", "poll_interval", "log_level", "listen_address",
                "telemetry_path", "web_config_file", "max_domains", "domain_allowlist",
                "max_line_bytes", "state_file", "text_rules"):
        assert getattr(config, key) == getattr(defaults, key), key
    assert [r.name for r in config.deferral_rules] == ["disk-full"]


def test_serve_with_the_example_detects_exim_and_a_restart_says_what_the_saved_position_does(
        tmp_path):
    log = tmp_path / "exim.log"
    shutil.copy(REAL / "exim-3min.log", log)
    size, lines = log.stat().st_size, len(log.read_bytes().splitlines())
    state = tmp_path / "state.json"
    args = ("--config.file", str(EXAMPLE), "--log.file", str(log), "--state.file", str(state),
            "--log.from-start")
    process, base = start_serving(*args)
    try:
        found = wait_until(lambda: (f := samples(http_get(base + "/metrics")[2])) and value(
            f, "bounce_exporter_lines_read_total", source=str(log)) == lines and f)
        assert value(found, "bounce_exporter_source_info", source=str(log), format="exim") == 1
        assert value(found, "bounce_exporter_source_up", source=str(log)) == 1  # label unchanged
    finally:
        first = messages(stop(process))
    assert f"INFO bounce_exporter.pipeline: {log}: log format detected: exim" in first
    assert not any("resuming" in line for line in first)

    process, base = start_serving(*args)  # the same command again: 0 lines, and why
    second = messages(stop(process))
    assert (f"INFO bounce_exporter.app: resuming at byte {size} of {log} (saved in {state}); "
            "--log.from-start does not apply") in second


def test_serve_without_sources_logs_which_it_chose(tmp_path):
    process, _ = start_serving("--state.file", str(tmp_path / "state.json"))
    logged = messages(stop(process))
    assert f"INFO bounce_exporter.app: {default_sources()[1]}" in logged


def test_debug_logging_is_ours_only_not_watchdogs(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("")
    process, base = start_serving("--log.file", str(log), "--state.file",
                             str(tmp_path / "state.json"), "--log.level", "debug")
    try:
        for line in (REAL / "postfix-3min.log").read_text().splitlines(keepends=True)[:40]:
            with log.open("a") as handle:
                handle.write(line)
        wait_until(lambda: value(samples(http_get(base + "/metrics")[2]),
                                 "bounce_exporter_lines_read_total", source=str(log)) == 40)
    finally:
        logged = messages(stop(process))
    assert any(re.fullmatch(r'DEBUG bounce_exporter\.exposition\.http: 127\.0\.0\.1 '
                            r'"GET /metrics HTTP/1\.1" 200 .*', line) for line in logged), logged
    assert [line for line in logged if not line.split(" ")[1].startswith("bounce_exporter")] == []


# -- parse ----------------------------------------------------------------------------------------

def parse(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bounce_exporter", "parse", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False, **kwargs)


def test_parse_finds_the_exim_format_by_itself():
    path = str(REAL / "exim-3min.log")
    found, named = parse(path), parse("--log.format", "exim", path)
    assert (found.returncode, found.stderr) == (0, "")
    events = [json.loads(line) for line in found.stdout.splitlines()]
    # 266 attempts and expiries, 341 deferrals without attempt (retry time not reached)
    assert len(events) == 266 + 341 and {e["mta"] for e in events} == {"exim"}
    assert sum(e["without_attempt"] == "retry_time_not_reached" for e in events) == 341
    assert found.stdout == named.stdout


def test_parse_into_a_closed_pipe_stops_quietly():
    process = subprocess.Popen([sys.executable, "-m", "bounce_exporter", "parse",
                                str(REAL / "exim-3min.log")], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    first = process.stdout.readline()  # what `| head -1` reads, then it goes away
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141  # as a program killed by SIGPIPE
    assert json.loads(first)["mta"] == "exim"
    assert err == b""


def test_parse_dash_reads_standard_input():
    path = REAL / "opensmtpd-3min.log"
    from_stdin = parse("-", input=path.read_text())
    from_file = parse(str(path))
    assert (from_stdin.returncode, from_stdin.stderr) == (0, "")
    events = [json.loads(line) for line in from_stdin.stdout.splitlines()]
    # 190 attempts and expiries, 50 deferrals without attempt (TempFail without session)
    assert len(events) == 190 + 50 and {e["file"] for e in events} == {"-"}
    assert [dict(e, file=None) for e in events] == [
        dict(json.loads(line), file=None) for line in from_file.stdout.splitlines()]


def test_parse_of_a_log_nothing_understands_says_so(tmp_path):
    other = tmp_path / "other.log"
    other.write_text("Nov 28 12:22:30 mx dovecot: imap-login: Login: user=<u>\n" * 3)
    result = parse(str(other))
    assert (result.returncode, result.stdout) == (0, "")
    assert messages(result.stderr) == [(
        f"WARNING bounce_exporter.pipeline: {other}: none of its 3 lines shows a known log "
        "format (exchange, exim, opensmtpd, postfix, sendmail): nothing is counted; name the "
        "format with --log.format or sources[].format")]


def test_parse_draws_a_progress_line_on_a_terminal_only(tmp_path, monkeypatch):
    paths = [str(REAL / "postfix-3min.log"), str(REAL / "exim-3min.log")]
    total = sum(os.path.getsize(p) for p in paths)
    config = load_config(None, {})
    monkeypatch.setattr(oneshot.Progress, "INTERVAL", 0.0)  # a line at every batch
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        out = io.StringIO()
        assert oneshot.parse_files(paths, config, out, terminal) == 0
    drawn = read_to_end(leader)
    os.close(leader)
    assert len(out.getvalue().splitlines()) == 303 + 266 + 341  # the events, untouched
    frames = drawn.decode().replace("\r\n", "\n").split("\r")[1:]
    assert len(frames) >= 3, drawn
    last = frames[-1]
    assert re.fullmatch(rf"parse: {total / 1e6:.1f} MB of {total / 1e6:.1f} MB \(100%\), "
                        r"\d+\.\d MB/s, file 2 of 2\x1b\[K\n", last), last
    assert all(frame.startswith("parse: ") for frame in frames)
    # not a terminal: nothing but the events
    err = io.StringIO()
    assert oneshot.parse_files(paths, config, io.StringIO(), err) == 0
    assert err.getvalue() == ""
