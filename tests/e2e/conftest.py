"""Fixtures for the end-to-end lab: a fake remote SMTP server, a private Postfix, the exporter.

Each fixture is a factory; everything it started is stopped at teardown, also when the test
failed. The Postfix maillog and the fake server's record are copied next to the test's tmp
folder at teardown (see the "kept in" line of the output with -rA / on failure).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from .fake_smtp import FakeSMTPServer, free_port
from .postfix_lab import PostfixLab
from .requirements import require

REPO_ROOT = Path(__file__).resolve().parents[2]


def require_fake_smtp() -> None:
    require(lambda: importlib.util.find_spec("aiosmtpd") is not None, "aiosmtpd is not installed")


def require_postfix() -> None:
    for binary in ("postfix", "postconf", "postqueue", "postsuper"):
        require(binary, "the Postfix e2e lab needs the postfix package (apt-get install postfix)")
    require(os.geteuid() == 0, "the Postfix e2e lab must run as root (postfix start needs it)")


@pytest.fixture(scope="module")
def make_fake_smtp() -> Iterator[Callable[..., FakeSMTPServer]]:
    """make_fake_smtp(scenario, **kw) -> started FakeSMTPServer (see fake_smtp.py)."""
    require_fake_smtp()
    with ExitStack() as stack:

        def make(scenario, **kwargs) -> FakeSMTPServer:
            server = FakeSMTPServer(scenario, **kwargs)
            stack.callback(server.stop)
            return server.start()

        yield make


@pytest.fixture(scope="module")
def make_postfix_lab(tmp_path_factory) -> Iterator[Callable[..., PostfixLab]]:
    """make_postfix_lab(relay_port, **kw) -> started PostfixLab relaying everything to
    [127.0.0.1]:relay_port. Stopped (no process left) and removed at teardown; its maillog
    is kept in a pytest tmp folder."""
    require_postfix()
    with ExitStack() as stack:

        def make(relay_port: int, **kwargs) -> PostfixLab:
            lab = PostfixLab(relay_port, **kwargs)
            stack.callback(lab.cleanup)
            stack.callback(_keep_maillog, lab, tmp_path_factory)  # runs before cleanup (LIFO)
            return lab.start()

        yield make


def _keep_maillog(lab: PostfixLab, tmp_path_factory) -> None:
    if lab.maillog.exists():
        keep = tmp_path_factory.mktemp("postfix-lab-maillog")
        shutil.copy2(lab.maillog, keep / "maillog")
        print(f"postfix lab maillog kept in {keep / 'maillog'}")


class ExporterProcess:
    """`python -m bounce_exporter serve ... --web.listen-address 127.0.0.1:<free port>`."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.cmd = [
            sys.executable, "-m", "bounce_exporter", "serve", *args,
            "--web.listen-address", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.stdout_path = workdir / "exporter.stdout"
        self.stderr_path = workdir / "exporter.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )

    def output(self) -> str:
        def tail(path: Path) -> str:
            try:
                return path.read_text(errors="replace")[-4000:]
            except OSError:
                return ""

        return (
            f"cmd: {self.cmd}\nstdout:\n{tail(self.stdout_path)}\nstderr:\n{tail(self.stderr_path)}"
        )

    def scrape(self) -> str | None:
        """The /metrics text, or None if the exporter does not answer (yet)."""
        try:
            with urllib.request.urlopen(self.url, timeout=5) as resp:
                return resp.read().decode("utf-8")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None

    def wait_for_metrics(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Poll /metrics until predicate(text) holds; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"exporter exited with {self.proc.returncode} before being ready\n{self.output()}"
                )
            text = self.scrape()
            if text is not None:
                last = text
                if predicate(text):
                    return text
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"exporter /metrics did not reach the expected state within {timeout}s\n"
                    f"last scrape:\n{(last or '(none)')[-3000:]}\n{self.output()}"
                )
            time.sleep(0.2)

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL and fail if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"exporter ignored SIGTERM for {timeout}s\n{self.output()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def run_exporter(tmp_path) -> Iterator[Callable[[list[str]], ExporterProcess]]:
    """run_exporter(args) -> ExporterProcess; killed at teardown if still running."""
    started: list[ExporterProcess] = []

    def run(args: list[str]) -> ExporterProcess:
        proc = ExporterProcess(args, tmp_path)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
            try:
                proc.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
