"""The report's forms for people and spreadsheets: aligned tables for the terminal, CSV.

Tables are our own few lines (``table``): left-aligned text, right-aligned numbers, columns as
wide as their widest cell; a library for this would be a dependency for thirty lines. CSV: every
row starts with the name of its table, each table after a header row of its own, so that one file
holds them all and ``grep '^domains,'`` takes one out.
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

TEXT_WIDTH = 100  # of a reply text in a table cell, and of the episodes' explanations
DOMAIN_COLUMNS = ("domain", "attempts", "delivered", "deferred", "bounced", "expired", "waiting",
                  "oldest_waiting")
PROVIDER_COLUMNS = ("provider", "attempts", "delivered", "deferred", "bounced", "expired")
EPISODE_COLUMNS = ("domain", "code", "rule", "from", "to", "attempts", "persistent", "ended",
                   "expired")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Lines of an aligned table: columns of numbers right-aligned, others left-aligned; None is
    "-"."""
    rows = [list(row) for row in rows]
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [any(_is_number(row[i]) for row in rows)
               and all(row[i] is None or _is_number(row[i]) for row in rows)
               for i in range(len(headers))]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w)
                         for v, w, right in zip(values, widths, numeric)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _short_time(iso: str | None) -> str | None:
    """2026-11-28T12:22:37+00:00 -> 2026-11-28 12:22:37 (the header says the offset)."""
    return iso[:19].replace("T", " ") if iso else iso


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_WIDTH else text[:TEXT_WIDTH - 1] + "…"


def _top(replies: list[dict]) -> str:
    return ", ".join(f"{r['code']} {r['enhanced']} {r['category']} ({r['count']})"
                     for r in replies)


def render_text(report: dict[str, Any]) -> str:
    lines = _header(report)
    totals = report["totals"]
    lines += ["", "Totals", *table(("attempts", "delivered", "deferred", "bounced", "expired"),
                                   [[totals[k] for k in ("attempts", "delivered", "deferred",
                                                         "bounced", "expired")]])]
    lines += ["", "Failed attempts by kind and category (soft: deferred, hard: bounced)",
              *table(("kind", "category", "attempts"),
                     [[kind, category, count] for kind, categories in totals["by_kind"].items()
                      for category, count in categories.items()])]
    capped = any(d["domain"] == "other" for d in report["domains"])
    lines += ["", ("Per recipient domain (waiting: recipients still deferred at the end of the "
              "logs" + ("; other: the domains past limits.max_domains" if capped else "") + ")"),
              *table((*DOMAIN_COLUMNS, "top replies"), [
                  [*(_short_time(d[k]) if k == "oldest_waiting" else d[k]
                     for k in DOMAIN_COLUMNS), _top(d["top_replies"])]
                  for d in report["domains"]])]
    lines += ["", "Per provider (who answered, by relay host)",
              *table(PROVIDER_COLUMNS, [[p[k] for k in PROVIDER_COLUMNS]
                                        for p in report["providers"]])]
    lines += ["", *_episodes(report["episodes"])]
    lines += ["", "Most frequent replies per category",
              *table(("category", "count", "reply"), [
                  [category, r["count"], _clip(r["text"])]
                  for category, replies in report["replies"].items() for r in replies])]
    return "\n".join(lines) + "\n"


def _header(report: dict[str, Any]) -> list[str]:
    files = report["files"]
    formats = sorted({f["format"] or "unknown" for f in files})
    span = (f"from {_short_time(report['first_event'])} to {_short_time(report['last_event'])} "
            f"(UTC{report['first_event'][19:] or ''})" if report["first_event"] else
            "no delivery event")
    return [(f"bounce-exporter report: {len(files)} file{'s' if len(files) != 1 else ''} "
            f"({', '.join(formats)}), {report['lines']} lines, {report['events']} delivery "
            f"events, {span}")]


def _episodes(episodes: list[dict]) -> list[str]:
    lines = [("Deferral episodes (streaks of the persistent_deferrals rules; persistent: the rule's "
             "threshold was reached)")]
    if not episodes:
        return [*lines, "(none)"]
    lines += table(EPISODE_COLUMNS, [[*(_short_time(e[k]) if k in ("from", "to") else e[k]
                                        for k in EPISODE_COLUMNS)] for e in episodes])
    for e in episodes:
        lines += ["", f"{e['domain']} {e['code']} ({e['category']}), {e['ended']}:"]
        for label, text in (("rule", _rule(e)), ("reply", e["reply"]), ("meaning", e["meaning"]),
                            ("sender", e["sender_action"]), ("recipient", e["recipient_action"])):
            lines += textwrap.wrap(text, TEXT_WIDTH, initial_indent=f"  {label:<11}",
                                   subsequent_indent=" " * 13, break_on_hyphens=False)
    return lines


def _rule(episode: dict) -> str:
    """What the rule asks, and whether the streak reached it."""
    reached = "reached" if episode["persistent"] else "not reached"
    wants = (f"{episode['min_attempts']} deferrals over at least "
             f"{_duration(episode['min_duration_seconds'])}")
    return f"{episode['rule']}: {wants}, {reached}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2) + "\n"


def write_csv(report: dict[str, Any], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    totals = report["totals"]
    writer.writerow(("totals", "attempts", "delivered", "deferred", "bounced", "expired"))
    writer.writerow(("totals", *(totals[k] for k in ("attempts", "delivered", "deferred",
                                                     "bounced", "expired"))))
    writer.writerow(("kinds", "kind", "category", "attempts"))
    for kind, categories in totals["by_kind"].items():
        for category, count in categories.items():
            writer.writerow(("kinds", kind, category, count))
    writer.writerow(("domains", *DOMAIN_COLUMNS, "top_replies"))
    for d in report["domains"]:
        writer.writerow(("domains", *(d[k] for k in DOMAIN_COLUMNS), _top(d["top_replies"])))
    writer.writerow(("providers", *PROVIDER_COLUMNS))
    for p in report["providers"]:
        writer.writerow(("providers", *(p[k] for k in PROVIDER_COLUMNS)))
    columns = (*EPISODE_COLUMNS, "category", "reply", "meaning", "sender_action",
               "recipient_action")
    writer.writerow(("episodes", *columns))
    for e in report["episodes"]:
        writer.writerow(("episodes", *(e[k] for k in columns)))
    writer.writerow(("replies", "category", "count", "reply"))
    for category, replies in report["replies"].items():
        for r in replies:
            writer.writerow(("replies", category, r["count"], r["text"]))
