"""SMTP replies inside log text: the basic reply code and the enhanced status code after it.

A reply is only read where one starts: at the start of the text or right after the words an MTA
puts before a remote reply (Postfix's ``said:`` and ``refused to talk to me:``). The enhanced code
must follow the basic code directly, so an address such as ``550 10.5.3.2`` never reads as one,
while Microsoft's three-digit details (``4.7.500``) do.
"""

from __future__ import annotations

import re

ENHANCED = r"[245]\.\d{1,3}\.\d{1,3}(?!\.?\d)"
_REPLY = re.compile(
    r"(?:^|said: |refused to talk to me: )\s*(?P<code>[2-5]\d\d)(?![^\s\-])"
    r"(?:[ -](?P<enhanced>" + ENHANCED + r"))?"
)
_ENHANCED_ONLY = re.compile(r"^(?:" + ENHANCED + r")$")


def find_reply(text: str) -> tuple[str | None, str | None]:
    """Return (code, enhanced) of the first reply in ``text``; (None, None) if there is none."""
    match = _REPLY.search(text)
    if match is None:
        return None, None
    return match.group("code"), match.group("enhanced")


def is_enhanced(value: str) -> bool:
    return _ENHANCED_ONLY.match(value) is not None
