"""A real Prometheus server for end-to-end tests: scrape given targets, evaluate given rule files,
and answer queries through its HTTP API.

    lab = PrometheusLab({"bounce-exporter": ["127.0.0.1:39431"]}, rule_files=[ALERTS]).start()
    try:
        lab.wait_for_targets_up()
        lab.wait_for(lambda: lab.query("up == 1"), timeout=20, what="a scrape")
        print(lab.alerts())
    finally:
        lab.stop()

It listens on 127.0.0.1:<free port>, keeps its TSDB and generated prometheus.yml in a temporary
folder (removed by stop() unless a workdir was given), scrapes and evaluates every second, and
writes its own log to <workdir>/prometheus.log (shown in every failure message). Nothing here is
specific to the exporter's rules or metrics, so a dashboard test can run any panel's expression
with query() / query_range().
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import yaml

from .requirements import find_binary


class PrometheusError(AssertionError):
    """Prometheus did not start, exited, or its API answered with an error."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusLab:
    """One Prometheus process. Not started by the constructor: call start() (returns self).

    targets: ``{job_name: ["host:port", ...]}``, or a plain list of "host:port" scraped as
    job ``job``. rule_files: paths loaded as they are (never copied or edited).
    extra_scrape_configs: more raw scrape_config mappings, appended as given.
    extra_args: more command-line flags (e.g. ``--query.lookback-delta=1m``).
    storage_path: a TSDB folder to serve as it is (e.g. blocks made by promtool), kept by stop();
    by default a fresh one in the workdir.
    """

    def __init__(
        self,
        targets: Mapping[str, Sequence[str]] | Sequence[str] = (),
        rule_files: Iterable[str | Path] = (),
        *,
        job: str = "bounce-exporter",
        metrics_path: str = "/metrics",
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        extra_scrape_configs: Iterable[Mapping[str, Any]] = (),
        extra_args: Iterable[str] = (),
        workdir: str | Path | None = None,
        binary: str | None = None,
        storage_path: str | Path | None = None,
    ) -> None:
        self.binary = binary or find_binary("prometheus")
        if self.binary is None:
            raise PrometheusError("prometheus binary not found (apt-get install prometheus)")
        if isinstance(targets, Mapping):
            self.scrape_targets = {name: list(addrs) for name, addrs in targets.items()}
        else:
            self.scrape_targets = {job: list(targets)} if targets else {}
        self.rule_files = [str(Path(p).resolve()) for p in rule_files]
        self.metrics_path = metrics_path
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.extra_scrape_configs = [dict(c) for c in extra_scrape_configs]
        self.extra_args = list(extra_args)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix="bounce-e2e-prometheus-"))
        self.config_path = self.workdir / "prometheus.yml"
        self._own_storage = storage_path is None
        self.storage_path = Path(storage_path) if storage_path is not None else (
            self.workdir / "tsdb")
        self.log_path = self.workdir / "prometheus.log"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The prometheus.yml written at start()."""
        scrape_configs = [
            {"job_name": name, "metrics_path": self.metrics_path,
             "static_configs": [{"targets": addrs}]}
            for name, addrs in self.scrape_targets.items()
        ] + self.extra_scrape_configs
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                # The default 10s would exceed a 1s interval, which Prometheus rejects.
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": self.rule_files,
            "scrape_configs": scrape_configs,
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, attempts: int = 3) -> Self:
        """Write the config, start Prometheus and wait for /-/ready. A port taken between
        free_port() and Prometheus' bind is retried on another port."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        for attempt in range(attempts):
            self.port = free_port()
            if self._own_storage and self.storage_path.exists():
                shutil.rmtree(self.storage_path)
            cmd = [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.storage_path}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Only matter when restoring `for` state or sending to an Alertmanager; keep them
                # short so nothing in a test waits on Prometheus' defaults (10m, 1m).
                "--rules.alert.for-grace-period=1s",
                "--rules.alert.resend-delay=1s",
                "--log.level=info",
                *self.extra_args,
            ]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True)
            try:
                self._wait_ready(timeout)
                return self
            except PrometheusError:
                port_taken = "address already in use" in self.log_text()
                self._terminate()
                if not port_taken or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self.proc.returncode} before being ready\n"
                    f"{self.describe()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise PrometheusError(f"prometheus not ready within {timeout}s\n{self.describe()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; removes the temporary folder it created.
        Returns the exit code (None if it was never started). Safe to call twice."""
        code = self._terminate(timeout)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def _terminate(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- diagnostics -------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self, tail: int = 4000) -> str:
        """Config and the end of Prometheus' log, for failure messages."""
        config = self.config_path.read_text() if self.config_path.exists() else "(not written)"
        return (f"prometheus at {self.url} (workdir {self.workdir})\n--- prometheus.yml\n{config}"
                f"--- prometheus.log (tail)\n{self.log_text()[-tail:]}")

    # -- HTTP API ----------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>?params and return its ``data``; raise PrometheusError on an
        HTTP or API error (e.g. a bad PromQL expression), with Prometheus' own message."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace")
            raise PrometheusError(f"GET {url}: HTTP {err.code}: {text}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
            raise PrometheusError(f"GET {url}: {err}\n{self.describe()}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"GET {url}: {body}")
        return body["data"]

    def query_data(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """/api/v1/query's data: {"resultType": ..., "result": ...}; ``at``: evaluation time
        (Unix seconds; default now)."""
        return self.api("query", query=expr, time=at)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result of an instant query: for a vector, a list of {"metric": {...}, "value":
        [ts, "v"]}; a scalar or string result is returned as a one-element list of that form
        (with an empty "metric")."""
        data = self.query_data(expr, at)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float | str = 1
                    ) -> list[dict[str, Any]]:
        """The result of a range query: a list of {"metric": {...}, "values": [[ts, "v"], ...]}."""
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing; resolved ones are not listed): each with labels
        (incl. alertname), annotations, state, activeAt, value."""
        return self.api("alerts")["alerts"]

    def rules(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Rule groups with each rule's health, lastError and state; ``kind`` "alert" or
        "record" filters."""
        return self.api("rules", type=kind)["groups"]

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with health ("up"/"down"/"unknown") and lastError."""
        return self.api("targets", state="active")["activeTargets"]

    # -- waiting -----------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "",
                 interval: float = 0.2) -> Any:
        """Poll ``predicate`` until it returns something truthy, and return that. Fails with
        Prometheus' log when it exits or after ``timeout`` seconds. PrometheusError raised by the
        predicate (e.g. while a query is not answerable yet) counts as "not yet"."""
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise PrometheusError(f"prometheus is not running while waiting for {what}\n"
                                      f"{self.describe()}")
            try:
                result = predicate()
            except PrometheusError as err:
                result, last_error = None, err
            if result:
                return result
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"timed out after {timeout}s waiting for {what or predicate}"
                    + (f"\nlast error: {last_error}" if last_error else "")
                    + f"\n{self.describe(1500)}")
            time.sleep(interval)

    def wait_for_targets_up(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every configured target has been scraped successfully."""
        expected = sum(len(addrs) for addrs in self.scrape_targets.values())

        def all_up() -> list[dict[str, Any]] | None:
            targets = self.targets()
            if len(targets) >= expected and all(t["health"] == "up" for t in targets):
                return targets
            return None

        return self.wait_for(all_up, timeout, what="every scrape target to be up")

    def check_rules_healthy(self) -> None:
        """Raise if a loaded rule failed to evaluate (health "err")."""
        bad = [(r["name"], r.get("lastError")) for g in self.rules() for r in g["rules"]
               if r.get("health") == "err"]
        if bad:
            raise PrometheusError(f"rules failing to evaluate: {bad}")
