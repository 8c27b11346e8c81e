"""``--log.format auto``: format detection per source, then delegation to the chosen parser."""

from __future__ import annotations

import os

import pytest

from bounce_exporter.parsers import PARSERS, make_parser
from bounce_exporter.parsers.auto import AutoParser, sniff

from .corpus import CORPUS, format_samples

REAL = CORPUS / "real"
NOISE = [
    b"Nov 28 12:22:30 mx systemd[1]: Started postfix.service - Postfix Mail Transport Agent.",
    b"Nov 28 12:22:30 mx dovecot: imap-login: Login: user=<u>, method=PLAIN",
    b"Nov 28 12:22:30 mx kernel: [ 1.0] smtpd: not a mail line",
    b"2026-11-28 12:22:30 some other program's line",
    b"#Software: something else",
    b"",
    b"\xff\xfe\x00 binary",
]


def _lines(path):
    with path.open("rb") as handle:
        return [raw.rstrip(b"\n") for raw in handle]


@pytest.mark.parametrize("name", ["postfix", "exim", "opensmtpd"])
def test_real_logs_are_recognised_and_parsed_as_by_their_own_parser(name):
    path = REAL / f"{name}-3min.log"
    reference = os.path.getmtime(path)
    auto, direct = make_parser("auto", reference), make_parser(name, reference)
    got, want = [], []
    for raw in NOISE + _lines(path):
        got.extend(auto.parse(raw))
        want.extend(direct.parse(raw))
    assert auto.format == name and auto.mta == name
    assert got == want and got
    assert auto.counters() == getattr(direct, "counters", dict)()


UNRECOGNISED = {
    "transfer[4603]: relay: TempFail",  # OpenSMTPD 5.x wrote as "transfer", not "smtpd"
    "Απρ 15 12:20:28",  # a localised month: no syslog stamp the exporter reads
}


@pytest.mark.parametrize("mta", ["postfix", "exim", "sendmail", "opensmtpd", "exchange"])
def test_every_whole_sample_line_of_a_format_is_recognised_as_it(mta):
    for sample in format_samples(mta):
        if sample.get("fragment"):
            continue
        expected = None if any(part in sample["line"] for part in UNRECOGNISED) else mta
        assert sniff(sample["line"].encode()) == expected, sample["line"]


def test_nothing_is_recognised_from_other_programs():
    for raw in NOISE:
        assert sniff(raw) is None
    parser = AutoParser()
    assert all(parser.parse(raw) == () for raw in NOISE)
    assert (parser.format, parser.delegate, parser.mta, parser.counters()) == (None, None, "auto", {})
    with pytest.raises(AttributeError):
        parser.retry_not_reached  # noqa: B018 - no delegate yet


def test_the_line_that_decides_is_parsed_and_the_choice_sticks():
    parser = AutoParser()
    (event,) = parser.parse(b"2026-11-28 12:22:40 1xXHRw-0003lS-0X ** u@nouser.example R=r "
                            b"T=t H=h [192.0.2.1]: SMTP error from remote mail server after RCPT "
                            b"TO:<u@nouser.example>: 550 5.1.1 User unknown")
    assert (parser.format, event.mta, event.status, event.code) == ("exim", "exim", "bounced", "550")
    # a Postfix line later is read by the Exim parser: nothing
    assert parser.parse(b"Nov 28 12:22:37 mx postfix/smtp[1]: ABC: to=<a@b.example>, relay=x, "
                        b"delay=1, dsn=2.0.0, status=sent (250 ok)") == ()
    parser.parse(b"2026-11-28 12:22:50 1xXHRu-0003l1-0v == u@d.example routing defer (-52): "
                 b"retry time not reached")
    assert parser.retry_not_reached == 1  # the chosen parser's attributes show through


def test_exchange_is_recognised_from_its_header_and_learns_it():
    parser = AutoParser()
    assert parser.parse(b"#Software: Microsoft Exchange Server") == ()
    assert parser.format == "exchange"
    fields = ["date-time", "event-id", "recipient-address", "recipient-status"]
    assert parser.parse(("#Fields: " + ",".join(fields)).encode()) == ()
    (event,) = parser.parse(b"2026-11-28T12:22:38.307Z,DEFER,u@d.example,431 4.3.1 full")
    assert (event.mta, event.domain, event.code) == ("exchange", "d.example", "431")


@pytest.mark.parametrize("line, expected", [
    (b"Nov 28 12:22:37 mx postfix-out/smtp[1]: ABC: to=<a@b.example>", "postfix"),
    (b"Nov 28 12:22:37 mx mta-out/qmgr[1]: ABC: removed", "postfix"),
    (b"2026-11-28T12:22:37.123456+00:00 mx postfix/qmgr[1]: ABC: removed", "postfix"),
    (b"Nov 28 12:22:37 mx exim4[1]: 1xXHRt-0003ks-27 <= a@b.example", "exim"),
    (b"2026-11-28 12:22:35 exim 4.96 daemon started: pid=14260", "exim"),
    (b"Nov 28 12:22:37 mx sm-mta[1]: q1: from=<a@b.example>, size=1", "sendmail"),
    (b"Nov 28 12:22:37 mx sendmail[1]: q1: from=<a@b.example>, size=1", "sendmail"),
    (b"Nov 28 12:22:37 mail smtpd[1]: info: OpenSMTPD 6.8.0p2 starting", "opensmtpd"),
    (b"Nov 28 12:22:37 mail smtpd[1]: 912fc4236b57d873 smtp connected address=127.0.0.1",
     "opensmtpd"),
    (b"#Fields: date-time,client-ip,client-hostname", "exchange"),
    (b"\xef\xbb\xbf#Software: Microsoft Exchange Server", "exchange"),
])
def test_sniff(line, expected):
    assert sniff(line) == expected


def test_auto_is_registered():
    assert "auto" in PARSERS and isinstance(make_parser("auto"), AutoParser)
