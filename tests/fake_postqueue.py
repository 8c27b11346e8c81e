"""A stand-in for ``postqueue -j`` in tests: ``fake_postqueue.py FILE [--sleep SECONDS]``.

Prints FILE (postqueue's format: one JSON object per queued message) and appends a line to
FILE.runs, so that a test can count the runs. Without FILE it fails as postqueue does when Postfix
is down (exit 69, a fatal line on stderr). ``--sleep`` waits first (a hung command)."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    if "--sleep" in argv:
        time.sleep(float(argv[argv.index("--sleep") + 1]))
    with open(f"{path}.runs", "a") as runs:
        runs.write("run\n")
    if not path.exists():
        print("postqueue: fatal: Queue report unavailable - mail system is down", file=sys.stderr)
        return 69
    sys.stdout.write(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
