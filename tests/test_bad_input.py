"""Bad input never crashes and never stalls: it is counted as not understood, or skipped with a
logged reason. The parsers are property-tested: whatever the bytes, they return events or raise
LineNotUnderstood, nothing else."""

from __future__ import annotations

import json
import logging
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bounce_exporter import parsers
from bounce_exporter.app import Exporter
from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.pipeline import Pipeline
from bounce_exporter.sources.files import FileSource
from bounce_exporter.state.counters import MetricState

from .corpus import CORPUS
from .helpers import exporters, http_get, local_config, samples, value

SENT = ("Nov 28 12:22:01 mx1 postfix/smtp[14397]: Q{q}: to=<u{q}@ok.example>, relay=x[1.2.3.4]:25, "
        "delay=0.02, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {tail})")


def _seed_lines() -> list[bytes]:
    """Real lines of every format in the shared corpus: mutations of them reach deep into the
    parsers, where arbitrary bytes would stop at the first check."""
    seeds = [json.loads(line)["line"].encode() for line in
             (CORPUS / "format-samples.jsonl").read_text().splitlines() if line.strip()]
    for log in sorted((CORPUS / "real").glob("*.log")):
        seeds.extend(log.read_bytes().splitlines()[:60])
    return seeds


SEEDS = _seed_lines()


@st.composite
def log_lines(draw) -> bytes:
    """Arbitrary bytes, arbitrary text, or a real line cut, spliced or with bytes replaced."""
    kind = draw(st.sampled_from(["bytes", "text", "cut", "splice", "flip"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "text":
        return draw(st.text(max_size=400)).encode("utf-8", "surrogatepass")
    seed = draw(st.sampled_from(SEEDS))
    i = draw(st.integers(0, len(seed)))
    j = draw(st.integers(i, len(seed)))
    noise = draw(st.one_of(st.binary(max_size=40), st.text(max_size=40).map(
        lambda t: t.encode("utf-8", "surrogatepass"))))
    if kind == "cut":
        return seed[:i] + noise
    if kind == "splice":
        return seed[:i] + noise + seed[j:]
    return seed[:i] + bytes(b ^ 0xA5 for b in seed[i:j]) + seed[j:]


def _parse_all(batch: list[bytes]) -> None:
    names = sorted(parsers.PARSERS)  # read at run time: parsers registered later are covered too
    assert names
    for name in names:
        parser = parsers.make_parser(name)
        for raw in batch:  # one parser instance over the batch: its remembered state too
            try:
                events = parser.parse(raw.replace(b"\n", b" "))
            except LineNotUnderstood as err:
                assert isinstance(err.reason, str) and err.reason
                continue
            for event in events:
                assert event.status in ("sent", "deferred", "bounced", "expired")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(log_lines(), min_size=1, max_size=8))
def test_every_registered_parser_raises_nothing_but_line_not_understood(batch):
    _parse_all(batch)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_every_registered_parser_takes_arbitrary_text(text):
    _parse_all([text.encode("utf-8", "surrogatepass")])


# -- junk through the whole read path --------------------------------------------------------------


@pytest.fixture
def exporter(tmp_path):
    with exporters() as start:
        yield lambda log, **overrides: start(local_config(tmp_path / "state",
                                                          log_files=[str(log)], **overrides))


def scrape(exporter: Exporter) -> dict:
    return samples(http_get(f"http://127.0.0.1:{exporter.server.server_address[1]}/metrics")[2])


def test_junk_lines_are_counted_or_skipped_never_fatal(tmp_path, exporter):
    log = tmp_path / "mail.log"
    garbage = bytes(b for b in range(256) if b != 0x0A) * 4
    content = b"".join([
        SENT.format(q=1, tail="A1").encode() + b"\n",
        SENT.format(q=2, tail="A2").encode() + b"\r\n",  # CRLF
        SENT.format(q=3, tail="A3 \xff\xfe invalid").encode("latin-1") + b"\n",  # not UTF-8
        SENT.format(q=4, tail="A4\x00\x00nul").encode() + b"\n",  # NUL bytes
        b"\xff\xfe\x00 status=broken\n",  # looks like a delivery, has no header
        garbage + b"\n",  # binary garbage
        b"x" * (2 << 20) + b"\n",  # a 2 MiB line
        b"Nov 28 12:22:01 mx1 CRON[123]: (root) CMD (run-parts /etc/cron.hourly)\n",
        b"Nov 28 12:22:01 mx1 dovecot: imap-login: Login: user=<u>, status=ok, method=PLAIN\n",
        b"\n",  # an empty line
        SENT.format(q=5, tail="A5").encode() + b"\n",
    ])
    log.write_bytes(content)
    one = exporter(log, from_start=True)
    one.step()
    found = scrape(one)
    source = str(log)
    assert value(found, "bounce_exporter_lines_read_total", source=source) == 11
    assert value(found, "bounce_deliveries_total", domain="ok.example") == 5
    assert value(found, "bounce_exporter_lines_not_understood_total", source=source,
                 reason="too_long") == 1
    assert value(found, "bounce_exporter_lines_not_understood_total", source=source,
                 reason="no_header") == 1
    assert value(found, "bounce_exporter_source_up", source=source) == 1


def test_a_line_of_any_length_is_never_held_whole(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    source = FileSource(str(log), max_line_bytes=1024, chunk_size=4096)
    list(source.read_batches())
    with log.open("ab") as handle:
        for _ in range(64):  # 4 MiB without a newline, read as it grows
            handle.write(b"y" * 65536)
            handle.flush()
            assert [line for batch in source.read_batches() for line in batch] == []
            assert len(source._lines.partial) <= 1024
        handle.write(b"\nafter\n")
    assert [line for batch in source.read_batches() for line in batch] == [b"", b"after"]
    assert source.lines_too_long == 1


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_directory_or_fifo_is_down_logged_once_and_never_blocks(tmp_path, exporter, kind, caplog):
    log = tmp_path / "mail.log"
    if kind == "directory":
        log.mkdir()
    else:
        os.mkfifo(log)
    with caplog.at_level(logging.WARNING, logger="bounce_exporter.sources.files"):
        one = exporter(log)
        for _ in range(3):
            assert one.step() == 0
    assert value(scrape(one), "bounce_exporter_source_up", source=str(log)) == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"log source {log} unavailable: not a regular file"]
    (log.rmdir if kind == "directory" else log.unlink)()
    log.write_text(SENT.format(q=1, tail="A1") + "\n")
    one.step()
    found = scrape(one)
    assert value(found, "bounce_exporter_source_up", source=str(log)) == 1
    assert value(found, "bounce_deliveries_total", domain="ok.example") == 1


def test_a_parser_bug_is_counted_and_reading_goes_on(tmp_path):
    class Fragile:
        mta = "fragile"

        def parse(self, raw: bytes):
            if b"boom" in raw:
                raise ZeroDivisionError("bug")
            return ()

    log = tmp_path / "mail.log"
    log.write_bytes(b"a\nboom\nb\n")
    state = MetricState()
    pipeline = Pipeline(Classifier.load(), state)
    pipeline.add(FileSource(str(log), from_start=True), Fragile())
    assert pipeline.pump() == 3
    stats = state.sources[str(log)]
    # too_long at 0: the pipeline's own reasons are present from the start, whatever the parser
    assert (stats.lines_read, dict(stats.not_understood)) == (3, {"parser_error": 1,
                                                                  "too_long": 0})


# -- a full disk when saving the state ------------------------------------------------------------


def test_a_full_disk_is_counted_retried_and_serving_goes_on(tmp_path, tiny_tmpfs):
    log = tmp_path / "mail.log"
    log.write_text("")
    one = Exporter(local_config(tiny_tmpfs, log_files=[str(log)]))
    one.start()
    try:
        filler = tiny_tmpfs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # the disk is full
        finally:
            os.close(fd)
        with log.open("a") as handle:
            handle.write(SENT.format(q=1, tail="A1") + "\n")
        one.step()
        assert value(scrape(one), "bounce_deliveries_total", domain="ok.example") == 1
        found = scrape(one)  # the first scrape's write failed; this one's too
        assert value(found, "bounce_exporter_state_write_errors_total") == 1
        # the start's position (written at once, issue 18) is left as it was by the failed writes
        kept = json.loads((tiny_tmpfs / "state.json").read_text())
        assert kept["positions"][str(log)]["offset"] == 0
        filler.unlink()
        one.keeper.interval = 0
        one.step()  # retried
        saved = json.loads((tiny_tmpfs / "state.json").read_text())
        assert saved["positions"][str(log)]["offset"] == log.stat().st_size
        assert value(scrape(one), "bounce_exporter_state_write_errors_total") == 2
    finally:
        one.shutdown()
