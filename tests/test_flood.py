"""A flood of distinct recipient domains (bench/flood.py's, smaller): the domain label, the series
and the deferral tracker stay exactly within their caps. Timings and memory: run bench/flood.py."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

from bench.flood import flood_lines, status_of
from bounce_exporter.app import Exporter
from bounce_exporter.config import load_config
from bounce_exporter.state.deferrals import DeferralTracker

from .helpers import samples, value

DOMAINS = 50_000
CAP = 500


def test_fifty_thousand_domains_stay_within_every_cap(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("")
    config = load_config(None, {"log_files": [str(log)], "listen_address": "127.0.0.1:0",
                                "state_file": str(tmp_path / "state.json"), "max_domains": CAP})
    exporter = Exporter(config, registry=CollectorRegistry())
    exporter.start()
    try:
        with log.open("a") as handle:
            handle.write(flood_lines(0, DOMAINS))
        assert exporter.step() == DOMAINS
        text = generate_latest(exporter.registry).decode()
    finally:
        exporter.shutdown()
    found = samples(text)
    max_streaks = DeferralTracker([]).max_keys
    deferred = sum(1 for i in range(DOMAINS) if status_of(i) == "deferred")
    assert value(found, "bounce_exporter_domains") == CAP
    assert value(found, "bounce_exporter_domain_overflow_events_total") == DOMAINS - CAP
    label_values = {dict(labels)["domain"] for (name, labels) in found
                    if name == "bounce_delivery_attempts_total"}
    assert len(label_values) == CAP + 1 and "other" in label_values
    assert value(found, "bounce_delivery_attempts_total", domain="other") == DOMAINS - CAP
    failing_labelled = sum(1 for i in range(CAP) if status_of(i) != "sent")
    assert sum(1 for (name, _) in found if name == "bounce_failures_total") == (
        failing_labelled + 2)  # one series per failing labelled domain, two for "other"
    assert value(found, "bounce_exporter_deferral_streaks") == max_streaks
    assert value(found, "bounce_exporter_deferral_streaks_evicted_total") == deferred - max_streaks
    saved = json.loads((tmp_path / "state.json").read_text())
    assert len(saved["deferrals"]["streaks"]) == max_streaks
    assert value(found, "bounce_exporter_lines_read_total", source=str(log)) == DOMAINS
