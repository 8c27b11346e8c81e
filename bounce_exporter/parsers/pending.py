"""The bounded memory of pending deferrals, shared by the parsers of MTAs whose expiry line names
less than the deferral did (Postfix, Exim, Sendmail, OpenSMTPD).

A parser remembers, per queue id (message or envelope id), what its last deferral said, until the
message is delivered, bounced or expired; the expiry then carries the recipients and the last
reply. A message that is never heard of again would stay forever, so the memory is bounded: past
``cap`` entries the oldest one is dropped (``evicted`` counts them, and the first drop of each
memory is logged once). Oldest means first remembered: replacing the value of a key already held
keeps its place, unless the memory was made with ``refresh=True``, where it moves to the newest
place (OpenSMTPD's envelopes, remembered by their last deferral).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar, overload

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class PendingMessages(Generic[K, V]):
    """At most ``cap`` entries, oldest first; ``remember`` drops the oldest one past the cap."""

    __slots__ = ("_entries", "cap", "evicted", "name", "refresh")

    def __init__(self, cap: int, *, name: str = "", refresh: bool = False):
        if cap < 1:
            raise ValueError(f"cap must be at least 1, not {cap}")
        self.cap = cap
        self.name = name  # for the log line: whose memory it is ("postfix", ...)
        self.refresh = refresh
        self.evicted = 0  # entries dropped because the cap was reached
        self._entries: OrderedDict[K, V] = OrderedDict()

    def remember(self, key: K, value: V) -> None:
        """Hold ``value`` under ``key``. A new key is the newest; a key already held keeps its
        place (or becomes the newest, with ``refresh``). Past the cap, the oldest entry is dropped."""
        entries = self._entries
        entries[key] = value
        if self.refresh:
            entries.move_to_end(key)
        if len(entries) > self.cap:
            entries.popitem(last=False)
            self.evicted += 1
            if self.evicted == 1:
                log.warning(
                    "%s: more than %d queue ids with a pending deferral; forgetting the oldest "
                    "(their expiry will not name their recipients)", self.name or "parser", self.cap)

    def replace(self, key: K, value: V) -> None:
        """A new value for a key held, in its place (never refreshed, never counted new)."""
        self._entries[key] = value

    def frozen(self) -> dict[K, V]:
        """The entries now, oldest first: a copy of the references."""
        return dict(self._entries)

    def get(self, key: K, default: D | None = None) -> V | D | None:
        return self._entries.get(key, default)

    @overload
    def pop(self, key: K) -> V | None: ...
    @overload
    def pop(self, key: K, default: D) -> V | D: ...

    def pop(self, key: K, default: D | None = None) -> V | D | None:
        """Forget ``key``; its value, or ``default`` when it is not held."""
        return self._entries.pop(key, default)

    def clear(self) -> None:
        self._entries.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def held(self) -> Mapping[K, V]:
        """The entries themselves, for look-ups in hot loops (``key in held``: no Python call;
        the C extension's ``PyDict_Contains``), never changed through it; the same for ever."""
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        """The keys, oldest first."""
        return iter(self._entries)
