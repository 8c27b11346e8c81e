"""End-to-end: the two views of what is waiting agree on a real Postfix.

Messages to two domains whose server answers 431 4.3.1 sit in the lab's deferred queue (the
backoff is an hour: nothing retries them on its own). The exporter reads the lab's maillog (the
ledger's view: bounce_waiting_recipients) and runs the lab's ``postqueue -c <conf> -j`` at every
scrape (the queue's view: bounce_queue_recipients{queue="deferred"}): per domain and category
both count the recipients Postfix holds. Then the server accepts, ``postqueue -f`` retries them,
and both views go to 0 for those domains (their series are gone).
"""

from __future__ import annotations

import shlex
import time
from collections import Counter

import pytest

from .common import DISK_FULL, SENDER, samples
from .requirements import find_binary

pytestmark = pytest.mark.e2e

TIMEOUT = 40.0
WAITING = {"disk-full.example": 3, "storage.example": 2}  # messages (one recipient each)


def views(text: str) -> tuple[Counter, Counter, float]:
    """(waiting per (domain, category), deferred queue per (domain, category), queue_up)."""
    waiting, queued, up = Counter(), Counter(), -1.0
    for s in samples(text):
        key = (s.labels.get("domain"), s.labels.get("category"))
        if s.name == "bounce_waiting_recipients" and s.value:
            waiting[key] += s.value
        elif s.name == "bounce_queue_recipients" and s.labels["queue"] == "deferred" and s.value:
            queued[key] += s.value
        elif s.name == "bounce_exporter_queue_up":
            up = s.value
    return waiting, queued, up


def oldest(text: str, name: str) -> dict[str, float]:
    return {s.labels["domain"]: s.value for s in samples(text) if s.name == name
            and s.labels.get("queue", "deferred") == "deferred"}


def test_queue_view_and_waiting_view_agree_per_domain_then_both_empty(
        make_fake_smtp, make_postfix_lab, run_exporter, tmp_path) -> None:
    fake = make_fake_smtp({domain: DISK_FULL for domain in WAITING} | {"ok.example": "250"})
    lab = make_postfix_lab(fake.port, queue_run_delay="1h", minimal_backoff_time="1h",
                           maximal_backoff_time="1h")
    began = time.time()
    for domain, count in WAITING.items():
        for i in range(count):
            lab.inject(SENDER, f"user{i}@{domain}", f"queue e2e {domain} #{i}")
    lab.inject(SENDER, "user0@ok.example", "queue e2e ok")
    fake.wait_until(lambda rec: all(len(rec.get(d, [])) == n for d, n in WAITING.items())
                    and any(a.stage == "DATA" for a in rec.get("ok.example", [])), TIMEOUT)

    postqueue = shlex.join([find_binary("postqueue") or "postqueue", "-c", str(lab.config_dir),
                            "-j"])
    exporter = run_exporter(["--log.file", str(lab.maillog), "--log.from-start",
                             "--state.file", str(tmp_path / "state.json"),
                             "--queue.command", postqueue, "--queue.interval", "0s"])
    expected = Counter({(domain, "system_full"): n for domain, n in WAITING.items()})

    def agree(text: str) -> bool:
        waiting, queued, up = views(text)
        return up == 1 and waiting == expected and queued == expected

    text = exporter.wait_for_metrics(agree, TIMEOUT)
    assert {m["queue_name"] for m in lab.queue()} == {"deferred"}  # ok.example's is gone
    queued_since = oldest(text, "bounce_queue_oldest_timestamp_seconds")
    waiting_since = oldest(text, "bounce_waiting_oldest_timestamp_seconds")
    assert set(queued_since) == set(waiting_since) == set(WAITING), (queued_since, waiting_since)
    for domain in WAITING:  # arrival, then the first deferral, both during this test
        assert began - 1 <= queued_since[domain] <= waiting_since[domain] <= time.time(), domain

    for domain in WAITING:
        fake.answer(domain, "250")
    lab.flush()

    def both_empty(text: str) -> bool:
        waiting, queued, up = views(text)
        return up == 1 and not waiting and not queued

    text = exporter.wait_for_metrics(both_empty, TIMEOUT)
    assert oldest(text, "bounce_queue_oldest_timestamp_seconds") == {}
    assert oldest(text, "bounce_waiting_oldest_timestamp_seconds") == {}
    delivered = {d: sum(1 for a in fake.record()[d] if a.stage == "DATA" and a.code == "250")
                 for d in WAITING}
    assert delivered == WAITING
    assert exporter.terminate() == 0, exporter.output()
