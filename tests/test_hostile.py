"""Hostile or odd surroundings (issue 18): each case a few seconds, a clear error or a counted,
logged skip, never a hang and never a silent loss."""

from __future__ import annotations

import os
import subprocess
import sys

from .corpus import REPO


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
