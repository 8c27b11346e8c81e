"""The compiled Postfix scan (parsers.accel, bounce_exporter_fastscan) against the pure-Python parser.

The pure-Python ``PostfixParser`` is the oracle: ``FastPostfixParser`` must give the same events, the
same lines not understood (with their reasons), the same parser state (ledger, stamps) and, through
the whole exporter, the same exposition text, on a generated log, on the corpus logs, and on seeded
mutations of both: CRLF endings, invalid UTF-8, NULs and other control bytes, cut and over-long
lines, odd and impossible stamps, a year rollover, bytes flipped at field separators. The mutation
tests read 3 x 160,000 = 480,000 mutated lines of the generated log and 3 x 200 copies of the 1,000
line Postfix corpus log mutated (600,000 lines): 1.08M mutated lines in all.

Without the extension these tests skip; with BOUNCE_EXPORTER_REQUIRE_E2E=1 (CI) they fail, so that
CI shows the extension was built by ``pip install '.[test]'``. The fuzz smoke (libFuzzer with
ASan/UBSan on the C core) needs clang, likewise.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.generate import generate
from bounce_exporter.parsers import accel, make_parser
from bounce_exporter.parsers.postfix import PostfixParser
from bounce_exporter.parsers.postfix_fast import FastPostfixParser
from bounce_exporter.sources.files import FileSource
from tests.corpus import CORPUS
from tests.test_block_parsing import messy_log

REFERENCE = 1_800_000_000.0
REQUIRED = os.environ.get("BOUNCE_EXPORTER_REQUIRE_E2E") == "1"


@pytest.fixture(scope="module")
def compiled():
    module = accel.compiled()
    if module is None:
        message = "the C extension bounce_exporter_fastscan is not installed"
        if REQUIRED:
            pytest.fail(message + ", and BOUNCE_EXPORTER_REQUIRE_E2E=1")
        pytest.skip(message)
    return module


def blocks_of(data: bytes, tmp_path, chunk_size: int = 1 << 20) -> list[bytes]:
    """The blocks the file source hands the parser, and its held last line as one more."""
    path = tmp_path / "mail.log"
    path.write_bytes(data)
    source = FileSource(str(path), from_start=True, chunk_size=chunk_size, max_line_bytes=4096)
    blocks = [block.data for block in source.read_blocks()]
    rest = source.close()
    return blocks + ([b"".join(line + b"\n" for line in rest)] if rest else [])


def run(parser: PostfixParser, blocks: list[bytes]) -> tuple[list, list, dict]:
    events, failures = [], []

    def failed(raw: bytes, error: Exception) -> None:
        failures.append((raw, type(error).__name__, str(error)))

    for block in blocks:
        events += parser.parse_block(block, failed)
    return events, failures, parser.state()


def both(compiled, blocks: list[bytes]) -> tuple[tuple, tuple]:
    return (run(PostfixParser(reference=REFERENCE), blocks),
            run(FastPostfixParser(reference=REFERENCE, scanner=compiled), blocks))


# -- mutations ------------------------------------------------------------------------------------

ODD_STAMPS = [b"Feb 30 10:00:00", b"Jan  6 25:61:61", b"Jan 123 10:00:00", b"jan  6 10:00:00",
              b"Xyz  6 10:00:00", b"Dec 31 23:59:59", b"Jan  1 00:00:00", b"Jan  6 10:00:00.5",
              b"2026-13-01T00:00:00", b"2026-02-30T10:00:00+00:00", b"2026-01-06T10:00:00Z",
              b"2026-01-06T10:00:00.123456+0130", b"2026-01-06T10:00:00+01:0", b"2026-01-06T10:00",
              b"2026-01-06T10:00:00.+00:00", b"9999-12-31T23:59:59-23:59", b"Jan  6 10:00:00.",
              b"2026-01-06T10:00:00.5-05:00", b"2026-01-06T10:00:00.1234567+00:00",
              b"2026-01-06T10:00:00.999999+0530", b"2024-02-29T12:00:00Z", b"2023-02-29T12:00:00Z",
              b"1969-12-31T23:59:59Z", b"2026-01-06T23:59:59+24:00", b"2026-01-06T10:00:60Z",
              b"2100-02-29T00:00:00Z", b"2000-02-29T00:00:00.000001+00:00"]
SEPARATORS = (b", ", b"=", b"<", b">", b"(", b")", b": ", b"[", b"]", b" ")


def mutate(line: bytes, rng: random.Random) -> bytes:
    """One line changed the way real logs and hostile servers change them, or left alone."""
    roll = rng.random()
    if roll < 0.25:
        return line
    if roll < 0.35:
        return line + b"\r"
    if roll < 0.42:
        at = rng.randrange(len(line) + 1)
        return line[:at] + rng.choice([b"\xff", b"\xc3", b"\xc3\xa9", b"\x00", b"\t", b"\x1c",
                                       b"\x0b", b"\x85", b"\xe2\x80\xa8", b"\r"]) + line[at:]
    if roll < 0.50:
        return line[:rng.randrange(len(line) + 1)]
    if roll < 0.53:
        at = rng.randrange(len(line) + 1)
        return line[:at] + b"x" * rng.choice([300, 5000]) + line[at:]
    if roll < 0.63:
        space = line.find(b" ", 16)
        return rng.choice(ODD_STAMPS) + (line[space:] if space >= 0 else b"")
    if roll < 0.80:  # a separator removed, doubled or replaced
        sep = rng.choice(SEPARATORS)
        at = line.find(sep, rng.randrange(len(line) + 1))
        if at < 0:
            return line
        new = rng.choice([b"", sep + sep, b" ", b",", b")", b"(", b"  ", b"@", b"."])
        return line[:at] + new + line[at + len(sep):]
    if roll < 0.90:  # a case or digit changed
        at = rng.randrange(len(line)) if line else 0
        return line[:at] + bytes([rng.randrange(32, 127)]) + line[at + 1:]
    words = [b"status=deferred", b": removed", b" (host x said: 550-5.1.1 no)", b"relay=none",
             b"dsn=4.4.1, ", b"orig_to=<a>, ", b"<", b">", b"SOFTBOUNCE", b"said: 421 4.7.0 "]
    at = rng.randrange(len(line) + 1)
    return line[:at] + rng.choice(words) + line[at:]


def mutated(lines: list[bytes], seed: int, year_rollover: bool = True) -> bytes:
    rng = random.Random(seed)
    out = [mutate(line, rng) for line in lines]
    if year_rollover:  # December, then January: the next year (StampReader's state)
        at = len(out) // 2
        out[at:at] = [(b"Dec 31 23:59:58 mx1 postfix/smtp[2]: R1: to=<a@roll.example>, relay="
                       b"mx.roll.example[192.0.2.7]:25, delay=1, dsn=4.2.0, status=deferred "
                       b"(host mx.roll.example[192.0.2.7] said: 450 4.2.0 later)"),
                      (b"Jan  1 00:00:01 mx1 postfix/smtp[2]: R1: to=<a@roll.example>, relay="
                       b"mx.roll.example[192.0.2.7]:25, delay=1, dsn=2.0.0, status=sent (250 ok)")]
    return b"".join(line + b"\n" for line in out)


# -- the tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [1 << 20, 4096, 333])
@pytest.mark.parametrize("log", ["generated", "corpus", "messy"])
def test_compiled_scan_gives_the_pure_python_events(compiled, tmp_path, log, chunk_size):
    data = {"generated": lambda: generate(40_000, seed=3)[0].encode(),
            "corpus": (CORPUS / "real" / "postfix-3min.log").read_bytes,
            "messy": messy_log}[log]()
    pure, fast = both(compiled, blocks_of(data, tmp_path, chunk_size))
    assert fast == pure
    assert len(pure[0]) > 100, "the log holds delivery events"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_scan_on_mutated_generated_logs(compiled, tmp_path, seed):
    lines = generate(160_000, seed=seed + 10)[0].encode().splitlines()
    pure, fast = both(compiled, blocks_of(mutated(lines, seed), tmp_path))
    assert fast == pure
    assert len(pure[0]) > 10_000 and len(pure[1]) > 1000, "events, and lines not understood"


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_compiled_scan_on_mutated_corpus_logs(compiled, tmp_path, seed):
    logs = sorted((CORPUS / "real").glob("*.log"))
    base = (CORPUS / "real" / "postfix-3min.log").read_bytes().splitlines()
    others = [line for log in logs for line in log.read_bytes().splitlines()][:2000]
    lines = (base * 200)[:200 * len(base)]
    data = mutated(lines, seed) + mutated(others, seed, year_rollover=False)
    pure, fast = both(compiled, blocks_of(data, tmp_path, chunk_size=65536))
    assert fast == pure
    assert len(pure[0]) > 10_000 and len(pure[1]) > 1000


def test_rfc3339_times_are_pythons(compiled):
    """The C core's time of an RFC 3339 stamp is datetime.fromisoformat's, to the last bit: 30,000
    random stamps (days that do not exist, 0 to 7 digits of fraction, offsets, Z, none)."""
    rng = random.Random(8)
    lines = []
    for n in range(30_000):
        stamp = (f"{rng.choice([1969, 1970, 2000, 2024, 2026, 2100, 2200, 2201]):04d}-"
                 f"{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T{rng.randint(0, 24):02d}:"
                 f"{rng.randint(0, 60):02d}:{rng.randint(0, 60):02d}")
        digits = rng.randint(0, 7)
        if digits:
            stamp += "." + "".join(rng.choice("0123456789") for _ in range(digits))
        stamp += rng.choice(["Z", "", f"+{rng.randint(0, 24):02d}:{rng.randint(0, 60):02d}",
                             f"-{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}", "+00:00"])
        lines.append(f"{stamp} mx1 postfix/smtp[2]: Q{n}: to=<a@b.example>, relay=mx.b.example"
                     f"[192.0.2.1]:25, delay=1, dsn=2.0.0, status=sent (250 ok)\n".encode())
    pure, fast = both(compiled, [b"".join(lines)])
    assert fast == pure
    assert 20_000 < len(pure[0]) < 30_000 and pure[1], "stamps read, and stamps refused"


def test_edge_blocks_go_the_pure_python_way(compiled):
    """A block that does not end with a newline (the pipeline never hands one over) is read by
    the pure-Python code, with its behaviour; an empty one gives nothing."""
    line = (b"Nov 28 12:00:00 mx1 postfix/smtp[2]: Q1: to=<a@b.example>, relay=r[192.0.2.1]:25, "
            b"delay=1, dsn=2.0.0, status=sent (250 ok)")
    assert compiled.scan(b"") is None and compiled.scan(line) is None
    for block in (b"", line + b"\r\n", line + b"\n" + line):
        pure, fast = both(compiled, [block])
        assert fast == pure
    assert len(both(compiled, [line + b"\n"])[1][0]) == 1


def delivery(stamp: str, qid: str, status: str = "deferred", extra: str = "") -> bytes:
    reply = "250 2.0.0 Ok" if status == "sent" else "450 4.2.0 later"
    return (f"{stamp} mx1 postfix/smtp[2]: {qid}: to=<a{extra}@roll.example>, relay="
            f"mx.roll.example[192.0.2.7]:25, delay=1, dsn=2.0.0, status={status} "
            f"(host mx.roll.example[192.0.2.7] said: {reply})").encode()


def test_order_kept_between_compiled_and_python_lines(compiled):
    """Within one block, in line order: a stamp read by Python between two read by the
    extension (a December line between two of January 1: the second is a year later, for the
    stamp reader's rule, though its hour is the first's); a ": removed" line of a message
    deferred earlier in the block (the ledger takes it), and one of a message deferred before."""
    lines = [
        delivery("Jan  1 00:00:01", "Q1"),
        delivery("Dec 31 23:59:59", "Q2", extra="\u00e9"),  # not ASCII: Python reads it
        delivery("Jan  1 00:00:02", "Q3"),
        delivery("Jan  1 00:00:03", "Q4"),
        b"Jan  1 00:00:04 mx1 postfix/qmgr[3]: Q4: removed",
        b"Jan  1 00:00:05 mx1 postfix/qmgr[3]: Q0: removed",
        delivery("Jan  1 00:00:06", "Q4", "sent"),
        b"Jan  1 00:00:07 mx1 postfix/qmgr[3]: Q1: removed",
    ]
    before = delivery("Dec 30 10:00:00", "Q0")
    pure, fast = both(compiled, [before + b"\n", b"".join(line + b"\n" for line in lines)])
    assert fast == pure
    events, _, state = pure
    assert [e.queue_id for e in events] == ["Q0", "Q1", "Q2", "Q3", "Q4", "Q4"]
    assert events[3].time - events[1].time > 360 * 86400, "the next year"
    assert [m[0] for m in state["ledger"]["messages"]] == ["Q2", "Q3"]


def test_ledger_asked_through_a_function(compiled):
    """``held`` may be a function answering ``in`` instead of the ledger's dict: the same events
    and ledger."""
    block = b"".join(line + b"\n" for line in (
        delivery("Jan  1 00:00:01", "Q1"), b"Jan  1 00:00:02 mx1 postfix/qmgr[3]: Q1: removed",
        delivery("Jan  1 00:00:03", "Q2"), delivery("Jan  1 00:00:04", "Q2", "sent")))
    pure = PostfixParser(reference=REFERENCE)
    fast = FastPostfixParser(reference=REFERENCE, scanner=compiled)
    events = fast._read(block, lambda qid: qid in fast._pending, fast._stamps.time_of,
                        fast._remember, fast._fallback(block, print))
    assert events == pure.parse_block(block, print) and len(events) == 3
    assert fast.state() == pure.state() and not pure.state()["ledger"]["messages"]


def test_relay_none_hosts_named_in_the_text(compiled):
    """relay=none: the host is the one the text names (find_relay_in_line), read by the extension
    where it can: 20,000 texts of Postfix's words, names and look-alikes (trailing and double
    dots, a digit or an underscore after the last dot, upper case, no bracket), relay= and H=
    inside, and none of them."""
    rng = random.Random(11)
    words = ["connect to ", "Connect To ", "host ", "HOST ", "lost connection with ",
             "conversation with ", "connect  to ", "xhost ", "(host ", "relay=", "H=", "h=", "",
             "delivery temporarily suspended: connect to ", "Host or domain name not found. "]
    names = ["mx.example.com", "MX.Example.COM", "mx.example.com.", "mx..example.com",
             "mx.example.com..", "a.b", "a.1b", "a._b", "_a.b", "-a.b", "a-.b-", "ab", "a.b.c.d",
             "1.2.3.4", "mx.x_y.example", ".mx.example", "mx.example-", ""]
    after = ["[192.0.2.1]:25", "[", "", " [192.0.2.1]", ":25", "]", ".[x]"]
    lines = []
    for n in range(20_000):
        text = "".join(rng.choice(words) + rng.choice(names) + rng.choice(after)
                       + rng.choice(["", ": ", " ", "; ", "x"]) for _ in range(rng.randint(0, 3)))
        lines.append(f"Jan  6 10:00:00 mx1 postfix/smtp[2]: Q{n}: to=<a@b.example>, relay=none, "
                     f"delay=1, dsn=4.4.1, status=deferred ({text})\n".encode())
    pure, fast = both(compiled, [b"".join(lines)])
    assert fast == pure
    relays = {event.relay for event in pure[0]}
    assert {None, "mx.example.com", "a.b"} <= relays and len(pure[0]) == 20_000


def test_lines_counted_by_the_extension(compiled, monkeypatch):
    """count_lines(data) is data.count(b"\\n") (16 bytes at a time, counters summed every 255
    rounds): random bytes of every length around those steps; the exporter's blocks are
    counted with it when the compiled scan runs, with bytes.count when pure Python does."""
    rng = random.Random(12)
    for size in [*range(40), 4079, 4080, 4081, 4096, 65_536 + 7, 1 << 20]:
        data = bytes(rng.choice(b"\n\nab\xff\r") for _ in range(size))
        assert compiled.count_lines(data) == data.count(b"\n")
    assert compiled.count_lines(b"\n" * 100_000) == 100_000
    from bounce_exporter.sources import lines

    monkeypatch.delenv(accel.PURE_PYTHON_ENV, raising=False)
    lines.use_line_counter(accel.line_counter())
    assert lines._count_lines is compiled.count_lines
    assert lines.Block(b"a\nb\n\n", None).lines == 3
    monkeypatch.setenv(accel.PURE_PYTHON_ENV, "1")
    lines.use_line_counter(accel.line_counter())
    assert lines._count_lines is lines.count_newlines


def test_make_parser_takes_the_compiled_scan_unless_told_not_to(compiled, monkeypatch):
    monkeypatch.delenv(accel.PURE_PYTHON_ENV, raising=False)
    assert type(make_parser("postfix")) is FastPostfixParser and accel.accelerated()
    assert "compiled" in accel.describe()
    monkeypatch.setenv(accel.PURE_PYTHON_ENV, "1")
    assert type(make_parser("postfix")) is PostfixParser and not accel.accelerated()
    assert accel.PURE_PYTHON_ENV in accel.describe()
    monkeypatch.setenv(accel.PURE_PYTHON_ENV, "0")
    assert accel.accelerated()


def replay(log: str, pure: bool) -> tuple[str, dict]:
    """The exporter's stages on ``log`` read to its end, in a child process (the path is chosen
    when parsers are made): the exposition text and the state file's content."""
    code = ("import json, sys\n"
            "from prometheus_client import CollectorRegistry, generate_latest\n"
            "from bounce_exporter.app import Exporter\n"
            "from bounce_exporter.config import load_config\n"
            "config = load_config(sys.argv[2], {'log_files': [sys.argv[1]], 'from_start': True,"
            " 'listen_address': '127.0.0.1:0'})\n"
            "exporter = Exporter(config, registry=CollectorRegistry())\n"
            "exporter.pipeline.pump(); exporter.pipeline.drain()\n"
            "text = generate_latest(exporter.registry).decode()\n"
            "from bounce_exporter.persistence.statefile import encode_state\n"
            "saved = json.loads(''.join(encode_state(exporter.store.snapshot().saved.data)))\n"
            "exporter.wakeup.stop()\n"
            "parsers = [f.parser.delegate for f in exporter.pipeline.feeds]  # auto: postfix\n"
            "print(json.dumps([text, saved, [type(p).__name__ for p in parsers],"
            " [p.state() for p in parsers]]))\n")
    env = {**os.environ, "TZ": "UTC", accel.PURE_PYTHON_ENV: "1" if pure else ""}
    # config and state file in a folder of their own: beside the log, a "mail.log.state" is one of
    # its rotated names (there at start of the second run only: its position's "done" differed)
    run = os.path.join(os.path.dirname(log), "pure" if pure else "compiled")
    os.makedirs(run, exist_ok=True)
    config = os.path.join(run, "config.yml")
    with open(config, "w") as handle:
        handle.write(f"limits:\n  max_domains: 300\nstate_file: {run}/state.json\n")
    out = subprocess.run([sys.executable, "-c", code, log, config], capture_output=True,
                         env=env, check=True, cwd=os.getcwd()).stdout
    import json

    text, saved, names, states = json.loads(out)
    # the wall clock's: when the process started, when a line was last read
    process = [line for line in text.splitlines()
               if line.startswith(("process_", "python_", "bounce_exporter_last_line_timestamp"))
               or line.startswith("# ") and " process_" in line]
    return "\n".join(line for line in text.splitlines() if line not in process), [saved, states,
                                                                                   names]


def test_the_exporter_exposes_the_same_either_way(compiled, tmp_path):
    """The whole exporter (counters, domain cap at 300 domains, deferral tracker, ledger, state
    file) on a generated log with mutations: the same exposition text but for build_info."""
    lines = generate(200_000, seed=7)[0].encode().splitlines()
    log = tmp_path / "mail.log"
    log.write_bytes(mutated(lines, 7))
    pure_text, pure_state = replay(str(log), pure=True)
    fast_text, fast_state = replay(str(log), pure=False)
    assert 'accelerated="false"' in pure_text and 'accelerated="true"' in fast_text
    assert fast_text.replace('accelerated="true"', 'accelerated="false"') == pure_text
    assert pure_state.pop() == ["PostfixParser"] and fast_state.pop() == ["FastPostfixParser"]
    assert fast_state == pure_state
    assert 'bounce_exporter_domain_overflow_events_total 0.0' not in pure_text, "the cap bites"
    assert "\nbounce_exporter_deferral_streaks 0.0" not in pure_text, "streaks are tracked"
    assert pure_state[1][0]["ledger"]["messages"], "and messages are waiting in the ledger"


def test_the_whole_generated_million_line_log(compiled, tmp_path):
    """bench.run's log (1M lines, seed 1): the same events, failures and state."""
    data = generate(1_000_000, seed=1)[0].encode()
    pure, fast = both(compiled, blocks_of(data, tmp_path))
    assert fast == pure
    assert len(pure[0]) > 130_000


def test_without_a_compiler_the_wheel_is_pure_python(tmp_path):
    """``pip install .`` where no C compiler runs (CC=/bin/false): the build warns and goes on,
    the wheel has the Python package and no extension."""
    root = Path(__file__).resolve().parents[1]
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(root / name, tmp_path / name)
    for folder in ("bounce_exporter", "config"):
        shutil.copytree(root / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps",
                             "--wheel-dir", str(tmp_path / "wheels"), "."], cwd=tmp_path,
                            env={**os.environ, "CC": "/bin/false"}, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'building extension "bounce_exporter_fastscan" failed' in result.stdout + result.stderr
    [wheel] = (tmp_path / "wheels").glob("bounce_exporter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bounce_exporter/parsers/postfix.py" in names
    assert not [n for n in names if n.startswith("bounce_exporter_fastscan")]


def test_fuzz_smoke():
    """libFuzzer with AddressSanitizer and UBSan on the C core for 20 s: no crash, no leak, no
    out-of-bounds read, every record inside its line (``python -m bench.fuzz``)."""
    if shutil.which("clang") is None and shutil.which("clang-14") is None:
        if REQUIRED:
            pytest.fail("clang is not installed, and BOUNCE_EXPORTER_REQUIRE_E2E=1")
        pytest.skip("clang is not installed")
    from bench import fuzz

    work = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bounce-fuzz-smoke-{os.getpid()}")
    try:
        assert fuzz.main(["--seconds", "20", "--work", work]) == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
