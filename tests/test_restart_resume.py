"""Restarts: the read position is saved with what a scrape exposed, and a new lifetime resumes from
it with counters from zero, so the sum of each lifetime's last scrape is exactly the lines written,
including lines written, rotated or truncated away while the exporter was down."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bounce_exporter.app import Exporter
from bounce_exporter.config import load_config
from bounce_exporter.sources.files import FileSource
from bounce_exporter.sources.position import Position

from .corpus import REPO
from .helpers import (
    die,
    exporters,
    free_port,
    http_get,
    local_config,
    samples,
    value,
    wait_until,
)

SENT = ("Nov 28 12:22:{s:02d} mx1 postfix/smtp[14397]: Q{q:06X}: to=<u{q}@ok.example>, "
        "relay=x[1.2.3.4]:25, delay=0.02, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as F{q})\n")


class Writer:
    """Appends numbered delivery lines to whatever file is at the path now (created empty if
    there is none yet)."""

    def __init__(self, path):
        self.path = path
        self.written = 0
        path.touch()

    def write(self, count: int, *, newline: bool = True) -> None:
        text = "".join(SENT.format(s=(self.written + i) % 60, q=self.written + i)
                       for i in range(count))
        with open(self.path, "a") as handle:
            handle.write(text if newline else text[:-1])
        self.written += count


@pytest.fixture
def lifetimes(tmp_path):
    """Start exporters on the same log and state file; each is a lifetime."""
    with exporters() as start:
        yield lambda log, **overrides: start(local_config(tmp_path, log_files=[str(log)],
                                                          **overrides))


def scrape(exporter: Exporter) -> dict:
    port = exporter.server.server_address[1]
    status, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return samples(body)


def delivered(found: dict) -> float:
    return value(found, "bounce_deliveries_total", domain="ok.example") or 0


def read_scrape_and_stop(exporter: Exporter) -> float:
    """The end of a lifetime: read what is there, serve a scrape, shut down. What it exposed."""
    exporter.step()
    exposed = delivered(scrape(exporter))
    exporter.shutdown()
    return exposed


def test_lines_written_while_down_are_read_once_and_counters_start_from_zero(tmp_path, lifetimes):
    log = tmp_path / "mail.log"
    writer = Writer(log)
    first = lifetimes(log)
    writer.write(3)
    first.step()
    last_scrape_1 = delivered(scrape(first))
    writer.write(2)
    first.step()  # counted, never exposed: read again by the next lifetime
    first.shutdown()
    writer.write(4)  # while down
    second = lifetimes(log)
    second.step()
    found = scrape(second)
    assert (last_scrape_1, delivered(found)) == (3, 6)
    assert value(found, "bounce_exporter_lines_read_total", source=str(log)) == 6
    assert last_scrape_1 + delivered(found) == writer.written
    state = json.loads((tmp_path / "state.json").read_text())
    assert set(state) == {"version", "deferrals", "positions", "parsers"}  # issue 13: the ledger
    assert state["positions"][str(log)]["offset"] == log.stat().st_size


def test_kill_9_after_a_scrape_loses_and_doubles_nothing_exposed(tmp_path, lifetimes):
    log = tmp_path / "mail.log"
    writer = Writer(log)
    first = lifetimes(log)
    writer.write(5)
    first.step()
    exposed = [delivered(scrape(first))]
    writer.write(3)
    first.step()  # counted after the last scrape, then killed
    die(first)
    writer.write(2)
    second = lifetimes(log)
    second.step()
    exposed.append(delivered(scrape(second)))
    writer.write(1)
    second.step()
    die(second)  # killed again, this time without a scrape since start
    third = lifetimes(log)
    third.step()
    exposed.append(delivered(scrape(third)))
    assert exposed == [5, 5, 1]
    assert sum(exposed) == writer.written


def test_rotation_while_down_reads_the_old_file_to_its_end_then_the_new_one(tmp_path, lifetimes):
    log = tmp_path / "mail.log"
    writer = Writer(log)
    first = lifetimes(log)
    writer.write(2)
    exposed = read_scrape_and_stop(first)
    writer.write(3)  # into the old file, after the last scrape
    os.rename(log, tmp_path / "mail.log.1")
    writer.write(4)  # the new file
    second = lifetimes(log)
    second.step()
    found = scrape(second)
    assert exposed + delivered(found) == writer.written == 9
    assert value(found, "bounce_exporter_rotations_total", source=str(log)) == 0  # seen at start


def test_copytruncate_while_down_reads_the_rest_from_the_copy(tmp_path, lifetimes):
    log = tmp_path / "mail.log"
    writer = Writer(log)
    first = lifetimes(log)
    writer.write(2)
    exposed = read_scrape_and_stop(first)
    writer.write(3)
    shutil.copyfile(log, tmp_path / "mail.log.1")
    with open(log, "r+b") as handle:
        handle.truncate(0)
    writer.write(30)  # regrown beyond the saved offset: told apart by its first bytes
    second = lifetimes(log)
    second.step()
    found = scrape(second)
    assert exposed + delivered(found) == writer.written == 35
    assert value(found, "bounce_exporter_truncations_total", source=str(log)) == 1


def test_several_rotations_of_every_kind_while_down(tmp_path, lifetimes):
    log = tmp_path / "mail.log"
    writer = Writer(log)
    first = lifetimes(log)
    writer.write(2)
    exposed = read_scrape_and_stop(first)
    clock = log.stat().st_mtime_ns

    def tick(path) -> None:  # file times as if each rotation were a second apart
        nonlocal clock
        clock += 10**9
        os.utime(path, ns=(clock, clock))

    writer.write(1)
    tick(log)
    os.rename(log, tmp_path / "mail.log.1")  # rename and create
    writer.write(2)
    tick(log)
    shutil.copyfile(log, tmp_path / "mail.log.0-copy")  # copytruncate
    tick(tmp_path / "mail.log.0-copy")
    with open(log, "r+b") as handle:
        handle.truncate(0)
    writer.write(3)
    tick(log)
    os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.2")
    os.rename(log, tmp_path / "mail.log.1")  # rename again
    writer.write(4)
    tick(log)
    second = lifetimes(log)
    second.step()
    assert exposed + delivered(scrape(second)) == writer.written == 12


def test_a_partial_line_at_shutdown_is_read_whole_by_the_next_start(tmp_path, lifetimes):
    log = tmp_path / "mail.log"
    writer = Writer(log)
    first = lifetimes(log)
    writer.write(1)
    writer.write(1, newline=False)
    exposed = read_scrape_and_stop(first)
    with open(log, "a") as handle:
        handle.write("\n")
    second = lifetimes(log)
    second.step()
    found = scrape(second)
    assert (exposed, delivered(found)) == (1, 1)
    assert value(found, "bounce_exporter_lines_not_understood_total", source=str(log),
                 reason="malformed_delivery") == 0  # present from the start, never counted


def test_a_saved_position_wins_over_from_start(tmp_path, lifetimes):
    log = tmp_path / "mail.log"
    writer = Writer(log)
    writer.write(3)
    first = lifetimes(log, from_start=True)
    exposed = read_scrape_and_stop(first)
    writer.write(1)
    second = lifetimes(log, from_start=True)
    second.step()
    assert (exposed, delivered(scrape(second))) == (3, 1)


def test_the_first_start_saves_where_it_began_so_a_kill_before_any_scrape_loses_nothing(
        tmp_path, lifetimes):
    log = tmp_path / "mail.log"
    writer = Writer(log)
    writer.write(2)  # before the first start: skipped, as on any first start
    first = lifetimes(log)
    first.shutdown()  # no scrape: writes the starting point
    writer.write(3)
    second = lifetimes(log)
    second.step()
    assert delivered(scrape(second)) == 3


def test_unusable_saved_positions_are_ignored_with_a_warning(tmp_path, lifetimes, caplog):
    log = tmp_path / "mail.log"
    Writer(log).write(2)
    (tmp_path / "state.json").write_text(json.dumps(
        {"version": 1, "positions": {str(log): {"ino": "x", "offset": -1}}}))
    with caplog.at_level(logging.WARNING):
        exporter = lifetimes(log)
    assert "ignoring the unusable saved position" in caplog.text
    exporter.step()
    assert delivered(scrape(exporter)) == 0  # a first start: from the end


def test_a_reused_inode_with_other_first_bytes_is_not_the_saved_file(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"new file 1\nnew file 2\n")
    st = log.stat()
    saved = Position(st.st_dev, st.st_ino, 11, b"old file 1\n", st.st_mtime_ns - 1, str(log))
    source = FileSource(str(log))
    source.begin(saved)
    assert [line for batch in source.read_batches() for line in batch] == [
        b"new file 1", b"new file 2"]
    assert source.truncations == 1


def test_a_saved_file_deleted_while_down_leaves_the_newer_files_to_read(tmp_path, caplog):
    log = tmp_path / "mail.log"
    log.write_bytes(b"gone 1\n")
    st = log.stat()
    saved = Position(st.st_dev, st.st_ino, 7, b"gone 1\n", st.st_mtime_ns, str(log))
    os.unlink(log)
    rotated = tmp_path / "mail.log.1"
    rotated.write_bytes(b"between\n")
    os.utime(rotated, ns=(st.st_mtime_ns + 10**9,) * 2)
    old = tmp_path / "mail.log.2"
    old.write_bytes(b"older than the saved file\n")
    os.utime(old, ns=(st.st_mtime_ns - 10**9,) * 2)
    log.write_bytes(b"live\n")
    source = FileSource(str(log))
    with caplog.at_level(logging.WARNING, logger="bounce_exporter.sources.files"):
        source.begin(saved)
    assert [line for batch in source.read_batches() for line in batch] == [b"between", b"live"]
    # the gap that cannot be bridged is said, with the byte counts on both sides of it
    assert [r.getMessage() for r in caplog.records] == [(
        f"log source {log}: the file of the saved position ({log}, read to byte 7 of it) is gone: "
        f"whatever it held past byte 7 is not read; reading instead {rotated} (8 bytes), then "
        f"{log} from its start (5 bytes)")]


def _swap_link(link, target) -> None:
    """Point the symlink at ``target`` atomically, as rotatelogs -L and logrotate scripts do."""
    swap = link.with_name(link.name + ".swap")
    os.symlink(target, swap)
    os.replace(swap, link)


def _restart_over_swaps(targets: list, link, later) -> list[bytes]:
    """Follow ``link`` (pointing at targets[0]), save after one line, then while down: one more
    line in targets[0], and a swap to each further target (each with a line); resume."""
    targets[0].write_bytes(b"first 1\n")
    _swap_link(link, targets[0])
    source = FileSource(str(link), from_start=True)
    assert [line for batch in source.read_batches() for line in batch] == [b"first 1"]
    saved = source.position
    source.close()
    with open(targets[0], "ab") as handle:
        handle.write(b"first 2 (unread at the stop)\n")
    for number, target in enumerate(targets[1:], 2):
        target.write_bytes(f"swap {number}\n".encode())
        later(target)
        _swap_link(link, target)
    resumed = FileSource(str(link))
    resumed.begin(saved)
    return [line for batch in resumed.read_batches() for line in batch]


def _later():
    step = iter(range(1, 100))
    base = time.time_ns()

    def later(path) -> None:
        stamp = base + next(step) * 10**9
        os.utime(path, ns=(stamp, stamp))
    return later


@pytest.mark.parametrize("swaps", [2, 3])
def test_rotatelogs_style_symlink_swaps_while_down_are_read_in_order(tmp_path, swaps):
    """rotatelogs -L: mail.log -> mail.20261203.log, then .20261204, .20261205: names that are
    not rotated names of mail.log; a restart over two swaps or more reads the files between."""
    targets = [tmp_path / f"mail.2026120{day}.log" for day in range(3, 4 + swaps)]
    (tmp_path / "syslog.20261204.log").write_bytes(b"another log of the same day\n")
    lines = _restart_over_swaps(targets, tmp_path / "mail.log", _later())
    assert lines == [b"first 2 (unread at the stop)"] + [
        f"swap {n}".encode() for n in range(2, 2 + swaps)]


@pytest.mark.parametrize("swaps", [2, 3])
def test_symlink_targets_in_another_folder_swapped_twice_while_down(tmp_path, swaps):
    (tmp_path / "archive").mkdir()
    targets = [tmp_path / "archive" / f"2026-12-0{day}.log" for day in range(3, 4 + swaps)]
    lines = _restart_over_swaps(targets, tmp_path / "mail.log", _later())
    assert lines == [b"first 2 (unread at the stop)"] + [
        f"swap {n}".encode() for n in range(2, 2 + swaps)]


# -- SIGHUP ---------------------------------------------------------------------------------------


def test_reload_follows_added_sources_lets_go_of_removed_ones_and_keeps_streaks(tmp_path, lifetimes):
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    one.write_text("")
    two.write_text("")
    exporter = lifetimes(one)
    Writer(one).write(1)
    exporter.step()
    new = load_config(None, {"log_files": [str(two)], "listen_address": "127.0.0.1:0",
                             "state_file": str(tmp_path / "state.json"), "max_domains": 7})
    assert exporter.reload(new)
    Writer(two).write(2)
    exporter.step()
    found = scrape(exporter)
    assert value(found, "bounce_exporter_lines_read_total", source=str(two)) == 2
    assert value(found, "bounce_exporter_lines_read_total", source=str(one)) is None
    assert delivered(found) == 3
    assert exporter.state.domains.max_domains == 7


def test_sighup_reloads_the_config_file_and_a_bad_one_is_refused(tmp_path):
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    one.write_text("")
    two.write_text("")
    config = tmp_path / "config.yml"
    config.write_text(f"sources: [{one}]\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bounce_exporter", "serve", "--config.file", str(config),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.poll-interval", "0.1s",
         "--state.file", str(tmp_path / "state.json")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def lines_read(path) -> float | None:
        try:
            return value(samples(http_get(base + "/metrics", timeout=2)[2]),
                         "bounce_exporter_lines_read_total", source=str(path))
        except OSError:
            return None

    try:
        wait_until(lambda: lines_read(one) == 0, what="the exporter to follow one.log")
        config.write_text(f"sources: [{one}, {two}]\n")
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: lines_read(two) == 0, what="two.log to be followed after SIGHUP")
        Writer(two).write(2)
        wait_until(lambda: lines_read(two) == 2, what="two.log's lines")
        config.write_text("limits: {max_domains: lots}\n")
        process.send_signal(signal.SIGHUP)
        Writer(two).write(1)
        wait_until(lambda: lines_read(two) == 3, what="reading to go on after a refused reload")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    stderr = process.stderr.read()
    assert "configuration reloaded" in stderr
    assert "reload refused" in stderr and "max_domains" in stderr


def test_a_live_file_truncated_while_the_rotated_ones_before_it_are_read(tmp_path):
    """At a resume the live file is opened, then read after the rotated files queued before it;
    a copytruncate in between is caught before reading it, and its copy is read from byte 0."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"old 1\nold 2\n")
    st = log.stat()
    saved = Position(st.st_dev, st.st_ino, 6, b"old 1\nold 2\n", st.st_mtime_ns, str(log))
    os.rename(log, tmp_path / "mail.log.1")
    log.write_bytes(b"live 1\nlive 2\n")
    source = FileSource(str(log))
    source.begin(saved)  # queued: the rest of mail.log.1, then mail.log
    shutil.copyfile(log, tmp_path / "mail.log.0")  # copytruncate before mail.log is read
    with open(log, "r+b") as handle:
        handle.truncate(0)
    log.write_bytes(b"after 1\nafter 2\nafter 3\n")
    assert [line for batch in source.read_batches() for line in batch] == [
        b"old 2", b"live 1", b"live 2", b"after 1", b"after 2", b"after 3"]
    assert source.truncations == 1


def test_a_copytruncated_original_rotated_away_is_read_after_its_copy_even_in_the_same_tick(
        tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"a 1\na 2\n")
    st = log.stat()
    saved = Position(st.st_dev, st.st_ino, 4, b"a 1\na 2\n", st.st_mtime_ns, str(log))
    copy = tmp_path / "mail.log.1"
    shutil.copyfile(log, copy)  # copytruncate while down ...
    with open(log, "r+b") as handle:
        handle.truncate(0)
    log.write_bytes(b"b 1\n")  # ... written to within the copy's file-time tick ...
    tick = copy.stat().st_mtime_ns
    os.utime(log, ns=(tick, tick))
    os.rename(copy, tmp_path / "mail.log.2")
    os.rename(log, copy)  # ... then rotated away by renaming
    log.write_bytes(b"c 1\n")
    source = FileSource(str(log))
    source.begin(saved)
    assert [line for batch in source.read_batches() for line in batch] == [b"a 2", b"b 1", b"c 1"]


def test_a_slow_save_is_served_again_for_twenty_times_as_long_and_nothing_is_written(
        tmp_path, lifetimes):
    """Issue 18 (write amplification) with issue 13's ledger in the state file: a snapshot and
    write that took 0.1 s is served again to the scrapes of the next 2 s (20 times as long, at
    most 2 s): same values, the state file untouched. Then a scrape takes and writes a new one."""
    log = tmp_path / "mail.log"
    writer = Writer(log)
    writer.write(3)
    exporter = lifetimes(log, from_start=True)
    # the keeper's clock moves 0.05 s at each look (a scrape looks 3 times: took 0.1 s), plus
    # what the test adds
    ticks, skip = itertools.count(), [0.0]
    exporter.keeper.clock = lambda: 100.0 + 0.05 * next(ticks) + skip[0]
    exporter.step()
    first = scrape(exporter)
    assert value(first, "bounce_deliveries_total", domain="ok.example") == 3
    state = tmp_path / "state.json"
    written = state.read_bytes()
    writer.write(2)
    exporter.step()  # counted, not yet exposed
    again = scrape(exporter)
    assert value(again, "bounce_deliveries_total", domain="ok.example") == 3
    assert state.read_bytes() == written
    skip[0] = 2.0  # past the 2 s
    later = scrape(exporter)
    assert value(later, "bounce_deliveries_total", domain="ok.example") == 5
    assert json.loads(state.read_text())["positions"][str(log)]["offset"] == log.stat().st_size


def test_an_unchanged_state_is_not_written_again(tmp_path, lifetimes):
    """Issue 18: bytes written per scrape of an unchanged state: 0 (the tracker's clock, moved on
    by the wall clock, aside). A change is written at the next scrape, before it is exposed."""
    log = tmp_path / "mail.log"
    writer = Writer(log)
    writer.write(2)
    exporter = lifetimes(log, from_start=True)
    exporter.step()
    state = tmp_path / "state.json"
    scrape(exporter)
    first = state.stat()
    for later in (10.0, 20.0, 30.0):  # the loop moves the tracker's clock on
        exporter.store.advance(time.time() + later)
        exporter.step()
        assert value(scrape(exporter), "bounce_deliveries_total", domain="ok.example") == 2
    again = state.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    writer.write(1)
    exporter.step()
    assert value(scrape(exporter), "bounce_deliveries_total", domain="ok.example") == 3
    assert state.stat().st_ino != first.st_ino  # written (a new file renamed over the old one)
    assert json.loads(state.read_text())["positions"][str(log)]["offset"] == log.stat().st_size


def test_a_first_start_writes_its_starting_position_at_once(tmp_path):
    """Issue 18: a first start at the file's end that is killed before its first scrape resumes
    where it began, so the lines written meanwhile are read (they used to be skipped: the next
    start began at the end again)."""
    log = tmp_path / "mail.log"
    writer = Writer(log)
    writer.write(3)  # there before the first start: skipped (not --log.from-start)
    with exporters() as start:
        first = start(local_config(tmp_path, log_files=[str(log)]))
        saved = json.loads((tmp_path / "state.json").read_text())
        assert saved["positions"][str(log)]["offset"] == log.stat().st_size
        die(first)  # kill -9: nothing more runs
    writer.write(2)  # while down
    with exporters() as start:
        second = start(local_config(tmp_path, log_files=[str(log)]))
        second.step()
        assert value(scrape(second), "bounce_deliveries_total", domain="ok.example") == 2
