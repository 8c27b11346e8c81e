"""Small helpers for tests that run an exporter and talk to it over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from bounce_exporter.app import Exporter
from bounce_exporter.config import Config, load_config

from .corpus import REPO

T = TypeVar("T")


def local_config(state_dir: Path, config_file: str | None = None, **settings) -> Config:
    """A configuration (the file's, if given, then ``settings``) that listens on a free loopback
    port and keeps its state file in ``state_dir``; the queue view off (the host's own Postfix
    is no test's business) unless ``queue_command`` is given."""
    return load_config(config_file, {"listen_address": "127.0.0.1:0", "queue_command": "",
                                     "state_file": str(state_dir / "state.json"), **settings})


@contextmanager
def exporters() -> Iterator[Callable[[Config], Exporter]]:
    """``start(config)`` builds and starts an Exporter; each is shut down when the block ends."""
    started: list[Exporter] = []

    def start(config: Config) -> Exporter:
        exporter = Exporter(config)
        exporter.start()
        started.append(exporter)
        return exporter

    try:
        yield start
    finally:
        for exporter in started:
            exporter.shutdown()


def die(exporter: Exporter) -> None:
    """What kill -9 leaves: no shutdown code runs (nothing written after the last scrape)."""
    exporter.server.shutdown()
    exporter.server.server_close()
    exporter.server = None
    exporter.wakeup.stop()
    exporter.pipeline.close()


def start_serving(*args: str) -> tuple[subprocess.Popen, str]:
    """A ``bounce-exporter serve`` process on a free loopback port with these arguments, once
    it answers /-/healthy: (the process, its base URL). Its output is piped."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bounce_exporter", "serve", "--web.listen-address",
         f"127.0.0.1:{port}", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    base = f"http://127.0.0.1:{port}"

    def ready():
        if process.poll() is not None:
            raise AssertionError(f"exporter exited: {process.communicate()}")
        try:
            return http_get(base + "/-/healthy", timeout=1)[0] == 200
        except OSError:
            return False

    wait_until(ready, what="the exporter to serve")
    return process, base


def read_to_end(leader: int) -> bytes:
    """All a pseudo-terminal's leader end gives until its other end is closed (``pty.openpty``)."""
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end is closed: all read
            return drawn
        if not chunk:
            return drawn
        drawn += chunk


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, frozenset of label items): value} of an exposition text."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(exposition) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, what: str = "", *,
               interval: float = 0.05, context: Callable[[], str] = str) -> T:
    """Poll ``predicate`` until it returns something true (returned); fail after ``timeout``
    seconds, with ``context()`` (e.g. a log tail) in the message."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}\n"
                                 f"{context()}")
        time.sleep(interval)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        self._skip += tag in ("style", "script", "title")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "script", "title")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def page_text(html: str) -> str:
    """The text a person reads on an HTML page (not its style, script or title), entities
    decoded, every run of white space one blank."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    return " ".join(" ".join(parser.parts).split())
