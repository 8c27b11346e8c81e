"""SMTP replies inside log text: the basic reply code and the enhanced status code after it.

A reply is only read where one starts: at the start of the text or right after the words an MTA
puts before a remote reply (Postfix's ``said:`` and ``refused to talk to me:``). The enhanced code
must follow the basic code directly, so an address such as ``550 10.5.3.2`` never reads as one,
while Microsoft's three-digit details (``4.7.500``) do.
"""

from __future__ import annotations

import re

_SUBJECT_DETAIL = r"\.\d{1,3}\.\d{1,3}"
# An enhanced status code in text: class 2, 4 or 5, and no further digit or ".digit" after it.
ENHANCED = r"[245]" + _SUBJECT_DETAIL + r"(?!\.?\d)"
# The enhanced code as an MTA writes it in its own ``dsn=`` field (Postfix, Sendmail): the class
# digit as written, the field's delimiter after it (the caller's pattern checks that).
DSN_FIELD = r"\d" + _SUBJECT_DETAIL
# A reply where one starts: the basic code (a blank, "-" or the end after it), then the enhanced
# code right after it. Groups ``code`` and ``enhanced``; callers put their own prefix before it.
CODE = r"[2-5]\d\d"  # a basic reply code
REPLY = r"(?P<code>" + CODE + r")(?![^\s\-])(?:[ -](?P<enhanced>" + ENHANCED + r"))?"
_REPLY = re.compile(r"(?:^|said: |refused to talk to me: )\s*" + REPLY)
_ENHANCED_ONLY = re.compile(r"^(?:" + ENHANCED + r")$")
_CODE_ONLY = re.compile(r"^" + CODE + r"$")


def find_reply(text: str) -> tuple[str | None, str | None]:
    """Return (code, enhanced) of the first reply in ``text``; (None, None) if there is none."""
    match = _REPLY.search(text)
    if match is None:
        return None, None
    return match.group("code"), match.group("enhanced")


def is_enhanced(value: str) -> bool:
    return _ENHANCED_ONLY.match(value) is not None


def is_code(value: str) -> bool:
    return _CODE_ONLY.match(value) is not None


_REPLY_AT = re.compile(r"\s*" + REPLY)


def reply_at(text: str, pos: int = 0) -> tuple[str | None, str | None]:
    """(code, enhanced) of a reply that starts exactly at ``pos`` (after optional blanks).

    For MTAs whose logs put the remote reply after their own fixed words (Exim's ``SMTP error from
    remote mail server after RCPT TO:<...>: ``, Sendmail's ``Deferred: ``): the caller finds where
    the reply starts, so nothing else in the text can read as one. The same rules as ``find_reply``
    apply: the enhanced code must follow the basic code directly."""
    match = _REPLY_AT.match(text, pos)
    if match is None:
        return None, None
    return match.group("code"), match.group("enhanced")


def reply_at_or_after(text: str, marker: re.Pattern[str]) -> tuple[str | None, str | None]:
    """(code, enhanced) of a reply at the start of ``text``, else right after the first match of
    ``marker`` (the MTA's words before a relayed reply: OpenSMTPD's "SMTP server error: ",
    Exchange's "SmtpResponse:"); (None, None) when there is none there."""
    code, enhanced = reply_at(text)
    if code is None:
        found = marker.search(text)
        if found is not None:
            return reply_at(text, found.end())
    return code, enhanced


# Where a remote reply can start in a log line of any MTA (for `explain`, which gets a pasted line
# or just a code): the start of the text; after ": " (Postfix "said: ", Exim "... RCPT TO:<x>: ",
# Sendmail "Deferred: ", Haraka "rejected: "); after "(" (Postfix "status=sent (250 ..."); after
# stat=, C=, response= (OpenSMTPD, Exim, Haraka), optionally quoted; after Exchange's
# "SmtpResponse:"; after "," (CSV: Exchange message tracking's recipient-status). Never after a bare
# blank or "[", so "for 256 seconds" or a PID is not read as a code; a code must be followed by a
# blank, "-" or the end.
_LINE_REPLY = re.compile(
    r"(?:^|: |\(|\b(?:stat|C|response|reply)=\"?|\bSmtpResponse:|,)\s*" + REPLY
)
# The enhanced code the MTA itself logged: Postfix and Sendmail "dsn=4.7.1" (what `parse` reports).
_DSN = re.compile(r"\bdsn=(?P<enhanced>" + ENHANCED + r")")
# qmail logs spaces as "_" and puts the enhanced code last: "Remote_host_said:_550_5.1.1_<x>..."
# and "Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/".
_QMAIL_REPLY = re.compile(
    r"said:_(?P<code>[2-5]\d\d)(?![^\s_\-])(?:[_-](?P<enhanced>" + ENHANCED + r"))?")
_QMAIL_ENHANCED = re.compile(r"\(#(?P<enhanced>" + ENHANCED + r")(?=[)\s])")  # (#5.1.1 - chkuser)
# An enhanced code on its own: the whole text ("4.3.1"), or a CSV field (PowerMTA "5.1.1 (bad ...").
_LONE_ENHANCED = re.compile(r"(?:^|,)\s*(?P<enhanced>" + ENHANCED + r")(?=[\s,;:)]|$)")


def find_reply_in_line(text: str) -> tuple[str | None, str | None]:
    """(code, enhanced) in a log line of any MTA, in a bare reply, or in a bare code ("431",
    "4.3.1"); (None, None) when there is none. For ``explain``; parsers use ``find_reply``.

    The basic code is the first reply where one can start (see _LINE_REPLY), else qmail's
    "said:_NNN". The enhanced code is the MTA's own ``dsn=`` when the line has one (as ``parse``
    reports it), else the one right after the basic code, else qmail's "(#5.1.1)", else a lone
    enhanced code at the start or in a CSV field.
    """
    code = enhanced = None
    match = _LINE_REPLY.search(text)
    if match is None:
        match = _QMAIL_REPLY.search(text)
    if match is not None:
        code, enhanced = match.group("code"), match.group("enhanced")
    dsn = _DSN.search(text)
    if dsn is not None:
        return code, dsn.group("enhanced")
    if enhanced is None:
        for pattern in (_QMAIL_ENHANCED, _LONE_ENHANCED):
            found = pattern.search(text)
            if found is not None:
                enhanced = found.group("enhanced")
                break
    return code, enhanced
