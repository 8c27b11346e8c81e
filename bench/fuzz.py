"""Fuzz the compiled Postfix scan's C core with libFuzzer, AddressSanitizer and UBSan.

    python -m bench.fuzz --seconds 600          # the long run (10 minutes)
    python -m bench.fuzz --seconds 20           # the smoke test (tests/test_speedups.py)

Builds fuzz/fastscan_fuzz.c with bounce_exporter/parsers/fastscan_core.c (clang
``-fsanitize=fuzzer,address,undefined``; Debian 12: ``apt-get install -y clang
libclang-rt-14-dev``), seeds it with the corpus logs cut into small blocks and the Postfix format
samples, then runs it for the given time on every CPU asked (``--jobs``). Leak detection is on.
A crash, a leak, a sanitizer report or a failed record check stops it: the input that did it is
written to the work folder, and the exit status is not 0. The last line printed is libFuzzer's
final statistics (``stat::number_of_executed_units``...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "bounce_exporter" / "parsers" / "fastscan_core.c"
HARNESS = REPO / "fuzz" / "fastscan_fuzz.c"
CORPUS = REPO.parent / "shared" / "corpus"
TOKENS = [
    "status=", ": removed", ": to=<", ", relay=", ", delay=", ", delays=", ", dsn=", ", orig_to=<",
    ", conn_use=", "status=sent (", "status=deferred (", "status=bounced (", "status=SOFTBOUNCE",
    "host ", " said: ", " refused to talk to me: ", "250 2.0.0 ", "431-4.3.1 ", "relay=none",
    "postfix/smtp[", "postfix-out/relay/smtp: ", "Nov 28 12:22:37 ", "2026-11-28T12:07:58.123+01:00 ",
    "[127.0.0.1]:25", "\r\n", "\n", "relay=none, ", "(connect to ", "lost connection with ",
    "conversation with ", "H=", "mx.example.com.[",
]


def clang() -> str | None:
    return shutil.which("clang") or shutil.which("clang-14")


def build(work: Path) -> Path:
    compiler = clang()
    if compiler is None:
        raise SystemExit("clang is not installed (Debian 12: apt-get install -y clang "
                         "libclang-rt-14-dev)")
    binary = work / "fastscan_fuzz"
    subprocess.run([compiler, "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                    "-fno-sanitize-recover=undefined", f"-I{CORE.parent}", str(HARNESS),
                    str(CORE), "-o", str(binary)], check=True)
    return binary


def seeds(folder: Path) -> None:
    """Small blocks of real lines: the corpus logs in runs of 12 lines, the format samples."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for log in sorted((CORPUS / "real").glob("*.log")):
        lines = log.read_bytes().splitlines(keepends=True)
        for start in range(0, len(lines), 12):
            (folder / f"seed-{n:05d}").write_bytes(b"".join(lines[start:start + 12]))
            n += 1
    samples = CORPUS / "format-samples.jsonl"
    if samples.exists():
        for row in samples.read_text().splitlines():
            line = json.loads(row).get("line", "")
            (folder / f"seed-{n:05d}").write_bytes(line.encode("utf-8", "replace") + b"\n")
            n += 1


def escape(token: str) -> str:
    """A dictionary entry's quoting: printable ASCII as it is, anything else as \\xNN."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\x{ord(c):02x}"
                   for c in token)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=1, help="fuzzing processes (default 1)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bounce-fuzz"),
                        help="folder for the binary, corpus and crash inputs (default: %(default)s)")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    binary = build(work)
    corpus = work / "corpus"
    if not corpus.exists():
        seeds(corpus)
    tokens = work / "tokens.dict"
    tokens.write_text("".join(f'"{escape(t)}"\n' for t in TOKENS))
    command = [str(binary), f"-max_total_time={args.seconds}", "-max_len=4096",
               "-detect_leaks=1", f"-dict={tokens}", f"-artifact_prefix={work}/",
               "-print_final_stats=1", str(corpus)]
    if args.jobs > 1:
        command[1:1] = [f"-jobs={args.jobs}", f"-workers={args.jobs}"]
    print(" ".join(command), flush=True)
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    return subprocess.run(command, cwd=work, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
