"""`bounce-exporter report` side by side with Debian's pflogsumm on the same Postfix logs: the
corpus's real two-instance run and a generated bench log.

What both count, and how the columns match (README, "Reports and history"):

- pflogsumm's "Host/Domain Summary: Message Delivery" `sent cnt` is our `delivered` and its
  `defers` our `deferred`, per recipient domain: both count `status=sent` and `status=deferred`
  lines, one per recipient and attempt. pflogsumm (-i, in the C locale) lower-cases a domain's
  ASCII letters and keeps a Unicode name as it is: its rows are added up per lower-cased,
  IDNA-encoded domain, which is what our label is;
- its grand totals `delivered`, `bounced` and the `(N deferrals)` are our totals of delivered,
  bounced and deferred; its `deferred` (before the parenthesis) counts messages deferred at least
  once, which we do not count: here it is compared with the distinct queue ids of `parse`'s
  deferrals;
- pflogsumm has no per-domain bounce column (its bounce detail is per relay) and does not count
  `status=expired` at all.

pflogsumm reads only the syslog names `postfix` and its --syslog-name: the corpus log has two
instances (`postfix`, `postfix-out`), so it is read with --syslog-name=postfix-out (which still reads
`postfix` too), and the bench log with the default.

Needs pflogsumm (apt-get install pflogsumm): skipped without it, failed with
BOUNCE_EXPORTER_REQUIRE_E2E=1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .requirements import find_binary, require

REPO = Path(__file__).resolve().parents[2]
CORPUS_LOG = REPO.parent / "shared" / "corpus" / "real" / "postfix-3min.log"
ENV = {**os.environ, "TZ": "UTC"}  # the bench log's traditional stamps are written in UTC


def bounce_exporter(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bounce_exporter", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def pflogsumm(log: Path, *args: str) -> str:
    # LC_ALL=C: pflogsumm lower-cases under `use locale`, which in a UTF-8 locale takes each
    # byte of a UTF-8 name for a Latin-1 letter (bücher -> bã¼cher); in C it leaves them alone
    done = subprocess.run([find_binary("pflogsumm"), "-i", *args, str(log)],
                          env={**ENV, "LC_ALL": "C"},
                          capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    # its detail sections cut texts at a byte count, inside a UTF-8 character at times
    return done.stdout.decode("utf-8", errors="replace")


def per_domain(summary: str) -> dict[str, tuple[int, int]]:
    """pflogsumm's delivery table: domain as our label (lower case, IDNA A-label) -> (sent cnt,
    defers), the rows of one domain written in several cases added up."""
    table = summary.split("Host/Domain Summary: Message Delivery")[1].split("\n\n")[0]
    rows = {}
    for line in table.splitlines():
        fields = line.split()
        if not fields or not fields[0].isdigit():  # title, header, dashes
            continue
        domain = fields[-1].lower()
        domain = domain if domain.isascii() else domain.encode("idna").decode()
        sent, defers = rows.get(domain, (0, 0))
        rows[domain] = (sent + int(fields[0]), defers + int(fields[2]))
    return rows


def grand_totals(summary: str) -> dict[str, int]:
    head = summary.split("Grand Totals")[1].split("bytes received")[0]
    found = {name: int(count)
             for count, name in re.findall(r"^\s+(\d+)\s+([a-z]+)", head, re.MULTILINE)}
    found["deferrals"] = int(re.search(r"\((\d+)\s+deferrals\)", head).group(1))
    return found


def bench_log(tmp_path: Path) -> Path:
    log = tmp_path / "bench.log"
    subprocess.run([sys.executable, "-m", "bench.generate", "--lines", "20000", "--seed", "5",
                    "--out", str(log)], cwd=REPO, env=ENV, check=True, capture_output=True)
    return log


@pytest.mark.parametrize("which", ["corpus", "bench"])
def test_report_and_pflogsumm_agree_where_they_count_the_same_thing(which, tmp_path):
    require("pflogsumm", "the comparison needs pflogsumm (apt-get install pflogsumm)")
    log = CORPUS_LOG if which == "corpus" else bench_log(tmp_path)
    syslog_name = ["--syslog-name=postfix-out"] if which == "corpus" else []
    config = tmp_path / "config.yml"
    config.write_text("limits:\n  max_domains: 100000\n")  # pflogsumm has no domain cap
    report = json.loads(bounce_exporter("report", "--format", "json", "--config.file",
                                        str(config), str(log)))
    summary = pflogsumm(log, *syslog_name)

    theirs = per_domain(summary)
    ours = {row["domain"]: (row["delivered"], row["deferred"]) for row in report["domains"]
            if row["delivered"] or row["deferred"]}
    assert len(ours) >= (11 if which == "corpus" else 300)
    assert theirs == ours

    totals, grand = report["totals"], grand_totals(summary)
    assert (grand["delivered"], grand["deferrals"], grand["bounced"]) == (
        totals["delivered"], totals["deferred"], totals["bounced"])
    deferred_messages = {json.loads(line)["queue_id"]
                         for line in bounce_exporter("parse", str(log)).splitlines()
                         if json.loads(line)["status"] == "deferred"}
    assert grand["deferred"] == len(deferred_messages)
