"""Block reading and parsing: the same lines, events and counts as line by line.

``FileSource.read_blocks`` hands over complete lines unsplit; ``PostfixParser.parse_block`` finds
its lines in them. Both must give exactly what ``read_batches`` and ``parse`` give line by line:
on the real log, on a generated log, with CRLF, over-long and malformed lines, at any chunk size.
"""

from __future__ import annotations

import random

import pytest

from bench.generate import generate
from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.postfix import PostfixParser
from bounce_exporter.pipeline import Pipeline
from bounce_exporter.sources.files import FileSource
from bounce_exporter.sources.lines import blank_long_lines
from bounce_exporter.state.counters import DomainLabels, MetricState
from bounce_exporter.state.deferrals import DEFAULT_RULES, DeferralTracker
from tests.corpus import CORPUS, format_samples

REAL_LOG = CORPUS / "real" / "postfix-3min.log"
REFERENCE = 1_800_000_000.0


def line_by_line(lines: list[bytes]) -> tuple[list, list]:
    parser = PostfixParser(reference=REFERENCE)
    events, failures = [], []
    for raw in lines:
        try:
            events += parser.parse(raw)
        except LineNotUnderstood as err:
            failures.append((raw, err.reason))
    return events, failures


def by_blocks(blocks: list[bytes]) -> tuple[list, list]:
    parser = PostfixParser(reference=REFERENCE)
    events, failures = [], []

    def failed(raw: bytes, error: Exception) -> None:
        assert isinstance(error, LineNotUnderstood), error
        failures.append((raw, error.reason))

    for block in blocks:
        events += parser.parse_block(block, failed)
    return events, failures


def generated_log(lines: int = 20_000) -> bytes:
    text, _truth = generate(lines, seed=3)
    return text.encode()


def messy_log() -> bytes:
    """The real log, the Postfix format samples (malformed ones among them), lines with
    ``status=`` or ``: removed`` in odd places, CRLF endings, a line over the limit."""
    samples = [s["line"] for s in format_samples("postfix") if not s.get("fragment")]
    odd = [
        "Nov 28 12:00:00 mx1 postfix/qmgr[1]: ABC: removed",
        "Nov 28 12:00:00 mx1 postfix/qmgr[1]: ABC: removed later",
        "Nov 28 12:00:00 mx1 postfix/smtp[2]: ABC: to=<a@b.example>, status=garbled",
        "status=",
        ": removed",
        ("Nov 28 12:00:01 mx1 postfix/smtp[2]: X1: to=<a@b.example>, relay=none, delay=1, "
         "dsn=4.4.1, status=deferred (host mx.b.example[192.0.2.1] said: 450 4.2.0 later: removed"),
        "Nov 28 12:00:02 mx1 postfix/qmgr[1]: X1: removed",
        ("Nov 28 12:00:03 mx1 postfix/smtp[2]: X2: to=<c@d.example>, relay=d[192.0.2.2]:25, "
         "delay=1, delays=0/0/0/1, dsn=5.0.0, status=bounced (host d[192.0.2.2] said: 550-5.1.1 "
         "no such user; host x said: 421 4.3.0 other (in reply to RCPT TO command))"),
        "x" * 5000 + " status=sent",
    ]
    real = REAL_LOG.read_text(encoding="utf-8", errors="replace").splitlines()
    lines = [*real[:500], *samples, *odd, *real[500:]]
    text = "".join(line + ("\r\n" if i % 7 == 3 else "\n") for i, line in enumerate(lines))
    # deferred, then removed (CRLF): the expiry after it finds no recipient left to expire
    removed = b"".join(
        f"Nov 28 13:00:0{i} mx1 postfix/{line}".encode() + end for i, (line, end) in enumerate([
            (("smtp[2]: X3: to=<e@f.example>, relay=none, delay=1, dsn=4.4.1, status=deferred "
              "(connect to f.example[192.0.2.3]:25: Connection timed out)"), b"\n"),
            ("qmgr[1]: X3: removed", b"\r\n"),
            ("qmgr[1]: X3: from=<s@example.org>, status=expired, returned to sender", b"\n"),
        ]))
    return (text.encode("utf-8", "replace") + removed
            + b"2026-01-01T00:00:00 mx1 postfix/qmgr[1]: Q: removed\r")


def read(path, chunk_size: int, max_line_bytes: int = 65536, blocks: bool = True):
    source = FileSource(str(path), from_start=True, chunk_size=chunk_size,
                        max_line_bytes=max_line_bytes)
    got = list(source.read_blocks() if blocks else source.read_batches())
    rest = source.close()
    return got, rest, source


@pytest.mark.parametrize("chunk_size", [1 << 20, 4096, 333])
@pytest.mark.parametrize("log", ["real", "generated", "messy"])
def test_block_parsing_gives_the_events_of_line_parsing(tmp_path, log, chunk_size):
    data = {"real": REAL_LOG.read_bytes, "generated": generated_log, "messy": messy_log}[log]()
    path = tmp_path / "mail.log"
    path.write_bytes(data)
    batches, rest, by_lines = read(path, chunk_size, max_line_bytes=4096, blocks=False)
    lines = [line for batch in batches for line in batch] + list(rest)
    blocks, rest_, source = read(path, chunk_size, max_line_bytes=4096)
    assert [] == [b for b in blocks if b.data and not b.data.endswith(b"\n")]
    assert sum(block.lines for block in blocks) + len(rest_) == len(lines)
    assert list(rest_) == list(rest)
    expected = line_by_line(lines)
    got = by_blocks([b.data for b in blocks] + [line + b"\n" for line in rest_])
    assert got == expected
    assert expected[0], "the log holds delivery events"
    if log == "messy":
        assert expected[1], "and lines that are not understood"
        assert source.lines_too_long == by_lines.lines_too_long == 1


@pytest.mark.parametrize("chunk_size", [7, 64, 4096])
@pytest.mark.parametrize("limit", [5, 20, 1000])
def test_blocks_split_into_the_batches(tmp_path, chunk_size, limit):
    rng = random.Random(chunk_size * limit)
    parts = []
    for _ in range(400):
        size = rng.choice([0, 1, 3, 5, 6, 19, 20, 21, 22, 40, 1500])
        parts.append(bytes(rng.choice(b"ab c") for _ in range(size)) + rng.choice([b"\n", b"\r\n"]))
    data = b"".join(parts) + b"tail without newline"
    path = tmp_path / "mail.log"
    path.write_bytes(data)
    batches, rest, by_lines = read(path, chunk_size, limit, blocks=False)
    blocks, rest_, by_blocks_ = read(path, chunk_size, limit)
    assert [line for b in batches for line in b] == [line for b in blocks for line in b.batch()]
    assert [b.position for b in batches] == [b.position for b in blocks]
    assert [b.too_long for b in batches] == [b.too_long for b in blocks]
    assert list(rest) == list(rest_) and rest.too_long == rest_.too_long
    assert by_lines.lines_too_long == by_blocks_.lines_too_long
    expected = [b"" if len(p.rstrip(b"\n")) > limit else p.rstrip(b"\n").removesuffix(b"\r")
                for p in parts]
    tail = [] if len(b"tail without newline") > limit else [b"tail without newline"]
    assert [line for b in batches for line in b] + list(rest) == expected + (tail or [b""])


def test_blank_long_lines_is_exact():
    rng = random.Random(5)
    for _ in range(300):
        limit = rng.randint(1, 40)
        lines = [b"x" * rng.choice([0, 1, limit - 1, limit, limit + 1, limit + 2, 3 * limit])
                 for _ in range(rng.randint(0, 30))]
        data = b"".join(line + b"\n" for line in lines)
        blanked, count = blank_long_lines(data, limit)
        assert blanked == b"".join((b"" if len(line) > limit else line) + b"\n" for line in lines)
        assert count == sum(len(line) > limit for line in lines)


class LinesOnly:
    """The same parser without ``parse_block``: the pipeline reads line by line."""

    def __init__(self, parser: PostfixParser):
        self.parser = parser
        self.mta = parser.mta
        self.parse = parser.parse
        self.select = parser.select


def count(path, parser) -> tuple:
    classifier = Classifier.load()
    state = MetricState(DomainLabels(5000))
    tracker = DeferralTracker(list(DEFAULT_RULES))
    pipeline = Pipeline(classifier, state, observers=[tracker.observe], clock=lambda: 0.0)
    feed = pipeline.add(FileSource(str(path), from_start=True, chunk_size=65536), parser)
    pipeline.begin()
    lines = pipeline.pump() + pipeline.drain()
    stats = state.sources[str(path)]
    return (lines, dict(state.attempts), dict(state.deliveries), dict(state.expired),
            dict(state.failures), stats.lines_read, dict(stats.not_understood), feed.counted,
            [(s.domain, s.code, s.since, s.last, s.attempts) for s in tracker.active()],
            tracker.tracking())


def test_the_pipeline_counts_the_same_either_way(tmp_path):
    path = tmp_path / "mail.log"
    path.write_bytes(generated_log(30_000) + messy_log())
    by_block = count(path, PostfixParser(reference=REFERENCE))
    by_line = count(path, LinesOnly(PostfixParser(reference=REFERENCE)))
    assert by_block == by_line
    assert by_block[0] == by_block[5] > 30_000
