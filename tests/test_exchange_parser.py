"""The Exchange message tracking parser against the shared corpus samples and built lines."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bounce_exporter.parsers import LineNotUnderstood
from bounce_exporter.parsers.exchange import FIELDS_2016, ExchangeParser, exchange_reply

from .corpus import SOFT, fragments, sample_id, whole_lines

WHOLE_LINES = whole_lines("exchange")
FRAGMENTS = fragments("exchange")
HEADER_2016 = "#Fields: " + ",".join(FIELDS_2016)



def row(fields: list[str] = FIELDS_2016, **values: str) -> bytes:
    """A tracking line with the given columns (names with '_' for '-'), others empty."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(
        [values.get(name.replace("-", "_"), "") for name in fields])
    return out.getvalue().encode()


@pytest.mark.parametrize("sample", WHOLE_LINES, ids=sample_id)
def test_whole_corpus_line(sample):
    parser = ExchangeParser()
    assert parser.parse(HEADER_2016.encode()) == ()
    events = parser.parse(sample["line"].encode())
    if sample["event"] == "other":
        assert events == ()  # RECEIVE, and the header line itself
        return
    (event,) = events
    expect = sample["expect"]
    assert (event.code, event.enhanced, event.domain) == (
        expect["code"], expect["enhanced"], expect["domain"])
    assert SOFT[event.status] == expect["soft"]
    assert event.mta == "exchange"


@pytest.mark.parametrize("sample", WHOLE_LINES, ids=sample_id)
def test_whole_corpus_line_without_a_header_uses_the_layout_of_its_width(sample):
    events = ExchangeParser().parse(sample["line"].encode())
    assert len(events) == (0 if sample["event"] == "other" else 1)


@pytest.mark.parametrize("sample", FRAGMENTS, ids=sample_id)
def test_fragment_reply(sample):
    assert exchange_reply(sample["line"]) == (sample["expect"]["code"],
                                              sample["expect"]["enhanced"])


def test_event_ids_decide_the_status():
    parser = ExchangeParser()
    parser.parse(HEADER_2016.encode())
    common = {"date_time": "2026-11-28T12:22:38.307Z", "source": "SMTP",
              "internal_message_id": "2951", "recipient_address": "u@Disk-Full.example"}
    (event,) = parser.parse(row(event_id="DEFER", recipient_status="431 4.3.1 STOREDRV.Deliver; "
                                "disk is full", **common))
    assert (event.status, event.code, event.enhanced, event.domain, event.queue_id, event.text) == (
        "deferred", "431", "4.3.1", "disk-full.example", "2951",
        "431 4.3.1 STOREDRV.Deliver; disk is full")
    assert event.time == datetime.fromisoformat("2026-11-28T12:22:38.307+00:00").timestamp()
    (event,) = parser.parse(row(event_id="FAIL", recipient_status="550 5.1.1 RESOLVER.ADR."
                                "RecipNotFound; not found", **common))
    assert (event.status, event.code) == ("bounced", "550")
    (event,) = parser.parse(row(event_id="FAIL", recipient_status="550 4.4.7 QUEUE.Expired; "
                                "message expired in unreachable destination queue. Reason: ",
                                **common))
    assert (event.status, event.code, event.enhanced) == ("expired", "550", "4.4.7")
    (event,) = parser.parse(row(event_id="DELIVER", recipient_status="250 2.1.5 Recipient OK",
                                **common))
    assert event.status == "sent"
    for other in ("RECEIVE", "SUBMIT", "DSN", "SUBMITDEFER", "EXPAND"):
        assert parser.parse(row(event_id=other, recipient_status="431 4.3.1 x", **common)) == ()


def test_columns_come_from_the_header_not_their_position():
    parser = ExchangeParser()
    fields = ["event-id", "recipient-status", "recipient-address", "date-time", "source"]
    parser.parse(("#Fields: " + ",".join(fields)).encode())
    (event,) = parser.parse(row(fields, event_id="DEFER", recipient_status="452 4.2.2 full",
                                recipient_address="a@b.example",
                                date_time="2026-11-28T12:22:38Z", source="SMTP"))
    assert (event.domain, event.code, event.queue_id) == ("b.example", "452", None)
    # a new file, a new header
    parser.parse(HEADER_2016.encode())
    (event,) = parser.parse(row(event_id="DEFER", recipient_status="452 4.2.2 full",
                                recipient_address="c@d.example", date_time="2026-11-28T12:22:38Z"))
    assert event.domain == "d.example"


def test_several_recipients_and_their_statuses():
    parser = ExchangeParser()
    parser.parse(HEADER_2016.encode())
    events = parser.parse(row(event_id="DEFER", date_time="2026-11-28T12:22:38Z",
                              recipient_address="a@one.example;b@two.example",
                              recipient_status="431 4.3.1 STOREDRV.Deliver; disk is full;"
                                               "452 4.2.2 mailbox full"))
    assert [(e.domain, e.code, e.text) for e in events] == [
        ("one.example", "431", "431 4.3.1 STOREDRV.Deliver; disk is full"),
        ("two.example", "452", "452 4.2.2 mailbox full")]
    events = parser.parse(row(event_id="FAIL", date_time="2026-11-28T12:22:38Z",
                              recipient_address="a@one.example;b@two.example",
                              recipient_status="550 5.7.1 denied; by policy"))
    assert [(e.domain, e.code, e.enhanced) for e in events] == [
        ("one.example", "550", "5.7.1"), ("two.example", "550", "5.7.1")]


def test_the_last_error_form_of_defer_statuses():
    parser = ExchangeParser()
    parser.parse(HEADER_2016.encode())
    (event,) = parser.parse(row(
        event_id="DEFER", date_time="2026-11-28T12:22:38Z", recipient_address="a@b.example",
        recipient_status="[{LRT=11/28/2026 12:22:30 PM};{LED=441 4.4.1 Error encountered while "
                         "communicating with primary target IP address 10.5.3.2};{FQDN=mx.b};"
                         "{IP=10.5.3.2}]"))
    assert (event.code, event.enhanced) == ("441", "4.4.1")
    assert event.text.startswith("441 4.4.1 Error encountered") and "{IP=" not in event.text


def test_lines_that_cannot_be_read():
    with pytest.raises(LineNotUnderstood) as err:
        ExchangeParser().parse(b"2026-11-28T12:22:38Z,x,DEFER,y")
    assert err.value.reason == "no_fields_header"
    parser = ExchangeParser()
    parser.parse(HEADER_2016.encode())
    with pytest.raises(LineNotUnderstood) as err:
        parser.parse(row(event_id="DEFER", date_time="yesterday", recipient_address="a@b"))
    assert err.value.reason == "bad_stamp"
    with pytest.raises(LineNotUnderstood) as err:
        parser.parse(row(event_id="DEFER", date_time="2026-11-28T12:22:38Z"))
    assert err.value.reason == "no_recipient"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(
    lambda a, b: a + b, st.sampled_from([b"2026-11-28T12:22:38Z,,DEFER,", b"#Fields: ",
                                         b"x,FAIL,", b'"a,SEND,"\x00']),
    st.binary(max_size=200)))
def test_arbitrary_input_never_raises_anything_else(raw):
    for parser in (ExchangeParser(), ExchangeParser()):
        try:
            parser.parse(raw)
        except LineNotUnderstood:
            pass
        parser.parse(HEADER_2016.encode())


def test_a_byte_order_mark_at_the_start_of_a_file_is_skipped():
    parser = ExchangeParser()
    assert parser.parse(b"\xef\xbb\xbf#Software: Microsoft Exchange Server") == ()
    assert parser.parse(b"\xef\xbb\xbf#Fields: date-time,event-id,recipient-address,"
                        b"recipient-status") == ()
    (event,) = parser.parse(b"2026-11-28T12:22:38Z,FAIL,a@b.example,550 5.1.1 unknown")
    assert (event.status, event.code) == ("bounced", "550")
