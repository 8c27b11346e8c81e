"""Catch-up on rotated and compressed files: with --log.from-start a glob such as mail.log* is read
oldest first (.N.gz descending, then .1, then the live file), .gz through gzip, each line once;
only the live file is followed afterwards; a restart counts nothing twice; parse reads .gz."""

from __future__ import annotations

import gzip
import io
import os
import shutil

import pytest

from bounce_exporter.app import Exporter
from bounce_exporter.config import SourceConfig, expand_sources, load_config
from bounce_exporter.oneshot import parse_files
from bounce_exporter.sources.catchup import CatchUpSource

SENT = ("Nov 28 12:22:{s:02d} mx1 postfix/smtp[14397]: Q{q:06X}: to=<u{q}@ok.example>, "
        "relay=x[1.2.3.4]:25, delay=0.02, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as F{q})\n")


class Logs:
    """A live mail.log and its rotated files, with numbered lines, each written once."""

    def __init__(self, folder):
        self.folder = folder
        self.live = str(folder / "mail.log")
        self.written = 0
        self.mtime = 1_700_000_000

    def text(self, count: int) -> bytes:
        text = "".join(SENT.format(s=(self.written + i) % 60, q=self.written + i)
                       for i in range(count))
        self.written += count
        return text.encode()

    def write(self, name: str, count: int, *, compress: bool = False) -> None:
        path = str(self.folder / name)
        data = self.text(count)
        with (gzip.open(path, "ab") if compress else open(path, "ab")) as handle:
            handle.write(data)
        self.mtime += 10  # older files were written earlier, as logrotate leaves them
        os.utime(path, ns=(self.mtime * 10**9, self.mtime * 10**9))

    def rotate(self) -> None:
        """logrotate with compress and delaycompress: .N.gz -> .N+1.gz, .1 -> .2.gz, live -> .1."""
        names = sorted((n for n in os.listdir(self.folder) if n.endswith(".gz")),
                       key=lambda n: -int(n.split(".")[2]))
        for name in names:
            number = int(name.split(".")[2])
            os.rename(self.folder / name, self.folder / f"mail.log.{number + 1}.gz")
        one = self.folder / "mail.log.1"
        if one.exists():
            with open(one, "rb") as src, gzip.open(self.folder / "mail.log.2.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            shutil.copystat(one, self.folder / "mail.log.2.gz")  # gzip keeps the time
            one.unlink()
        os.rename(self.live, one)


@pytest.fixture
def logs(tmp_path):
    folder = tmp_path / "log"
    folder.mkdir()
    logs = Logs(folder)
    logs.write("mail.log.10.gz", 2, compress=True)
    logs.write("mail.log.3.gz", 3, compress=True)
    logs.write("mail.log.2.gz", 4, compress=True)
    logs.write("mail.log.1", 5)
    logs.write("mail.log", 6)
    return logs


def test_a_glob_is_ordered_oldest_first_with_from_start_and_rotated_names_left_out_without(logs):
    glob = [SourceConfig(logs.live + "*")]
    names = [(os.path.basename(s.path), s.catch_up_of) for s in expand_sources(glob, True)]
    assert names == [("mail.log.10.gz", logs.live), ("mail.log.3.gz", logs.live),
                     ("mail.log.2.gz", logs.live), ("mail.log.1", logs.live), ("mail.log", None)]
    assert [s.path for s in expand_sources(glob)] == [logs.live]


def test_dated_rotated_names_are_read_in_date_order(tmp_path):
    for name in ("mail.log", "mail.log-20260102.gz", "mail.log-20251231", "mail.log-20260101"):
        (tmp_path / name).write_bytes(b"")
    found = expand_sources([SourceConfig(str(tmp_path / "mail.log*"))], True)
    assert [os.path.basename(s.path) for s in found] == [
        "mail.log-20251231", "mail.log-20260101", "mail.log-20260102.gz", "mail.log"]


def lifetime(logs, tmp_path) -> Exporter:
    config = load_config(None, {"log_files": [logs.live + "*"], "from_start": True,
                                "listen_address": "127.0.0.1:0",
                                "state_file": str(tmp_path / "state.json")})
    exporter = Exporter(config)
    exporter.start()
    return exporter


def _from_registry(exporter: Exporter) -> int:
    return int(sum(s.value for family in exporter.registry.collect() for s in family.samples
                   if s.name == "bounce_deliveries_total"
                   and s.labels.get("domain") == "ok.example"))


def lines_read(exporter: Exporter) -> dict[str, int]:
    with exporter.state.lock:
        return {os.path.basename(name): s.lines_read for name, s in exporter.state.sources.items()}


def test_catch_up_reads_every_line_once_then_follows_only_the_live_file(logs, tmp_path):
    exporter = lifetime(logs, tmp_path)
    try:
        assert _count(exporter) == 20
        assert lines_read(exporter) == {"mail.log.10.gz": 2, "mail.log.3.gz": 3,
                                        "mail.log.2.gz": 4, "mail.log.1": 5, "mail.log": 6}
        logs.write("mail.log", 2)
        logs.write("mail.log.1", 1)  # a rotated file is not followed
        assert _count(exporter) == 22
        assert lines_read(exporter)["mail.log.1"] == 5
    finally:
        exporter.shutdown()


def _count(exporter: Exporter) -> int:
    exporter.step()
    return _from_registry(exporter)


def test_a_restart_counts_nothing_twice_even_after_a_rotation_while_down(logs, tmp_path):
    first = lifetime(logs, tmp_path)
    assert _count(first) == 20
    first.keeper.save()
    first.shutdown()
    logs.write("mail.log", 3)  # written, then rotated away while the exporter is down
    logs.rotate()
    logs.write("mail.log", 4)
    second = lifetime(logs, tmp_path)
    try:
        assert _count(second) == 7  # exactly the lines written while down
        logs.write("mail.log", 1)
        assert _count(second) == 8
        second.keeper.save()  # what a scrape saves
    finally:
        second.shutdown()
    third = lifetime(logs, tmp_path)  # the catch-up was an earlier lifetime's: nothing again
    try:
        assert _count(third) == 0
        assert lines_read(third)["mail.log.3.gz"] == 0
    finally:
        third.shutdown()


def test_a_catch_up_file_resumes_at_its_saved_offset(logs):
    path = str(logs.folder / "mail.log.2.gz")
    source = CatchUpSource(path, chunk_size=100)
    source.begin()
    batches = source.read_batches()
    first = next(batches)
    position = first.position
    source.close()
    again = CatchUpSource(path)
    again.begin(position)
    rest = [line for batch in again.read_batches() for line in batch]
    assert len(first) + len(rest) == 4 and again.done


def test_parse_reads_gz_files_and_refuses_a_gz_that_is_not_one(logs, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    config = load_config(None, {})
    assert parse_files([str(logs.folder / "mail.log.3.gz")], config, out, err) == 0
    assert len(out.getvalue().splitlines()) == 3
    fake = tmp_path / "plain.gz"
    fake.write_text("not compressed\n")
    assert parse_files([str(fake)], config, io.StringIO(), err) == 1
    assert "plain.gz" in err.getvalue()


def test_a_reloaded_line_limit_applies_to_a_catch_up_file_at_once(tmp_path):
    """The limit is the line splitter's own (one value, not a copy beside it): a reload that
    sets ``max_line_bytes`` changes what is cut from the next line on."""
    rotated = tmp_path / "mail.log.1"
    rotated.write_bytes(b"x" * 50 + b"\n" + b"y" * 50 + b"\n")
    source = CatchUpSource(str(rotated), max_line_bytes=10, chunk_size=51)
    source.begin()
    batches = source.read_batches()
    assert list(next(batches)) == [b""]  # 50 bytes over the limit of 10: cut
    source.max_line_bytes = 100
    assert [line for batch in batches for line in batch] == [b"y" * 50]
    assert source.lines_too_long == 1
