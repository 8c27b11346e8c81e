"""Golden expositions: what the exporter exposes after reading each real corpus log whole, kept in
``tests/golden/<log>.prom`` and reviewed in diffs (as mtail's ``testdata/*.golden`` and
node_exporter's ``collector/fixtures``). ``tests/test_golden.py`` compares them, on the compiled
and on the pure-Python path.

    python -m tests.golden      # rewrite them, after a change meant to change what is exposed

Each is made in a child process (``TZ=UTC``: the logs' traditional stamps are read in it, and
the exporter picks its Postfix path at start) by the real ``Exporter``, reading the log from its
start to its end (``pump``, ``drain``), then one exposition (``generate_latest``). Two values
depend on the run, not the log, and are written as names: the wall-clock time the last line was
read, and which Postfix scan ran (``bounce_exporter_build_info``'s ``accelerated``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .corpus import REPO

GOLDEN = Path(__file__).resolve().parent / "golden"
LOGS = ("postfix-3min", "exim-3min", "opensmtpd-3min")  # ../shared/corpus/real/<name>.log

_CHILD = """\
import os, sys, tempfile
from prometheus_client import CollectorRegistry, generate_latest
from bounce_exporter.app import Exporter
from bounce_exporter.config import load_config
state = os.path.join(tempfile.mkdtemp(), "state.json")
config = load_config(None, {"log_files": [sys.argv[1]], "from_start": True, "queue_command": "",
                            "listen_address": "127.0.0.1:0", "state_file": state})
exporter = Exporter(config, registry=CollectorRegistry())
exporter.pipeline.pump()
exporter.pipeline.drain()
sys.stdout.write(generate_latest(exporter.registry).decode())
exporter.wakeup.stop()
"""

_RUN_DEPENDENT = [
    (re.compile(r"^(bounce_exporter_last_line_timestamp_seconds\{[^}]*\}) \S+$", re.MULTILINE),
     r"\1 WALL_CLOCK_OF_THE_LAST_LINE"),
    (re.compile(r'accelerated="(?:true|false)"'), 'accelerated="EITHER"'),
]


def exposition(name: str, *, pure: bool = False) -> str:
    """The exposition after reading ``../shared/corpus/real/<name>.log`` whole (the source label
    is that relative path: the clone and shared/ side by side, as in CI)."""
    env = {**os.environ, "TZ": "UTC", "BOUNCE_EXPORTER_PURE_PYTHON": "1" if pure else ""}
    text = subprocess.run([sys.executable, "-c", _CHILD, f"../shared/corpus/real/{name}.log"],
                          cwd=REPO, env=env, capture_output=True, text=True, check=True,
                          timeout=120).stdout
    for pattern, name_of_it in _RUN_DEPENDENT:
        text = pattern.sub(name_of_it, text)
    return text


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name in LOGS:
        path = GOLDEN / f"{name}.prom"
        text = exposition(name)
        changed = not path.exists() or path.read_text() != text
        path.write_text(text)
        print(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines"
              f"{', changed' if changed else ''}")


if __name__ == "__main__":
    main()
