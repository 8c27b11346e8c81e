"""The HTTP server under load and abuse (issue 18), and HEAD (issue 14).

- 200 concurrent scrapers and a wrong-password flood from another address, over TLS with basic
  auth: every right-password scrape answers 200 in under 2 s, its password checked once;
- half-sent and silent connections (slowloris) hold no thread, do not delay a scrape, and closing
  them renders nothing (the scrape callback, which writes the state file, is not called); a head
  trickled past its deadline is cut; the oldest waiting connection makes room for a new one;
- at most WORKERS requests are answered at once, the others wait and are answered after; beyond
  MAX_ANSWERING connections being answered, new ones wait in the listen backlog;
- the listen backlog; resets give no traceback; ``Server:`` without the version before auth;
- bcrypt: the dummy hash for unknown users at the configured cost, checks limited per client;
- HEAD answered as GET without the body; HEAD of /metrics does not scrape.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import ssl
import struct
import subprocess
import threading
import time

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Counter

from bounce_exporter import __version__
from bounce_exporter.exposition import connections, webconfig
from bounce_exporter.exposition.http import BACKLOG, WORKERS, start_server
from bounce_exporter.exposition.webconfig import CLIENT_BURST, BasicAuth, Verdict, hash_cost

from .e2e.requirements import require
from .helpers import wait_until
from .test_web_tls import PASSWORD, basic, client_context, get, make_pki

COST = 10  # a bcrypt check takes tens of ms: a flood that reached bcrypt would show
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(COST)).decode()
GOOD = basic("prometheus", PASSWORD)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


class Scrapes:
    """The scrape callback (the app's writes the state file): counts its calls."""

    def __init__(self, gate: threading.Event | None = None):
        self.calls = 0
        self.running = 0
        self.gate = gate
        self.lock = threading.Lock()
        self.registry = CollectorRegistry()
        Counter("bounce_test_events", "A counter.", registry=self.registry).inc(3)

    def __call__(self):
        with self.lock:
            self.calls += 1
            self.running += 1
        try:
            if self.gate is not None:
                assert self.gate.wait(30)
            return self.registry
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def serve(tmp_path):
    """serve(scrapes, web_config_yaml or None) -> the started server (stopped at teardown)."""
    servers = []

    def start(scrapes: Scrapes, web: str | None = None):
        path = None
        if web is not None:
            path = tmp_path / f"web-{len(servers)}.yml"
            path.write_text(web)
        server = start_server("127.0.0.1:0", CollectorRegistry(), scrape=scrapes,
                              web_config_file=str(path) if path else None)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def tls_auth(pki, hashed: str = HASH) -> str:
    return (f"tls_server_config:\n  cert_file: {pki.server_crt}\n  key_file: {pki.server_key}\n"
            f"basic_auth_users:\n  prometheus: '{hashed}'\n")


def port_of(server) -> int:
    return server.server_address[1]


def plain(server, method: str = "GET", path: str = "/metrics", auth: str | None = None):
    """(status, headers, body) over plain HTTP."""
    conn = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": auth} if auth else {})
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def count_checks(monkeypatch) -> list[bytes]:
    """The passwords bcrypt is asked to check, in order."""
    checked: list[bytes] = []
    real = webconfig.bcrypt.checkpw
    monkeypatch.setattr(webconfig.bcrypt, "checkpw",
                        lambda password, hashed: checked.append(password) or real(password, hashed))
    return checked


# -- load ------------------------------------------------------------------------------------

async def _request(port: int, context: ssl.SSLContext, auth: str,
                   local: str = "127.0.0.1") -> tuple[int, float]:
    """(status, seconds from connect to the end of the answer) of one GET /metrics."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   local_addr=(local, 0))
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
                 "Connection: close\r\n\r\n".encode())
    try:
        data = await reader.read()
    finally:
        writer.close()
    return int(data.split(b" ", 2)[1]), time.monotonic() - started


async def _load(port: int, context: ssl.SSLContext, scrapers: int, rounds: int, flooders: int):
    done = asyncio.Event()
    right: list[tuple[int, float]] = []
    flood: list[int] = []

    async def scraper() -> None:
        for _ in range(rounds):
            right.append(await asyncio.wait_for(_request(port, context, GOOD), 20))

    async def flooder(n: int) -> None:
        attempt = 0
        while not done.is_set():
            attempt += 1
            status, _ = await asyncio.wait_for(
                _request(port, context, basic("prometheus", f"guess {n} {attempt}"),
                         local="127.0.0.2"), 20)
            flood.append(status)

    flooding = [asyncio.create_task(flooder(n)) for n in range(flooders)]
    await asyncio.sleep(0.3)  # the flood is on before the first right password comes
    await asyncio.gather(*(scraper() for _ in range(scrapers)))
    done.set()
    await asyncio.gather(*flooding)
    return right, flood


def test_200_concurrent_scrapers_and_a_password_flood_over_tls_each_answer_under_2s(
        pki, serve, monkeypatch):
    checked = count_checks(monkeypatch)
    scrapes = Scrapes()
    server = serve(scrapes, tls_auth(pki))
    started = time.monotonic()
    right, flood = asyncio.run(_load(port_of(server), client_context(pki), scrapers=200,
                                     rounds=3, flooders=40))
    seconds = time.monotonic() - started
    assert [status for status, _ in right] == [200] * 600
    slowest = max(took for _, took in right)
    print(f"slowest right-password scrape {slowest:.2f} s, {len(flood)} flood requests, "
          f"{len(checked)} bcrypt checks in {seconds:.1f} s")
    assert slowest < 2.0, f"slowest right-password scrape {slowest:.2f} s"
    assert scrapes.calls == 600  # the flood rendered nothing
    assert set(flood) == {401, 429}, flood  # checked (401) until its budget ran out (429)
    assert checked.count(PASSWORD.encode()) == 1  # 200 concurrent first scrapes: one check
    # the flood's address: CLIENT_BURST checks, then CLIENT_RATE (1) a second
    assert len(checked) - 1 <= CLIENT_BURST + seconds + 1, (len(checked), seconds)


def test_at_most_WORKERS_requests_are_answered_at_once_the_others_wait(serve):
    gate = threading.Event()
    scrapes = Scrapes(gate)
    server = serve(scrapes)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(plain(server)[0]))
               for _ in range(WORKERS + 4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: scrapes.running == WORKERS, 10, "the workers busy")
    time.sleep(0.3)  # the 4 others would show by now
    assert (scrapes.running, scrapes.calls) == (WORKERS, WORKERS)
    gate.set()
    for thread in threads:
        thread.join(20)
    assert results == [200] * (WORKERS + 4)
    assert scrapes.calls == WORKERS + 4


def _listen_queue(server) -> list[str]:
    """ss's line for the listening socket: state, Recv-Q (connections not accepted), backlog."""
    require("ss", "the queues of a listening socket are read with ss (iproute2)")
    return subprocess.run(["ss", "-ltnH", f"sport = :{port_of(server)}"], capture_output=True,
                          text=True, check=True, timeout=10).stdout.split()


def test_beyond_MAX_ANSWERING_open_connections_new_ones_wait_in_the_backlog(serve, monkeypatch):
    monkeypatch.setattr(connections, "MAX_ANSWERING", 2)
    gate = threading.Event()
    scrapes = Scrapes(gate)
    server = serve(scrapes)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(plain(server)[0]))
               for _ in range(5)]
    for thread in threads[:2]:
        thread.start()
    wait_until(lambda: scrapes.running == 2, 10, "two scrapes under way")
    for thread in threads[2:]:
        thread.start()
    wait_until(lambda: _listen_queue(server)[1] == "3", 10, "3 connections not accepted")
    assert (scrapes.calls, server.waiting()) == (2, 0)
    gate.set()
    for thread in threads:
        thread.join(20)
    assert results == [200] * 5
    assert _listen_queue(server)[1] == "0"


def test_the_listen_backlog_is_128(serve):
    server = serve(Scrapes())
    out = _listen_queue(server)
    assert BACKLOG == 128
    assert out[:3] == ["LISTEN", "0", "128"], out


# -- slowloris ---------------------------------------------------------------------------------

def _half_sent(port: int, count: int, context: ssl.SSLContext | None) -> list[socket.socket]:
    socks: list[socket.socket] = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        head = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {GOOD}\r\nX-N: {n}\r\n"
        sock.sendall(head.encode()[: 20 + n % 40])  # never the blank line that ends a head
        socks.append(sock)
    return socks


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_half_sent_requests_hold_no_thread_and_closing_them_renders_nothing(pki, serve, tls):
    scrapes = Scrapes()
    server = serve(scrapes, tls_auth(pki) if tls else None)
    context = client_context(pki) if tls else None
    threads = threading.active_count()
    silent = [socket.create_connection(("127.0.0.1", port_of(server))) for _ in range(50)]
    half = _half_sent(port_of(server), 150, context)
    wait_until(lambda: server.waiting() == 200, 10, "200 connections waiting")
    assert threading.active_count() == threads
    started = time.monotonic()
    if tls:
        status = get(f"https://127.0.0.1:{port_of(server)}/metrics", context, GOOD)[0]
    else:
        status = plain(server)[0]
    assert status == 200
    assert time.monotonic() - started < 2.0
    assert scrapes.calls == 1
    for sock in silent + half:
        sock.close()
    wait_until(lambda: server.waiting() == 0, 10, "the closed connections forgotten")
    time.sleep(0.2)
    assert scrapes.calls == 1  # none of the 200 rendered or wrote anything
    assert threading.active_count() == threads


def test_a_head_trickled_past_the_deadline_is_cut_and_renders_nothing(serve, monkeypatch):
    monkeypatch.setattr(connections, "REQUEST_TIMEOUT", 1.0)
    scrapes = Scrapes()
    server = serve(scrapes)
    sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=5)
    started = time.monotonic()
    closed = None
    for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Padding: " + b"x" * 100:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            closed = time.monotonic() - started
            break
        time.sleep(0.05)
    if closed is None:
        assert sock.recv(100) == b""
        closed = time.monotonic() - started
    sock.close()
    assert 1.0 <= closed < 3.0
    assert scrapes.calls == 0
    assert plain(server)[0] == 200


def test_the_oldest_waiting_connection_makes_room_for_a_new_one(serve, monkeypatch):
    monkeypatch.setattr(connections, "MAX_WAITING", 10)
    server = serve(Scrapes())
    socks = [socket.create_connection(("127.0.0.1", port_of(server))) for _ in range(15)]

    def closed(sock: socket.socket) -> bool:
        sock.setblocking(False)
        try:
            return sock.recv(1) == b""
        except BlockingIOError:
            return False

    wait_until(lambda: sum(map(closed, socks)) >= 5, 5, "5 connections closed")
    time.sleep(0.2)
    assert [closed(sock) for sock in socks] == [True] * 5 + [False] * 10
    assert server.waiting() == 10
    for sock in socks:
        sock.close()
    assert plain(server)[0] == 200


# -- client errors -----------------------------------------------------------------------------

def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, not FIN


def test_200_resets_print_no_traceback(serve, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="bounce_exporter")
    scrapes = Scrapes()
    server = serve(scrapes)
    for n in range(200):
        sock = socket.create_connection(("127.0.0.1", port_of(server)))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + (b"\r\n" if n % 2 else b""))
        _reset(sock)
    assert plain(server)[0] == 200
    wait_until(lambda: server.waiting() == 0, 10)
    time.sleep(0.3)
    assert "Traceback" not in capfd.readouterr().err
    assert [r for r in caplog.records if r.exc_info or r.levelno > logging.DEBUG] == []
    assert scrapes.calls <= 101  # only the 100 complete requests (and ours) could render


def test_handle_error_logs_a_client_error_in_one_debug_line(serve, caplog):
    caplog.set_level(logging.DEBUG, logger="bounce_exporter")
    server = serve(Scrapes())
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        server.handle_error(None, ("192.0.2.1", 5))
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records] == [
        (logging.DEBUG, "192.0.2.1: ConnectionResetError: [Errno 104] Connection reset by peer",
         None)]


# -- Server header -----------------------------------------------------------------------------

def test_the_server_header_names_the_version_only_after_auth(tmp_path, serve):
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    server = serve(Scrapes(), f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    status, headers, _ = plain(server)
    assert (status, headers["Server"]) == (401, "bounce-exporter")
    status, headers, _ = plain(server, "POST")
    assert (status, headers["Server"]) == (501, "bounce-exporter")
    sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=5)
    sock.sendall(b"GET / four words HTTP/1.1\r\n\r\n")  # bad syntax: 400
    answer = sock.recv(65536).decode()
    sock.close()
    assert answer.startswith("HTTP/1.0 400 ")
    assert "\r\nServer: bounce-exporter\r\n" in answer
    status, headers, _ = plain(server, auth=GOOD)
    assert (status, headers["Server"]) == (200, f"bounce-exporter/{__version__}")


# -- bcrypt ------------------------------------------------------------------------------------

def test_the_dummy_hash_for_unknown_users_has_the_configured_cost(monkeypatch):
    known = bcrypt.hashpw(b"pw", bcrypt.gensalt(5))
    auth = BasicAuth({"a": known, "b": bcrypt.hashpw(b"pw", bcrypt.gensalt(4))})
    assert hash_cost(known) == 5
    assert hash_cost(auth.dummy_hash) == 5  # the highest configured cost
    hashes: list[bytes] = []
    real = webconfig.bcrypt.checkpw
    monkeypatch.setattr(webconfig.bcrypt, "checkpw",
                        lambda password, hashed: hashes.append(hashed) or real(password, hashed))
    assert auth.check(basic("nobody", "pw")) is None
    assert auth.check(basic("a", "wrong")) is None
    assert [hash_cost(h) for h in hashes] == [5, 5]
    assert hashes[0] is auth.dummy_hash


def test_password_checks_are_limited_per_client_and_a_remembered_one_costs_none(monkeypatch):
    checked = count_checks(monkeypatch)
    now = [100.0]
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))
    auth = BasicAuth({"prometheus": hashed}, clock=lambda: now[0])
    assert auth.verdict(GOOD, "10.0.0.1") == Verdict("prometheus")
    wrong = [auth.verdict(basic("prometheus", f"guess {n}"), "10.0.0.1") for n in range(6)]
    assert wrong == [Verdict()] * 4 + [Verdict(throttled=True)] * 2
    assert len(checked) == 5  # the right one and 4 guesses: CLIENT_BURST
    assert auth.verdict(GOOD, "10.0.0.1") == Verdict("prometheus")  # remembered: no check
    assert auth.verdict(basic("prometheus", "other"), "10.0.0.2") == Verdict()  # another client
    assert len(checked) == 6
    now[0] += 1.0  # one more check a second
    assert auth.verdict(basic("prometheus", "again"), "10.0.0.1") == Verdict()
    assert auth.verdict(basic("prometheus", "and again"), "10.0.0.1") == Verdict(throttled=True)
    assert len(checked) == 7
    assert auth.check_key(GOOD) is None  # remembered
    assert auth.check_key(basic("prometheus", "x")) is not None
    assert auth.check_key("Bearer x") is None  # a 401 without a check


def test_a_throttled_client_gets_429_with_retry_after(serve, monkeypatch):
    monkeypatch.setattr(webconfig, "CLIENT_BURST", 1.0)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    server = serve(Scrapes(), f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    assert plain(server, auth=basic("prometheus", "guess 1"))[0] == 401
    status, headers, body = plain(server, auth=basic("prometheus", "guess 2"))
    assert (status, headers["Retry-After"], headers["Server"]) == (429, "1", "bounce-exporter")
    assert body == b"Too many password checks from this address: retry later\n"


# -- HEAD --------------------------------------------------------------------------------------

def test_head_is_answered_like_get_without_a_body_and_does_not_scrape(serve):
    scrapes = Scrapes()
    server = serve(scrapes)
    status, headers, body = plain(server, "HEAD", "/metrics")
    assert (status, body, scrapes.calls) == (200, b"", 0)
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert "Content-Length" not in headers
    for path in ("/", "/-/healthy", "/nope"):
        head = plain(server, "HEAD", path)
        got = plain(server, "GET", path)
        assert head[0] == got[0]
        assert head[2] == b""
        assert head[1]["Content-Length"] == got[1]["Content-Length"] == str(len(got[2]))
        assert head[1]["Content-Type"] == got[1]["Content-Type"]
    assert plain(server, "GET", "/metrics")[0] == 200
    assert scrapes.calls == 1


def test_head_needs_the_password_too(pki, serve):
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    server = serve(Scrapes(), f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    status, headers, body = plain(server, "HEAD", "/metrics")
    assert (status, headers["WWW-Authenticate"], body) == (401, "Basic", b"")
    assert plain(server, "HEAD", "/metrics", GOOD)[0] == 200
