"""TLS and basic auth on the exporter's HTTP server (``--web.config.file``, exporter-toolkit
format): a real HTTPS client (urllib with an ssl context) against start_server, with
certificates made by the ``openssl`` command for each test session.

- HTTPS with the server's certificate verified against the test CA; every path behind basic auth,
  401 with ``WWW-Authenticate: Basic`` for no, a wrong, or an unknown user's password;
- plain HTTP to the TLS port gets a clear 400 and the server keeps serving; so does a client that
  connects and sends nothing, or fails the handshake;
- client certificates for each client_auth_type, client_allowed_sans;
- a bad web config is one ConfigError naming every problem, and exit code 2 from the CLI.
"""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Counter

from bounce_exporter.cli import main
from bounce_exporter.config import load_config
from bounce_exporter.errors import ConfigError
from bounce_exporter.exposition import webconfig
from bounce_exporter.exposition.http import start_server
from bounce_exporter.exposition.webconfig import BasicAuth, load_web_config

from .e2e.requirements import require

PASSWORD = "s3cret pass:word"  # a space and a colon: only the first ':' splits user and password
# Cost 4 (the minimum) keeps the tests fast; the hash format is the same as at cost 12.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


# -- certificates ------------------------------------------------------------------------------

@dataclass
class Pki:
    """PEM files in one folder: ca.crt signs server.crt (SAN IP:127.0.0.1, DNS:localhost);
    clients-ca.crt signs client.crt (SAN DNS:prometheus.test) and other-client.crt
    (DNS:intruder.test); rogue-ca.crt signs rogue-client.crt (DNS:prometheus.test)."""

    folder: Path

    def __getattr__(self, name: str) -> str:  # pki.server_crt -> ".../server.crt"
        stem, _, ext = name.rpartition("_")
        return str(self.folder / f"{stem.replace('_', '-')}.{ext}")


def _openssl(folder: Path, *args: str) -> None:
    result = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"openssl {' '.join(args)}:\n{result.stderr}"


def _ca(folder: Path, name: str) -> None:
    _openssl(folder, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _leaf(folder: Path, name: str, ca: str, san: str, usage: str) -> None:
    _openssl(folder, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    ext = folder / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n"
                   "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n")
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey",
             f"{ca}.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", ext.name)


def make_pki(folder: Path) -> Pki:
    """Create the certificates (needs the openssl command; skips or fails without it)."""
    require("openssl", "the TLS tests make their certificates with the openssl command")
    folder.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "clients-ca", "rogue-ca"):
        _ca(folder, ca)
    _leaf(folder, "server", "ca", "IP:127.0.0.1,DNS:localhost", "serverAuth")
    _leaf(folder, "client", "clients-ca", "DNS:prometheus.test", "clientAuth")
    _leaf(folder, "other-client", "clients-ca", "DNS:intruder.test", "clientAuth")
    _leaf(folder, "rogue-client", "rogue-ca", "DNS:prometheus.test", "clientAuth")
    return Pki(folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- a server and a client ---------------------------------------------------------------------

def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("bounce_test_events", "A counter for the TLS tests.", registry=reg).inc(3)
    return reg


@pytest.fixture
def serve(tmp_path):
    """serve(web_config_yaml) -> https base URL of a started server (stopped at teardown)."""
    servers = []

    def start(text: str) -> str:
        path = tmp_path / f"web-{len(servers)}.yml"
        path.write_text(text)
        server = start_server("127.0.0.1:0", registry(), web_config_file=str(path),
                              json_routes={"/api/v1/deferrals": list})
        servers.append(server)
        return f"https://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def tls_config(pki: Pki, extra: str = "", users: bool = True) -> str:
    text = f"tls_server_config:\n  cert_file: {pki.server_crt}\n  key_file: {pki.server_key}\n"
    text += extra
    if users:
        text += f"basic_auth_users:\n  prometheus: '{HASH}'\n  other: '{HASH}'\n"
    return text


def client_context(pki: Pki, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca_crt)
    if cert:
        context.load_cert_chain(getattr(pki, f"{cert}_crt"), getattr(pki, f"{cert}_key"))
    return context


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(url: str, context: ssl.SSLContext | None, auth: str | None = None,
        timeout: float = 5.0) -> tuple[int, dict[str, str], str]:
    """(status, headers, body); HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


GOOD = basic("prometheus", PASSWORD)


# -- TLS and basic auth ------------------------------------------------------------------------

def test_metrics_over_https_with_basic_auth(pki, serve):
    url = serve(tls_config(pki))
    status, headers, body = get(url + "/metrics", client_context(pki), GOOD)
    assert status == 200, body
    assert "bounce_test_events_total 3.0" in body
    assert headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("auth", [
    None,
    basic("prometheus", "wrong"),
    basic("nobody", PASSWORD),
    basic("prometheus", PASSWORD + "x"),
    "Bearer " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode(),
    "Basic not-base64!",
    "Basic " + base64.b64encode(b"no-colon").decode(),
], ids=["none", "wrong-password", "unknown-user", "longer-password", "not-basic", "garbage",
        "no-colon"])
def test_missing_or_wrong_credentials_get_401_with_www_authenticate(pki, serve, auth):
    url = serve(tls_config(pki))
    status, headers, body = get(url + "/metrics", client_context(pki), auth)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Basic"
    assert "bounce_test_events" not in body


@pytest.mark.parametrize("path", ["/metrics", "/", "/-/healthy", "/api/v1/deferrals", "/nope"])
def test_every_path_is_behind_auth(pki, serve, path):
    url = serve(tls_config(pki))
    assert get(url + path, client_context(pki))[0] == 401
    assert get(url + path, client_context(pki), GOOD)[0] == (404 if path == "/nope" else 200)


def test_basic_auth_without_tls(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    server = start_server("127.0.0.1:0", registry(), web_config_file=str(path))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        assert get(url, None)[0] == 401
        assert get(url, None, GOOD)[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_http_server_config_headers_are_sent(pki, serve):
    url = serve(tls_config(pki, users=False) +
                "http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=3600\n")
    status, headers, _ = get(url + "/-/healthy", client_context(pki))
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=3600"


def test_a_successful_check_is_cached_and_a_failed_one_is_not(monkeypatch):
    calls = []
    real = webconfig.bcrypt.checkpw
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", lambda pw, h: calls.append(pw) or real(pw, h))
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert auth.check(GOOD) == "prometheus"
    assert auth.check(GOOD) == "prometheus"
    assert auth.check(GOOD) == "prometheus"
    assert len(calls) == 1
    assert auth.check(basic("prometheus", "wrong")) is None
    assert auth.check(basic("prometheus", "wrong")) is None
    assert len(calls) == 3
    # Unknown users cost a bcrypt check too, so timing does not tell which users exist.
    assert auth.check(basic("nobody", "x")) is None
    assert len(calls) == 4
    # Over bcrypt's 72 bytes: refused, not an exception.
    assert auth.check(basic("prometheus", "x" * 100)) is None


def test_the_cache_is_keyed_by_user_and_password_together():
    auth = BasicAuth({"a": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)),
                      "b": bcrypt.hashpw(b"other", bcrypt.gensalt(4))})
    assert auth.check(basic("a", "pw")) == "a"
    assert auth.check(basic("b", "pw")) is None
    assert auth.check(basic("b", "other")) == "b"


# -- misbehaving clients -----------------------------------------------------------------------

def test_plain_http_to_the_tls_port_gets_400_and_the_server_keeps_serving(pki, serve):
    url = serve(tls_config(pki))
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 400
    assert b"HTTPS server" in response.read()
    conn.close()
    assert get(url + "/metrics", client_context(pki), GOOD)[0] == 200


def test_silent_and_garbage_clients_do_not_block_others(pki, serve):
    url = serve(tls_config(pki))
    port = int(url.rsplit(":", 1)[1])
    silent = socket.create_connection(("127.0.0.1", port))  # connects, never speaks
    garbage = socket.create_connection(("127.0.0.1", port))
    garbage.sendall(b"\x16\x03\x01\x00\x05hello")  # a TLS record header, then nonsense
    try:
        started = time.monotonic()
        assert get(url + "/metrics", client_context(pki), GOOD, timeout=5)[0] == 200
        assert time.monotonic() - started < 3
    finally:
        silent.close()
        garbage.close()
    assert get(url + "/metrics", client_context(pki), GOOD)[0] == 200


def test_a_client_that_does_not_trust_the_certificate_fails_cleanly(pki, serve):
    url = serve(tls_config(pki))
    with pytest.raises(urllib.error.URLError) as err:
        get(url + "/metrics", ssl.create_default_context(), GOOD)  # system CAs only
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)
    assert get(url + "/metrics", client_context(pki), GOOD)[0] == 200


def test_many_clients_at_once(pki, serve):
    url = serve(tls_config(pki))
    results: list[int] = []

    def one() -> None:
        results.append(get(url + "/metrics", client_context(pki), GOOD)[0])

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [200] * 20


# -- client certificates -----------------------------------------------------------------------

def _refused(url: str, context: ssl.SSLContext) -> bool:
    try:
        get(url + "/metrics", context, GOOD)
    except (urllib.error.URLError, ConnectionError, ssl.SSLError):
        return True
    return False


@pytest.mark.parametrize("auth_type, none_ok", [
    ("RequireAndVerifyClientCert", False),
    ("RequireAnyClientCert", False),  # verified against client_ca_file here (Python's ssl)
    ("VerifyClientCertIfGiven", True),
    ("RequestClientCert", True),
])
def test_client_certificates(pki, serve, auth_type, none_ok):
    url = serve(tls_config(pki, f"  client_auth_type: {auth_type}\n"
                                f"  client_ca_file: {pki.clients_ca_crt}\n"))
    assert get(url + "/metrics", client_context(pki, "client"), GOOD)[0] == 200
    assert _refused(url, client_context(pki, "rogue_client"))
    if none_ok:
        assert get(url + "/metrics", client_context(pki), GOOD)[0] == 200
    else:
        assert _refused(url, client_context(pki))
    assert get(url + "/metrics", client_context(pki, "client"), GOOD)[0] == 200


def test_client_allowed_sans(pki, serve):
    url = serve(tls_config(pki, "  client_auth_type: RequireAndVerifyClientCert\n"
                                f"  client_ca_file: {pki.clients_ca_crt}\n"
                                "  client_allowed_sans: [prometheus.test]\n"))
    assert get(url + "/metrics", client_context(pki, "client"), GOOD)[0] == 200
    assert _refused(url, client_context(pki, "other_client"))
    assert get(url + "/metrics", client_context(pki, "client"), GOOD)[0] == 200


def test_no_client_cert_and_request_without_ca_ask_for_none(pki, serve):
    for extra in ("", "  client_auth_type: RequestClientCert\n"):
        url = serve(tls_config(pki, extra))
        assert get(url + "/metrics", client_context(pki), GOOD)[0] == 200


def test_min_version_is_enforced(pki, serve):
    url = serve(tls_config(pki, "  min_version: TLS13\n"))
    old = client_context(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _refused(url, old)
    assert get(url + "/metrics", client_context(pki), GOOD)[0] == 200


# -- bad configurations ------------------------------------------------------------------------

def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_web_config(str(path))
    return err.value.problems


@pytest.mark.parametrize("text, expected", [
    ("tls_server_config: {cert_file: server.crt}\n", ["tls_server_config.key_file: missing"]),
    ("tls_server_config: {key_file: server.key}\n", ["tls_server_config.cert_file: missing"]),
    ("tls_server_config: {cert_file: {crt}, key_file: {key}, client_auth_type: Maybe}\n",
     ["client_auth_type: 'Maybe' is not one of NoClientCert, RequestClientCert"]),
    (("tls_server_config: {cert_file: {crt}, key_file: {key}, client_auth_type: "
     "RequireAndVerifyClientCert}\n"),
     ["client_ca_file: needed with client_auth_type RequireAndVerifyClientCert"]),
    ("tls_server_config: {cert_file: {crt}, key_file: {key}, client_ca_file: {crt}}\n",
     ["client_ca_file: given, but client_auth_type is NoClientCert"]),
    ("tls_server_config: {cert_file: {crt}, key_file: {key}, cipher_suites: [X]}\n",
     ["tls_server_config.cipher_suites: not supported"]),
    ("tls_server_config: {cert_file: {crt}, key_file: {key}, min_version: SSL3}\n",
     ["tls_server_config.min_version: 'SSL3' is not one of TLS10, TLS11, TLS12, TLS13"]),
    ("tls_server_config: {cert_file: missing.crt, key_file: {key}}\n",
     ["cert_file/key_file: cannot load", "missing.crt"]),
    ("tls_server_config: {cert_file: {key}, key_file: {crt}}\n",
     ["cert_file/key_file: cannot load"]),
    ("basic_auth_users: {prometheus: change-me}\n",
     ["basic_auth_users.prometheus: not a bcrypt hash", "bcrypt.hashpw"]),
    ("basic_auth_users: [prometheus]\n", ["basic_auth_users: must map user names"]),
    ("tls_config: {}\n", [("tls_config: unknown key (known: basic_auth_users, http_server_config, "
                          "tls_server_config)")]),
    ("tls_server_config: [cert]\n", ["tls_server_config: must be a mapping"]),
    ("- a list\n", ["the top level must be a mapping"]),
    ("a: [unclosed\n", ["not valid YAML"]),
], ids=["no-key", "no-cert", "auth-type", "verify-without-ca", "ca-without-auth", "go-only-key",
        "version", "missing-file", "swapped", "plain-password", "users-list", "unknown-key",
        "tls-not-mapping", "not-mapping", "bad-yaml"])
def test_a_bad_web_config_names_the_problem(pki, tmp_path, text, expected):
    text = text.replace("{crt}", pki.server_crt).replace("{key}", pki.server_key)
    problems = "\n".join(problems_of(tmp_path, text))
    assert problems.startswith(f"web.config_file / --web.config.file {tmp_path / 'web.yml'}: ")
    for part in expected:
        assert part in problems, problems


def test_every_problem_at_once(tmp_path):
    problems = problems_of(tmp_path, "tls_server_config: {client_auth_type: Maybe}\n"
                                     "basic_auth_users: {a: plain}\nextra: 1\n")
    assert len(problems) == 5, problems  # extra, cert_file, key_file, client_auth_type, a


def test_relative_paths_are_relative_to_the_web_config_file(pki, tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    shutil.copy(pki.server_crt, folder / "server.crt")
    shutil.copy(pki.server_key, folder / "server.key")
    (folder / "web.yml").write_text("tls_server_config: {cert_file: server.crt, "
                                    "key_file: server.key}\n")
    config = load_web_config(str(folder / "web.yml"))
    assert config.tls is not None and config.tls.cert_file == str(folder / "server.crt")


def test_an_empty_file_means_plain_http_without_auth(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("# nothing\n")
    config = load_web_config(str(path))
    assert config.tls is None and config.users == {} and config.authenticator() is None


def test_config_key_and_flag(pki, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(tls_config(pki))
    main_config = tmp_path / "config.yml"
    main_config.write_text(f"web: {{config_file: {web}}}\n")
    assert load_config(str(main_config), {}).web_config_file == str(web)
    assert load_config(None, {"web_config_file": str(web)}).web_config_file == str(web)


def test_cli_exits_2_naming_the_problem(tmp_path, capsys):
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {prometheus: change-me}\n")
    code = main(["serve", "--web.config.file", str(web), "--log.file", str(tmp_path / "x.log"),
                 "--state.file", str(tmp_path / "state.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "basic_auth_users.prometheus: not a bcrypt hash" in err
    code = main(["serve", "--web.config.file", str(tmp_path / "absent.yml"),
                 "--log.file", str(tmp_path / "x.log")])
    assert code == 2
    assert "absent.yml: cannot read" in capsys.readouterr().err
