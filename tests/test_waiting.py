"""What is waiting, from the ledger: bounce_waiting_recipients{domain, category},
bounce_waiting_oldest_timestamp_seconds{domain} and /api/v1/waiting, exact on a small Postfix log;
they follow deliveries and expiries and keep the domain cap."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

from prometheus_client import generate_latest

from bounce_exporter.persistence.keeper import MAX_REUSE

from .helpers import exporters, http_get, local_config, samples, value

DEFER = ("Dec  4 {t} mx1 postfix/smtp[1]: {qid}: to=<{rcpt}>, relay={dom}[192.0.2.2]:25, delay=1, "
         "dsn={dsn}, status=deferred (host {dom}[192.0.2.2] said: {code} {dsn} {text} (in reply to "
         "RCPT TO command))\n")
SENT = ("Dec  4 {t} mx1 postfix/smtp[1]: {qid}: to=<{rcpt}>, relay={dom}[192.0.2.1]:25, delay=1, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok)\n")
EXPIRED = "Dec  4 {t} mx1 postfix/qmgr[2]: {qid}: from=<s@here.example>, status=expired, returned to sender\n"


def defer(t, qid, rcpt, code="431", dsn="4.3.1", text="disk is full"):
    return DEFER.format(t=t, qid=qid, rcpt=rcpt, dom=rcpt.split("@")[1], code=code, dsn=dsn, text=text)


def stamp(hms: str) -> float:
    year = datetime.now(UTC).year
    return datetime.strptime(f"{year} Dec 4 {hms}", "%Y %b %d %H:%M:%S").replace(
        tzinfo=UTC).timestamp()


def scrape(exporter) -> dict:
    return samples(generate_latest(exporter.registry).decode())


def waiting(found: dict) -> dict:
    return {tuple(sorted(labels)): v for (name, labels), v in found.items()
            if name == "bounce_waiting_recipients"}


def test_waiting_recipients_and_oldest_per_domain_follow_the_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    log = tmp_path / "mail.log"
    log.write_text(
        defer("10:00:00", "AAA1", "a@disk-full.example")
        + defer("10:05:00", "BBB2", "b@disk-full.example")
        + defer("10:06:00", "AAA1", "a@disk-full.example")
        + defer("10:07:00", "CCC3", "c@busy.example", "421", "4.7.0", "too many connections")
        + defer("10:08:00", "DDD4", "d@gone.example", "450", "4.2.1", "mailbox busy"))
    with exporters() as start:
        exporter = start(local_config(tmp_path, log_files=[str(log)], from_start=True))
        exporter.step()
        found = scrape(exporter)
        assert waiting(found) == {
            (("category", "system_full"), ("domain", "disk-full.example")): 2.0,
            (("category", "rate_limited"), ("domain", "busy.example")): 1.0,
            (("category", "unavailable"), ("domain", "gone.example")): 1.0,
        }
        assert value(found, "bounce_waiting_recipients", domain="disk-full.example",
                     category="system_full") == 2.0
        assert value(found, "bounce_waiting_oldest_timestamp_seconds",
                     domain="disk-full.example") == stamp("10:00:00")
        assert value(found, "bounce_waiting_oldest_timestamp_seconds",
                     domain="busy.example") == stamp("10:07:00")

        status, _, body = http_get(f"http://127.0.0.1:{exporter.server.server_address[1]}/api/v1/waiting")
        rows = json.loads(body)
        assert status == 200
        assert [(r["domain"], r["recipients"]) for r in rows] == [
            ("disk-full.example", 2), ("busy.example", 1), ("gone.example", 1)]
        first = rows[0]["messages"][0]
        assert (first["queue_id"], first["recipient"], first["deferrals"], first["code"],
                first["enhanced"], first["category"]) == (
            "AAA1", "a@disk-full.example", 2, "431", "4.3.1", "system_full")
        assert first["first_deferral"] == datetime.fromtimestamp(
            stamp("10:00:00"), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert first["text"].endswith("431 4.3.1 disk is full (in reply to RCPT TO command)")

        # a delivery takes one out, an expiry the other; busy and gone keep waiting
        with open(log, "a") as handle:
            handle.write(SENT.format(t="10:10:00", qid="AAA1", rcpt="a@disk-full.example",
                                     dom="disk-full.example"))
            handle.write(EXPIRED.format(t="10:11:00", qid="BBB2"))
            handle.write(SENT.format(t="10:12:00", qid="CCC3", rcpt="c@busy.example",
                                     dom="busy.example"))
        exporter.step()
        found = scrape(exporter)
        assert value(found, "bounce_waiting_recipients", domain="disk-full.example",
                     category="system_full") is None
        assert value(found, "bounce_waiting_oldest_timestamp_seconds",
                     domain="disk-full.example") is None
        assert list(waiting(found).values()) == [1.0]
        assert next(iter(waiting(found)))[1] == ("domain", "gone.example")


def test_waiting_domains_keep_the_domain_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    log = tmp_path / "mail.log"
    log.write_text("".join(defer(f"10:00:0{i}", f"Q{i}", f"u@d{i}.example") for i in range(4)))
    with exporters() as start:
        exporter = start(local_config(tmp_path, log_files=[str(log)], from_start=True,
                                      max_domains=2))
        exporter.step()
        found = scrape(exporter)
        assert {k[1][1]: v for k, v in waiting(found).items()} == {
            "d0.example": 1.0, "d1.example": 1.0, "other": 2.0}
        assert value(found, "bounce_waiting_oldest_timestamp_seconds", domain="other") == stamp("10:00:02")


def test_scrapes_while_the_ledger_grows_read_it_whole(tmp_path, monkeypatch):
    """The ledger is parser state that scrapes read: parsing happens under the state lock, so a
    scrape never walks a ledger that is changing (before, 'dictionary changed size during
    iteration' failed the scrape and the client saw the connection closed)."""
    monkeypatch.setenv("TZ", "UTC")
    log = tmp_path / "mail.log"
    log.write_text("")
    failures: list[BaseException] = []
    scrapes = 0
    with exporters() as start:
        exporter = start(local_config(tmp_path, log_files=[str(log)], from_start=True))
        done = threading.Event()

        def scrape_on() -> None:
            nonlocal scrapes
            while not done.is_set():
                try:
                    exporter.take_scrape()
                    scrapes += 1
                except Exception as error:  # noqa: BLE001 - the test's finding
                    failures.append(error)

        scraper = threading.Thread(target=scrape_on)
        scraper.start()
        try:
            for chunk in range(40):
                with open(log, "a") as handle:
                    handle.write("".join(defer("10:00:00", f"Q{chunk:02d}{n:04d}", f"u{n}@d{n % 7}.example")
                                         for n in range(500)))
                exporter.step()
        finally:
            done.set()
            scraper.join()
        assert failures == []
        assert scrapes > 0
        time.sleep(MAX_REUSE)  # past the slow saves' reuse: the next scrape takes a snapshot
        found = scrape(exporter)
        assert sum(waiting(found).values()) == 20_000
