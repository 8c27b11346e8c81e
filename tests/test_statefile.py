"""The state file: atomic JSON writes that leave the old file intact on failure, and reads that
never raise for what is in the file."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bounce_exporter.persistence.statefile import read_state, write_state

OLD = {"version": 1, "streaks": [{"domain": "a.example", "since": 1700000000.0}]}
NEW = {
    "version": 1,
    "streaks": [{"domain": "b.example", "since": 1700003600.5, "text": "x" * 65536}],
}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_then_read_round_trips(tmp_path):
    path = tmp_path / "state.json"
    write_state(path, OLD)
    assert read_state(path) == OLD
    write_state(str(path), NEW)
    assert read_state(str(path)) == NEW
    assert leftovers(tmp_path) == []


def test_write_creates_parent_directories(tmp_path):
    path = tmp_path / "var" / "lib" / "bounce-exporter" / "state.json"
    write_state(path, OLD)
    assert json.loads(path.read_text()) == OLD


def test_write_refuses_data_that_is_not_json_before_touching_the_file(tmp_path):
    path = tmp_path / "state.json"
    write_state(path, OLD)
    with pytest.raises(TypeError):
        write_state(path, {"when": object()})
    with pytest.raises(ValueError):
        write_state(path, {"since": float("nan")})
    assert read_state(path) == OLD
    assert leftovers(tmp_path) == []


def test_write_raises_oserror_when_the_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OSError):
        write_state(tmp_path / "file" / "state.json", OLD)


def test_write_onto_a_directory_raises_and_cleans_up(tmp_path):
    (tmp_path / "state.json").mkdir()
    with pytest.raises(OSError):
        write_state(tmp_path / "state.json", OLD)
    assert leftovers(tmp_path) == []


# -- a full disk: two real failures, no mocks ----------------------------------------------------

_LIMITED_WRITE = textwrap.dedent(
    """
    import json, resource, signal, sys
    from bounce_exporter.persistence.statefile import write_state
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    try:
        write_state(sys.argv[1], json.loads(sys.argv[2]))
    except OSError as exc:
        print(type(exc).__name__, exc.errno)
        sys.exit(3)
    """
)


def test_write_failing_midway_raises_oserror_and_keeps_the_previous_file(tmp_path):
    """A file size limit (RLIMIT_FSIZE) makes the write fail after 4 KiB like a full disk does."""
    path = tmp_path / "state.json"
    write_state(path, OLD)
    before = path.read_bytes()
    result = subprocess.run(
        [sys.executable, "-c", _LIMITED_WRITE, str(path), json.dumps(NEW)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.split() == ["OSError", "27"]  # EFBIG
    assert path.read_bytes() == before
    assert read_state(path) == OLD
    assert leftovers(tmp_path) == []


def test_full_disk_raises_enospc_and_keeps_the_previous_file(tiny_tmpfs):
    path = tiny_tmpfs / "state.json"
    write_state(path, OLD)
    before = path.read_bytes()
    with pytest.raises(OSError) as info:
        write_state(path, {"streaks": ["x" * 200_000]})
    assert info.value.errno == 28  # ENOSPC
    assert path.read_bytes() == before
    assert leftovers(tiny_tmpfs) == []


# -- reading -----------------------------------------------------------------------------------


def test_read_missing_file_is_empty_without_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bounce_exporter.persistence.statefile"):
        assert read_state(tmp_path / "nope.json") == {}
    assert caplog.records == []


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b'{"version": 1',
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"text"',
        b"null",
        b"[" * 100_000,
    ],
)
def test_read_corrupt_file_warns_and_is_empty(tmp_path, caplog, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="bounce_exporter.persistence.statefile"):
        assert read_state(path) == {}
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert str(path) in caplog.text


def test_read_unreadable_path_warns_and_is_empty(tmp_path, caplog):
    (tmp_path / "state.json").mkdir()
    with caplog.at_level(logging.WARNING, logger="bounce_exporter.persistence.statefile"):
        assert read_state(tmp_path / "state.json") == {}
    assert "unreadable" in caplog.text
