"""The syslog line header shared by every MTA that logs through syslog or its own plain file.

Two stamp styles are understood:
- traditional BSD stamps, ``Nov 28 12:07:58 host prog[pid]: message`` (no year, local time); the year is
  inferred from a reference time and advanced when the month rolls over from December to January;
- RFC 3339 stamps, ``2026-11-28T12:07:58.123456+00:00 host prog[pid]: message`` (the default of
  Debian 12's rsyslog).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

_HEADER = re.compile(
    r"(?:(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)(?:\.\d+)?"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?))"
    r" (?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[\d+\])?: (?P<msg>.*)",
    re.DOTALL,
)
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


@dataclass(slots=True)
class SyslogLine:
    time: float
    host: str
    program: str  # e.g. "postfix/smtp", "postfix-out/relay/smtp"
    message: str


class StampReader:
    """Turns stamps into Unix seconds, remembering the inferred year across lines of one source.

    ``reference`` is the time the log is known not to be later than (the file's mtime, or now):
    a BSD stamp is placed in the latest year that does not put it more than a day after it.
    Within a source, a month that goes backwards (December to January) starts a new year.
    """

    def __init__(self, reference: float | None = None):
        self._reference = time.time() if reference is None else reference
        self._year: int | None = None
        self._last_month = 0
        self._cache_key: tuple[str, str, str] | None = None
        self._cache_value = 0.0

    def bsd(self, mon: str, day: str, hms: str) -> float:
        key = (mon, day, hms)
        if key == self._cache_key:
            return self._cache_value
        month = _MONTHS[mon]
        if self._year is None:
            self._year = self._first_year(month, int(day), hms)
        elif month < self._last_month and self._last_month - month > 6:
            self._year += 1
        self._last_month = month
        hour, minute, second = (int(x) for x in hms.split(":"))
        value = time.mktime((self._year, month, int(day), hour, minute, second, 0, 0, -1))
        self._cache_key, self._cache_value = key, value
        return value

    def _first_year(self, month: int, day: int, hms: str) -> int:
        year = time.localtime(self._reference).tm_year
        hour, minute, second = (int(x) for x in hms.split(":"))
        stamp = time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
        return year - 1 if stamp > self._reference + 86400 else year

    @staticmethod
    def iso(stamp: str) -> float:
        return datetime.fromisoformat(stamp).timestamp()


def parse_header(line: str, stamps: StampReader) -> SyslogLine | None:
    """Split a syslog line into time, host, program and message; None if it has no header."""
    match = _HEADER.match(line)
    if match is None:
        return None
    try:
        if match.group("iso"):
            when = stamps.iso(match.group("iso"))
        else:
            when = stamps.bsd(match.group("mon"), match.group("day"), match.group("hms"))
    except (KeyError, ValueError, OverflowError):
        return None
    return SyslogLine(when, match.group("host"), match.group("prog"), match.group("msg"))
