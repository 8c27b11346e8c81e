"""The web configuration file (``--web.config.file``): TLS and basic auth, in the format of the
Prometheus exporter-toolkit, so one file can serve node_exporter and bounce-exporter alike.

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to this file's folder
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # default NoClientCert
      client_ca_file: clients-ca.crt
      client_allowed_sans: [prometheus.example.org]  # optional, with a Verify* type
      min_version: TLS12               # TLS10 .. TLS13; default TLS12
      max_version: TLS13
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:                  # user: bcrypt hash
      prometheus: $2b$12$...

Without ``tls_server_config`` the exporter speaks plain HTTP; without ``basic_auth_users`` it asks
for no password. With users, every path needs a password (as with exporter-toolkit).

What Python's ``ssl`` module cannot do differs from exporter-toolkit, on purpose stricter:
``RequireAnyClientCert`` verifies the certificate against ``client_ca_file`` (required), and
``RequestClientCert`` without ``client_ca_file`` asks for no certificate (the exporter never looks
at an unverified one, so it makes no difference). ``cipher_suites``, ``curve_preferences`` and
``prefer_server_cipher_suites`` are Go's names: they are refused rather than silently ignored.
Read once at start: a new certificate takes a restart (the state file keeps the flags).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bcrypt

from bounce_exporter.checks import mapping_at, read_yaml_mapping, unknown_keys
from bounce_exporter.errors import ConfigError

TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "client_allowed_sans",
            "min_version", "max_version"}
GO_ONLY_TLS_KEYS = {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites"}
HTTP_KEYS = {"http2", "headers"}
CLIENT_AUTH_TYPES = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                     "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
_ALIASES = {"RequireClientCert": "RequireAnyClientCert"}  # exporter-toolkit accepts both
_NEEDS_CA = {"RequireAnyClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"}
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
BCRYPT_HASH = re.compile(r"^\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}$")
HASH_HINT = ("make one with: python3 -c 'import bcrypt,getpass; "
             "print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt()).decode())'")


@dataclass
class TLSConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str | None = None
    context: ssl.SSLContext | None = None  # built and checked by load_web_config


@dataclass
class WebConfig:
    path: str | None = None
    tls: TLSConfig | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def authenticator(self) -> BasicAuth | None:
        return BasicAuth(self.users) if self.users else None


def load_web_config(path: str) -> WebConfig:
    """Read and check the file, build the TLS context; ConfigError naming every problem."""
    where = f"web.config_file / --web.config.file {path}"
    problems: list[str] = []
    raw = read_yaml_mapping(path, where, problems)
    if raw is None:
        raise ConfigError(problems)
    unknown_keys(raw, TOP_KEYS, where, problems)
    config = WebConfig(path=path)
    base = os.path.dirname(os.path.abspath(path))
    config.tls = _tls(mapping_at(raw, "tls_server_config", where, problems), base, where, problems)
    http = mapping_at(raw, "http_server_config", where, problems)
    unknown_keys(http, HTTP_KEYS, where, problems, prefix="http_server_config.")
    headers = http.get("headers") or {}
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "\n" not in k + v
            for k, v in headers.items()):
        problems.append(f"{where}: http_server_config.headers: must map header names to strings")
    else:
        config.headers = dict(headers)
    users = raw.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        problems.append(f"{where}: basic_auth_users: must map user names to bcrypt hashes")
        users = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            problems.append(f"{where}: basic_auth_users: {user!r} is not a user name "
                            "(a non-empty string without ':')")
        elif not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed):
            problems.append(f"{where}: basic_auth_users.{user}: not a bcrypt hash "
                            f"($2y$/$2b$/$2a$...); {HASH_HINT}")
        else:
            config.users[user] = hashed.encode()
    if problems:
        raise ConfigError(problems)
    return config


def _tls(raw: dict[str, Any], base: str, where: str, problems: list[str]) -> TLSConfig | None:
    where = f"{where}: tls_server_config"
    for key in sorted(set(raw) & GO_ONLY_TLS_KEYS):
        problems.append(f"{where}.{key}: not supported by bounce-exporter (Go's TLS settings; "
                        "Python's defaults apply): remove it")
    for unknown in sorted(set(raw) - TLS_KEYS - GO_ONLY_TLS_KEYS):
        problems.append(f"{where}.{unknown}: unknown key (known: {', '.join(sorted(TLS_KEYS))})")
    if not any(raw.get(k) for k in ("cert_file", "key_file", "client_auth_type",
                                    "client_ca_file")):
        return None  # no TLS, as with exporter-toolkit
    before = len(problems)

    def path(key: str) -> str | None:
        value = raw.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            problems.append(f"{where}.{key}: must be a file path")
            return None
        return os.path.join(base, value)

    cert, key, ca = path("cert_file"), path("key_file"), path("client_ca_file")
    if cert is None:
        problems.append(f"{where}.cert_file: missing (the server's certificate, PEM)")
    if key is None:
        problems.append(f"{where}.key_file: missing (the server's private key, PEM)")
    auth = raw.get("client_auth_type") or "NoClientCert"
    auth = _ALIASES.get(auth, auth)
    if auth not in CLIENT_AUTH_TYPES:
        problems.append(f"{where}.client_auth_type: {auth!r} is not one of "
                        f"{', '.join(CLIENT_AUTH_TYPES)}")
    elif auth in _NEEDS_CA and ca is None:
        problems.append(f"{where}.client_ca_file: needed with client_auth_type {auth} (the CA "
                        "that signs the clients' certificates)")
    elif auth == "NoClientCert" and ca is not None:
        problems.append(f"{where}.client_ca_file: given, but client_auth_type is NoClientCert "
                        "(set it to RequireAndVerifyClientCert)")
    sans = raw.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        problems.append(f"{where}.client_allowed_sans: must be a list of names")
        sans = []
    elif sans and auth not in ("RequireAndVerifyClientCert", "VerifyClientCertIfGiven"):
        problems.append(f"{where}.client_allowed_sans: needs client_auth_type "
                        "RequireAndVerifyClientCert or VerifyClientCertIfGiven")
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", None)):
        value = raw.get(name) or default
        if value is not None and value not in TLS_VERSIONS:
            problems.append(f"{where}.{name}: {value!r} is not one of "
                            f"{', '.join(TLS_VERSIONS)}")
            value = default
        versions[name] = value
    if len(problems) > before:
        return None
    assert cert is not None and key is not None
    tls = TLSConfig(cert, key, auth, ca, tuple(sans), versions["min_version"],
                    versions["max_version"])
    tls.context = _context(tls, where, problems)
    return tls


def _context(tls: TLSConfig, where: str, problems: list[str]) -> ssl.SSLContext | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = TLS_VERSIONS[tls.min_version]
        if tls.max_version:
            context.maximum_version = TLS_VERSIONS[tls.max_version]
    except (ValueError, ssl.SSLError) as err:
        problems.append(f"{where}: min_version/max_version: {err}")
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except OSError as err:  # ssl.SSLError is an OSError too
        reason = _pem_problem(tls.cert_file, tls.key_file, err) if isinstance(err, ssl.SSLError) \
            else err.strerror or err
        problems.append(f"{where}.cert_file/key_file: cannot load {tls.cert_file} with "
                        f"{tls.key_file}: {reason}")
    if tls.client_auth_type == "RequestClientCert":
        context.verify_mode = ssl.CERT_OPTIONAL if tls.client_ca_file else ssl.CERT_NONE
    elif tls.client_auth_type == "VerifyClientCertIfGiven":
        context.verify_mode = ssl.CERT_OPTIONAL
    elif tls.client_auth_type in ("RequireAnyClientCert", "RequireAndVerifyClientCert"):
        context.verify_mode = ssl.CERT_REQUIRED
    if tls.client_ca_file:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except OSError as err:
            problems.append(f"{where}.client_ca_file: cannot load {tls.client_ca_file}: {err}")
    return context


def _pem_problem(cert_file: str, key_file: str, err: ssl.SSLError) -> str:
    """What OpenSSL's "[SSL] PEM lib (_ssl.c:3905)" means, in words: which file is not PEM, or
    the key not the certificate's."""
    def holds(path: str, marker: bytes) -> bool:
        try:
            with open(path, "rb") as handle:
                return marker in handle.read(1 << 20)
        except OSError:
            return False

    if not holds(cert_file, b"-----BEGIN CERTIFICATE-----"):
        return (f"{cert_file} is not a PEM certificate (no -----BEGIN CERTIFICATE----- line; "
                f"a DER file converts with: openssl x509 -inform der -in {cert_file} -out "
                "server.crt)")
    if not holds(key_file, b"PRIVATE KEY-----"):
        return (f"{key_file} is not a PEM private key (no -----BEGIN PRIVATE KEY----- line, or "
                "it is encrypted)")
    if err.reason == "KEY_VALUES_MISMATCH":
        return f"the key {key_file} does not belong to the certificate {cert_file}"
    return f"{err.reason or err}"


def peer_allowed(tls: TLSConfig, peer_cert: dict | None) -> bool:
    """client_allowed_sans: the verified client certificate names one of them (or none is set)."""
    if not tls.client_allowed_sans:
        return True
    if not peer_cert:  # only possible with VerifyClientCertIfGiven: none given
        return tls.client_auth_type == "VerifyClientCertIfGiven"
    names = {value for _, value in peer_cert.get("subjectAltName", ())}
    return bool(names & set(tls.client_allowed_sans))


@dataclass(frozen=True)
class Verdict:
    """A password check's answer: the user, or None; ``throttled``: not checked (too many checks
    from that client address lately), to be answered 429."""

    user: str | None = None
    throttled: bool = False


MAX_BCRYPT_AT_ONCE = 2  # bcrypt checks running at once (each takes a core for tens of ms)
CLIENT_BURST = 5.0  # bcrypt checks a client address may start at once ...
CLIENT_RATE = 1.0  # ... and then this many more per second
MAX_CLIENTS = 10_000  # client addresses remembered for CLIENT_BURST/CLIENT_RATE


def hash_cost(hashed: bytes) -> int:
    """bcrypt's cost (log2 of its rounds): ``$2b$12$...`` → 12."""
    return int(hashed.split(b"$")[2])


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes. bcrypt is slow by design (tens of
    ms per check), and Prometheus sends the same password every scrape: a successful check is
    remembered, keyed by an HMAC of (user, password) under a per-process random key, so the
    password is not kept in memory; concurrent requests with the same credentials wait for one
    check. At most MAX_BCRYPT_AT_ONCE checks run at once, and a client address (``client``) may
    start CLIENT_BURST checks, then CLIENT_RATE a second: beyond that its answer is ``throttled``
    without a check, so a flood of wrong passwords costs little and a remembered right one none.
    Unknown users cost a bcrypt check too, against a dummy hash at the highest cost of the
    configured ones (no timing oracle for user names)."""

    def __init__(self, users: dict[str, bytes], *, clock: Callable[[], float] = time.monotonic):
        self._users = dict(users)
        self._key = os.urandom(32)
        self._ok: set[bytes] = set()
        self._checking: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()
        self._bcrypt = threading.BoundedSemaphore(MAX_BCRYPT_AT_ONCE)
        self._budget = _Budget(clock)
        cost = max((hash_cost(h) for h in self._users.values()), default=10)
        self.dummy_hash = bcrypt.hashpw(b"not a password", bcrypt.gensalt(cost))

    def check(self, header: str | None) -> str | None:
        """The user name if ``header`` carries a valid user and password, else None."""
        return self.verdict(header).user

    def check_key(self, header: str | None) -> bytes | None:
        """When the answer for ``header`` takes a bcrypt check (not remembered, not garbage):
        the key of its credentials (the same for the same user and password), else None."""
        parsed = self._parse(header)
        if parsed is None:
            return None
        with self._lock:
            return None if parsed[2] in self._ok else parsed[2]

    def verdict(self, header: str | None, client: str | None = None) -> Verdict:
        """The check of ``header``, made for the address ``client`` (None: no per-client limit)."""
        parsed = self._parse(header)
        if parsed is None:
            return Verdict()
        user, password, key = parsed
        while True:
            with self._lock:
                if key in self._ok:
                    return Verdict(user)
                event = self._checking.get(key)
                if event is None:
                    if client is not None and not self._budget.take(client):
                        return Verdict(throttled=True)
                    event = self._checking[key] = threading.Event()
                    break
            event.wait()  # the same credentials are being checked: take their answer if a yes
        ok = False
        try:
            with self._bcrypt:
                ok = self._bcrypt_ok(user, password)
        finally:
            with self._lock:
                if ok:
                    self._ok.add(key)
                del self._checking[key]
            event.set()
        return Verdict(user if ok else None)

    def _parse(self, header: str | None) -> tuple[str, str, bytes] | None:
        """(user, password, cache key), or None when ``header`` is no basic auth at all."""
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        key = hmac.new(self._key, user.encode() + b"\0" + password.encode(),
                       hashlib.sha256).digest()
        return user, password, key

    def _bcrypt_ok(self, user: str, password: str) -> bool:
        hashed = self._users.get(user)
        try:
            return bcrypt.checkpw(password.encode(), hashed or self.dummy_hash) and bool(hashed)
        except ValueError:  # longer than bcrypt's 72 bytes, or a hash bcrypt refuses
            return False


class _Budget:
    """Checks per client address: a bucket of CLIENT_BURST, refilled at CLIENT_RATE a second.
    Called under BasicAuth's lock."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._clients: dict[str, tuple[float, float]] = {}  # address: (tokens, when)

    def take(self, client: str) -> bool:
        now = self._clock()
        tokens, then = self._clients.get(client, (CLIENT_BURST, now))
        tokens = min(CLIENT_BURST, tokens + (now - then) * CLIENT_RATE)
        if tokens < 1:
            self._clients[client] = (tokens, now)
            return False
        if client not in self._clients and len(self._clients) >= MAX_CLIENTS:
            self._forget_full(now)
        self._clients[client] = (tokens - 1, now)
        return True

    def _forget_full(self, now: float) -> None:
        """Forget the addresses whose bucket is full again (the same as unknown); if that is
        not enough, all (an attacker with that many addresses has that many buckets anyway)."""
        self._clients = {client: (tokens, then) for client, (tokens, then) in self._clients.items()
                         if tokens + (now - then) * CLIENT_RATE < CLIENT_BURST}
        if len(self._clients) >= MAX_CLIENTS:
            self._clients.clear()
