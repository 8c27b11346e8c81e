"""The shared test corpus (../shared/corpus beside the clone): paths and samples."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


def format_samples(mta: str | None = None) -> list[dict]:
    """The objects of format-samples.jsonl, optionally those of one MTA."""
    samples = [json.loads(line) for line in (CORPUS / "format-samples.jsonl").open()]
    return [s for s in samples if mta is None or s["mta"] == mta]


# What the corpus's `expect.soft` says for each event status (expired counts as soft).
SOFT = {"sent": None, "deferred": True, "expired": True, "bounced": False}


def whole_lines(mta: str) -> list[dict]:
    """The samples of one MTA that are whole log lines, header included."""
    return [s for s in format_samples(mta) if not s.get("fragment")]


def fragments(mta: str) -> list[dict]:
    """The samples of one MTA that hold only the message part of a line (for reply parsing)."""
    return [s for s in format_samples(mta) if s.get("fragment")]


def sample_id(sample: dict) -> str:
    return f"{sample['event']}:{sample['line'][:60]}"


def check_event(event, sample: dict) -> None:
    """The event has the sample's expected code, enhanced code, domain and soft/hard."""
    expect = sample["expect"]
    assert (event.code, event.enhanced, event.domain) == (
        expect["code"], expect["enhanced"], expect["domain"])
    assert SOFT[event.status] == expect["soft"]
