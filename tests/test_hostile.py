"""Hostile or odd surroundings (issue 18): each case a few seconds, a clear error or a counted,
logged skip, never a hang and never a silent loss."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry, generate_latest

from bounce_exporter.app import Exporter
from bounce_exporter.classify.catalog import packaged_catalog
from bounce_exporter.classify.classifier import Classification
from bounce_exporter.config import load_config
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.state.counters import CodeLabels, DomainLabels, MetricState

from .corpus import REPO
from .helpers import free_port, http_get, samples, value, wait_until


def test_a_fifo_as_the_state_file_is_refused_at_start_with_exit_2(tmp_path):
    """Opening a FIFO blocks until a writer comes: it used to hang the start for good (never
    listening, SIGTERM ignored)."""
    fifo = tmp_path / "state.json"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "bounce_exporter", "serve", "--log.file", str(tmp_path / "m.log"),
         "--state.file", str(fifo)], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert (f"state_file / --state.file {fifo}: a FIFO; give the path of a JSON file (made at the "
            "first save)") in result.stderr


def test_a_directory_as_the_state_file_is_refused_too(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bounce_exporter", "serve", "--log.file", str(tmp_path / "m.log"),
         "--state.file", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert f"--state.file {tmp_path}: a directory;" in result.stderr


# -- a hostile remote: made-up codes and texts (bounded series) -------------------------------

def failure(domain, code, enhanced, kind="soft"):
    return DeliveryEvent(0.0, "postfix", "Q", f"u@{domain}", domain,
                         "deferred" if kind == "soft" else "bounced", code, enhanced, "text")


def test_codes_the_catalog_knows_keep_their_value_others_fold_to_their_class():
    labels = CodeLabels()
    catalog = packaged_catalog()
    assert [labels.code(c) for c in ("431", "550", "499", "599", "200", None, "")] == [
        "431", "550", "4xx", "5xx", "2xx", "none", "none"]
    assert all(labels.code(code) == code for code in catalog.basic_codes)
    assert [labels.enhanced(e) for e in (
        "4.3.1", "5.1.1", "4.9.123", "4.3.99", "4.03.1", "9.1.1", "2.7.27", "5.7.27", None)] == [
        "4.3.1", "5.1.1", "4.x.x", "4.x.x", "4.x.x", "9.x.x", "2.x.x", "5.7.27", "none"]
    # text rules naming codes of their own keep them (Gmail's 4.7.27 and 4.7.32, Microsoft's
    # 4.7.500-699), not one that needs a basic code too (421 with any 4.7.N)
    assert [labels.enhanced(e) for e in ("4.7.27", "4.7.32", "4.7.650", "5.7.640", "4.7.999")] == [
        "4.7.27", "4.7.32", "4.7.650", "5.7.640", "4.x.x"]
    # a registry entry of one failure class keeps its value in the other (552 5.2.2 "mailbox
    # full" is common; the registry has X.2.2 as transient only), never as a success class
    assert catalog.enhanced_codes["X.2.2"].classes == (4,)
    assert [labels.enhanced(e) for e in ("5.2.2", "4.2.2", "2.2.2")] == ["5.2.2", "4.2.2", "2.x.x"]
    registry = [f"{cls}.{key[2:]}" for key, info in catalog.enhanced_codes.items()
                if "X" not in key[2:] for cls in info.classes or (2, 4, 5)]
    assert len(registry) > 100 and all(labels.enhanced(e) == e for e in registry)


def test_the_enhanced_cache_is_bounded():
    labels = CodeLabels(cache_size=10)
    for detail in range(100, 125):
        assert labels.enhanced(f"4.9.{detail}") == "4.x.x"
    assert len(labels._enhanced) == 5  # emptied at 10, then 5 more
    assert labels.enhanced("4.3.1") == "4.3.1"


def test_the_series_cap_counts_new_label_sets_in_overflow_series_and_logs_once(caplog):
    state = MetricState(DomainLabels(100), max_series=2)
    soft, hard = Classification("soft", "system_full"), Classification("hard", "recipient_unknown")
    with caplog.at_level(logging.WARNING, logger="bounce_exporter.state.counters"):
        for domain in ("a.example", "b.example", "c.example", "d.example", "a.example"):
            state.record(failure(domain, "431", "4.3.1"), soft)
        state.record(failure("e.example", "550", "5.1.1", "hard"), hard)
        state.record(failure("f.example", None, None), soft)
    assert dict(state.failures) == {
        ("a.example", "soft", "431", "4.3.1", "system_full"): 2,
        ("b.example", "soft", "431", "4.3.1", "system_full"): 1,
        ("other", "soft", "4xx", "4.x.x", "system_full"): 2,
        ("other", "hard", "5xx", "5.x.x", "recipient_unknown"): 1,
        ("other", "soft", "none", "none", "system_full"): 1,
    }
    assert sum(state.failures.values()) == 7  # no event lost
    assert state.snapshot().series_overflowed == 4
    assert [r.getMessage() for r in caplog.records] == [(
        'more than 2 bounce_failures_total series (limits.max_series): new label sets are counted '
        "under domain=\"other\" with their codes' class values "
        "(bounce_exporter_failure_series_overflow_events_total)")]
    # the cap counts every series, overflow series too: a reload to 6 leaves room for one more
    state.apply(100, max_series=6)
    state.record(failure("g.example", "431", "4.3.1"), soft)
    state.record(failure("h.example", "431", "4.3.1"), soft)
    assert state.failures.get(("g.example", "soft", "431", "4.3.1", "system_full")) == 1
    assert state.failures.get(("h.example", "soft", "431", "4.3.1", "system_full")) is None
    assert state.failures[("other", "soft", "4xx", "4.x.x", "system_full")] == 3
    assert (len(state.failures), state.series_overflowed) == (6, 5)


HOSTILE_LINE = ("{stamp} mx1 postfix/smtp[{pid}]: {qid}: to=<user{n}@{domain}>, "
                "relay=mx.{domain}[192.0.2.7]:25, delay=1, delays=0.1/0/0.4/0.5, dsn={enhanced}, "
                "status=deferred (host mx.{domain}[192.0.2.7] said: 451 {enhanced} made-up "
                "reply {i} of the hostile remote (in reply to RCPT TO command))\n")
HOSTILE_DOMAINS = 20
HOSTILE_LINES = 100_000


def hostile_log(path) -> None:
    """100,000 deferrals, each with its own enhanced code (subjects 8-107, which no registry
    knows: 4.8.0 ... 4.107.999) and reply text, from 20 domains' servers, over 1,000 queue ids."""
    stamp = time.strftime("%b %e %H:%M:%S")
    with open(path, "w") as log:
        log.writelines(HOSTILE_LINE.format(
            stamp=stamp, pid=1000 + i % 50, qid=f"{0xA0000 + i % 1000:X}", n=i % 1000,
            domain=f"h{i % HOSTILE_DOMAINS}.example", enhanced=f"4.{8 + i // 1000}.{i % 1000}", i=i)
            for i in range(HOSTILE_LINES))


def vm(pid: int, field: str) -> int:
    """A /proc/PID/status field in KiB (VmHWM: the peak resident memory)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_a_hostile_remote_with_100000_made_up_codes_keeps_series_scrape_and_memory_bounded(
        tmp_path):
    """Each made-up enhanced code used to make a series (issue 18: 100,000 gave 100,019 samples;
    800,000 an 89 MB exposition, an 11 s scrape, 926 MiB). Folded to 4.x.x, the 100,000 replies
    are 20 series, one per domain, each counting every one of its 5,000 deferrals."""
    log = tmp_path / "mail.log"
    hostile_log(log)
    port = free_port()
    with open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bounce_exporter", "serve", "--log.file", str(log),
             "--log.from-start", "--web.listen-address", f"127.0.0.1:{port}",
             "--state.file", str(tmp_path / "state.json")],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{port}/metrics"
    try:
        def all_read():
            if process.poll() is not None:
                raise AssertionError((tmp_path / "stderr").read_text())
            try:
                found = samples(http_get(base, timeout=5)[2])
            except OSError:
                return None
            return value(found, "bounce_exporter_lines_read_total",
                         source=str(log)) == HOSTILE_LINES and found

        wait_until(all_read, timeout=120, what="the hostile log to be read", interval=0.5)
        tic = time.perf_counter()
        status, _, text = http_get(base, timeout=10)
        scrape = time.perf_counter() - tic
        peak = vm(process.pid, "VmHWM")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert status == 200
    found = samples(text)
    failures = {labels: count for (name, labels), count in found.items()
                if name == "bounce_failures_total"}
    assert len(failures) == HOSTILE_DOMAINS
    assert {dict(labels)["domain"]: count for labels, count in failures.items()} == {
        f"h{k}.example": HOSTILE_LINES / HOSTILE_DOMAINS for k in range(HOSTILE_DOMAINS)}
    assert {(dict(labels)["code"], dict(labels)["enhanced"]) for labels in failures} == {
        ("451", "4.x.x")}
    assert value(found, "bounce_exporter_failure_series") == HOSTILE_DOMAINS
    assert value(found, "bounce_exporter_failure_series_overflow_events_total") == 0
    assert len(text.splitlines()) < 400  # the whole exposition, HELP and TYPE lines included
    assert scrape < 1.0
    assert peak < 100 * 1024, f"peak RSS {peak / 1024:.1f} MiB"


def test_an_exporter_at_its_series_cap_counts_every_failure_in_the_overflow_series(tmp_path,
                                                                                     caplog):
    """200 domains (each its own label) deferring with a known reply, under limits.max_series 50:
    50 series of their own, the other 150 domains' deferrals in one overflow series; the sum of
    bounce_failures_total is every deferral, and the overflow is counted and logged once."""
    log = tmp_path / "mail.log"
    stamp = time.strftime("%b %e %H:%M:%S")
    log.write_text("".join(HOSTILE_LINE.format(
        stamp=stamp, pid=1, qid=f"{0xB0000 + i:X}", n=i, domain=f"d{i % 200}.example",
        enhanced="4.3.1", i=i) for i in range(2000)))
    config_file = tmp_path / "config.yml"
    config_file.write_text("limits: {max_domains: 1000, max_series: 50}\n")
    config = load_config(str(config_file), {
        "log_files": [str(log)], "from_start": True, "listen_address": "127.0.0.1:0",
        "state_file": str(tmp_path / "state.json")})
    exporter = Exporter(config, registry=CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="bounce_exporter.state.counters"):
        exporter.start()
        try:
            exporter.step()
            found = samples(generate_latest(exporter.registry).decode())
        finally:
            exporter.shutdown()
    failures = {dict(labels)["domain"]: (dict(labels)["code"], dict(labels)["enhanced"], count)
                for (name, labels), count in found.items() if name == "bounce_failures_total"}
    assert len(failures) == 51
    assert failures["other"] == ("4xx", "4.x.x", 1500)
    assert {failures[f"d{k}.example"] for k in range(50)} == {("451", "4.3.1", 10)}
    assert sum(count for _, _, count in failures.values()) == 2000
    assert value(found, "bounce_exporter_failure_series") == 51
    assert value(found, "bounce_exporter_failure_series_overflow_events_total") == 1500
    assert value(found, "bounce_exporter_domain_overflow_events_total") == 0
    assert [r.getMessage()[:41] for r in caplog.records
            if r.name == "bounce_exporter.state.counters"] == [
        "more than 50 bounce_failures_total series"]

