"""Connections until their request head is complete, in one thread; then a bounded worker pool.

The serving thread accepts, runs each TLS handshake without blocking (HANDSHAKE_TIMEOUT after the
connect) and reads until the blank line that ends the request head (REQUEST_TIMEOUT after the
connect, MAX_HEAD bytes at most). Only a complete head is handed over (``ready``), to be answered
by a pool of worker threads. So a client that connects and sends nothing, or half a request (slowloris), holds a
file descriptor and a buffer for at most REQUEST_TIMEOUT, never a thread; and a connection closed
before its head is complete is closed here: nothing is rendered, nothing is written. At most
MAX_WAITING connections wait for their head: a new one beyond that closes the one waiting longest
(a real client sends its head within milliseconds of connecting, a slow one is the oldest).
While MAX_ANSWERING connections handed over are not closed yet, nothing more is accepted: new
connections wait in the listen backlog (so all of it stays below 1,024 file descriptors).

Plain HTTP sent to the TLS port gets a 400 in clear text (as Go's servers do) and is closed.
"""

from __future__ import annotations

import logging
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # seconds from the connect for a client to finish its TLS handshake
REQUEST_TIMEOUT = 30.0  # seconds from the connect for a client to send its request line and headers
MAX_HEAD = 65536  # bytes of request line and headers
MAX_WAITING = 256  # connections waiting for their request head
MAX_ANSWERING = 512  # connections handed over and not closed yet
SWEEP = 0.25  # seconds between looks for connections past their deadline
PLAIN_HTTP_TO_TLS = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
_HEAD_END = re.compile(rb"\n\r?\n")
_PEEK, _HANDSHAKE, _HEAD, _DONE = range(4)


@dataclass
class Conn:
    """A connection with its complete request head, handed to a worker."""

    sock: socket.socket
    addr: Any
    head: bytes
    verdict: Any = None  # the password check's answer when made before a worker took it
    closed: Callable[[], None] | None = None  # called once, at close()
    _done: bool = field(default=False, init=False)

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()
        if self.closed is not None:
            self.closed()


@dataclass
class _Waiting:
    sock: socket.socket
    addr: Any
    connected: float
    phase: int
    events: int = selectors.EVENT_READ
    buf: bytearray | None = None


class Acceptor:
    """The serving thread's loop (``run``) until ``stop``."""

    def __init__(self, listener: socket.socket, context: ssl.SSLContext | None,
                 peer_allowed: Callable[[dict | None], bool], ready: Callable[[Conn], None]):
        self._listener = listener
        self._context = context
        self._peer_allowed = peer_allowed
        self._ready = ready
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[int, _Waiting] = {}  # by file descriptor, in the order of connecting
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._answering = 0  # connections handed over and not closed yet
        self._listening = False

    def run(self) -> None:
        self._listener.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            next_sweep = time.monotonic() + SWEEP
            while not self._stop.is_set():
                self._listen(self._answering < MAX_ANSWERING)
                for key, _ in self._selector.select(SWEEP):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._wake_r.recv(4096)
                    elif key.data is not None:
                        self._advance(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + SWEEP
        finally:
            for waiting in list(self._waiting.values()):
                self._close(waiting, "server stopping")
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
            self._done.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already stopped
        self._done.wait(timeout)

    def waiting(self) -> int:
        return len(self._waiting)

    def _listen(self, on: bool) -> None:
        if on != self._listening:
            self._listening = on
            if on:
                self._selector.register(self._listener, selectors.EVENT_READ)
            else:
                self._selector.unregister(self._listener)
                log.debug("%d connections being answered: accepting again when one closes",
                          MAX_ANSWERING)

    def _closed(self) -> None:
        with self._lock:
            self._answering -= 1
            wake = self._answering == MAX_ANSWERING - 1
        if wake:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass  # stopped

    def _accept(self) -> None:
        for _ in range(64):
            if self._answering >= MAX_ANSWERING:
                return
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # out of file descriptors: make room, try again later
                log.warning("cannot accept a connection: %s", err)
                if self._waiting:
                    self._close(next(iter(self._waiting.values())), "closed to make room")
                time.sleep(0.05)
                return
            sock.setblocking(False)
            if len(self._waiting) >= MAX_WAITING:
                self._close(next(iter(self._waiting.values())),
                            f"closed: {MAX_WAITING} connections waiting for a request")
            waiting = _Waiting(sock, addr, time.monotonic(),
                               _PEEK if self._context is not None else _HEAD)
            self._waiting[sock.fileno()] = waiting
            self._selector.register(sock, selectors.EVENT_READ, waiting)

    def _advance(self, waiting: _Waiting) -> None:
        try:
            if waiting.phase == _PEEK:
                self._peek(waiting)
            if waiting.phase == _HANDSHAKE:
                self._handshake(waiting)
            if waiting.phase == _HEAD:
                self._read(waiting)
        except OSError as err:  # resets, TLS errors
            self._close(waiting, f"{type(err).__name__}: {err}")

    def _peek(self, waiting: _Waiting) -> None:
        assert self._context is not None
        try:
            first = waiting.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        if first != b"\x16":  # not a TLS handshake record
            if first.isalpha():
                waiting.sock.recv(65536)
                waiting.sock.send(PLAIN_HTTP_TO_TLS)
            self._close(waiting, "plain HTTP or garbage on the TLS port" if first else "closed")
            return
        self._selector.unregister(waiting.sock)
        waiting.sock = self._context.wrap_socket(waiting.sock, server_side=True,
                                                 do_handshake_on_connect=False)
        self._selector.register(waiting.sock, waiting.events, waiting)
        waiting.phase = _HANDSHAKE

    def _handshake(self, waiting: _Waiting) -> None:
        sock = waiting.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(waiting, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(waiting, selectors.EVENT_WRITE)
            return
        if not self._peer_allowed(sock.getpeercert()):
            log.info("%s: client certificate not in client_allowed_sans", waiting.addr[0])
            self._close(waiting, "refused")
            return
        waiting.phase = _HEAD

    def _read(self, waiting: _Waiting) -> None:
        """Read what there is (TLS may hold bytes that no longer show on the socket)."""
        buf = waiting.buf = waiting.buf if waiting.buf is not None else bytearray()
        while True:
            try:
                chunk = waiting.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                self._want(waiting, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._want(waiting, selectors.EVENT_WRITE)
                return
            if not chunk:
                self._close(waiting, "closed before the end of its request head")
                return
            start = max(0, len(buf) - 2)
            buf += chunk
            if _HEAD_END.search(buf, start):
                self._hand_over(waiting, bytes(buf))
                return
            if len(buf) > MAX_HEAD:
                self._close(waiting, f"request head over {MAX_HEAD} bytes")
                return

    def _want(self, waiting: _Waiting, events: int) -> None:
        if waiting.events != events:
            waiting.events = events
            self._selector.modify(waiting.sock, events, waiting)

    def _hand_over(self, waiting: _Waiting, head: bytes) -> None:
        self._forget(waiting)
        waiting.sock.setblocking(True)
        with self._lock:
            self._answering += 1
        self._ready(Conn(waiting.sock, waiting.addr, head, closed=self._closed))

    def _sweep(self, now: float) -> None:
        for waiting in list(self._waiting.values()):
            if waiting.phase in (_PEEK, _HANDSHAKE):
                if now - waiting.connected >= HANDSHAKE_TIMEOUT:
                    self._close(waiting, f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s")
            elif now - waiting.connected >= REQUEST_TIMEOUT:
                self._close(waiting, f"no complete request within {REQUEST_TIMEOUT:g} s")

    def _forget(self, waiting: _Waiting) -> None:
        waiting.phase = _DONE
        self._waiting.pop(waiting.sock.fileno(), None)
        try:
            self._selector.unregister(waiting.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, waiting: _Waiting, why: str) -> None:
        log.debug("%s: %s", waiting.addr[0] if waiting.addr else "?", why)
        self._forget(waiting)
        waiting.sock.close()


class Pool:
    """``size`` threads taking items from a queue and calling ``work``."""

    def __init__(self, name: str, size: int, work: Callable[[Any], None]):
        self._queue: queue.Queue = queue.Queue()
        self._work = work
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
                         for n in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Any) -> None:
        self._queue.put(item)

    def stop(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._work(item)
            except Exception:  # work() handles its own errors; this is a bug
                log.exception("error in the %s pool", self._threads[0].name.rsplit("-", 1)[0])
