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

# Either stamp, as the groups mon, day, hms (BSD) or iso: ``StampReader.time_of()`` reads them.
# Parsers that match a header and their message in one regex start their pattern with it.
STAMP = (
    r"(?:(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)(?:\.\d+)?"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?))"
)
_HEADER = re.compile(STAMP + r" (?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[\d+\])?: (?P<msg>.*)",
                     re.DOTALL)
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
        self._hour_key: tuple[str, str, str] | None = None
        self._hour_start = 0.0

    def to_state(self) -> list:
        """What a restart needs to place later stamps in the same years: the year and month of
        the last stamp read."""
        return [self._year, self._last_month]

    def load_state(self, state: object) -> None:
        if (isinstance(state, list) and len(state) == 2
                and (state[0] is None or (isinstance(state[0], int) and 1970 <= state[0] <= 9999))
                and isinstance(state[1], int) and 0 <= state[1] <= 12):
            self._year, self._last_month = state
            self._hour_key = None

    def bsd(self, mon: str, day: str, hms: str) -> float:
        """``hms`` is "HH:MM:SS". The start of the hour comes from mktime (local time, DST), once
        per hour of log; minutes and seconds are added to it."""
        key = (mon, day, hms[:2])
        if key != self._hour_key:
            self._hour_start = self._start_of_hour(mon, day, hms)
            self._hour_key = key
        return self._hour_start + int(hms[3:5]) * 60 + int(hms[6:8])

    def _start_of_hour(self, mon: str, day: str, hms: str) -> float:
        month = _MONTHS[mon]
        if self._year is None:
            self._year = self._first_year(month, int(day), hms)
        elif month < self._last_month and self._last_month - month > 6:
            self._year += 1
        self._last_month = month
        return time.mktime((self._year, month, int(day), int(hms[:2]), 0, 0, 0, 0, -1))

    def _first_year(self, month: int, day: int, hms: str) -> int:
        year = time.localtime(self._reference).tm_year
        hour, minute, second = (int(x) for x in hms.split(":"))
        stamp = time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
        return year - 1 if stamp > self._reference + 86400 else year

    @staticmethod
    def iso(stamp: str) -> float:
        return datetime.fromisoformat(stamp).timestamp()

    def time_of(self, mon: str | None, day: str | None, hms: str | None,
                iso: str | None) -> float | None:
        """Unix seconds from the groups of ``STAMP``; None for a stamp that names no real time."""
        try:
            return self.iso(iso) if iso else self.bsd(mon, day, hms)  # type: ignore[arg-type]
        except (KeyError, ValueError, OverflowError):
            return None


def parse_header(line: str, stamps: StampReader) -> SyslogLine | None:
    """Split a syslog line into time, host, program and message; None if it has no header."""
    match = _HEADER.match(line)
    if match is None:
        return None
    mon, day, hms, iso, host, program, message = match.groups()
    when = stamps.time_of(mon, day, hms, iso)
    if when is None:
        return None
    return SyslogLine(when, host, program, message)
