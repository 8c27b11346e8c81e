"""Exposition over HTTP: /metrics, a landing page at /, /-/healthy, and JSON routes added by the app."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from bounce_exporter import __version__

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

JsonRoute = Callable[[], object]


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
    telemetry_path: str
    json_routes: dict[str, JsonRoute]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"bounce-exporter/{__version__}"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == self.server.telemetry_path:
            self._metrics()
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
        body = encoder(self.server.registry)
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
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


def start_server(address: str, registry: CollectorRegistry, *, telemetry_path: str = "/metrics",
                 json_routes: dict[str, JsonRoute] | None = None) -> _Server:
    """Bind and serve in a daemon thread; raises OSError if the address cannot be bound."""
    host, port = parse_listen_address(address)
    server_class = _Server
    if ":" in host:
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), _Handler)
    server.registry = registry
    server.telemetry_path = telemetry_path
    server.json_routes = dict(json_routes or {})
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return server
