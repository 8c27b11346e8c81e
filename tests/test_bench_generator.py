"""The benchmark's log generator: its truth file is exactly what `bounce-exporter parse` counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.generate import REPLIES, generate, write

REPO = Path(__file__).resolve().parents[1]


def parse_counts(log: Path) -> dict:
    """The truth file's counts, rebuilt from `bounce-exporter parse` output (one event a line)."""
    result = subprocess.run([sys.executable, "-m", "bounce_exporter", "parse", str(log)],
                            capture_output=True, text=True, cwd=REPO, check=True,
                            env={**os.environ, "TZ": "UTC"})
    attempts, deliveries, expired, failures, events = (Counter() for _ in range(5))
    for line in result.stdout.splitlines():
        event = json.loads(line)
        domain, status = event["domain"], event["status"]
        events[status] += 1
        if status == "expired":
            expired[domain] += 1
            continue
        attempts[domain] += 1
        if status == "sent":
            deliveries[domain] += 1
        else:
            failures[(domain, event["kind"], event["code"] or "none", event["enhanced"] or "none",
                      event["category"])] += 1
    return {"events": dict(events), "attempts": dict(attempts), "deliveries": dict(deliveries),
            "expired": dict(expired),
            "failures": sorted([*key, count] for key, count in failures.items())}


def test_truth_equals_what_parse_counts(tmp_path):
    log = tmp_path / "mail.log"
    truth = write(str(log), lines=6000, seed=1)
    written = json.loads((tmp_path / "mail.truth.json").read_text())
    assert written["lines"] == 6000 == len(log.read_bytes().splitlines())
    # The small log still has every kind of outcome, both stamp styles and a persistent deferral.
    assert set(truth["events"]) == {"sent", "deferred", "bounced", "expired"}
    assert {f[4] for f in truth["failures"]} >= {"rate_limited", "mailbox_full", "user_unknown",
                                                  "network", "dns", "system_full"}
    assert [code for _, code in truth["persistent"]] == ["431"]
    text = log.read_text()
    assert text.startswith("Jan  6 ") and "+00:00 mx1 postfix/" in text

    found = parse_counts(log)
    assert found["events"] == truth["events"]
    assert found["attempts"] == truth["attempts"]
    assert found["deliveries"] == truth["deliveries"]
    assert found["expired"] == truth["expired"]
    assert found["failures"] == truth["failures"]


def test_same_seed_same_bytes_other_seed_other_bytes():
    first, first_truth = generate(3000, seed=3)
    again, again_truth = generate(3000, seed=3)
    other, _ = generate(3000, seed=4)
    assert first == again and first_truth == again_truth
    assert first != other


def test_every_reply_is_written_with_the_codes_the_truth_expects():
    # the truth's (code, enhanced) of each failure reply are literally in its text and dsn=
    for name, reply in REPLIES.items():
        if reply.code is not None and reply.status != "sent":
            assert f"{reply.code} {reply.enhanced}" in reply.text.replace("-", " "), name
