"""Reply codes are read only where a reply starts; enhanced codes only right after the code."""

import re

import pytest

from bounce_exporter.parsers.reply import find_reply, reply_at_or_after


@pytest.mark.parametrize("text, expected", [
    ("host mx[1.2.3.4] said: 431 4.3.1 disk is full (in reply to RCPT TO command)", ("431", "4.3.1")),
    ("250 2.0.0 Ok: queued as 4E6A", ("250", "2.0.0")),
    ("host x refused to talk to me: 571 Email from 71.171.94.138 is blocked", ("571", None)),
    ("host aspmx said: 550-5.1.1 The email account does not exist", ("550", "5.1.1")),
    ("host x said: 550 10.5.3.2 is not allowed", ("550", None)),
    ("host x said: 550 2.3.4.5 relayed", ("550", None)),
    ("host x said: 451 4.7.500 Server busy. Please try again later", ("451", "4.7.500")),
    ("host x said: 550 5.1.1. Sentence ends", ("550", "5.1.1")),
    ("connect to mx[192.0.2.1]:25: Connection refused", (None, None)),
    ("Host or domain name not found. Name service error for name=x type=A", (None, None)),
    ("host x said: 4321 nonsense", (None, None)),
    ("SASL authentication failed; server relay[192.0.2.10] said: 451 Authentication failed",
     ("451", None)),
    ("host x said: 452 4.1.1 <u@d> user is over quota", ("452", "4.1.1")),
])
def test_find_reply(text, expected):
    assert find_reply(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("421 4.3.0 try later", ("421", "4.3.0")),  # at the start: the marker is not looked for
    ("SMTP server error: 452 4.2.2 Mailbox full", ("452", "4.2.2")),
    ("Remote host: SMTP server error: 550 5.1.1 unknown", ("550", "5.1.1")),
    ("delivery to 550 5.1.1 failed", (None, None)),  # neither at the start nor after the marker
    ("SMTP server error: no reply here", (None, None)),
])
def test_reply_at_or_after_a_marker(text, expected):
    assert reply_at_or_after(text, re.compile(r"SMTP server error: ")) == expected
