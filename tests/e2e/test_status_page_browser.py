"""End-to-end: the status page at `/` in a real browser (Debian's headless Chromium), from a real
exporter process fed with the demo log (README "Try it": the sample log with its stamps moved to
now, `deploy/demo/demo.yml`), plus three deferrals whose reply text carries a script.

The test checks the text Chromium rendered (`--dump-dom`): disk-full.example flagged, with the
catalog's explanation, the script shown as text and never run; and saves a screenshot
(`status.png`, 1280x1600) in the test's temp folder, kept as a CI artifact. Without Chromium
(`apt-get install chromium`) the test skips, and fails with BOUNCE_EXPORTER_REQUIRE_E2E=1.
"""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ..helpers import page_text, samples, value
from .requirements import find_binary, require

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "sample" / "postfix.log"
DEMO_CONFIG = ROOT / "deploy" / "demo" / "demo.yml"
TIMEOUT = 45.0
# If it ran, the page's title would become "owned" (the script's source does not contain it).
HOSTILE = "431 4.3.1 <script>document.title=['ow','ned'].join('')</script> & try later"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]

STOREDRV = ("host 127.0.0.1[127.0.0.1] said: 431 4.3.1 STOREDRV.Deliver; disk is full and the "
            "server cannot accept new messages (in reply to RCPT TO command)")
DISK_FULL_MEANING = "What it means Exchange's mailbox store is out of disk space (STOREDRV)"
DISK_FULL_SENDER = ("What to do (your side) Nothing to fix on your side, but do not just wait: a "
                    "full disk does not clear by itself. If it lasts more than an hour or two, "
                    "contact the domain's postmaster (by phone or another address: mail to the "
                    "domain is stuck too).")
DISK_FULL_RECIPIENT = ("On the receiving side The receiving server's admin must free disk space "
                       "on the mail store or queue volume (or add space); held mail then arrives "
                       "at the next retry.")


def demo_lines(now: float) -> list[str]:
    """deploy/demo/recent-log.py's lines, the last one 130 s ago, then three deferrals to
    evil.example (125, 65 and 5 s ago) whose reply carries a script."""
    spec = importlib.util.spec_from_file_location(
        "recent_log", ROOT / "deploy" / "demo" / "recent-log.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = module.shift(SAMPLE.read_text().splitlines(), now, 130.0)
    for i, ago in enumerate((125, 65, 5)):
        stamp = datetime.fromtimestamp(now - ago, UTC).isoformat(timespec="microseconds")
        lines.append(f"{stamp} mx1 postfix/smtp[14397]: E{i}A5512444: to=<user900{i}@evil.example>"
                     ", relay=127.0.0.1[127.0.0.1]:2525, delay=0.02, delays=0/0/0/0.01, dsn=4.3.1, "
                     f"status=deferred (host 127.0.0.1[127.0.0.1] said: {HOSTILE} (in reply to "
                     "RCPT TO command))")
    return lines


def chromium(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                           *args], capture_output=True, text=True, timeout=120, check=False)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", data[16:24])


def test_the_status_page_in_chromium(tmp_path, run_exporter):
    require("chromium", "the browser test needs Debian's chromium (apt-get install chromium)")
    binary = find_binary("chromium")
    assert binary is not None
    lines = demo_lines(time.time())
    log = tmp_path / "mail.log"
    log.write_text("\n".join(lines) + "\n")
    exporter = run_exporter(["--config.file", str(DEMO_CONFIG), "--log.file", str(log),
                             "--log.from-start", "--state.file", str(tmp_path / "state.json")])

    def ready(text: str) -> bool:
        found = samples(text)
        return (value(found, "bounce_exporter_lines_read_total", source=str(log)) == len(lines)
                and value(found, "bounce_persistent_deferral", domain="evil.example",
                          code="431") == 1)

    exporter.wait_for_metrics(ready, TIMEOUT)
    url = f"http://127.0.0.1:{exporter.port}/"

    dumped = chromium(binary, tmp_path, "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    dom = dumped.stdout
    assert "<title>bounce-exporter status</title>" in dom
    assert "owned" not in dom  # the remote reply's script never ran
    assert "<script" not in dom.lower()  # ... and is no element: text only
    text = page_text(dom)
    assert "Persistent deferrals now (4)" in text
    assert ("disk-full.example 431 4.3.1 system_full severity high Deferring since") in text
    assert "27 attempts" in text
    assert f"Last reply: {STOREDRV}" in text
    assert DISK_FULL_MEANING in text
    assert DISK_FULL_SENDER in text
    assert DISK_FULL_RECIPIENT in text
    assert f"Last reply: host 127.0.0.1[127.0.0.1] said: {HOSTILE} (in reply to RCPT TO " \
        "command)" in text
    assert "disk-full.example 27 431 4.3.1 system_full: the receiving server is out of " \
        "storage" in text  # the last hour's table
    assert f"{log} postfix up {len(lines)} " in text

    shot = tmp_path / "status.png"
    taken = chromium(binary, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", url)
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert png_size(shot) == (1280, 1600)
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
    print(f"status page screenshot kept in {shot}")
