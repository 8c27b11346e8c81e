"""The provider table (config/catalog.yaml ``providers``): which mailbox or gateway provider answered
a delivery attempt, from the relay host the MTA logged.

A customer's Google Workspace or Microsoft 365 domain is one more small domain (counted under
``domain="other"`` past the domain cap), but its MX host says who answered
(``relay=alt1.aspmx.l.google.com[...]``). ``ProviderTable.of`` names the provider of an event:

1. the relay host, when the MTA logged one by name: the provider one of whose ``hosts`` it is or
   ends with (``aspmx.l.google.com`` is under ``google.com``); a named host of no provider is
   ``other`` (our smart host, a small domain's own MX), whatever the reply says;
2. without a host name (none logged, or an IP address only): the reply text's ``markers``
   (Google's "- gsmtp", Microsoft's "prod.outlook.com", ...);
3. still none, and no host logged at all: the recipient domain, when it is one of the provider's
   own ``domains`` (gmail.com, outlook.com, ...);
4. else ``other``.

The label is bounded by the table: its names, and ``other``. A relay host's answer is remembered
(a bounded memo: one MX answers thousands of messages).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bounce_exporter.checks import unknown_fields

OTHER = "other"  # the label of an event no provider of the table answered
PROVIDER_FIELDS = {"name", "postmaster", "hosts", "domains", "markers"}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z0-9]")
_MEMO_LIMIT = 4096
_MEMO_TEXT = 512  # longer reply texts are searched every time, not remembered


@dataclass(frozen=True, slots=True)
class Provider:
    key: str  # the label value: "google"
    name: str  # what explain shows: "Google (Gmail, Google Workspace)"
    postmaster: str  # its postmaster page (https URL)
    hosts: tuple[str, ...]  # MX and relay host names, matched as themselves or a parent domain
    domains: tuple[str, ...] = ()  # its own mail domains (gmail.com), for events without a host
    markers: tuple[str, ...] = ()  # regexes its reply texts carry ("\bgsmtp\b")


class ProviderTable:
    """The catalog's providers, ready to name the provider of an event (module docstring)."""

    def __init__(self, providers: Iterable[Provider] = ()):
        self.providers: Mapping[str, Provider] = MappingProxyType({p.key: p for p in providers})
        self.names: tuple[str, ...] = tuple(self.providers)
        self._hosts = {host: p.key for p in self.providers.values() for host in p.hosts}
        self._domains = {domain: p.key for p in self.providers.values() for domain in p.domains}
        alternatives = [f"(?P<{p.key}>{'|'.join(f'(?:{m})' for m in p.markers)})"
                        for p in self.providers.values() if p.markers]
        self._markers = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None
        self._memo: dict[str, str | None] = {}  # relay -> provider, "" (named, none) or None (no name)
        # reply text -> the provider its markers name, or None: one search of every marker costs
        # about 100 us a text, and a relay without a name answers the same text again and again
        self._marked: dict[str, str | None] = {}

    def get(self, key: str) -> Provider | None:
        return self.providers.get(key)

    def by_host(self, host: str | None) -> str | None:
        """The provider whose hosts include ``host`` or a parent domain of it, else None."""
        if not host:
            return None
        host = host.lower().rstrip(".")
        hosts = self._hosts
        while True:
            found = hosts.get(host)
            if found is not None:
                return found
            dot = host.find(".")
            if dot < 0:
                return None
            host = host[dot + 1:]

    def decides(self, relay: str | None) -> bool:
        """True when ``of(relay, text, domain)`` depends on ``relay`` alone: a host name."""
        if relay is None:
            return False
        if relay not in self._memo:
            self.of(relay)
        return self._memo[relay] is not None

    def of(self, relay: str | None, text: str = "", domain: str | None = None) -> str:
        """The provider label of an event: by relay host, reply markers, recipient domain."""
        if relay is not None:
            found = self._memo.get(relay, "\0")
            if found == "\0":
                found = None if _unnamed(relay) else (self.by_host(relay) or "")
                if len(self._memo) >= _MEMO_LIMIT:
                    self._memo.clear()
                self._memo[relay] = found
            if found is not None:
                return found or OTHER
        if self._markers is not None and text:
            marked = self._marked.get(text, "\0")
            if marked == "\0":
                marked = self._marker_of(text)
            if marked is not None:
                return marked
        if relay is None and domain:
            return self._domains.get(domain, OTHER)
        return OTHER

    def _marker_of(self, text: str) -> str | None:
        """The provider whose markers the text carries first (remembered: ``_marked``)."""
        assert self._markers is not None
        match = self._markers.search(text)
        found = match.lastgroup if match is not None and match.lastgroup else None
        if len(text) <= _MEMO_TEXT:
            if len(self._marked) >= _MEMO_LIMIT:
                self._marked.clear()
            self._marked[text] = found
        return found


def _unnamed(relay: str) -> bool:
    """A relay logged without a host name: an IP address (with or without brackets)."""
    try:
        ipaddress.ip_address(relay.strip("[]").removeprefix("ipv6:"))
    except ValueError:
        return False
    return True


def parse_providers(raw: Any, source: str, problems: list[str]) -> ProviderTable:
    """``providers``: name -> {name, postmaster, hosts, domains?, markers?}; every problem named."""
    where = f"{source}: providers"
    if raw is None:
        return ProviderTable()
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of provider label to "
                        f"{{name, postmaster, hosts}}")
        return ProviderTable()
    providers: list[Provider] = []
    owner: dict[str, str] = {}  # host or domain -> the provider that named it first
    for key, body in raw.items():
        at = f"{where}.{key}"
        if not (isinstance(key, str) and _NAME.fullmatch(key)) or key == OTHER:
            problems.append(f"{where}: label {key!r} must be snake_case and not {OTHER!r}")
            continue
        if not isinstance(body, dict):
            problems.append(f"{at}: must be a mapping with name, postmaster and hosts")
            continue
        unknown_fields(body, PROVIDER_FIELDS, at, problems)
        texts = {}
        for field in ("name", "postmaster"):
            value = body.get(field)
            if not (isinstance(value, str) and value.strip()):
                problems.append(f"{at}: missing field {field!r}")
                value = ""
            texts[field] = value
        if texts["postmaster"] and not texts["postmaster"].startswith("https://"):
            problems.append(f"{at}.postmaster: must be an https:// URL")
        hosts = _names(body.get("hosts"), f"{at}.hosts", key, owner, problems, required=True)
        domains = _names(body.get("domains"), f"{at}.domains", key, owner, problems)
        markers = _markers(body.get("markers"), f"{at}.markers", problems)
        providers.append(Provider(key, texts["name"], texts["postmaster"], hosts, domains,
                                  markers))
    return ProviderTable(providers)


def _names(raw: Any, at: str, key: str, owner: dict[str, str], problems: list[str], *,
           required: bool = False) -> tuple[str, ...]:
    if raw is None and not required:
        return ()
    if not (isinstance(raw, list) and raw and all(isinstance(n, str) for n in raw)):
        problems.append(f"{at}: must be a non-empty list of host or domain names")
        return ()
    names = []
    for name in raw:
        if not _HOST.fullmatch(name):
            problems.append(f"{at}: {name!r} is not a lower-case host or domain name")
            continue
        first = owner.setdefault(f"{at.rpartition('.')[2]} {name}", key)
        if first != key:
            problems.append(f"{at}: {name!r} is already {first!r}'s")
        names.append(name)
    return tuple(names)


def _markers(raw: Any, at: str, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not (isinstance(raw, list) and all(isinstance(m, str) and m for m in raw)):
        problems.append(f"{at}: must be a list of regex strings")
        return ()
    for marker in raw:
        try:
            compiled = re.compile(marker, re.IGNORECASE)
        except re.error as exc:
            problems.append(f"{at}: invalid regex {marker!r}: {exc}")
            continue
        if compiled.search("") or compiled.groups:
            problems.append(f"{at}: {marker!r} must not match empty text nor hold groups "
                            f"(use (?:...))")
    return tuple(raw)
