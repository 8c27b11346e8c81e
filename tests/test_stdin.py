"""Standard input as a log source (``--log.file -``): lines piped into ``serve`` are counted as they
arrive, the end of input sets source_up to 0 and the exporter goes on serving."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

from bounce_exporter.sources.stdin import StdinSource

from .corpus import REPO
from .helpers import free_port, http_get, samples, value, wait_until

SENT = ("Nov 28 12:22:{s:02d} mx1 postfix/smtp[14397]: Q{q:06X}: to=<u{q}@ok.example>, "
        "relay=x[1.2.3.4]:25, delay=0.02, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as F{q})\n")


def lines(start: int, count: int) -> bytes:
    return "".join(SENT.format(s=i % 60, q=i) for i in range(start, start + count)).encode()


def test_stdin_source_hands_over_complete_lines_then_goes_down_at_the_end():
    woken = []
    source = StdinSource(io.BufferedReader(io.BytesIO(b"one\r\ntwo\n" + b"x" * 300 + b"\nlast")),
                         max_line_bytes=256, on_data=lambda: woken.append(1))
    source.begin()
    wait_until(lambda: source.eof, 5, "the end of input")
    got = [line for batch in source.read_batches() for line in batch]
    assert got == [b"one", b"two", b"", b"last"]  # CR removed; over the limit: empty, counted
    assert source.lines_too_long == 1 and source.up is False and woken
    assert all(batch.position is None for batch in source.read_batches())  # nothing to save


def test_serve_reads_lines_piped_into_it_and_serves_on_after_the_end(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bounce_exporter", "serve", "--log.file", "-",
         "--web.listen-address", f"127.0.0.1:{port}", "--state.file", str(tmp_path / "s.json"),
         "--log.poll-interval", "10s"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdin is not None

    def scrape() -> dict:
        status, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        return samples(body) if status == 200 else {}

    def delivered() -> float:
        try:
            return value(scrape(), "bounce_deliveries_total", domain="ok.example") or 0
        except OSError:
            return 0

    try:
        proc.stdin.write(lines(0, 5))
        proc.stdin.flush()
        # the poll interval is 10 s: only the reader thread's wake-up makes this quick
        wait_until(lambda: delivered() == 5, 8, "5 piped lines counted")
        assert value(scrape(), "bounce_exporter_source_up", source="-") == 1
        proc.stdin.write(lines(5, 3)[:-1])  # the last line without its newline
        proc.stdin.close()  # end of input: the partial last line counts
        wait_until(lambda: value(scrape(), "bounce_exporter_source_up", source="-") == 0, 8,
                   "source_up 0 at the end of input")
        assert delivered() == 8
        assert value(scrape(), "bounce_exporter_lines_read_total", source="-") == 8
        assert proc.poll() is None  # still serving
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
