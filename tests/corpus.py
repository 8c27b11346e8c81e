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
