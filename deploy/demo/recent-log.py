#!/usr/bin/env python3
"""Print a mail log with its time stamps moved to the last few minutes, for a demo or a test.

    python3 deploy/demo/recent-log.py config/sample/postfix.log > /tmp/bounce-demo.log

The exporter flags persistent deferrals by the log's own time, and also clears them when the
wall clock is `clear_after` past their last deferral; an old log therefore flags nothing by now.
This keeps every line and the gaps between them, and rewrites each stamp (classic syslog
"Nov 28 12:22:34", or RFC 3339) as RFC 3339 in UTC so that the last line is --end-ago seconds
ago. Lines without a stamp are copied as they are. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime

SYSLOG = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d+))? ")
RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) ")
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def stamp_of(line: str, year: int) -> tuple[float, int] | None:
    """(Unix time, length of the stamp and its space) of a line's leading stamp, or None."""
    match = SYSLOG.match(line)
    if match and match.group(1) in MONTHS:
        month = MONTHS.index(match.group(1)) + 1
        day, hour, minute, second = (int(match.group(i)) for i in range(2, 6))
        fraction = float("0." + match.group(6)) if match.group(6) else 0.0
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
        return when + fraction, match.end()
    match = RFC3339.match(line)
    if match:
        text = match.group(1).replace("Z", "+00:00")
        return datetime.fromisoformat(text).timestamp(), match.end()
    return None


def shift(lines: list[str], now: float, end_ago: float, year: int = 2000) -> list[str]:
    """The lines with their stamps moved so that the last stamp is ``now - end_ago``.
    A classic syslog stamp has no year: a later line with an earlier date is a new year."""
    stamps, previous = [], None
    for line in lines:
        found = stamp_of(line, year)
        if found and previous is not None and found[0] < previous - 86400:
            year += 1
            found = stamp_of(line, year)
        stamps.append(found)
        if found:
            previous = found[0]
    known = [s[0] for s in stamps if s]
    if not known:
        return list(lines)
    offset = now - end_ago - max(known)
    out = []
    for line, found in zip(lines, stamps):
        if found is None:
            out.append(line)
            continue
        when = datetime.fromtimestamp(found[0] + offset, UTC)
        out.append(when.isoformat(timespec="microseconds") + " " + line[found[1]:])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", help="mail log to copy (e.g. config/sample/postfix.log)")
    parser.add_argument("--end-ago", type=float, default=5.0, metavar="SECONDS",
                        help="how long ago the last line was logged (default: 5)")
    args = parser.parse_args(argv)
    with open(args.log, encoding="utf-8", errors="surrogateescape") as handle:
        lines = handle.read().splitlines()
    out = shift(lines, time.time(), args.end_ago)
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
