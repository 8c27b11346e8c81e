"""serve's catch-up at start on a terminal (issue 14): a progress line on stderr of the bytes the
file sources read of their backlog, with the rate, ending at the full size once caught up; the
log lines around it stay whole. Not a terminal (journald): not a byte of it. The sources' own
byte counts it is drawn from, exactly."""

from __future__ import annotations

import gzip

from bounce_exporter.sources.catchup import CatchUpSource
from bounce_exporter.sources.files import FileSource

SENT = ("Nov 28 12:22:{s:02d} mx1 postfix/smtp[14397]: Q{q:06X}: to=<u{q}@ok.example>, "
        "relay=x[1.2.3.4]:25, delay=0.02, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as F{q})\n")
LINES = 30_000  # about 4.6 MB


def write_log(path, count: int = LINES) -> int:
    path.write_text("".join(SENT.format(s=i % 60, q=i) for i in range(count)))
    return path.stat().st_size


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
