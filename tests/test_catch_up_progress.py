"""serve's catch-up at start on a terminal (issue 14): a progress line on stderr of the bytes the
file sources read of their backlog, with the rate, ending at the full size once caught up; the
log lines around it stay whole. Not a terminal (journald): not a byte of it. The sources' own
byte counts it is drawn from, exactly."""

from __future__ import annotations

import gzip
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

from bounce_exporter.app import Exporter
from bounce_exporter.report.backlog import catch_up_progress
from bounce_exporter.sources.catchup import CatchUpSource
from bounce_exporter.sources.files import FileSource

from .corpus import REPO
from .helpers import (
    exporters,
    free_port,
    http_get,
    local_config,
    read_to_end,
    samples,
    start_serving,
    value,
    wait_until,
)

SENT = ("Nov 28 12:22:{s:02d} mx1 postfix/smtp[14397]: Q{q:06X}: to=<u{q}@ok.example>, "
        "relay=x[1.2.3.4]:25, delay=0.02, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as F{q})\n")
LINES = 30_000  # about 4.6 MB
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+: .*")


def write_log(path, count: int = LINES) -> int:
    path.write_text("".join(SENT.format(s=i % 60, q=i) for i in range(count)))
    return path.stat().st_size


def serve_args(tmp_path, log) -> list[str]:
    return ["--log.from-start", "--log.file", str(log), "--state.file",
            str(tmp_path / "state.json"), "--queue.command", ""]


def lines_read(base: str, log) -> float | None:
    status, _, body = http_get(base + "/metrics")
    return value(samples(body), "bounce_exporter_lines_read_total", source=str(log)) \
        if status == 200 else None


def test_sources_count_the_bytes_they_read_and_what_their_files_still_hold(tmp_path):
    log = tmp_path / "mail.log"
    size = write_log(log, 5000)
    source = FileSource(str(log), from_start=True, chunk_size=65536)
    source.begin()
    assert (source.bytes_read, source.unread()) == (0, size)
    assert sum(len(batch) for batch in source.read_batches()) == 5000
    assert (source.bytes_read, source.unread()) == (size, 0)
    with open(log, "a") as handle:
        handle.write(SENT.format(s=0, q=5000))
    assert (source.bytes_read, source.unread()) == (size, len(SENT.format(s=0, q=5000)))
    source.close()
    # a .gz: its compressed bytes, as it is on disk
    rotated = tmp_path / "mail.log.2.gz"
    rotated.write_bytes(gzip.compress(log.read_bytes()))
    catch_up = CatchUpSource(str(rotated), chunk_size=65536)
    catch_up.begin()
    assert (catch_up.bytes_read, catch_up.unread()) == (0, rotated.stat().st_size)
    assert sum(len(batch) for batch in catch_up.read_batches()) == 5001
    assert (catch_up.bytes_read, catch_up.unread()) == (rotated.stat().st_size, 0)


def read_terminal(leader: int, until: re.Pattern, timeout: float = 60.0) -> bytes:
    """What the process wrote to the terminal, read until ``until`` matches it (decoded)."""
    drawn = b""
    deadline = time.monotonic() + timeout
    while not until.search(drawn.decode(errors="replace")):
        assert time.monotonic() < deadline, drawn
        if select.select([leader], [], [], 0.5)[0]:
            drawn += os.read(leader, 65536)
    return drawn


def test_a_resumed_position_catches_up_on_its_backlog_only_across_a_rotation(tmp_path):
    """The total is what the sources have left to read: the rest of the file rotated away while
    the exporter was down (from the saved position on) and the new live file, not the files'
    sizes; every line of it counted once."""
    log = tmp_path / "mail.log"
    write_log(log, 1000)
    config = local_config(tmp_path, log_files=[str(log)], from_start=True)
    with exporters() as start:
        first = start(config)
        first.step()
        first.scrape()  # what the saved position is of
        first.shutdown()
    saved = log.stat().st_size
    with open(log, "a") as handle:  # written while down, then rotated away
        handle.write("".join(SENT.format(s=i % 60, q=i) for i in range(1000, 11000)))
    rest = log.stat().st_size - saved
    os.rename(log, tmp_path / "mail.log.1")
    backlog = rest + write_log(log, 10_000)
    leader, follower = pty.openpty()
    with exporters() as start, os.fdopen(follower, "w") as terminal:
        second: Exporter = start(config)
        caught_up = catch_up_progress(second.pipeline.feeds, terminal)
        second.step()
        caught_up()
        caught_up()  # once only
        assert second.pipeline.feeds[0].on_read is None  # unhooked: the live reads as before
        assert second.state.source(str(log)).lines_read == 20_000
    drawn = read_to_end(leader)
    os.close(leader)
    total = f"{backlog / 1e6:.1f} MB"
    frames = drawn.decode().replace("\r\n", "\n").split("\r")[1:]
    assert frames[0] == f"catch-up: 0.0 MB of {total} (0%), 0.0 MB/s\x1b[K"
    assert re.fullmatch(rf"catch-up: {total} of {total} \(100%\), \d+\.\d MB/s\x1b\[K\n",
                        frames[-1]), frames


def test_serve_draws_its_catch_up_on_a_terminal_and_ends_at_the_full_size(tmp_path):
    log = tmp_path / "mail.log"
    size = write_log(log)
    total = f"{size / 1e6:.1f} MB"
    port = free_port()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bounce_exporter", "serve", "--web.listen-address",
         f"127.0.0.1:{port}", *serve_args(tmp_path, log)],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    try:
        last = re.compile(rf"\rcatch-up: {total} of {total} \(100%\), \d+\.\d MB/s\x1b\[K\r\n")
        drawn = read_terminal(leader, last)
        # caught up: every line counted once
        assert lines_read(f"http://127.0.0.1:{port}", log) == LINES
        process.send_signal(signal.SIGTERM)
        drawn += read_to_end(leader)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    text = drawn.decode().replace("\r\n", "\n")
    frame = re.compile(r"\r(catch-up: [^\r\n\x1b]*)\x1b\[K")
    frames = frame.findall(text)
    assert frames[0] == f"catch-up: 0.0 MB of {total} (0%), 0.0 MB/s"  # at once
    assert re.fullmatch(rf"catch-up: {total} of {total} \(100%\), \d+\.\d MB/s", frames[-1])
    done = [float(shown.split()[1]) for shown in frames]
    assert done == sorted(done) and all(f" of {total} (" in shown for shown in frames)
    # the log around it: whole lines, the line's place emptied before each one written meanwhile;
    # the last frame kept on a line of its own, the log going on below it
    assert text.index("listening on 127.0.0.1") < text.index("\rcatch-up: ")
    assert re.search(rf"\r{re.escape(frames[-1])}\x1b\[K\n[^\r\n]* INFO bounce_exporter.app: "
                     r"stopped\n$", text)
    logged = [line for line in frame.sub("", text).replace("\r\x1b[K", "").split("\n") if line]
    assert all(LOG_LINE.fullmatch(line) for line in logged), logged


def test_serve_with_stderr_not_a_terminal_writes_none_of_it(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log)
    process, base = start_serving(*serve_args(tmp_path, log))
    try:
        wait_until(lambda: lines_read(base, log) == LINES, what="the catch-up")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "catch-up" not in err and "\r" not in err and "\x1b" not in err, err
    assert all(LOG_LINE.fullmatch(line) for line in err.splitlines()), err
