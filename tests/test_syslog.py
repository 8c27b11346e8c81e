"""The syslog header: both stamp styles, year inference and the December→January roll-over."""

import time
from datetime import datetime

from bounce_exporter.parsers.syslog import StampReader, parse_header


def local(*fields: int) -> float:
    return time.mktime((*fields, 0, 0, -1))


def test_bsd_stamp_takes_the_reference_year():
    stamps = StampReader(reference=local(2026, 11, 28, 13, 0, 0))
    line = parse_header("Nov 28 12:07:58 mx1 postfix/smtp[14397]: 4E6A: to=<a@b.example>", stamps)
    assert line.time == local(2026, 11, 28, 12, 7, 58)
    assert (line.host, line.program, line.message) == ("mx1", "postfix/smtp", "4E6A: to=<a@b.example>")


def test_bsd_stamp_after_the_reference_belongs_to_the_year_before():
    stamps = StampReader(reference=local(2027, 1, 2, 0, 0, 0))
    assert stamps.bsd("Dec", "31", "23:59:59") == local(2026, 12, 31, 23, 59, 59)


def test_december_to_january_rolls_the_year_over():
    stamps = StampReader(reference=local(2027, 1, 2, 0, 0, 0))
    assert stamps.bsd("Dec", "31", "23:59:59") == local(2026, 12, 31, 23, 59, 59)
    assert stamps.bsd("Jan", " 1".strip(), "00:00:01") == local(2027, 1, 1, 0, 0, 1)


def test_single_digit_day_with_two_spaces():
    stamps = StampReader(reference=local(2026, 6, 1, 0, 0, 0))
    line = parse_header("Apr  5 14:21:51 kedumba postfix/smtp[2500]: x", stamps)
    assert line.time == local(2026, 4, 5, 14, 21, 51)


def test_rfc3339_stamp_keeps_its_offset_and_fraction():
    line = parse_header("2026-11-28T12:07:58.250000+01:00 mx1 postfix-out/relay/smtp[9]: msg",
                        StampReader())
    assert line.time == datetime(2026, 11, 28, 11, 7, 58, 250000,
                                 tzinfo=datetime.fromisoformat("2026-11-28T00:00:00+00:00").tzinfo
                                 ).timestamp()
    assert line.program == "postfix-out/relay/smtp"


def test_program_without_pid():
    line = parse_header("Nov 28 12:07:58 mx1 postfix/qmgr: ABC: removed", StampReader())
    assert (line.program, line.message) == ("postfix/qmgr", "ABC: removed")


def test_line_without_header_is_none():
    assert parse_header("4E6A: to=<a@b.example>, status=sent (250 ok)", StampReader()) is None
    assert parse_header("Foo 28 12:07:58 mx1 postfix/smtp[1]: x", StampReader()) is None
    assert parse_header("", StampReader()) is None
