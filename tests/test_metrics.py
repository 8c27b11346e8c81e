"""Metric state and its exposition: labels, the domain cap, and the exact text Prometheus scrapes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from bounce_exporter import __version__
from bounce_exporter.classify.catalog import packaged_catalog
from bounce_exporter.classify.classifier import Classification
from bounce_exporter.event import DeliveryEvent
from bounce_exporter.exposition.collector import MetricsCollector
from bounce_exporter.parsers.accel import accelerated
from bounce_exporter.state.counters import DomainLabels, MetricState


def event(domain, status, code=None, enhanced=None):
    return DeliveryEvent(0.0, "postfix", "Q", f"u@{domain}" if domain else None, domain, status,
                         code, enhanced, "text")


PROVIDERS = packaged_catalog().providers.names
SOFT_DISK = Classification("soft", "system_full")
SENT = Classification(None, "none")


def registry_for(state: MetricState) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(MetricsCollector(state))
    return registry


def test_domain_cap_sends_later_domains_to_other_and_keeps_the_allowlist():
    labels = DomainLabels(max_domains=2, allowlist=["vip.example"])
    assert [labels.label(d) for d in ("a.example", "b.example", "c.example", "vip.example",
                                      "a.example", None)] == [
        "a.example", "b.example", "other", "vip.example", "a.example", "unknown"]
    assert labels.overflowed_events == 1
    assert labels.labelled == 3


def test_record_counts_attempts_deliveries_failures_and_expiries():
    state = MetricState()
    state.record(event("disk.example", "deferred", "431", "4.3.1"), SOFT_DISK)
    state.record(event("disk.example", "deferred", "431", "4.3.1"), SOFT_DISK)
    state.record(event("disk.example", "sent", "250", "2.0.0"), SENT)
    state.record(event("disk.example", "expired", "431", "4.3.1"), SOFT_DISK)
    state.record(event("net.example", "deferred"), Classification("soft", "network"))
    registry = registry_for(state)
    value = registry.get_sample_value
    assert value("bounce_delivery_attempts_total", {"domain": "disk.example"}) == 3
    assert value("bounce_deliveries_total", {"domain": "disk.example"}) == 1
    assert value("bounce_expired_total", {"domain": "disk.example"}) == 1
    assert value("bounce_failures_total", {"domain": "disk.example", "kind": "soft", "code": "431",
                                           "enhanced": "4.3.1", "category": "system_full"}) == 2
    assert value("bounce_failures_total", {"domain": "net.example", "kind": "soft", "code": "none",
                                           "enhanced": "none", "category": "network"}) == 1
    assert value("bounce_deliveries_total", {"domain": "net.example"}) is None


def test_allowlisted_domains_start_at_zero():
    registry = registry_for(MetricState(DomainLabels(10, ["vip.example"])))
    assert registry.get_sample_value("bounce_delivery_attempts_total", {"domain": "vip.example"}) == 0
    assert registry.get_sample_value("bounce_expired_total", {"domain": "vip.example"}) == 0


def test_exposition_text():
    state = MetricState()
    state.record(event("disk.example", "deferred", "431", "4.3.1"), SOFT_DISK)
    stats = state.source("/var/log/mail.log")
    stats.lines_read, stats.up, stats.last_line_time = 7, 1, 1700000000.0
    stats.not_understood["malformed_delivery"] = 1
    stats.format = "postfix"  # detected by auto, or configured
    text = generate_latest(registry_for(state)).decode()
    assert "\n".join(line for line in text.splitlines() if not line.startswith("#")) == "\n".join([
        'bounce_delivery_attempts_total{domain="disk.example"} 1.0',
        'bounce_failures_total{category="system_full",code="431",domain="disk.example",'
        'enhanced="4.3.1",kind="soft"} 1.0',
        # every provider of the table starts at 0; an event naming no relay host is "other"
        *[f'bounce_provider_delivery_attempts_total{{provider="{name}"}} '
          f'{1.0 if name == "other" else 0.0}' for name in sorted([*PROVIDERS, "other"])],
        ('bounce_provider_failures_total{category="system_full",code="431",enhanced="4.3.1",'
         'kind="soft",provider="other"} 1.0'),
        'bounce_exporter_lines_read_total{source="/var/log/mail.log"} 7.0',
        'bounce_exporter_lines_not_understood_total{reason="malformed_delivery",'
        'source="/var/log/mail.log"} 1.0',
        'bounce_exporter_read_errors_total{source="/var/log/mail.log"} 0.0',
        'bounce_exporter_truncations_total{source="/var/log/mail.log"} 0.0',
        'bounce_exporter_rotations_total{source="/var/log/mail.log"} 0.0',
        'bounce_exporter_source_up{source="/var/log/mail.log"} 1.0',
        'bounce_exporter_source_info{format="postfix",source="/var/log/mail.log"} 1.0',
        'bounce_exporter_last_line_timestamp_seconds{source="/var/log/mail.log"} 1.7e+09',
        'bounce_exporter_domains 1.0',
        'bounce_exporter_domain_overflow_events_total 0.0',
        'bounce_exporter_failure_series 1.0',
        'bounce_exporter_failure_series_overflow_events_total 0.0',
        'bounce_exporter_state_write_errors_total 0.0',
        (f'bounce_exporter_build_info{{accelerated="{"true" if accelerated() else "false"}",'
         f'version="{__version__}"}} 1.0'),
    ])
    assert "# TYPE bounce_failures_total counter" in text
    assert "# TYPE bounce_exporter_source_up gauge" in text
