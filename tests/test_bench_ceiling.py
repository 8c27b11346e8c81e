"""The ceiling probe (bench/ceiling.py): its skeletons count exactly what the generator wrote, in
one process and over byte ranges in several, so its speeds are those of a reading that is right."""

from __future__ import annotations

import json
import os
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from bench import ceiling
from bench.generate import truth_path, write
from bench.run import attempts_by_status
from bounce_exporter.parsers.domains import normalise_domain
from bounce_exporter.parsers.postfix import PostfixParser

LINES = 20_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[str, dict]:
    log = str(tmp_path_factory.mktemp("ceiling") / "mail.log")
    write(log, LINES, seed=7)
    return log, json.loads(Path(truth_path(log)).read_text())


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")  # the generator writes traditional stamps in UTC
    ceiling.time.tzset()
    yield
    monkeypatch.undo()
    ceiling.time.tzset()


def per_domain(counts: Counter) -> dict[str, int]:
    attempts: Counter = Counter()
    for (domain, _), count in counts.items():
        attempts[normalise_domain(domain)] += count
    return dict(attempts)


def test_blocks_hand_over_the_range_whole_in_complete_lines(generated, monkeypatch):
    log, _ = generated
    monkeypatch.setattr(ceiling, "BLOCK", 4096)
    data = Path(log).read_bytes()
    fd = os.open(log, os.O_RDONLY)
    try:
        for start, end in ceiling.ranges(log, 5):
            got = list(ceiling.blocks(fd, start, end))
            assert b"".join(got) == data[start:end]
            assert all(block.endswith(b"\n") for block in got if block)
    finally:
        os.close(fd)


def test_ranges_start_at_line_starts_and_cover_the_file(generated):
    log, _ = generated
    data = Path(log).read_bytes()
    cuts = ceiling.ranges(log, 7)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in pairwise(cuts))
    assert all(data[start - 1:start] == b"\n" for start, _ in cuts[1:])


def test_one_process_counts_every_delivery(generated):
    log, truth = generated
    _, counts = ceiling.one_process(log, os.stat(log).st_mtime)
    assert ceiling.by_status(counts) == attempts_by_status(truth)
    assert per_domain(counts) == truth["attempts"]


def test_many_processes_count_what_one_does(generated):
    log, _ = generated
    reference = os.stat(log).st_mtime
    _, alone = ceiling.one_process(log, reference)
    _, together = ceiling.many_processes(log, reference, workers=2)
    assert together == alone


def test_ordered_events_are_the_parsers_in_its_order(generated):
    log, _ = generated
    reference = os.stat(log).st_mtime
    events = []
    for start, end in ceiling.ranges(log, 3):
        events += ceiling.skeleton(log, start, end, reference, ordered=True)[1]
    parsed = PostfixParser(reference).parse_block(Path(log).read_bytes(), _raise)
    assert events == [(e.time, e.queue_id, e.recipient.rpartition("@")[2], e.status)
                      for e in parsed if e.status != "expired"]


def _raise(raw: bytes, error: Exception) -> None:
    raise AssertionError(f"the parser failed on {raw!r}") from error
