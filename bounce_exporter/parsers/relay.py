"""The relay host of a delivery line: the server the MTA was talking to, as the MTA logged it.

Each parser reads its own field (Postfix ``relay=``, Exim ``H=``, OpenSMTPD ``relay=``, Sendmail
``relay=``, Exchange ``FQDN=``) and hands it to ``relay_host``, which gives one form: lower case,
no trailing dot, no port, and the bare address when only an IP address was logged. Text that names
a host in the MTA's own words (Postfix's ``connect to HOST[IP]:25: ...`` when ``relay=none``, a
line given to ``explain``) is read by ``find_relay_in_line``.
"""

from __future__ import annotations

import re

# Postfix relay=HOST[IP]:PORT / HOST[private/socket]; Sendmail relay=HOST. [IP] / relay=[IP];
# OpenSMTPD relay="IP (PTR NAME)"; Exim H=HOST [IP]:PORT
_POSTFIX = re.compile(r"(?P<host>[^\s\[,]*)(?:\[(?P<ip>[^\]]*)\])?")
_SENDMAIL = re.compile(r"(?P<host>[^\s\[,]*)\s*(?:\[(?P<ip>[^\]]*)\])?")
_OPENSMTPD = re.compile(r'"?(?P<ip>[^\s"(]*)(?: \((?P<host>[^)"]*)\))?"?')
_IN_LINE = re.compile(
    r"\brelay=\"?(?P<relay>[^\s,\"]+(?: \([^)\"]*\))?)"  # relay=HOST[IP]:25, relay="IP (HOST)"
    r"|\bH=(?P<exim>[^\s\[]+)"  # Exim H=HOST [IP]
    r"|\b(?:connect to|host|lost connection with|conversation with) "
    r"(?P<named>[A-Za-z0-9][\w.-]*\.[A-Za-z][\w-]*)\.?\[",  # Postfix's texts
    re.IGNORECASE)
_NOTHING = frozenset({"", "none", "unknown"})  # what Postfix and Sendmail write for no host
_LOCAL = frozenset({"local", "virtual"})  # Postfix's local transports: a relay, but no host


def relay_host(host: str | None, ip: str | None = None) -> str | None:
    """One form for a logged relay: the host name (lower case, no trailing dot), else the IP
    address, else None ("none", or nothing logged)."""
    name = (host or "").strip().strip("[]").rstrip(".").lower()
    if name not in _NOTHING:
        return name
    address = (ip or "").strip().lower()
    if address and "/" not in address:  # "private/dovecot-lmtp" is a socket, not a host
        return address
    return None


def postfix_relay(value: str) -> str | None:
    """``relay=`` of a Postfix delivery line: "mx.example.com[192.0.2.1]:25" -> mx.example.com;
    "none" -> None; "local", "dovecot", "mx[private/dovecot-lmtp]" -> their name."""
    match = _POSTFIX.match(value)
    return relay_host(match.group("host"), match.group("ip")) if match else None


def sendmail_relay(value: str) -> str | None:
    """``relay=`` of Sendmail: "mx.example.com. [192.0.2.1]", "[192.0.2.1] [192.0.2.1]"."""
    match = _SENDMAIL.match(value.strip())
    if match is None:
        return None
    host = match.group("host")
    if host.startswith("[") or not host:  # relay=[IP] [IP]: no name was found for the address
        return relay_host(None, host.strip("[]") or match.group("ip"))
    return relay_host(host, match.group("ip"))


def opensmtpd_relay(value: str) -> str | None:
    """``relay=`` of OpenSMTPD: "192.0.2.1 (mx.example.com)" (address, then its PTR name)."""
    match = _OPENSMTPD.match(value.strip())
    if match is None:
        return None
    return relay_host(match.group("host"), match.group("ip").strip("[]"))


def find_relay_in_line(text: str) -> str | None:
    """The relay host a log line or reply text names, wherever it is: ``relay=``, Exim's ``H=``,
    or Postfix's "connect to / host / lost connection with HOST[IP]"; None if it names none."""
    for match in _IN_LINE.finditer(text):
        if match.group("relay") is not None:
            value = match.group("relay")
            found = opensmtpd_relay(value) if " (" in value else postfix_relay(value)
        elif match.group("exim") is not None:
            found = relay_host(match.group("exim").strip("[]"))
        else:
            found = relay_host(match.group("named"))
        if found is not None and found not in _LOCAL:
            return found
    return None
