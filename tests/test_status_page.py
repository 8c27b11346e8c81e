"""The status page at `/` (exposition.status_page): what a person reads there, escaped, served
behind the same basic auth as every path."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

import bcrypt
import pytest

from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.exposition.status_page import MAX_FLAGS, render_status_page
from bounce_exporter.state.counters import SourceStats
from bounce_exporter.state.deferrals import Streak
from bounce_exporter.state.recent import RecentDomain
from bounce_exporter.state.store import Status

from .helpers import exporters, local_config, page_text

NOW = 1_700_000_600.0  # 2023-11-14 22:23:20 UTC
STOREDRV = ("host 127.0.0.1[127.0.0.1] said: 431 4.3.1 STOREDRV.Deliver; disk is full and the "
            "server cannot accept new messages (in reply to RCPT TO command)")
DISK_FULL_SENDER = ("Nothing to fix on your side, but do not just wait: a full disk does not clear "
                    "by itself. If it lasts more than an hour or two, contact the domain's "
                    "postmaster (by phone or another address: mail to the domain is stuck too).")
DISK_FULL_RECIPIENT = ("The receiving server's admin must free disk space on the mail store or "
                       "queue volume (or add space); held mail then arrives at the next retry.")
RETRIED = ("Keeps the message queued and retries with back-off (Postfix: every 5 minutes at "
           "first, doubling up to about an hour) until the queue lifetime (Postfix "
           "maximal_queue_lifetime: 5 days by default), then bounces it to the sender.")


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


def streak(domain: str = "disk-full.example", code: str = "431", text: str = STOREDRV,
           since: float = NOW - 600, attempts: int = 27) -> Streak:
    return Streak(domain, code, "disk-full", since, NOW - 60, attempts, text, True)


def source(lines: int = 1083, up: int = 1, last: float = NOW - 5) -> SourceStats:
    stats = SourceStats()
    stats.lines_read, stats.up, stats.last_line_time = lines, up, last
    return stats


def render(classifier, active=(), recent=(), sources=None, formats=None) -> str:
    sources = {"/var/log/mail.log": source()} if sources is None else sources
    return render_status_page(Status(sources, list(active), list(recent), NOW), classifier,
                              formats=formats or {"/var/log/mail.log": "postfix"},
                              routes=["/api/v1/deferrals"], now=NOW)


def test_a_persistent_deferral_is_explained_from_the_catalog(classifier):
    text = page_text(render(classifier, [streak()]))
    assert "Persistent deferrals now (1)" in text
    assert ("disk-full.example 431 4.3.1 system_full severity high Deferring since "
            "2023-11-14 22:13:20 UTC (10 min ago), 27 attempts, the last at 2023-11-14 22:22:20 "
            "UTC (1 min ago); rule disk-full.") in text
    assert f"Last reply: {STOREDRV}" in text
    assert "What it means Exchange's mailbox store is out of disk space (STOREDRV)" in text
    assert ("How bad high: mail to a whole domain is held or refused and will not recover until "
            "someone acts") in text
    assert f"What to do (your side) {DISK_FULL_SENDER}" in text
    assert f"On the receiving side {DISK_FULL_RECIPIENT}" in text
    assert f"What happens next {RETRIED}" in text


def test_a_reply_text_without_its_code_is_explained_by_the_streak_s_code(classifier):
    text = page_text(render(classifier, [streak(text="Please try later")]))
    assert ("What it means the receiving server is out of disk space, and it will not recover by "
            "itself: someone must free space there") in text
    assert "disk-full.example 431 system_full severity high" in text  # no enhanced code
    assert "Last reply: Please try later" in text


def test_a_deferral_without_a_reply_code_shows_no_code(classifier):
    text = page_text(render(classifier, [streak(
        "unreachable.example", "none", "connect to 192.0.2.1[192.0.2.1]:25: Connection refused")]))
    assert "unreachable.example network severity medium Deferring since" in text
    assert ("What it means no SMTP conversation with the receiving server, or it broke off - "
            "connection refused, timed out, host unreachable, connection lost") in text


def test_remote_text_is_escaped_everywhere(classifier):
    hostile = '431 4.3.1 <script>alert("x")</script><img src=x onerror=alert(1)> & more'
    html = render(
        classifier, [streak(text=hostile)],
        [RecentDomain("disk-full.example", 3, NOW - 60, "431", "4.3.1", "system_full", hostile)],
        sources={"/var/log/<b>mail</b>.log": source()},
        formats={"/var/log/<b>mail</b>.log": "post<i>fix"})
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "<b>" not in html and "<i>" not in html
    escaped = ("431 4.3.1 &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x "
               "onerror=alert(1)&gt; &amp; more")
    assert html.count(escaped) == 2  # the flag's last reply, the last hour's table
    assert "/var/log/&lt;b&gt;mail&lt;/b&gt;.log" in html
    text = page_text(html)
    assert f"Last reply: {hostile}" in text


def test_the_last_hour_lists_the_top_domains_with_their_latest_reply(classifier):
    recent = [RecentDomain("busy.example", 12, NOW - 120, "421", "4.7.0", "rate_limited",
                           "421 4.7.0 slow down", "google"),
              RecentDomain("dead.example", 3, NOW - 30, None, None, "network",
                           "connect to x: Connection refused", "other")]
    html = render(classifier, recent=recent)
    text = page_text(html)
    assert ("domain deferrals last reply reason answered by last deferral last reply text "
            "busy.example 12 421 4.7.0 rate_limited: ") in text
    # issue 15: the provider that answered, named, with its postmaster page; none of them: -
    assert ("Google (Gmail, Google Workspace) ( postmaster page ) 2023-11-14 22:21:20 UTC "
            "421 4.7.0 slow down") in text
    assert '<a href="https://support.google.com/a/answer/3726730" rel="noreferrer">' in html
    assert "Connection refused" in text and " - 2023-11-14 22:22:50 UTC connect to x" in text
    assert "2023-11-14 22:21:20 UTC 421 4.7.0 slow down dead.example 3 no reply code network: " \
        in text


def test_nothing_to_show_is_said_plainly(classifier):
    text = page_text(render(classifier, sources={}))
    assert ("Persistent deferrals now (0) None: no domain's server keeps deferring mail with the "
            "same reply.") in text
    assert "Top deferring domains, last hour No deferral logged in the last hour." in text
    assert "No source is followed." in text


def test_the_sources_table(classifier):
    sources = {"/var/log/mail.log": source(), "/var/log/exim4/mainlog": source(0, 0, 0.0)}
    text = page_text(render(classifier, sources=sources, formats={
        "/var/log/mail.log": "auto", "/var/log/exim4/mainlog": "exim"}))
    assert ("source format state lines read last line read (or following began) "
            "/var/log/exim4/mainlog exim down 0 never "
            "/var/log/mail.log auto (not detected yet) up 1083 2023-11-14 22:23:15 UTC (5 s ago)"
            ) in text


def test_links_to_metrics_api_and_health(classifier):
    html = render(classifier)
    assert ('<nav><a href="/metrics">Metrics</a><a href="/api/v1/deferrals">/api/v1/deferrals</a>'
            '<a href="/-/healthy">Health</a></nav>') in html


def test_more_flags_than_shown_point_to_the_api(classifier):
    active = [streak(f"d{i:03d}.example", since=NOW - 600 + i) for i in range(MAX_FLAGS + 2)]
    html = render(classifier, active)
    assert html.count('<article class="flag') == MAX_FLAGS
    assert "d049.example" in html and "d050.example" not in html  # the oldest streaks first
    assert "2 more: see /api/v1/deferrals" in page_text(html)


# -- served -------------------------------------------------------------------------------------

def get(url: str, auth: str | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def test_the_exporter_serves_it_behind_basic_auth_with_a_strict_policy(tmp_path):
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(f"basic_auth_users:\n  admin: '{hashed}'\n")
    log = tmp_path / "mail.log"
    log.write_text("")
    with exporters() as start:
        exporter = start(local_config(tmp_path, log_files=[str(log)], log_format="postfix",
                                      web_config_file=str(web)))
        exporter.step()
        base = f"http://127.0.0.1:{exporter.server.server_address[1]}"
        assert get(base + "/")[0] == 401
        good = "Basic " + base64.b64encode(b"admin:secret").decode()
        status, headers, body = get(base + "/", good)
    assert (status, headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    text = page_text(body)
    assert "Persistent deferrals now (0)" in text
    assert f"{log} postfix up 0 " in text
