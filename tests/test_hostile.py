"""Hostile or odd surroundings (issue 18): each case a few seconds, a clear error or a counted,
logged skip, never a hang and never a silent loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .corpus import REPO
from .helpers import free_port, http_get, samples, value, wait_until

SENT = ("Nov 28 12:22:{s:02d} mx1 postfix/smtp[1]: Q{q:06X}: to=<u{q}@ok.example>, "
        "relay=x[1.2.3.4]:25, delay=0.02, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n")


def serve(tmp_path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bounce_exporter", "serve", "--web.listen-address",
         f"127.0.0.1:{port}", "--log.poll-interval", "0.05s", *args],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, f"http://127.0.0.1:{port}"


def test_a_fifo_as_the_state_file_is_refused_at_start_with_exit_2(tmp_path):
    """Opening a FIFO blocks until a writer comes: it used to hang the start for good (never
    listening, SIGTERM ignored)."""
    fifo = tmp_path / "state.json"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "bounce_exporter", "serve", "--log.file", str(tmp_path / "m.log"),
         "--state.file", str(fifo)], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert (f"state_file / --state.file {fifo}: a FIFO; give the path of a JSON file (made at the "
            "first save)") in result.stderr


def test_a_directory_as_the_state_file_is_refused_too(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bounce_exporter", "serve", "--log.file", str(tmp_path / "m.log"),
         "--state.file", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert f"--state.file {tmp_path}: a directory;" in result.stderr


def test_a_first_start_killed_before_any_scrape_resumes_where_it_began(tmp_path):
    """Without --log.from-start a first start begins at the end of the log. Killed with -9
    before its first scrape (and before the 5 s save), the next start used to begin at the end
    again: the lines in between were never counted. The starting point is written at once."""
    log, state = tmp_path / "mail.log", tmp_path / "state.json"
    log.write_text("".join(SENT.format(s=i, q=i) for i in range(2)))  # before: skipped
    first, base = serve(tmp_path, "--log.file", str(log), "--state.file", str(state))
    try:
        wait_until(lambda: state.exists(), 20, "the starting point written")
        assert http_get(base + "/-/healthy")[0] == 200
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    with open(log, "a") as handle:
        handle.write("".join(SENT.format(s=i, q=i) for i in range(2, 5)))  # while down
    second, base = serve(tmp_path, "--log.file", str(log), "--state.file", str(state))
    try:
        def delivered() -> float | None:
            try:
                return value(samples(http_get(base + "/metrics")[2]), "bounce_deliveries_total",
                             domain="ok.example")
            except OSError:
                return None
        wait_until(lambda: delivered() == 3, 20, "the 3 lines written while down")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
