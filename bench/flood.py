"""Flood: mail to one million distinct recipient domains, through the real exporter.

    python -m bench.flood                       # 1,000,000 domains, figures every 100,000
    python -m bench.flood --domains 200000 --step 50000
    python -m bench.flood --trace               # and where the memory is, per module (slower)
    python -m bench.flood --max-pending 20000   # a smaller ledger (limits.max_pending_messages)

An ``Exporter`` (default configuration: 500 domain labels, the deferral tracker's 10,000 streaks)
follows a log file in a temporary folder; the flood is appended in steps, each followed by one
read step and one scrape through the registry (which also writes the state file, as a scrape
does). Every domain gets one attempt: half deferred with 431 4.3.1 (each starts a streak), 30 %
delivered, 20 % bounced 550 5.1.1. Printed per step: lines read, label values of ``domain``,
events counted as "other", streaks tracked and evicted, series exposed, the scrape's time and size,
the state file's size, and the process's resident memory (VmRSS) and its peak (VmHWM).
The figures show what stays flat however many domains come: labels, streaks, series, scrape.
With ``--trace``, tracemalloc follows every allocation (the run is about three times slower and
RSS higher) and the memory still held at the end is printed per module of bounce_exporter.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
import tempfile
import time
import tracemalloc

from prometheus_client import CollectorRegistry, generate_latest

from bounce_exporter.app import Exporter
from bounce_exporter.config import load_config

LINE = {
    "deferred": ("{stamp} mx1 postfix/smtp[{pid}]: {qid}: to=<user@{domain}>, relay={domain}[192.0.2.1]:25, "
                 "delay=0.5, delays=0.1/0/0.2/0.2, dsn=4.3.1, status=deferred (host {domain}[192.0.2.1] "
                 "said: 431 4.3.1 Insufficient system storage (in reply to RCPT TO command))\n"),
    "sent": ("{stamp} mx1 postfix/smtp[{pid}]: {qid}: to=<user@{domain}>, relay={domain}[192.0.2.1]:25, "
             "delay=0.4, delays=0.1/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X{qid})\n"),
    "bounced": ("{stamp} mx1 postfix/smtp[{pid}]: {qid}: to=<user@{domain}>, relay={domain}[192.0.2.1]:25, "
                "delay=0.3, delays=0.1/0/0.1/0.1, dsn=5.1.1, status=bounced (host {domain}[192.0.2.1] "
                "said: 550 5.1.1 User unknown (in reply to RCPT TO command))\n"),
}


def status_of(i: int) -> str:
    slot = i % 10
    return "deferred" if slot < 5 else "sent" if slot < 8 else "bounced"


def flood_lines(start: int, count: int) -> str:
    """Lines stamped with the wall clock (traditional syslog stamps), so that the tracker keeps
    the streaks instead of timing them out at once."""
    stamp = time.strftime("%b %e %H:%M:%S")
    out = []
    for i in range(start, start + count):
        out.append(LINE[status_of(i)].format(stamp=stamp, pid=1000 + i % 5000, qid=f"{i:010X}",
                                             domain=f"d{i}.flood.example"))
    return "".join(out)


def append_flood(path: str, start: int, count: int, chunk: int = 5000) -> None:
    """Append ``flood_lines(start, count)`` a chunk at a time: the writer, in the exporter's
    process, must not be what the peak memory measures (100,000 lines at once are 30 MB of
    text and 35 MB of their parts)."""
    with open(path, "a") as handle:
        handle.writelines(flood_lines(first, min(chunk, start + count - first))
                          for first in range(start, start + count, chunk))


def memory() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            fields[key] = rest.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def held_per_module(top: int = 12) -> None:
    """Memory still allocated, per module of bounce_exporter that allocated it (tracemalloc,
    started after the imports: the interpreter, the modules and the catalog are not in it)."""
    gc.collect()
    held: collections.Counter[str] = collections.Counter()
    for stat in tracemalloc.take_snapshot().statistics("filename"):
        name = stat.traceback[0].filename
        held[name.split("bounce_exporter/")[-1] if "bounce_exporter/" in name else
             "(elsewhere: the bench, the standard library)"] += stat.size
    total = sum(held.values())
    print(f"held at the end (tracemalloc): {total / 2**20:.1f} MiB")
    for module, size in held.most_common(top):
        print(f"  {size / 2**20:7.1f} MiB  {module}")


def run(domains: int, step: int, folder: str, trace: bool = False,
        max_pending: int | None = None) -> None:
    log = os.path.join(folder, "mail.log")
    state_file = os.path.join(folder, "state.json")
    open(log, "w").close()
    config_file = None
    if max_pending is not None:
        config_file = os.path.join(folder, "config.yml")
        with open(config_file, "w") as handle:
            handle.write(f"limits: {{max_pending_messages: {max_pending}}}\n")
    config = load_config(config_file, {"log_files": [log], "listen_address": "127.0.0.1:0",
                                       "state_file": state_file, "queue_command": ""})
    exporter = Exporter(config, registry=CollectorRegistry())
    exporter.start()
    rss0, _ = memory()
    print(f"start: VmRSS {rss0 / 1024:.1f} MiB (interpreter, catalog, exporter)")
    print(f"{'lines':>9} {'lines/s':>8} {'labels':>6} {'other':>8} {'streaks':>7} "
          f"{'evicted':>8} {'series':>6} {'scrape ms':>9} {'scrape KiB':>10} {'state KiB':>9} "
          f"{'RSS MiB':>8} {'peak MiB':>8}")
    done = 0
    began = time.perf_counter()
    try:
        while done < domains:
            count = min(step, domains - done)
            append_flood(log, done, count)
            tic = time.perf_counter()
            read = exporter.step()
            rate = read / (time.perf_counter() - tic)
            assert read == count, (read, count)
            done += count
            tic = time.perf_counter()
            text = generate_latest(exporter.registry)
            scrape_ms = (time.perf_counter() - tic) * 1000
            series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
            with exporter.state.lock:
                labels = exporter.state.domains.labelled
                other = exporter.state.domains.overflowed_events
                streaks, evicted = exporter.tracker.tracking(), exporter.tracker.evicted
            rss, peak = memory()
            print(f"{done:>9,} {rate:>8,.0f} {labels:>6} {other:>8,} {streaks:>7,} {evicted:>8,} "
                  f"{series:>6} {scrape_ms:>9.1f} {len(text) / 1024:>10.1f} "
                  f"{os.path.getsize(state_file) / 1024:>9.1f} {rss / 1024:>8.1f} {peak / 1024:>8.1f}")
            os.unlink(log)  # keep the disk small: delete and recreate, a rotation for the tailer
            open(log, "w").close()
            exporter.step()
        if trace:
            held_per_module()
    finally:
        exporter.shutdown()
    total = time.perf_counter() - began
    rss, peak = memory()
    print(f"{done:,} domains in {total:.1f} s; peak VmRSS {peak / 1024:.1f} MiB, "
          f"{(peak - rss0) / 1024:.1f} MiB above the start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=1_000_000)
    parser.add_argument("--step", type=int, default=100_000)
    parser.add_argument("--max-pending", type=int, default=None, metavar="N",
                        help="limits.max_pending_messages (default: the exporter's, 40,000)")
    parser.add_argument("--trace", action="store_true",
                        help="print the memory held at the end per module (tracemalloc; slower)")
    args = parser.parse_args(argv)
    if args.trace:
        tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="bounce-flood-") as folder:
        run(args.domains, args.step, folder, args.trace, args.max_pending)
    return 0


if __name__ == "__main__":
    sys.exit(main())
