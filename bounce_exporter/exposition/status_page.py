"""The status page at `/`, for people: plain HTML rendered by the exporter itself.

What it shows, from one ``state.store.Status`` read under the Store's lock: the persistent
deferrals now, each explained from the catalog the way a knowledge page explains a `431 4.3.1`
(what it means, how bad, what to do on each side, what the MTA does next: ``classify.explain``
on the streak's last reply); the domains deferring most in the last hour; the sources. No
script, no external asset (one inline style sheet), and every value escaped: reply texts come
from remote servers. Served behind the same TLS and basic auth as every path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape

from bounce_exporter import __version__
from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.classify.explain import Explanation, explain
from bounce_exporter.state.deferrals import NO_CODE, Streak
from bounce_exporter.state.recent import RecentDomain
from bounce_exporter.state.store import Status

MAX_FLAGS = 50  # persistent deferrals shown; the rest: /api/v1/deferrals
MAX_TEXT = 400  # characters of a reply text shown

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232b;
background:#f4f5f7}
main{max-width:1180px;margin:0 auto;padding:16px 24px 40px}
header{background:#1f2d3d;color:#fff;padding:14px 24px}
header h1{font-size:20px;margin:0;display:inline}
header small{opacity:.75;margin-left:6px}
nav{display:inline;margin-left:24px}
nav a{color:#cfe3ff;margin-right:16px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:2px solid #d5d9e0;padding-bottom:4px}
.muted{color:#5b6573;font-size:13px}
.flag{background:#fff;border:1px solid #d5d9e0;border-left:6px solid #8a96a8;border-radius:4px;
padding:12px 16px;margin:12px 0}
.sev-high,.sev-critical{border-left-color:#c62828}
.sev-medium{border-left-color:#ef8f00}
.flag h3{margin:0 0 4px;font-size:17px}
.reply{font-family:ui-monospace,Menlo,Consolas,monospace;background:#fdecea;color:#8e1b1b;
padding:1px 6px;border-radius:3px;margin-left:6px}
.badge{font-size:12px;background:#e8ebf0;border-radius:10px;padding:2px 8px;margin-left:6px;
font-weight:normal}
blockquote{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;background:#f7f7f9;
border-left:3px solid #c3c8d0;margin:8px 0;padding:6px 10px;white-space:pre-wrap;
overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:190px 1fr;gap:4px 14px;margin:8px 0 0}
dt{font-weight:600;color:#3a4350}
dd{margin:0}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d5d9e0}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e6e9ee;vertical-align:top}
th{background:#eef1f5;font-size:13px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;overflow-wrap:anywhere}
.up{color:#1b7f3b;font-weight:600}.down{color:#c62828;font-weight:600}
.ok{background:#e9f6ec;border:1px solid #b9dfc3;padding:10px 14px;border-radius:4px}
"""


def render_status_page(status: Status, classifier: Classifier, *, formats: Mapping[str, str],
                       telemetry_path: str = "/metrics", routes: Sequence[str] = (),
                       now: float | None = None) -> str:
    """The whole page. ``formats``: each source's log format (as its parser names it);
    ``routes``: the JSON routes to link; ``now``: wall-clock time for "ago" (default: now)."""
    now = time.time() if now is None else now
    links = [(telemetry_path, "Metrics"), *((route, route) for route in routes),
             ("/-/healthy", "Health")]
    nav = "".join(f'<a href="{escape(href)}">{escape(text)}</a>' for href, text in links)
    body = "\n".join([
        (f"<header><h1>bounce-exporter<small>{escape(__version__)}</small></h1>"
         f"<nav>{nav}</nav></header>"),
        "<main>",
        (f'<p class="muted">Status at {_when(now)}. Reload the page for fresh data; the same '
         f'numbers, for Prometheus, are at <a href="{escape(telemetry_path)}">'
         f"{escape(telemetry_path)}</a>.</p>"),
        _flags_section(status.active, classifier, now),
        _recent_section(status.recent, classifier, status.now),
        _sources_section(status, formats, now),
        "</main>",
    ])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>bounce-exporter status</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


# -- persistent deferrals -------------------------------------------------------------------------

def _flags_section(active: list[Streak], classifier: Classifier, now: float) -> str:
    title = f"<h2>Persistent deferrals now ({len(active)})</h2>"
    intro = ('<p class="muted">A domain whose server keeps deferring mail with the same reply, '
             "attempt after attempt, past a persistent_deferrals rule: it will probably not "
             "recover by itself.</p>")
    if not active:
        return (f'{title}\n<p class="ok">None: no domain\'s server keeps deferring mail with '
                "the same reply.</p>")
    shown = sorted(active, key=lambda s: (s.since, s.domain, s.code))[:MAX_FLAGS]
    cards = [_flag(streak, classifier, now) for streak in shown]
    if len(active) > MAX_FLAGS:
        cards.append(f'<p class="muted">{len(active) - MAX_FLAGS} more: see '
                     '<a href="/api/v1/deferrals">/api/v1/deferrals</a>.</p>')
    return "\n".join([title, intro, *cards])


def _flag(streak: Streak, classifier: Classifier, now: float) -> str:
    explanation = _explain(streak, classifier)
    reply = " ".join(c for c in (_code(streak.code), explanation.enhanced if explanation else None)
                     if c)
    facts = (f"Deferring since {_when(streak.since)} ({_ago(now - streak.since)}), "
             f"{streak.attempts} attempts, the last at {_when(streak.last)} "
             f"({_ago(now - streak.last)}); rule {escape(streak.rule)}.")
    head = f"<h3>{escape(streak.domain)}"
    if reply:
        head += f'<span class="reply">{escape(reply)}</span>'
    if explanation is None:
        return (f'<article class="flag">{head}</h3><p>{facts}</p>'
                f"<blockquote>{_text(streak.last_text)}</blockquote></article>")
    e = explanation
    head += (f'<span class="badge">{escape(e.category)}</span>'
             f'<span class="badge">severity {escape(e.severity)}</span></h3>')
    rows = [
        ("What it means", e.meaning),
        ("How bad", f"{e.severity}: {e.severity_description}"),
        ("What to do (your side)", e.sender_action),
        ("On the receiving side", e.recipient_action),
        ("What happens next", _mta_next(e, classifier)),
    ]
    details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    return (f'<article class="flag sev-{escape(e.severity)}">{head}<p>{facts}</p>'
            f"<div>Last reply:</div><blockquote>{_text(streak.last_text)}</blockquote>"
            f"<dl>{details}</dl></article>")


def _explain(streak: Streak, classifier: Classifier) -> Explanation | None:
    """The catalog's explanation of the streak's last reply (its code put in front when the
    text lacks it); None when there is nothing to explain."""
    text = streak.last_text.strip()
    code = _code(streak.code)
    if code and code not in text:
        text = f"{code} {text}".strip()
    try:
        return explain(text, classifier)
    except ValueError:
        return None


def _mta_next(explanation: Explanation, classifier: Classifier) -> str:
    """A deferral is retried: what explain says the MTA does for a soft reply, else the soft
    kind's (a deferral whose reply reads as permanent, e.g. Postfix's soft_bounce)."""
    if explanation.judged == "soft":
        return explanation.mta_next
    return classifier.catalog.kinds["soft"].mta_next


# -- the last hour --------------------------------------------------------------------------------

def _recent_section(recent: list[RecentDomain], classifier: Classifier, clock: float) -> str:
    title = "<h2>Top deferring domains, last hour</h2>"
    if not recent:
        return f'{title}\n<p class="ok">No deferral logged in the last hour.</p>'
    categories = classifier.catalog.categories
    rows = []
    for entry in recent:
        reply = " ".join(c for c in (entry.code, entry.enhanced) if c) or "no reply code"
        info = categories.get(entry.category)
        reason = escape(entry.category) + (f": {escape(info.description)}" if info else "")
        rows.append(f"<tr><td>{escape(entry.domain)}</td><td class=\"num\">{entry.deferrals}</td>"
                    f"<td>{escape(reply)}</td><td>{reason}</td>"
                    f"<td>{_provider(entry.provider, classifier)}</td><td>{_when(entry.last)}</td>"
                    f'<td class="text">{_text(entry.text)}</td></tr>')
    return "\n".join([
        title,
        (f'<p class="muted">Deferrals per recipient domain in the hour before {_when(clock)} '
         "(log time), by one-minute steps; the latest reply of each.</p>"),
        ("<table><thead><tr><th>domain</th><th>deferrals</th><th>last reply</th>"
         "<th>reason</th><th>answered by</th><th>last deferral</th><th>last reply text</th>"
         "</tr></thead><tbody>"),
        *rows, "</tbody></table>"])


def _provider(key: str, classifier: Classifier) -> str:
    """The provider that answered, named, with its postmaster page; none of the table's: -."""
    provider = classifier.catalog.providers.get(key) if key else None
    if provider is None:
        return '<span class="muted">-</span>'
    return (f'{escape(provider.name)} (<a href="{escape(provider.postmaster)}" rel="noreferrer">'
            "postmaster page</a>)")


# -- sources --------------------------------------------------------------------------------------

def _sources_section(status: Status, formats: Mapping[str, str], now: float) -> str:
    rows = []
    for name, stats in sorted(status.sources.items()):
        fmt = formats.get(name, "")
        shown = "auto (not detected yet)" if fmt == "auto" else fmt
        up = '<span class="up">up</span>' if stats.up else '<span class="down">down</span>'
        last = (f"{_when(stats.last_line_time)} ({_ago(now - stats.last_line_time)})"
                if stats.last_line_time else "never")
        rows.append(f"<tr><td>{escape(name)}</td><td>{escape(shown)}</td><td>{up}</td>"
                    f'<td class="num">{stats.lines_read}</td><td>{last}</td></tr>')
    if not rows:
        rows.append('<tr><td colspan="5">No source is followed.</td></tr>')
    return "\n".join([
        "<h2>Sources</h2>",
        ("<table><thead><tr><th>source</th><th>format</th><th>state</th><th>lines read</th>"
         "<th>last line read (or following began)</th></tr></thead><tbody>"),
        *rows, "</tbody></table>"])


# -- small pieces ---------------------------------------------------------------------------------

def _code(code: str) -> str | None:
    return None if code == NO_CODE else code


def _text(text: str) -> str:
    """A reply text from a remote server, shortened and escaped."""
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "…"
    return escape(text) if text else "(no text)"


def _when(seconds: float) -> str:
    return escape(datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def _ago(seconds: float) -> str:
    """"12 s ago", "5 min ago", "3 h 20 min ago", "2 d 4 h ago" ("in the future" if negative)."""
    if seconds < 0:
        return "in the future"
    s = int(seconds)
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min ago"
    return f"{s // 86400} d {s % 86400 // 3600} h ago"
