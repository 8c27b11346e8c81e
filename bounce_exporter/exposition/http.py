"""Exposition over HTTP: /metrics, a landing page at /, /-/healthy, and JSON routes added by the app.

/metrics encodes what ``scrape()`` returns (the app's: it takes a snapshot, saves it, and returns
the exposition of that snapshot; see persistence.keeper), else the registry as it is. HEAD is
answered as GET without the body; HEAD of /metrics renders nothing (no Content-Length, no scrape,
so nothing is saved either).

With a web configuration (``--web.config.file``, see webconfig): TLS and basic auth on every path.

Under load (see connections): one thread accepts, runs the TLS handshakes without blocking and
reads each request head to its end, with deadlines; only then is the request answered by one of
WORKERS threads (the listen backlog is BACKLOG). Requests whose password needs a bcrypt check go
through CHECKERS threads first, one check for all requests with the same credentials, so a flood
of wrong passwords waits there, not in front of the scrapes whose password is remembered. Client
errors (resets, broken pipes, timeouts) are one line at debug level; ``Server:`` names the version
only in answers to authenticated requests.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from bounce_exporter import __version__
from bounce_exporter.exposition.connections import REQUEST_TIMEOUT, Acceptor, Conn, Pool
from bounce_exporter.exposition.webconfig import (
    MAX_BCRYPT_AT_ONCE,
    BasicAuth,
    Verdict,
    WebConfig,
    load_web_config,
    peer_allowed,
)

log = logging.getLogger(__name__)

LANDING_PAGE = """<!DOCTYPE html>
<html><head><title>bounce-exporter</title></head>
<body>
<h1>bounce-exporter {version}</h1>
<p>Deferrals and bounces of your mail, per recipient domain and SMTP reply.</p>
<ul>
<li><a href="{metrics}">Metrics</a></li>
{extra}<li><a href="/-/healthy">Health</a></li>
</ul>
</body></html>
"""

# The status page (see status_page) runs no script and loads nothing from elsewhere: say so.
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'"

JsonRoute = Callable[[], object]
Page = Callable[[], str]  # renders "/" instead of LANDING_PAGE
Scrape = Callable[[], Collector]  # what to encode for one request to the telemetry path

BACKLOG = 128  # the listen backlog: connections the kernel holds before they are accepted
WORKERS = 8  # threads answering requests whose head is complete
CHECKERS = MAX_BCRYPT_AT_ONCE  # threads checking passwords (bcrypt) before a worker answers


def parse_listen_address(address: str) -> tuple[str, int]:
    """``:39431`` → ("", 39431); ``127.0.0.1:9`` → ("127.0.0.1", 9); ``[::1]:9`` → ("::1", 9)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not a listen address: {address!r} (use host:port or :port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Server(HTTPServer):
    request_queue_size = BACKLOG
    registry: CollectorRegistry
    scrape: Scrape | None = None
    telemetry_path: str
    json_routes: dict[str, JsonRoute]
    page: Page | None = None
    web_config: WebConfig = WebConfig()
    auth: BasicAuth | None = None
    _acceptor: Acceptor | None = None
    _closing = False

    def start(self) -> threading.Thread:
        """The pools, and the serving thread (accepting, reading request heads)."""
        self._workers = Pool("http-worker", WORKERS, self._answer)
        self._checkers = Pool("http-auth", CHECKERS, self._check)
        self._checks: dict[bytes, list[Conn]] = {}  # requests waiting for a check, by credentials
        self._checks_lock = threading.Lock()
        tls = self.web_config.tls
        context = tls.context if tls is not None else None
        self._acceptor = Acceptor(self.socket, context,
                                  lambda cert: tls is None or peer_allowed(tls, cert), self._ready)
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        assert self._acceptor is not None, "start() makes the acceptor"
        self._acceptor.run()

    def shutdown(self) -> None:
        """Stop accepting and reading; connections waiting for their request head are closed."""
        if self._acceptor is not None:
            self._acceptor.stop()

    def server_close(self) -> None:
        self.shutdown()
        self._closing = True
        if self._acceptor is not None:
            self._workers.stop()
            self._checkers.stop()
        super().server_close()

    def waiting(self) -> int:
        """Connections waiting for the end of their request head."""
        return self._acceptor.waiting() if self._acceptor is not None else 0

    def handle_error(self, request, client_address) -> None:
        """One line at debug level for a client's error; a traceback (logged) for ours."""
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            log.debug("%s: %s: %s", client_address[0], type(err).__name__, err)
        else:
            log.exception("%s: error answering a request", client_address[0])

    def _ready(self, conn: Conn) -> None:
        """A complete request head: to the password checkers if it needs bcrypt, else a worker."""
        key = self.auth.check_key(_authorization(conn.head)) if self.auth is not None else None
        if key is None:
            self._workers.submit(conn)
            return
        with self._checks_lock:
            waiting = self._checks.setdefault(key, [])
            waiting.append(conn)
            if len(waiting) > 1:
                return  # the check under way answers it too
        self._checkers.submit(key)

    def _check(self, key: bytes) -> None:
        assert self.auth is not None
        with self._checks_lock:
            first = self._checks[key][0]
        verdict = Verdict()  # 401, should the check fail (a bug: the pool logs it)
        try:
            verdict = self.auth.verdict(_authorization(first.head), first.addr[0])
        finally:
            with self._checks_lock:
                waiting = self._checks.pop(key)
            for conn in waiting:
                conn.verdict = verdict
                self._workers.submit(conn)

    def _answer(self, conn: Conn) -> None:
        try:
            if not self._closing:
                self.RequestHandlerClass(conn, conn.addr, self)
        except Exception:  # noqa: BLE001 - handle_error logs it: one line, or a traceback for a bug
            self.handle_error(conn, conn.addr)
        finally:
            conn.close()


def _authorization(head: bytes) -> str | None:
    """The first Authorization header of a request head (as http.client reads headers)."""
    for line in head.split(b"\n")[1:]:
        if not line.strip():
            break
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"authorization":
            return value.strip().decode("iso-8859-1")
    return None


class _Handler(BaseHTTPRequestHandler):
    """One request, its head already read (``request`` is a connections.Conn)."""

    server: _Server
    request: Conn
    authenticated = False  # the Server header names the version only then

    def setup(self) -> None:
        self.connection = self.request.sock
        self.connection.settimeout(REQUEST_TIMEOUT)  # for the answer
        self.rfile = io.BytesIO(self.request.head)
        self.wfile = self.connection.makefile("wb")

    def version_string(self) -> str:
        return f"bounce-exporter/{__version__}" if self.authenticated else "bounce-exporter"

    def do_HEAD(self) -> None:
        self.do_GET()  # _send leaves out the body, _metrics renders nothing

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        if path == self.server.telemetry_path:
            self._metrics()
        elif path == "/" and self.server.page is not None:
            self._send(200, "text/html; charset=utf-8", self.server.page().encode(),
                       {"Content-Security-Policy": PAGE_POLICY})
        elif path == "/":
            extra = "".join(f'<li><a href="{p}">{p}</a></li>\n' for p in self.server.json_routes)
            page = LANDING_PAGE.format(version=__version__, metrics=self.server.telemetry_path,
                                       extra=extra)
            self._send(200, "text/html; charset=utf-8", page.encode())
        elif path == "/-/healthy":
            self._send(200, "text/plain; charset=utf-8", b"Healthy\n")
        elif path in self.server.json_routes:
            body = json.dumps(self.server.json_routes[path](), indent=2) + "\n"
            self._send(200, "application/json", body.encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"Not found\n")

    def _authorized(self) -> bool:
        """True, or False with the 401 (or 429: too many password checks) sent."""
        auth = self.server.auth
        if auth is not None:
            verdict = self.request.verdict or auth.verdict(self.headers.get("Authorization"),
                                                           self.client_address[0])
            if verdict.throttled:
                log.debug("%s: 429 for %s", self.address_string(), self.path)
                self._send(429, "text/plain; charset=utf-8",
                           b"Too many password checks from this address: retry later\n",
                           {"Retry-After": "1"})
                return False
            if verdict.user is None:
                log.debug("%s: 401 for %s", self.address_string(), self.path)
                self._send(401, "text/plain; charset=utf-8", b"Unauthorized\n",
                           {"WWW-Authenticate": "Basic"})
                return False
        self.authenticated = True
        return True

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        if self.command == "HEAD":  # headers only: no scrape, so nothing saved
            self._send(200, content_type, b"", length=False)
            return
        scrape = self.server.scrape
        body = encoder(scrape() if scrape is not None else self.server.registry)
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        self._send(200, content_type, body, headers)

    def _send(self, status: int, content_type: str, body: bytes,
              headers: dict[str, str] | None = None, *, length: bool = True) -> None:
        """The answer; to a HEAD without its body (``length``: send Content-Length)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for name, value in {**self.server.web_config.headers, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def start_server(address: str, registry: CollectorRegistry, *, telemetry_path: str = "/metrics",
                 json_routes: dict[str, JsonRoute] | None = None,
                 web_config: WebConfig | None = None,
                 web_config_file: str | None = None, scrape: Scrape | None = None,
                 page: Page | None = None) -> _Server:
    """Bind and serve in a daemon thread; raises OSError if the address cannot be bound.

    ``web_config`` (or ``web_config_file``, read with load_web_config: ConfigError if bad) adds
    TLS and basic auth; neither means plain HTTP without auth. ``scrape``: see the module
    docstring. ``page``: the HTML of "/" (else the landing page)."""
    if web_config is None and web_config_file:
        web_config = load_web_config(web_config_file)
    host, port = parse_listen_address(address)
    server_class = _Server
    if ":" in host:
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), _Handler)
    server.registry = registry
    server.scrape = scrape
    server.telemetry_path = telemetry_path
    server.json_routes = dict(json_routes or {})
    server.page = page
    server.web_config = web_config or WebConfig()
    server.auth = server.web_config.authenticator()
    server.start()
    return server
