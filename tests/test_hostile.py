"""Hostile or odd surroundings (issue 18): each case a few seconds, a clear error or a counted,
logged skip, never a hang and never a silent loss."""

from __future__ import annotations

import os
import subprocess
import sys

from .corpus import REPO
from .helpers import free_port

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
