"""The ledger (messages in flight) and the parser state around it: saved at any line, restored in
a new parser, the rest of the log gives the very events one continuous read gives."""

from __future__ import annotations

import json

import pytest

from bounce_exporter.event import DeliveryEvent
from bounce_exporter.parsers import LineNotUnderstood, make_parser
from bounce_exporter.parsers.ledger import Ledger, Waiting

from .corpus import CORPUS

REFERENCE = 1_800_000_000.0  # the same "now" for every parser: stamps placed in the same years


def deferral(when: float, qid: str, rcpt: str, code: str = "431") -> DeliveryEvent:
    return DeliveryEvent(when, "postfix", qid, rcpt, rcpt.split("@")[1], "deferred", code,
                         "4.3.1", f"{code} 4.3.1 disk is full")


def events_of(fmt: str, lines: list[bytes], cut: int | None = None) -> list[DeliveryEvent]:
    """Every event of the lines; at line ``cut``, the parser's state goes through JSON into a new
    parser, as at a restart."""
    parser = make_parser(fmt, REFERENCE)
    found: list[DeliveryEvent] = []
    for number, raw in enumerate(lines):
        if number == cut:
            saved = json.loads(json.dumps(parser.state()))
            parser = make_parser(fmt, REFERENCE)
            parser.restore(saved)
        try:
            found += parser.parse(raw)
        except LineNotUnderstood:
            pass
    return found


@pytest.mark.parametrize("mta", ["postfix", "exim", "opensmtpd"])
def test_a_restart_at_any_line_of_a_real_log_gives_the_events_of_one_read(mta):
    lines = (CORPUS / "real" / f"{mta}-3min.log").read_bytes().splitlines()
    whole = events_of(mta, lines)
    assert len(whole) > 100
    differ = [cut for cut in range(len(lines) + 1) if events_of(mta, lines, cut) != whole]
    assert differ == []


def test_without_the_saved_state_a_cut_before_an_expiry_loses_its_recipients():
    """What the saved state is for: Postfix's expiry line names no recipient."""
    lines = (CORPUS / "real" / "postfix-3min.log").read_bytes().splitlines()
    first_expiry = next(i for i, line in enumerate(lines) if b"status=expired" in line)
    parser = make_parser("postfix", REFERENCE)
    expired = [e for e in parser.parse(lines[first_expiry]) if e.status == "expired"]
    assert [e.domain for e in expired] == [None]
    with_state = [e for e in events_of("postfix", lines, first_expiry)
                  if e.status == "expired"]
    assert None not in [e.domain for e in with_state]


def test_the_ledger_keeps_first_deferral_and_attempts_per_recipient():
    ledger = Ledger(10, name="test")
    ledger.defer("Q1", "a", deferral(100.0, "Q1", "a@x.example"))
    ledger.defer("Q1", "a", deferral(160.0, "Q1", "a@x.example", "451"))
    ledger.defer("Q1", "b", deferral(130.0, "Q1", "b@y.example"))
    assert [(w.first, w.attempts, w.last.code) for w in ledger.waiting()] == [
        (100.0, 2, "451"), (130.0, 1, "431")]
    assert ledger.forget("Q1", "b").domain == "y.example"
    assert [w.last.recipient for w in ledger.waiting()] == ["a@x.example"]
    assert [e.time for e in ledger.take("Q1")] == [160.0]
    assert len(ledger) == 0 and list(ledger.waiting()) == []


def test_the_ledger_is_bounded_and_its_state_round_trips():
    ledger = Ledger(2, name="test")
    for n in range(3):
        ledger.defer(f"Q{n}", "r", deferral(100.0 + n, f"Q{n}", f"r{n}@x.example"))
    assert ledger.evicted == 1 and "Q0" not in ledger
    copy = Ledger(2, name="test")
    assert copy.load_state(json.loads(json.dumps(ledger.to_state()))) == 0
    assert copy.evicted == 0  # a counter: each lifetime counts its own
    assert list(copy.waiting()) == list(ledger.waiting()) == [
        Waiting(101.0, 1, deferral(101.0, "Q1", "r1@x.example")),
        Waiting(102.0, 1, deferral(102.0, "Q2", "r2@x.example"))]


def test_a_ledger_state_with_garbage_keeps_what_is_readable():
    good = Ledger(5, name="test")
    good.defer("Q1", "r", deferral(100.0, "Q1", "r@x.example"))
    state = good.to_state()
    state["messages"] += [["Q2", [["r", "soon", 1, []]]], "junk", ["Q3", []]]
    copy = Ledger(5, name="test")
    assert copy.load_state(state) == 3
    assert [w.last.queue_id for w in copy.waiting()] == ["Q1"]
    assert Ledger(5).load_state({"version": 99}) == 1


@pytest.mark.parametrize("mta", ["postfix", "exim", "opensmtpd"])
def test_the_auto_parser_carries_its_choice_and_its_delegates_state(mta):
    lines = (CORPUS / "real" / f"{mta}-3min.log").read_bytes().splitlines()
    whole = events_of("auto", lines)
    assert whole == events_of(mta, lines)
    differ = [cut for cut in range(0, len(lines) + 1, 7) if events_of("auto", lines, cut) != whole]
    assert differ == []


def test_an_opensmtpd_session_open_at_a_restart_keeps_its_error():
    """A session that began before the restart and fails after it (issue 13: 37 connection-level
    attempts counted instead of 40 with kill -9): its session memory is parser state too."""
    lines = [(b"Nov 28 12:22:45 mail smtpd[1]: 912fc433d89d56f6 mta connecting "
              b"address=smtp+notls://192.0.2.7:25 host=mx.down.example"),
             (b"Nov 28 12:22:47 mail smtpd[1]: 912fc433d89d56f6 mta error "
              b"reason=Connection refused")]
    whole = events_of("opensmtpd", lines)
    assert [(e.status, e.text) for e in whole] == [("deferred", "Connection refused")]
    assert events_of("opensmtpd", lines, cut=1) == whole
    fresh = make_parser("opensmtpd", REFERENCE)
    assert list(fresh.parse(lines[1])) == []  # what a restart without the state gave


def test_the_recipients_of_one_message_are_bounded_and_the_rest_counted(caplog):
    """Issue 18: a remote server deferring one message for ever more recipients cannot grow the
    ledger without bound: 1,000 recipients per message (Postfix's smtpd_recipient_limit) are
    remembered, the others counted with the evictions, logged once; a second deferral of one
    already remembered still counts."""
    from bounce_exporter.parsers.ledger import MAX_RECIPIENTS

    ledger = Ledger(10, name="test")
    with caplog.at_level("WARNING", logger="bounce_exporter.parsers.ledger"):
        for n in range(MAX_RECIPIENTS + 5):
            ledger.defer("Q1", f"r{n}@x.example", deferral(100.0 + n, "Q1", f"r{n}@x.example"))
        ledger.defer("Q1", "r0@x.example", deferral(5000.0, "Q1", "r0@x.example"))
    waiting = list(ledger.waiting())
    assert (len(waiting), ledger.evicted) == (1000, 5)
    assert waiting[0].attempts == 2 and waiting[0].last.time == 5000.0
    assert [r.getMessage() for r in caplog.records] == [(
        "test: message Q1 has more than 1000 recipients deferred; the others are not remembered "
        "(counted in bounce_exporter_pending_messages_evicted_total)")]


def test_a_frozen_ledger_keeps_its_moment_while_the_ledger_goes_on():
    """A snapshot's ledger is references, not a copy: every later change (a new deferral of a
    held recipient, a new recipient, a delivery, an expiry, a hold) must leave it as it was."""
    ledger = Ledger(10)
    ledger.defer("Q1", "a@x.example", deferral(100.0, "Q1", "a@x.example"))
    ledger.defer("Q1", "b@x.example", deferral(100.0, "Q1", "b@x.example"))
    ledger.defer("Q2", "c@y.example", deferral(101.0, "Q2", "c@y.example"))
    ledger.defer("Q3", "d@y.example", deferral(101.0, "Q3", "d@y.example"))
    before = json.loads(json.dumps(ledger.to_state()))
    frozen = ledger.frozen()
    assert frozen == ledger.frozen()  # nothing changed between them
    ledger.defer("Q1", "a@x.example", deferral(200.0, "Q1", "a@x.example", code="452"))
    ledger.defer("Q1", "e@x.example", deferral(200.0, "Q1", "e@x.example"))
    ledger.hold("Q2", "f@y.example", deferral(200.0, "Q2", "f@y.example"))
    assert ledger.forget("Q1", "b@x.example").recipient == "b@x.example"
    assert [e.recipient for e in ledger.take("Q3")] == ["d@y.example"]
    assert frozen != ledger.frozen()
    assert frozen.to_state() == before
    assert json.loads("".join(frozen.json_chunks())) == before
    assert [(w.first, w.attempts, w.last.code) for w in ledger.waiting()] == [
        (100.0, 2, "452"), (200.0, 1, "431"), (101.0, 1, "431"), (200.0, 0, "431")]


def test_a_frozen_ledger_is_encoded_as_its_state_in_batches_and_let_go_once_written(tmp_path):
    from bounce_exporter.persistence.statefile import encode_state, read_state, write_state

    ledger = Ledger(5000)
    for n in range(2345):  # more than two batches
        ledger.defer(f"Q{n}", f"r{n}@x.example", deferral(100.0 + n, f"Q{n}", f"r{n}@x.example"))
    data = {"version": 1, "parsers": {"mail.log": {"mta": "postfix", "ledger": ledger.frozen()}}}
    plain = {"version": 1, "parsers": {"mail.log": {"mta": "postfix", "ledger": ledger.to_state()}}}
    assert "".join(encode_state(data)) == json.dumps(plain, separators=(",", ":"), sort_keys=True)
    write_state(tmp_path / "state.json", data)
    assert read_state(tmp_path / "state.json") == json.loads(json.dumps(plain))
    frozen = data["parsers"]["mail.log"]["ledger"]
    frozen.release()
    assert frozen == ledger.frozen()  # what it names stays
    with pytest.raises(RuntimeError):
        frozen.to_state()


def test_the_ledger_shares_reply_codes_between_messages_and_keeps_events_equal():
    ledger = Ledger(10)
    for n in range(3):
        event = deferral(100.0, f"Q{n}", f"r{n}@x.example", code=str(431))  # a new string each time
        ledger.defer(f"Q{n}", f"r{n}@x.example", event)
        assert ledger.recipients(f"Q{n}") == [event]  # equal, if not the same object
    held = [w.last for w in ledger.waiting()]
    assert len({id(e.code) for e in held}) == 1 and len({id(e.enhanced) for e in held}) == 1
