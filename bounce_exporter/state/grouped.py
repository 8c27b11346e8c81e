"""Events alike, grouped: a block's events counted once per group instead of once each.

``MetricState.record`` of an event reads only some of its fields: the domain and status always;
for a failure (deferred, bounced) its classification and codes; for an attempt the relay, and the
reply text only when the relay alone does not name the provider (``ProviderTable.decides``: no
relay, or an IP address). Two events equal in every field it reads are counted alike, so a block
is counted as one ``record(event, classification, n)`` per group: the first event of each group,
and how many there are. Groups come in the order of their first event, so everything whose order
matters comes first where it did event by event: the domains given a label under the cap, the
failure series made before ``max_series`` is reached, the order of the counters' series.
tests/test_speedups.py checks that both ways count the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bounce_exporter.classify.classifier import Classification
from bounce_exporter.event import DeliveryEvent


def grouped(found: list[tuple[DeliveryEvent, Classification]],
            decides: Callable[[str | None], bool],
            ) -> Iterator[tuple[DeliveryEvent, Classification, int]]:
    """(first event, its classification, events in the group) per group of events alike, in
    the order of their first event. ``decides(relay)``: the relay alone names the provider."""
    groups: dict[tuple, list] = {}
    unnamed: dict[str | None, bool] = {}  # relays that do not decide (asked once per relay)
    for event, classification in found:
        status = event.status
        if status == "sent":
            key: tuple = (event.domain, event.relay)
        elif status == "expired":  # counted by domain alone
            key = (event.domain,)
        else:  # the classification: one of the classifier's few verdict objects
            key = (event.domain, status, event.code, event.enhanced, event.relay,
                   id(classification), event.without_attempt)
        group = groups.get(key)
        if group is None and status != "expired":
            relay = event.relay
            if relay not in unnamed:
                unnamed[relay] = not decides(relay)
            if unnamed[relay]:  # the text may name the provider: a group per text
                key += (event.text,)
                group = groups.get(key)
        if group is None:
            groups[key] = [event, classification, 1]
        else:
            group[2] += 1
    for event, classification, events in groups.values():
        yield event, classification, events
