"""End-to-end: a real Prometheus scrapes the exporter over TLS with basic auth
(``--web.config.file``), as deploy/prometheus/prometheus.yml's commented job describes:
``scheme: https``, ``tls_config.ca_file``, ``basic_auth``; and with mutual TLS
(``client_auth_type: RequireAndVerifyClientCert``, Prometheus' ``tls_config.cert_file``).

Beside the good job, jobs that must fail scrape the same exporter: a wrong password (401), plain
HTTP to the TLS port, no client certificate. They fail with the expected error, and the good job
keeps scraping: a bad client never takes the server down.
"""

from __future__ import annotations

import time
from pathlib import Path

import bcrypt
import pytest

from ..helpers import samples, value
from ..test_web_tls import basic, client_context, get, make_pki
from .conftest_prometheus import make_prometheus  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.e2e

TIMEOUT = 30.0
PASSWORD = "scrape-me"
SAMPLE = Path(__file__).resolve().parents[2] / "config" / "sample" / "postfix.log"
SAMPLE_LINES = 1083


def scrape_job(name: str, port: int, **settings) -> dict:
    return {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            **settings}


@pytest.mark.parametrize("mutual", [False, True], ids=["tls-basic-auth", "mtls-basic-auth"])
def test_prometheus_scrapes_over_tls_with_basic_auth(tmp_path, run_exporter, make_prometheus,  # noqa: F811
                                                     mutual):
    pki = make_pki(tmp_path / "pki")
    # Cost 4: the failing jobs cost a bcrypt check per scrape (failures are not cached), and
    # the test is about the protocol, not the cost.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web = tmp_path / "web-config.yml"
    web.write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki.server_crt}\n  key_file: {pki.server_key}\n"
        + (f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.clients_ca_crt}\n"
           if mutual else "")
        + f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "wrong").write_text("not-" + PASSWORD)

    exporter = run_exporter(["--log.file", str(SAMPLE), "--log.from-start",
                             "--web.config.file", str(web),
                             "--state.file", str(tmp_path / "state.json")])
    url = f"https://127.0.0.1:{exporter.port}/metrics"
    context = client_context(pki, "client" if mutual else None)
    _wait_for_exporter(exporter, url, context)

    tls = {"ca_file": pki.ca_crt}
    if mutual:
        tls |= {"cert_file": pki.client_crt, "key_file": pki.client_key}
    auth = {"username": "prometheus", "password_file": str(tmp_path / "password")}
    jobs = [
        scrape_job("good", exporter.port, scheme="https", tls_config=tls, basic_auth=auth),
        scrape_job("wrong-password", exporter.port, scheme="https", tls_config=tls,
                   basic_auth={**auth, "password_file": str(tmp_path / "wrong")}),
        scrape_job("plain-http", exporter.port, scheme="http", basic_auth=auth),
        scrape_job("no-auth", exporter.port, scheme="https", tls_config=tls),
    ]
    expected_errors = {"wrong-password": ("401",), "plain-http": ("400",), "no-auth": ("401",)}
    if mutual:
        jobs.append(scrape_job("no-client-cert", exporter.port, scheme="https",
                               tls_config={"ca_file": pki.ca_crt}, basic_auth=auth))
        # TLS 1.3: the client learns of the refused handshake as an alert or a reset.
        expected_errors["no-client-cert"] = ("certificate", "reset by peer", "EOF",
                                             "broken pipe")
    # 2s: also the scrape timeout, with room for TLS handshakes on a loaded machine.
    prom = make_prometheus({}, extra_scrape_configs=jobs, scrape_interval="2s")

    def settled():
        targets = {t["labels"]["job"]: t for t in prom.targets()}
        if len(targets) < len(jobs) or any(t["health"] == "unknown" for t in targets.values()):
            return None
        return targets

    targets = prom.wait_for(settled, TIMEOUT, what="every job to be scraped once")
    assert targets["good"]["health"] == "up", targets["good"]
    for job, errors in expected_errors.items():
        assert targets[job]["health"] == "down", targets[job]
        assert any(e in targets[job]["lastError"] for e in errors), (job, targets[job])

    # The data arrives through TLS and auth.
    result = prom.wait_for(
        lambda: prom.query('bounce_exporter_lines_read_total{job="good"}'), TIMEOUT,
        what="the good job's samples")
    assert result[0]["value"][1] == str(SAMPLE_LINES), result
    assert prom.query('up{job="good"}')[0]["value"][1] == "1"

    # The failing jobs keep hitting the server; it keeps serving the good one.
    time.sleep(5)
    assert prom.query('min_over_time(up{job="good"}[5s]) == 1'), prom.targets()
    assert prom.query('count_over_time(up{job="good"}[5s]) >= 2'), prom.targets()
    assert prom.query('max(max_over_time(up{job!="good"}[5s])) == 0'), prom.targets()
    assert get(url, context, basic("prometheus", PASSWORD))[0] == 200
    assert exporter.terminate() == 0, exporter.output()


def _wait_for_exporter(exporter, url: str, context) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        if exporter.proc.poll() is not None:
            pytest.fail(f"exporter exited with {exporter.proc.returncode}\n{exporter.output()}")
        try:
            status, _, body = get(url, context, basic("prometheus", PASSWORD))
            if status == 200 and value(samples(body), "bounce_exporter_lines_read_total",
                                       source=str(SAMPLE)) == SAMPLE_LINES:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"exporter did not answer over TLS within {TIMEOUT}s\n{exporter.output()}")
        time.sleep(0.2)
