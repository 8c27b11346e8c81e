"""The ceiling: how fast can a CPython design read this log at all? Measured, not argued.

    python -m bench.ceiling                        # the 1M-line log of bench.run, 3 runs, medians
    python -m bench.ceiling --peer-rate 160000     # postfix_exporter's lines/s known: not run again

Two skeletons do the least that any design counting Postfix deliveries per domain and status must
do, and nothing more: no classification, no domain labels or cap, no deferral tracking, no expiry
attribution, no exposition, no Exporter to build.

- one process: read the log in 1 MiB blocks of complete lines, find each ``status=`` line
  (``bytes.find``), match it with the Postfix parser's own delivery regex (compiled for bytes, on
  the block: no line is cut out or decoded), read its time stamp (``StampReader``, as the parser
  does) and count (domain, status) in a dict;
- one process per CPU (``fork``): the same over byte ranges of the file, one range per task, the
  parent merging the counts. Each worker also hands back one small tuple per event (time, queue id,
  domain, status): the least an exact design must carry to the one process that holds the
  order-dependent state (which recipients an expiry concerns, the deferral streaks, the order in
  which domains get their labels under the cap).

Both check their counts per status against the generator's truth. Printed beside them:
bounce-exporter's full replay (bench.run's measurement) and postfix_exporter's lines/s, with the
ratios. If a skeleton, which does a fraction of the job, is itself below 10 × postfix_exporter,
the full job is too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

from bench.run import attempts_by_status, bench_log, run_ours, run_postfix_exporter
from bounce_exporter.parsers.postfix import _AGENT_DELIVERY
from bounce_exporter.parsers.syslog import StampReader

BLOCK = 1 << 20
DELIVERY = re.compile(_AGENT_DELIVERY.pattern.encode(), re.DOTALL)  # the parser's regex, on bytes
STATUS = b"status="


def blocks(fd: int, start: int, end: int):
    """The bytes [start, end) of the file (both at line starts) in blocks of complete lines."""
    rest = b""
    while start < end:
        chunk = rest + os.pread(fd, min(BLOCK, end - start), start)
        start += len(chunk) - len(rest)
        cut = chunk.rfind(b"\n") + 1 if start < end else len(chunk)
        rest = chunk[cut:]
        yield chunk[:cut]


def skeleton(path: str, start: int, end: int, reference: float,
             ordered: bool) -> tuple[Counter, list]:
    """Count (domain, status) of the delivery lines in [start, end); with ``ordered``, also one
    (time, queue id, domain, status) tuple per event, in order."""
    counts: Counter = Counter()
    events: list = []
    time_of = StampReader(reference).time_of
    fd = os.open(path, os.O_RDONLY)
    try:
        for block in blocks(fd, start, end):
            find, rfind, match = block.find, block.rfind, DELIVERY.match
            at = find(STATUS)
            while at >= 0:
                line_end = find(b"\n", at)
                found = match(block, rfind(b"\n", 0, at) + 1, line_end)
                if found is not None:
                    mon, day, hms, iso, qid, rcpt, bare, status = found.group(
                        "mon", "day", "hms", "iso", "qid", "rcpt", "rcpt_bare", "status")
                    when = time_of(mon and mon.decode(), day and day.decode(),
                                   hms and hms.decode(), iso and iso.decode())
                    rcpt = rcpt if rcpt is not None else bare
                    domain = rcpt[rcpt.rfind(b"@") + 1:].decode("utf-8", "replace")
                    counts[domain, status.decode()] += 1
                    if ordered:
                        events.append((when, qid.decode(), domain, status.decode()))
                at = find(STATUS, line_end)
    finally:
        os.close(fd)
    return counts, events


def ranges(path: str, parts: int) -> list[tuple[int, int]]:
    """``parts`` byte ranges of the file, each starting at a line start."""
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as handle:
        for n in range(1, parts):
            handle.seek(max(size * n // parts, cuts[-1]))
            handle.readline()
            cuts.append(min(handle.tell(), size))
    cuts.append(size)
    return list(pairwise(cuts))


def _task(args: tuple) -> tuple[Counter, list]:
    return skeleton(*args)


def one_process(log: str, reference: float) -> tuple[float, Counter]:
    started = time.perf_counter()
    counts, _ = skeleton(log, 0, os.path.getsize(log), reference, ordered=False)
    return time.perf_counter() - started, counts


def many_processes(log: str, reference: float, workers: int) -> tuple[float, Counter]:
    started = time.perf_counter()
    total: Counter = Counter()
    tasks = [(log, start, end, reference, True) for start, end in ranges(log, 4 * workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for counts, _events in pool.imap(_task, tasks):  # the events: carried back, in order
            total.update(counts)
    return time.perf_counter() - started, total


def by_status(counts: Counter) -> dict[str, int]:
    statuses: Counter = Counter()
    for (_, status), count in counts.items():
        statuses[status] += count
    return dict(statuses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (medians reported)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bounce-bench"),
                        help="folder of bench.run's log (default: %(default)s)")
    parser.add_argument("--peer-rate", type=float,
                        help="postfix_exporter's lines/s, when known (else it is measured)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args(argv)

    os.environ["TZ"] = "UTC"  # the generator writes traditional stamps in UTC
    time.tzset()
    work = Path(args.work)
    log, truth = bench_log(work, args.lines, args.seed)
    lines = truth["lines"]
    reference = os.stat(log).st_mtime

    ours = run_ours(log, work, truth, args.repeat)
    full = lines / ours.lines_per_second(lines)
    rows = [("bounce-exporter replay: the full job", full, "yes" if ours.match else "NO")]
    skeletons = (("skeleton, 1 process", lambda: one_process(log, reference)),
                 (f"skeleton, {args.workers} processes",
                  lambda: many_processes(log, reference, args.workers)))
    for name, run in skeletons:
        timings, counts = zip(*(run() for _ in range(args.repeat)))
        match = all(by_status(c) == attempts_by_status(truth) for c in counts)
        rows.append((name, statistics.median(timings), "yes" if match else "NO"))
    one, best = rows[1][1], min(rows[1][1], rows[2][1])
    if args.peer_rate:
        peer = args.peer_rate
    else:
        measured = run_postfix_exporter(log, work, truth, args.repeat)
        if measured is None:
            raise SystemExit("postfix_exporter is not installed: give --peer-rate")
        peer = measured.lines_per_second(lines)
    rows.append(("postfix_exporter", lines / peer, ""))
    budget = lines / (10 * peer)

    print(f"log: {log}: {lines} lines; {args.repeat} runs each, medians\n")
    print(f"{'':38} {'seconds':>8} {'lines/s':>10} {'÷ postfix_exporter':>19} {'counts match':>13}")
    for name, seconds, match in rows:
        speed = lines / seconds
        print(f"{name:38} {seconds:8.3f} {speed:10,.0f} {speed / peer:19.1f} {match:>13}")
    print(f"\n10 × postfix_exporter is {10 * peer:,.0f} lines/s: {budget:.3f} s for this log.\n"
          f"The faster skeleton takes {best:.3f} s and bounce-exporter's build and scrape "
          f"{ours.overhead:.3f} s: {budget - best - ours.overhead:.3f} s are left for what the "
          f"skeletons leave out\n(per event: recipient, domain normal form, classification, labels "
          f"under the cap, expiry attribution, the deferral tracker; the `: removed` lines),\n"
          f"which takes {full - one - ours.overhead:.3f} s in one process "
          f"(the full replay, less the one-process skeleton, build and scrape).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
