"""A restart anywhere gives what one continuous read gives, for every series, parser state included.

Each real MTA log of the corpus is cut at line boundaries (before the first expiry, inside an open
OpenSMTPD session, after an Exim host-level error, and at seeded random lines). Lifetime 1 reads the lines before the cut and is
scraped (its last scrape), then reads more that it never exposes and ends: SIGTERM (shutdown) or
kill -9 (nothing runs after the last scrape). Lifetime 2 starts from the state file and reads the
rest. The sum of the two last scrapes equals one lifetime's scrape of the whole log, counter by
counter: the read positions and the parsers' ledgers (Postfix's expiry names no recipient; an
OpenSMTPD session's error may come after the restart) are saved in the same snapshot.
"""

from __future__ import annotations

import random
import re
import shutil
from collections import Counter

import pytest

from bounce_exporter.app import Exporter

from .corpus import CORPUS
from .helpers import die, exporters, http_get, local_config, samples

UNEXPOSED = 37  # lines lifetime 1 reads after its last scrape (read again by lifetime 2)
RANDOM_CUTS = 5


def scrape(exporter: Exporter) -> Counter:
    """The counters of one scrape, by (name, labels); gauges and the process's own left out."""
    exporter.step()
    status, _, body = http_get(f"http://127.0.0.1:{exporter.server.server_address[1]}/metrics")
    assert status == 200
    return Counter({(name, frozenset(("source", "log") if k == "source" else (k, v)
                                     for k, v in labels)): value
                    for (name, labels), value in samples(body).items()
                    if name.endswith("_total") and not name.startswith("process_") and value})


def cuts(mta: str, lines: list[bytes]) -> list[int]:
    found = {next(i for i, line in enumerate(lines) if b"expired" in line)} if any(
        b"expired" in line for line in lines) else set()
    if mta == "opensmtpd":  # inside sessions whose error is still to come
        errors = [line.split()[5] for line in lines if b" mta error " in line]
        for sid in errors[:3]:
            found.add(next(i for i, line in enumerate(lines)
                           if line.split()[5:7] == [sid, b"mta"]) + 1)
    if mta == "exim":  # between a host-level error and the recipient line that reports it
        hosts = [i for i, line in enumerate(lines) if re.match(rb"\S+ \S+ \S+ H=", line)]
        found |= {i + 1 for i in hosts[:3]}
    rng = random.Random(f"restart-anywhere:{mta}")
    found |= {rng.randrange(1, len(lines)) for _ in range(RANDOM_CUTS)}
    return sorted(found)


def write(path, lines: list[bytes]) -> None:
    with open(path, "ab") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))


@pytest.mark.parametrize("mta", ["postfix", "exim", "opensmtpd"])
def test_two_lifetimes_cut_anywhere_sum_to_one_continuous_read(tmp_path, mta):
    lines = (CORPUS / "real" / f"{mta}-3min.log").read_bytes().splitlines()
    settings = {"log_format": mta, "from_start": True}
    whole_dir = tmp_path / "whole"
    whole_dir.mkdir()
    write(whole_dir / "mail.log", lines)
    with exporters() as start:
        whole = scrape(start(local_config(whole_dir, log_files=[str(whole_dir / "mail.log")],
                                          **settings)))
    assert sum(v for (name, _), v in whole.items() if name == "bounce_delivery_attempts_total") > 50
    differ = []
    for cut in cuts(mta, lines):
        for end in ("sigterm", "kill-9"):
            run = tmp_path / f"{cut}-{end}"
            run.mkdir()
            log = run / "mail.log"
            config = local_config(run, log_files=[str(log)], **settings)
            write(log, lines[:cut])
            with exporters() as start:
                first = start(config)
                exposed = scrape(first)  # its last scrape
                write(log, lines[cut:cut + UNEXPOSED])
                first.step()  # read, counted, never exposed
                if end == "kill-9":
                    die(first)
                else:
                    first.shutdown()
            write(log, lines[cut + UNEXPOSED:])
            with exporters() as start:
                exposed += scrape(start(config))
            if exposed != whole:
                differ.append((cut, end, dict(exposed - whole), dict(whole - exposed)))
            shutil.rmtree(run)
    assert differ == []
