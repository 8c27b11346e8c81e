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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from prometheus_client.core import Metric

LEFT_OUT = ("bounce_exporter_", "bounce_waiting_")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# labels of the backfilled families: --label may not set them
SERIES_LABELS = ("domain", "kind", "code", "enhanced", "category", "provider")


class _Series:
    """One series' samples as runs of steps with the same value (a counter changes at few steps
    of many; a cleared gauge leaves a gap): memory grows with the changes, not with the steps."""

    __slots__ = ("ends", "starts", "values")

    def __init__(self) -> None:
        self.starts, self.ends, self.values = array("l"), array("l"), array("d")

    def add(self, step: int, value: float) -> None:
        if self.ends and self.ends[-1] == step - 1 and self.values[-1] == value:
            self.ends[-1] = step
        else:
            self.starts.append(step)
            self.ends.append(step)
            self.values.append(value)

    def samples(self) -> Iterator[tuple[int, float]]:
        for start, end, value in zip(self.starts, self.ends, self.values):
            for step in range(start, end + 1):
                yield step, value


@dataclass
class _Family:
    type: str
    documentation: str
    series: dict[tuple[str, tuple[tuple[str, str], ...]], _Series] = field(default_factory=dict)


class Backfill:
    """The samples of each step, gathered per family and series until ``write``. ``labels``: more
    labels on every series (``job``, ``instance``: what Prometheus adds when it scrapes, so that
    the history continues the live series)."""

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.families: dict[str, _Family] = {}
        self.times = array("d")  # of the steps
        self.labels = tuple((labels or {}).items())

    def add(self, time: float, families: Iterable[Metric]) -> None:
        """The families a scrape at log time ``time`` would have exposed."""
        step = len(self.times)
        self.times.append(time)
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
                    series = kept.series[key] = _Series()
                series.add(step, sample.value)

    def write(self, out: TextIO) -> int:
        """Write the OpenMetrics text; the number of samples written."""
        written = 0
        times = [_number(t) for t in self.times]
        for name, family in self.families.items():
            if not family.series:
                continue
            out.write(f"# HELP {name} {_escape(family.documentation)}\n"
                      f"# TYPE {name} {family.type}\n")
            for (sample, labels), series in sorted(family.series.items()):
                head = sample + ("{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"
                                 if labels else "")
                lines = [f"{head} {_number(value)} {times[step]}\n"
                         for step, value in series.samples()]
                out.writelines(lines)
                written += len(lines)
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
