"""History for Prometheus: the families a scrape would have exposed at each step of log time,
written as OpenMetrics text with timestamps, for ``promtool tsdb create-blocks-from openmetrics``.

The families are the exporter's own (``collector.snapshot_families`` of the replay's snapshots),
so names, labels and the domain cap are those of ``/metrics``. Kept: the delivery families
(``bounce_*``: attempts, deliveries, failures, expiries, providers, persistent deferrals). Left
out: the exporter's self-metrics (``bounce_exporter_*``: they describe a process that did not run
then) and ``bounce_waiting_*`` (the ledgers are read block by block, a megabyte of log at a time,
so at a step inside a block they would show the block's end, not the step's time).

What promtool wants, and this writes: a ``# TYPE`` (and ``# HELP``) before each family, counters'
samples named ``..._total``, all samples of a family together, and within it the samples of each
series together in increasing time (so the snapshots are gathered first and written family by
family, series by series), timestamps in seconds, ``# EOF`` at the end.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from prometheus_client.core import Metric

LEFT_OUT = ("bounce_exporter_", "bounce_waiting_")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# labels of the backfilled families: --label may not set them
SERIES_LABELS = ("domain", "kind", "code", "enhanced", "category", "provider")


@dataclass
class _Family:
    type: str
    documentation: str
    # (sample name, label items) -> (timestamps, values)
    series: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[array, array]] = field(
        default_factory=dict)


class Backfill:
    """The samples of each step, gathered per family and series until ``write``. ``labels``: more
    labels on every series (``job``, ``instance``: what Prometheus adds when it scrapes, so that
    the history continues the live series)."""

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.families: dict[str, _Family] = {}
        self.steps = 0
        self.labels = tuple((labels or {}).items())

    def add(self, time: float, families: Iterable[Metric]) -> None:
        """The families a scrape at log time ``time`` would have exposed."""
        self.steps += 1
        for family in families:
            if family.name.startswith(LEFT_OUT) or not family.name.startswith("bounce_"):
                continue
            kept = self.families.get(family.name)
            if kept is None:
                kept = self.families[family.name] = _Family(family.type, family.documentation)
            for sample in family.samples:
                key = (sample.name, (*sample.labels.items(), *self.labels))
                series = kept.series.get(key)
                if series is None:
                    series = kept.series[key] = (array("d"), array("d"))
                series[0].append(time)
                series[1].append(sample.value)

    def write(self, out: TextIO) -> int:
        """Write the OpenMetrics text; the number of samples written."""
        written = 0
        for name, family in self.families.items():
            if not family.series:
                continue
            out.write(f"# HELP {name} {_escape(family.documentation)}\n"
                      f"# TYPE {name} {family.type}\n")
            for (sample, labels), (times, values) in sorted(family.series.items()):
                head = sample + ("{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"
                                 if labels else "")
                out.writelines(f"{head} {_number(v)} {_number(t)}\n"
                               for t, v in zip(times, values))
                written += len(times)
        out.write("# EOF\n")
        return written


def parse_labels(pairs: list[str], taken: tuple[str, ...] = ()) -> dict[str, str]:
    """``["job=bounce-exporter", ...]`` as labels; ValueError naming a bad or taken one."""
    labels: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"{pair!r}: give NAME=VALUE with a Prometheus label name")
        if name in taken or name in labels:
            raise ValueError(f"{pair!r}: the label {name} is already set")
        labels[name] = value
    return labels


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
