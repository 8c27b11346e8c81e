"""The ledger: messages in flight, one for every parser (Postfix, Exim, Sendmail, OpenSMTPD).

Per message (queue id, or OpenSMTPD's envelope id), the recipients whose latest outcome is a
deferral: each with the log time of its first deferral, the number of deferrals, and the latest
deferral itself (reply code, enhanced code, text, domain); a deferral without attempt (``hold``)
makes a recipient wait without counting a deferral or replacing the last server's reply. A
delivery or a bounce of a recipient takes it out; an expiry takes the message's recipients out and
carries their last reply; a message never heard of again is bounded by the cap
(``PendingMessages``: the oldest dropped, counted in ``evicted``, logged once).

What it is for: the expiry lines that name less than the deferrals did (Postfix's qmgr names no
recipient), and what is waiting, per domain and since when (``waiting()``). It is parser state: it
is saved in the state file beside the read position it belongs to (``to_state``/``load_state``),
so that a restart anywhere carries on as one continuous read would.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from bounce_exporter.event import STATUSES, DeliveryEvent
from bounce_exporter.parsers.pending import PendingMessages
from bounce_exporter.parsers.syslog import StampReader

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_MESSAGES = 40_000  # messages in flight per source by default (limits.max_pending_messages)
# recipients remembered per message at most (Postfix's smtpd_recipient_limit): a message that a
# remote server defers for more is not allowed to grow the ledger without bound; the others are
# counted with the evictions and logged once
MAX_RECIPIENTS = 1000


class Waiting(NamedTuple):
    """One recipient whose latest outcome is a deferral (immutable: a new deferral makes a new
    one, so that a snapshot can hold the old one while reading goes on)."""

    first: float  # log time of its first deferral
    attempts: int  # deferrals so far that were attempts (0: only deferred without attempt yet)
    last: DeliveryEvent  # the latest one (a deferral without attempt only while no attempt came)


LedgerView = list[tuple[str, dict[str, Waiting]]]  # (message, its waiting recipients), oldest first


_LEDGERS = itertools.count(1)  # each ledger's own number: part of what names its changes


class Ledger:
    """Messages in flight of one source, at most ``cap`` of them (oldest dropped first).

    A message's recipients are a dict that is never changed once held: a change stores a new one
    (and ``Waiting`` is immutable). So ``frozen()`` is a copy of references only, which a
    snapshot keeps and the state file encodes later, while reading goes on; the ledger is never
    held twice in memory. ``_changes`` counts the changes, so that two frozen states of one
    ledger are the same when no change came between them."""

    __slots__ = ("_changes", "_cut_logged", "_id", "_messages")

    def __init__(self, cap: int, *, name: str = "", refresh: bool = False):
        self._messages: PendingMessages[str, dict[str, Waiting]] = PendingMessages(
            cap, name=name, refresh=refresh)
        self._cut_logged = False
        self._id = next(_LEDGERS)
        self._changes = 0

    @property
    def evicted(self) -> int:
        """Messages forgotten because the ledger was full."""
        return self._messages.evicted

    def __contains__(self, message: object) -> bool:
        return message in self._messages

    def held(self) -> Mapping[str, dict[str, Waiting]]:
        """The messages held, for look-ups in hot loops (``PendingMessages.held``)."""
        return self._messages.held()

    def __len__(self) -> int:
        return len(self._messages)

    def defer(self, message: str, recipient: str, event: DeliveryEvent) -> None:
        """A deferral of ``recipient`` (a key: the address, or what the parser needs) of
        ``message``: remembered, its first time and count kept."""
        recipients = self._messages.get(message)
        held = recipients.get(recipient) if recipients is not None else None
        if held is None and recipients is not None and len(recipients) >= MAX_RECIPIENTS:
            self._cut(message)
            return
        recipients = {} if recipients is None else recipients.copy()
        event = kept(event)
        recipients[recipient] = Waiting(event.time, 1, event) if held is None \
            else Waiting(held.first, held.attempts + 1, event)
        self._changes += 1
        self._messages.remember(message, recipients)  # keeps its place (or refreshes it)

    def _cut(self, message: str) -> None:
        """A recipient over ``MAX_RECIPIENTS`` of one message: not remembered, counted."""
        pending = self._messages
        pending.evicted += 1
        if not self._cut_logged:
            self._cut_logged = True
            log.warning("%s: message %s has more than %d recipients deferred; the others are not "
                        "remembered (counted in bounce_exporter_pending_messages_evicted_total)",
                        pending.name or "ledger", message, MAX_RECIPIENTS)

    def hold(self, message: str, recipient: str, event: DeliveryEvent) -> None:
        """A deferral without attempt (``event.without_attempt``) of ``recipient``: waiting from
        now on if it was not yet (no attempt counted), else nothing changes (its last reply
        stays the last server's)."""
        recipients = self._messages.get(message)
        if recipients is None or recipient not in recipients:
            if recipients is not None and len(recipients) >= MAX_RECIPIENTS:
                self._cut(message)
                return
            recipients = {} if recipients is None else recipients.copy()
            recipients[recipient] = Waiting(event.time, 0, kept(event))
        self._changes += 1  # a new recipient, or the message's place (a ledger that refreshes)
        self._messages.remember(message, recipients)

    def recipients(self, message: str) -> list[DeliveryEvent]:
        """The last deferrals of the message's waiting recipients (none when it is not held)."""
        return [w.last for w in (self._messages.get(message) or {}).values()]

    def forget(self, message: str, recipient: str) -> DeliveryEvent | None:
        """``recipient`` is done (delivered, bounced, expired): its last deferral, if any."""
        recipients = self._messages.get(message)
        held = recipients.get(recipient) if recipients is not None else None
        if held is None:
            return None
        self._changes += 1
        if len(recipients) == 1:
            self._messages.pop(message)
        else:
            recipients = recipients.copy()
            del recipients[recipient]
            self._messages.replace(message, recipients)
        return held.last

    def take(self, message: str, where: str | None = None) -> list[DeliveryEvent]:
        """The message is done: forget its recipients (those whose key starts with ``where``, if
        given) and return their last deferrals, in the order they were first deferred."""
        recipients = self._messages.get(message)
        if recipients is None:
            return []
        rest = {k: w for k, w in recipients.items() if where is not None and not k.startswith(where)}
        if len(rest) == len(recipients):
            return []
        self._changes += 1
        if rest:
            self._messages.replace(message, rest)
        else:
            self._messages.pop(message)
        return [w.last for k, w in recipients.items() if k not in rest]

    def view(self) -> LedgerView:
        """The messages now, oldest first (references: read them under the state lock)."""
        return [(message, self._messages.get(message) or {}) for message in self._messages]

    def waiting(self) -> Iterator[Waiting]:
        """Every recipient waiting after a deferral, oldest message first."""
        for message in self._messages:
            recipients = self._messages.get(message)
            if recipients:
                yield from recipients.values()

    # -- state file ----------------------------------------------------------------------------

    def to_state(self) -> dict:
        """JSON-ready: the messages oldest first, each recipient with its first time, count and
        last deferral. (``evicted`` is saved for people reading the file; a restart counts
        evictions from 0 again, like every counter.)"""
        return self.frozen().to_state()

    def frozen(self) -> FrozenLedger:
        """The ledger now, for a snapshot: references only (see the class docstring)."""
        pending = self._messages
        return FrozenLedger(pending.frozen(), pending.evicted,
                            (self._id, self._changes, pending.evicted))

    def load_state(self, state: object) -> int:
        """Replace what is held with a saved state; entries that are not right are skipped (and
        counted in the return value), never raised."""
        self._messages.clear()
        self._changes += 1
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            return 1 if state is not None else 0
        messages = state.get("messages")
        skipped = 0
        for entry in messages if isinstance(messages, list) else ():
            loaded = _message_from_state(entry)
            if loaded is None:
                skipped += 1
                continue
            message, recipients = loaded
            if len(recipients) > MAX_RECIPIENTS:  # not written so: a file edited by hand
                recipients = dict(list(recipients.items())[:MAX_RECIPIENTS])
            self._messages.remember(message, recipients)
        if skipped:
            log.warning("ledger %s: %d saved messages skipped (not readable)",
                        self._messages.name, skipped)
        return skipped


class FrozenLedger:
    """A ledger as of a snapshot: its messages (references to what never changes) and the name
    of its changes (``token``). Encoded as ``Ledger.to_state`` would be, a batch of messages at a
    time (``json_chunks``), never built whole; two are equal when they name the same changes of
    the same ledger. ``release()`` drops the messages once they are written: the token stays, to
    tell whether the next snapshot saves anything new."""

    __slots__ = ("_messages", "evicted", "token")

    BATCH = 1000  # messages encoded at a time

    def __init__(self, messages: dict[str, dict[str, Waiting]], evicted: int, token: tuple):
        self._messages: dict[str, dict[str, Waiting]] | None = messages
        self.evicted = evicted
        self.token = token

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrozenLedger) and self.token == other.token

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FrozenLedger(token={self.token!r})"

    def _held(self) -> dict[str, dict[str, Waiting]]:
        if self._messages is None:
            raise RuntimeError("a released FrozenLedger has no messages (it was written)")
        return self._messages

    def to_state(self) -> dict:
        """``Ledger.to_state()`` as of the snapshot (JSON-ready, built whole)."""
        return {"version": STATE_VERSION, "evicted": self.evicted,
                "messages": [_message_to_state(m, r) for m, r in self._held().items()]}

    def json_chunks(self) -> Iterator[str]:
        """The compact JSON text of ``to_state()`` (keys sorted), in pieces."""
        items = iter(self._held().items())
        yield f'{{"evicted":{self.evicted:d},"messages":['
        separator = ""
        while batch := list(itertools.islice(items, self.BATCH)):
            text = json.dumps([_message_to_state(m, r) for m, r in batch],
                              separators=(",", ":"), allow_nan=False)
            yield separator + text[1:-1]
            separator = ","
        yield f'],"version":{STATE_VERSION:d}}}'

    def release(self) -> None:
        self._messages = None


def _message_to_state(message: str, recipients: dict[str, Waiting]) -> list:
    return [message, [[key, w.first, w.attempts, event_to_state(w.last)]
                      for key, w in recipients.items()]]


class LedgerParser:
    """What the parsers with a ledger and syslog-style stamps share: their state
    (``state``/``restore``: stamps, ledger, and what ``_more_state`` adds) and the ledger's
    evictions. Subclasses set ``mta``, ``_stamps`` and ``_pending``."""

    mta: str
    _stamps: StampReader
    _pending: Ledger

    def state(self) -> dict:
        """Parser state (JSON-ready), to be saved beside the read position it belongs to."""
        return self._state(self._pending.to_state())

    def saved_state(self) -> dict:
        """``state()`` as a snapshot keeps it: the ledger frozen (``FrozenLedger``)."""
        return self._state(self._pending.frozen())

    def _state(self, ledger: dict | FrozenLedger) -> dict:
        return {"mta": self.mta, "stamps": self._stamps.to_state(), "ledger": ledger,
                **self._more_state()}

    def restore(self, state: dict) -> None:
        """Carry on from a saved ``state()`` (one of another MTA's parser is ignored)."""
        if state.get("mta") != self.mta:
            return
        self._stamps.load_state(state.get("stamps"))
        self._pending.load_state(state.get("ledger"))
        self._restore_more(state)

    def _more_state(self) -> dict:
        return {}

    def _restore_more(self, state: dict) -> None:
        pass

    def in_flight(self) -> LedgerView:
        """The ledger's messages now (``Ledger.view``)."""
        return self._pending.view()

    @property
    def pending_evictions(self) -> int:
        """Messages with a pending deferral forgotten because the ledger was full."""
        return self._pending.evicted


def kept(event: DeliveryEvent) -> DeliveryEvent:
    """The event as the ledger keeps it: equal, its reply codes shared (``sys.intern``: a few
    hundred values across every message; an interned string lives only as long as something
    holds it, so remote text cannot grow it for ever). Domain, relay and text are left alone:
    in a flood of distinct ones, interning costs more than it shares."""
    code, enhanced = event.code, event.enhanced
    shared_code = code and sys.intern(code)
    shared_enhanced = enhanced and sys.intern(enhanced)
    if shared_code is code and shared_enhanced is enhanced:  # shared already (or none)
        return event
    return DeliveryEvent(event.time, event.mta, event.queue_id, event.recipient, event.domain,
                         event.status, shared_code, shared_enhanced, event.text, event.relay,
                         event.without_attempt)


def event_to_state(event: DeliveryEvent) -> list:
    saved = [event.time, event.mta, event.queue_id, event.recipient, event.domain, event.status,
             event.code, event.enhanced, event.text, event.relay]
    return saved if event.without_attempt is None else [*saved, event.without_attempt]


def event_from_state(data: object) -> DeliveryEvent | None:
    """The event saved by ``event_to_state``; None for anything malformed. (A state file written
    before events had a relay holds 9 fields: its events have none; an 11th field is the reason
    of a deferral without attempt.)"""
    if not isinstance(data, list) or len(data) not in (9, 10, 11):
        return None
    when, mta, qid, recipient, domain, status, code, enhanced, text, *rest = data
    relay = rest[0] if rest else None
    without = rest[1] if len(rest) > 1 else None
    if isinstance(when, bool) or not isinstance(when, (int, float)) or status not in STATUSES:
        return None
    if not (isinstance(mta, str) and isinstance(text, str)):
        return None
    if not all(v is None or isinstance(v, str)
               for v in (qid, recipient, domain, code, enhanced, relay, without)):
        return None
    return DeliveryEvent(float(when), mta, qid, recipient, domain, status, code, enhanced, text,
                         relay, without)


def _message_from_state(entry: object) -> tuple[str, dict[str, Waiting]] | None:
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
            and isinstance(entry[1], list)):
        return None
    recipients: dict[str, Waiting] = {}
    for item in entry[1]:
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)):
            return None
        key, first, attempts, saved = item
        event = event_from_state(saved)
        if (event is None or isinstance(first, bool) or not isinstance(first, (int, float))
                or isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0):
            return None
        recipients[key] = Waiting(float(first), attempts, event)
    return (entry[0], recipients) if recipients else None
