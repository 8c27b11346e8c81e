"""Exposition over HTTP: /metrics, a landing page at /, /-/healthy, and JSON routes added by the app.

/metrics encodes what ``scrape()`` returns (the app's: it takes a snapshot, saves it, and returns
the exposition of that snapshot; see persistence.keeper), else the registry as it is.

With a web configuration (``--web.config.file``, see webconfig): TLS and basic auth on every path.
Each connection's TLS handshake runs in that connection's own thread, with a timeout, so a slow or
plain-HTTP client cannot hold up the others; plain HTTP sent to the TLS port gets a 400 answer in
clear text (as Go's servers do) and the connection is closed.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from bounce_exporter import __version__
from bounce_exporter.exposition.webconfig import BasicAuth, WebConfig, load_web_config, peer_allowed

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

HANDSHAKE_TIMEOUT = 10.0  # seconds for a client to send its TLS hello and finish the handshake
REQUEST_TIMEOUT = 30.0  # seconds for a client to send its request line and headers
PLAIN_HTTP_TO_TLS = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")


def parse_listen_address(address: str) -> tuple[str, int]:
    """``:39431`` → ("", 39431); ``127.0.0.1:9`` → ("127.0.0.1", 9); ``[::1]:9`` → ("::1", 9)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not a listen address: {address!r} (use host:port or :port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    scrape: Scrape | None = None
    telemetry_path: str
    json_routes: dict[str, JsonRoute]
    page: Page | None = None
    web_config: WebConfig = WebConfig()
    auth: BasicAuth | None = None

    def finish_request(self, request, client_address) -> None:
        tls = self.web_config.tls
        if tls is None or tls.context is None:
            super().finish_request(request, client_address)
            return
        conn = self._handshake(request, client_address)
        if conn is None:
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()

    def _handshake(self, sock: socket.socket, client_address) -> ssl.SSLSocket | None:
        """The TLS connection, or None (answered or closed) for plain HTTP, a failed handshake,
        a client certificate outside client_allowed_sans, or a client that sends nothing."""
        tls = self.web_config.tls
        assert tls is not None and tls.context is not None
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
            if first != b"\x16":  # not a TLS handshake record
                if first.isalpha():
                    sock.recv(65536)
                    sock.sendall(PLAIN_HTTP_TO_TLS)
                log.debug("%s: plain HTTP or garbage on the TLS port", client_address[0])
                return None
            conn = tls.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError as err:
            log.debug("%s: %s", client_address[0], err)
            return None
        try:
            conn.do_handshake()
            if not peer_allowed(tls, conn.getpeercert()):
                log.info("%s: client certificate not in client_allowed_sans", client_address[0])
                conn.close()
                return None
        except OSError as err:  # ssl.SSLError, timeouts, resets
            log.debug("%s: TLS handshake failed: %s", client_address[0], err)
            conn.close()
            return None
        return conn


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"bounce-exporter/{__version__}"
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        auth = self.server.auth
        if auth is not None and auth.check(self.headers.get("Authorization")) is None:
            log.debug("%s: 401 for %s", self.address_string(), self.path)
            self._send(401, "text/plain; charset=utf-8", b"Unauthorized\n",
                       {"WWW-Authenticate": "Basic"})
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

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        scrape = self.server.scrape
        body = encoder(scrape() if scrape is not None else self.server.registry)
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        self._send(200, content_type, body, headers)

    def _send(self, status: int, content_type: str, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**self.server.web_config.headers, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
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
    # a short poll interval: shutdown() waits up to one interval for the serving thread
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="http", daemon=True)
    thread.start()
    return server
