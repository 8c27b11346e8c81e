"""``--log.format auto``: sniff a source's lines until one shows its format, then delegate to it.

Recognised, line by line (the first line that matches decides, for good, for this source):
- Exchange message tracking: a ``#Software: Microsoft Exchange`` or ``#Fields: date-time,...``
  header, or a CSV line that starts with an ISO stamp and has an Exchange event id;
- Exim's own main log: an Exim stamp followed by a message id or ``exim <version> daemon``;
- syslog lines, by program: ``postfix*/<daemon>`` (and any ``name/<postfix daemon>``: multiple
  instances choose their syslog name) → postfix; ``exim``/``exim4`` → exim; ``sendmail``,
  ``sm-mta``, ``sm-msp-queue`` (``sm-*``) → sendmail; ``smtpd`` (no slash) with an OpenSMTPD
  message (``<16 hex> smtp|mta|mda ...``, ``relay: ...``, ``info: OpenSMTPD ...``) → opensmtpd.
Lines before the decision give no events. The line that decides is parsed by the chosen parser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import Parser, make_parser
from bounce_exporter.parsers.syslog import StampReader, parse_header

POSTFIX_DAEMONS = frozenset({
    "anvil", "bounce", "cleanup", "discard", "dnsblog", "error", "flush", "lmtp", "local",
    "master", "oqmgr", "pickup", "pipe", "postdrop", "postfix-script", "postlog", "postmap",
    "postqueue", "postscreen", "postsuper", "proxymap", "qmgr", "qmqpd", "relay", "retry",
    "scache", "sendmail", "showq", "smtp", "smtpd", "spawn", "tlsmgr", "tlsproxy",
    "trivial-rewrite", "verify", "virtual",
})
UTF8_BOM = b"\xef\xbb\xbf"  # Exchange log files start with one
_EXCHANGE_ROW = re.compile(
    rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z,.*,(?:RECEIVE|SEND|DELIVER|DEFER|FAIL|DSN|SUBMIT"
    rb"|EXPAND|RESOLVE|REDIRECT|TRANSFER|AGENTINFO|HAREDIRECT|HARECEIVE|BADMAIL|DROP|POISONMESSAGE"
    rb"|SUBMITDEFER|NOTIFYMAPI|PROCESS),")
_EXIM_LINE = re.compile(
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [+-]\d{4})?(?: \[\d+\])? "
    rb"(?:[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4}) "
    rb"|exim \d|Start queue run|End queue run)")
_OPENSMTPD_MESSAGE = re.compile(
    r"[0-9a-f]{16} (?:smtp|mta|mda) |(?:relay|delivery): \w+ for |info: OpenSMTPD |smtp-out: ")


def sniff(raw: bytes) -> str | None:
    """The log format a single line shows, or None."""
    raw = raw.removeprefix(UTF8_BOM)
    if raw.startswith(b"#"):
        if raw.startswith((b"#Software: Microsoft Exchange", b"#Fields: date-time,")):
            return "exchange"
        return None
    first = raw[:1]
    if first.isdigit():
        if _EXIM_LINE.match(raw):
            return "exim"
        if raw[10:11] == b"T" and _EXCHANGE_ROW.match(raw):
            return "exchange"
    header = parse_header(raw.decode("utf-8", "replace"), StampReader(0.0))
    if header is None:
        return None
    program = header.program
    if "/" in program:
        instance, _, daemon = program.rpartition("/")
        if instance.startswith("postfix") or daemon in POSTFIX_DAEMONS:
            return "postfix"
        return None
    if program in ("exim", "exim4"):
        return "exim"
    if program == "sendmail" or program.startswith("sm-"):
        return "sendmail"
    if program == "smtpd" and _OPENSMTPD_MESSAGE.match(header.message):
        return "opensmtpd"
    return None


class AutoParser:
    """Delegates to the parser of the first recognised format; ``()`` until then."""

    def __init__(self, reference: float | None = None):
        self._reference = reference
        self.format: str | None = None
        self.delegate: Parser | None = None

    @property
    def mta(self) -> str:
        return self.delegate.mta if self.delegate is not None else "auto"

    def counters(self) -> dict[str, int]:
        counters = getattr(self.delegate, "counters", None)
        return counters() if counters is not None else {}

    def __getattr__(self, name: str) -> object:
        """The chosen parser's attributes (``retry_not_reached``, ...) once there is one."""
        delegate = self.__dict__.get("delegate")
        if delegate is None:
            raise AttributeError(name)
        return getattr(delegate, name)

    def parse(self, raw: bytes) -> Sequence[DeliveryEvent]:
        delegate = self.delegate
        if delegate is None:
            found = sniff(raw)
            if found is None:
                return ()
            self.format = found
            delegate = self.delegate = make_parser(found, self._reference)
        return delegate.parse(raw)
