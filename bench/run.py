"""The benchmark: bounce-exporter, mtail (Debian's postfix.mtail) and postfix_exporter on one log.

    python -m bench.run                      # 1M lines, 3 runs per tool, medians
    python -m bench.run --lines 200000 --repeat 1 --probes 50

Every tool reads the same generated file (bench/generate.py) in the same run:
- ours: a replay in a child process through the real ``Exporter`` stages (source, parser,
  classifier, metric state, deferral tracker) with a fresh registry, read to the end, then one
  scrape of the collector, so the exposition is included. Time: from building the Exporter
  (catalog load included) to the end of the scrape; interpreter start and imports excluded.
- mtail: ``mtail --one_shot`` with Debian's postfix.mtail; time: the whole process.
- postfix_exporter (kumina 0.3.0, Debian's prometheus-postfix-exporter): it only follows a file's
  end, so it is started on an empty file, the log and a marker line are appended, and /metrics is
  polled every 20 ms until the marker is counted; time: from the first append to that scrape.
Peak RSS is each process's ru_maxrss (wait4). "counts match" compares what each tool counts at all
with the generator's truth. Then the live latency: ``bounce-exporter serve`` (a subprocess) follows
a copy of the log (read from the start first, so its state holds every domain); one delivery line
at a time is appended and /metrics polled until the line's count shows.
Needs: apt-get install -y mtail prometheus-postfix-exporter (missing peers are skipped).
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.generate import truth_path, write

REPO = Path(__file__).resolve().parents[1]
POSTFIX_MTAIL = "/usr/share/doc/mtail/examples/postfix.mtail"
MARKER = "Jan  8 23:59:59 mx1 postfix/qmgr[1291]: BENCHMARK0END: removed\n"
PROBE_DOMAIN = "latency-probe.example"
BENCH_CONFIG = """\
limits:
  max_domains: 5000      # every generated domain gets its own series: the costly case
state_file: {state}
queue: {{command: []}}   # the host's Postfix queue is not the benchmark's business
"""


@dataclass
class Result:
    tool: str
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    match: bool | None = None
    note: str = ""
    overhead: float = 0.0  # of the median time: building the Exporter and the scrape (ours only)

    def lines_per_second(self, lines: int) -> float:
        return lines / statistics.median(self.seconds)

    def rss_mib(self) -> float:
        return statistics.median(self.rss_kib) / 1024


# -- helpers ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 10.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()
    except OSError:
        return None


class PeakRSS:
    """Follows a child's VmHWM (peak resident set of its own address space) until it exits.

    Not ru_maxrss: after exec, Linux keeps the forking parent's peak in it, so every child of a
    big benchmark process would look as big as the benchmark."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.kib = 0
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while self.process.poll() is None:
            self.read()
            time.sleep(0.005)

    def read(self) -> int:
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.kib = max(self.kib, int(line.split()[1]))
        except (OSError, ValueError):
            pass  # exited meanwhile
        return self.kib

    def wait(self) -> tuple[int, int]:
        """(exit status, peak RSS in KiB) once the child has exited."""
        status = self.process.wait()
        self._thread.join()
        return status, self.kib


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def value_in(exposition: str | None, series: str) -> float | None:
    """The value of one series (``name{labels}`` exactly as exposed) in an exposition text."""
    start = (exposition or "").find("\n" + series + " ")
    if start < 0:
        return None
    start += len(series) + 2
    return float(exposition[start:exposition.index("\n", start)])


def child_env() -> dict[str, str]:
    # The generator writes traditional stamps in UTC: read them back in UTC.
    return {**os.environ, "TZ": "UTC", "PYTHONPATH": str(REPO)}


def bench_log(work: Path, lines: int, seed: int) -> tuple[str, dict]:
    """The generated log in ``work`` (written the first time) and its truth."""
    work.mkdir(parents=True, exist_ok=True)
    log = str(work / f"mail-{lines}-{seed}.log")
    if not (os.path.exists(log) and os.path.exists(truth_path(log))):
        print(f"generating {log} ...", file=sys.stderr)
        write(log, lines, seed)
    return log, json.loads(Path(truth_path(log)).read_text())


def attempts_by_status(truth: dict) -> dict[str, int]:
    """The truth's events per status, expiries left out (they are no delivery line)."""
    return {status: count for status, count in truth["events"].items() if status != "expired"}


# -- ours ---------------------------------------------------------------------------------------

def replay_child(log: str, config_file: str, out: str) -> None:
    """In the child: replay the log through the Exporter's stages and scrape once."""
    from prometheus_client import CollectorRegistry, generate_latest

    from bounce_exporter.app import Exporter
    from bounce_exporter.config import load_config

    config = load_config(config_file, {"log_files": [log], "from_start": True,
                                       "listen_address": "127.0.0.1:0"})
    started = time.perf_counter()
    exporter = Exporter(config, registry=CollectorRegistry())
    built = time.perf_counter()
    lines = exporter.pipeline.pump() + exporter.pipeline.drain()
    read = time.perf_counter()
    exposition = generate_latest(exporter.registry)
    done = time.perf_counter()
    exporter.wakeup.stop()
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    Path(out).write_bytes(exposition)
    json.dump({"lines": lines, "build": built - started, "read": read - built,
               "scrape": done - read, "total": done - started, "peak_kib": peak},
              sys.stdout)


def run_ours(log: str, work: Path, truth: dict, repeat: int, pure: bool = False) -> Result:
    """The replay, with the compiled Postfix scan (when installed) or forced to pure Python."""
    from bounce_exporter.parsers.accel import PURE_PYTHON_ENV, compiled

    path = "pure Python" if pure or compiled() is None else "compiled"
    result = Result(f"bounce-exporter replay ({path})")
    env = {**child_env(), PURE_PYTHON_ENV: "1" if pure else ""}
    config = work / "bench-config.yml"
    config.write_text(BENCH_CONFIG.format(state=work / "state.json"))
    exposition = work / "ours.prom"
    parts = []
    whole = []
    for _ in range(repeat):
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.run", "--replay-child", log, str(config),
             str(exposition)], stdout=subprocess.PIPE, env=env, cwd=REPO)
        peak = PeakRSS(process)
        output = process.stdout.read()
        status, rss = peak.wait()
        whole.append(time.perf_counter() - started)
        if status != 0:
            raise SystemExit(f"replay failed with status {status}")
        timing = json.loads(output)
        result.seconds.append(timing["total"])
        result.rss_kib.append(max(rss, timing["peak_kib"]))
        parts.append(timing)
    problems = check_ours(samples(exposition.read_text()), truth, log)
    result.match = not problems
    build = statistics.median(p["build"] for p in parts)
    scrape = statistics.median(p["scrape"] for p in parts)
    result.overhead = build + scrape
    result.note = (f"Exporter built in {build:.2f} s, scrape {scrape:.2f} s; the whole child "
                   f"process, interpreter start and imports included: "
                   f"{truth['lines'] / statistics.median(whole):,.0f} lines/s (medians)"
                   + (f"; MISMATCH: {'; '.join(problems[:5])}" if problems else ""))
    return result


def check_ours(found: dict, truth: dict, log: str) -> list[str]:
    """Every per-domain counter, every failure series and the persistent flags, exactly."""
    problems = []
    got: dict[str, Counter] = {"attempts": Counter(), "deliveries": Counter(),
                               "expired": Counter()}
    failures: Counter = Counter()
    persistent = []
    names = {"bounce_delivery_attempts_total": "attempts", "bounce_deliveries_total": "deliveries",
             "bounce_expired_total": "expired"}
    for (name, labels), value in found.items():
        labels = dict(labels)
        if name in names and value:
            got[names[name]][labels["domain"]] += int(value)
        elif name == "bounce_failures_total" and value:
            failures[(labels["domain"], labels["kind"], labels["code"], labels["enhanced"],
                      labels["category"])] += int(value)
        elif name == "bounce_persistent_deferral" and value == 1:
            persistent.append([labels["domain"], labels["code"]])
    for key in ("attempts", "deliveries", "expired"):
        if dict(got[key]) != truth[key]:
            problems.append(f"{key} differ")
    if sorted([*k, v] for k, v in failures.items()) != truth["failures"]:
        problems.append("failures differ")
    if sorted(persistent) != truth["persistent"]:
        problems.append(f"persistent {sorted(persistent)} != {truth['persistent']}")
    lines = sample(found, "bounce_exporter_lines_read_total", source=log)
    if lines != truth["lines"]:
        problems.append(f"lines read {lines} != {truth['lines']}")
    return problems


# -- a plain loop, for scale --------------------------------------------------------------------

PLAIN = re.compile(rb" to=<[^@>]*@([^>]*)>.*, status=(\w+) \((?:host \S+ said: )?(\d\d\d)?")


def plain_child(log: str) -> None:
    """In the child: the least a script can do, counting (domain, status, code) per line."""
    started = time.perf_counter()
    counts: Counter = Counter()
    with open(log, "rb") as handle:
        for line in handle:
            if b"status=" in line:
                match = PLAIN.search(line)
                if match:
                    counts[match.groups()] += 1
    seconds = time.perf_counter() - started
    by_status = Counter()
    for (_, status, _), count in counts.items():
        by_status[status.decode()] += count
    json.dump({"seconds": seconds, "by_status": by_status}, sys.stdout)


def run_plain(log: str, truth: dict, repeat: int) -> Result:
    result = Result("plain Python loop (reference)")
    for _ in range(repeat):
        process = subprocess.Popen([sys.executable, "-m", "bench.run", "--plain-child", log],
                                   stdout=subprocess.PIPE, env=child_env(), cwd=REPO)
        peak = PeakRSS(process)
        output = json.loads(process.stdout.read())
        _, rss = peak.wait()
        result.seconds.append(output["seconds"])
        result.rss_kib.append(rss)
    result.match = output["by_status"] == attempts_by_status(truth)
    result.note = ("for scale: for line in file: if b'status=' in line: one regex for domain, "
                   "status and code; no header, time, classification, labels or tracking")
    return result


# -- peers --------------------------------------------------------------------------------------

def peer_expectations(kinds: dict[str, int], marker: bool) -> dict[str, int]:
    """What postfix.mtail and postfix_exporter count, from the generator's lines per kind."""
    smtp = sum(kinds.get(f"smtp:{s}", 0) for s in ("sent", "deferred", "bounced"))
    return {
        "smtp delivery lines": smtp,
        "smtp deferred": kinds.get("smtp:deferred", 0),
        "lmtp delivery lines": kinds.get("lmtp:sent", 0),
        "cleanup messages": kinds.get("cleanup:message-id", 0),
        "qmgr removed": kinds.get("qmgr:removed", 0) + (1 if marker else 0),
        "smtpd connects": kinds.get("smtpd:connect", 0),
        "submission connects": kinds.get("submission:connect", 0),
    }


def run_mtail(log: str, work: Path, truth: dict, repeat: int) -> Result | None:
    mtail = shutil.which("mtail")
    if mtail is None or not os.path.exists(POSTFIX_MTAIL):
        return None
    progs = work / "mtail-progs"
    progs.mkdir(exist_ok=True)
    shutil.copy(POSTFIX_MTAIL, progs)
    logs = work / "mtail-logs"
    logs.mkdir(exist_ok=True)
    result = Result("mtail one-shot (postfix.mtail)")
    output = ""
    for _ in range(repeat):
        started = time.perf_counter()
        process = subprocess.Popen(
            [mtail, "--one_shot", "--one_shot_format", "prometheus", "--address", "127.0.0.1",
             "--port", "0", "--progs", str(progs), "--logs", log, "--log_dir", str(logs)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), text=True)
        peak = PeakRSS(process)
        output = process.stdout.read()
        status, rss = peak.wait()
        result.seconds.append(time.perf_counter() - started)
        result.rss_kib.append(rss)
        if status != 0:
            raise SystemExit(f"mtail failed with status {status}")
    found = samples(output)
    count = {
        "smtp delivery lines": sample(found, "postfix_smtp_delivery_delay_seconds_count",
                                      prog="postfix.mtail", stage="transmission"),
        "lmtp delivery lines": sample(found, "postfix_lmtp_delivery_delay_seconds_count",
                                      prog="postfix.mtail", stage="transmission"),
        "cleanup messages": sample(found, "postfix_cleanup_messages_processed_total",
                                   prog="postfix.mtail"),
        "qmgr removed": sample(found, "postfix_qmgr_messages_removed_total", prog="postfix.mtail"),
        "smtpd connects": sample(found, "postfix_smtpd_connects_total", prog="postfix.mtail"),
    }
    every = peer_expectations(truth["lines_by_kind"], marker=False)
    bsd = peer_expectations(truth["lines_by_kind_bsd"], marker=False)
    for expect in (every, bsd):  # postfix.mtail counts submission/smtpd as smtpd
        expect["smtpd connects"] += expect.pop("submission connects")
        expect.pop("smtp deferred")  # postfix.mtail does not count statuses
    got = {k: int(v) for k, v in count.items()}
    result.match = got == every
    result.note = "counts: " + ", ".join(f"{k} {v}" for k, v in got.items())
    if not result.match:
        share = sum(got.values()) / max(sum(every.values()), 1)
        result.note += (f"; expected {every}: {share:.0%} counted. postfix.mtail's strptime layout "
                        f"rejects RFC 3339 stamps; the traditional-stamp lines alone give {bsd}")
    return result


def run_postfix_exporter(log: str, work: Path, truth: dict, repeat: int) -> Result | None:
    binary = shutil.which("prometheus-postfix-exporter") or shutil.which("postfix_exporter")
    if binary is None:
        return None
    result = Result("postfix_exporter 0.3.0 (follow)")
    expect = peer_expectations(truth["lines_by_kind"], marker=True)
    target = expect["qmgr removed"]
    got: dict[str, int] = {}
    for _ in range(repeat):
        followed = work / "postfix-exporter.log"
        followed.write_bytes(b"")
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        process = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}",
             f"--postfix.logfile_path={followed}", f"--postfix.showq_path={work / 'no-showq'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = PeakRSS(process)
        try:
            deadline = time.monotonic() + 10
            while http_get(url) is None:
                if time.monotonic() > deadline:
                    raise SystemExit("postfix_exporter did not start")
                time.sleep(0.05)
            time.sleep(0.5)  # let it open the file and wait at its end
            started = time.perf_counter()
            with open(log, "rb") as source, open(followed, "ab") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
                sink.write(MARKER.encode())
            found: dict = {}
            while sample(found, "postfix_qmgr_messages_removed_total") < target:
                time.sleep(0.02)
                found = samples(http_get(url) or "")
            result.seconds.append(time.perf_counter() - started)
        finally:
            peak.read()
            process.send_signal(signal.SIGTERM)
            _, rss = peak.wait()
        result.rss_kib.append(rss)
        got = {
            "smtp delivery lines": int(sample(found, "postfix_smtp_delivery_delay_seconds_count",
                                              stage="")) // 4,
            "smtp deferred": int(sample(found, "postfix_smtp_status_deferred_total")),
            "lmtp delivery lines": int(sample(found, "postfix_lmtp_delivery_delay_seconds_count",
                                              stage="transmission")),
            "cleanup messages": int(sample(found, "postfix_cleanup_messages_processed_total")),
            "qmgr removed": int(sample(found, "postfix_qmgr_messages_removed_total")),
            "smtpd connects": int(sample(found, "postfix_smtpd_connects_total")),
        }
    expect.pop("submission connects")  # its line pattern does not take postfix/submission/smtpd
    result.match = got == expect
    result.note = ("counts: " + ", ".join(f"{k} {v}" for k, v in got.items())
                   + ("" if result.match else f"; expected {expect}")
                   + " (no per-domain, sent/bounced or expired counts)")
    return result


# -- live latency -------------------------------------------------------------------------------

def run_latency(log: str, work: Path, truth: dict, probes: int) -> tuple[list[float], int]:
    """Append one delivery line at a time to a followed log; seconds until /metrics shows it."""
    followed = work / "serve.log"
    shutil.copyfile(log, followed)
    os.utime(followed, (truth["last_time"], truth["last_time"]))
    config = work / "bench-config.yml"
    config.write_text(BENCH_CONFIG.format(state=work / "state.json"))
    (work / "state.json").unlink(missing_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    process = subprocess.Popen(
        [sys.executable, "-m", "bounce_exporter", "serve", "--config.file", str(config),
         "--log.file", str(followed), "--log.from-start", "--web.listen-address",
         f"127.0.0.1:{port}", "--log.level", "warning"],
        env=child_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = PeakRSS(process)
    lines_read = f'bounce_exporter_lines_read_total{{source="{followed}"}}'
    latencies = []
    try:
        deadline = time.monotonic() + 120
        while value_in(http_get(url), lines_read) != truth["lines"]:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bounce-exporter serve did not read the log")
            time.sleep(0.2)
        with open(followed, "a", encoding="utf-8") as handle:
            for n in range(1, probes + 1):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())
                line = (f"{stamp} mx1 postfix/smtp[4242]: PROBE{n:06d}: to=<p{n}@{PROBE_DOMAIN}>, "
                        f"relay=mx.{PROBE_DOMAIN}[192.0.2.9]:25, delay=0.1, "
                        f"delays=0/0/0.05/0.05, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n")
                shown = f'bounce_deliveries_total{{domain="{PROBE_DOMAIN}"}}'
                handle.write(line)
                handle.flush()
                written = time.perf_counter()
                while value_in(http_get(url), shown) != n:
                    time.sleep(0.005)
                latencies.append(time.perf_counter() - written)
                time.sleep(0.02 + (n % 7) * 0.01)  # uneven spacing, not in step with any poll
    finally:
        peak.read()
        process.send_signal(signal.SIGTERM)
        _, rss = peak.wait()
    return latencies, rss


# -- report -------------------------------------------------------------------------------------

def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
            f"Python {platform.python_version()}")


def stray_daemons() -> list[str]:
    """mtail or postfix_exporter processes already running (a package's service, say): they
    would take CPU from the measurement. Reported, not stopped: the benchmark did not start them."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name in ("mtail", "prometheus-post", "postfix_exporte"):  # comm is cut at 15
                found.append(f"{name} (pid {entry.name})")
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--replay-child":
        replay_child(*sys.argv[2:5])
        return 0
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--plain-child":
        plain_child(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool (medians reported)")
    parser.add_argument("--probes", type=int, default=200, help="appended lines for the latency")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bounce-bench"),
                        help="folder for the log and the tools' files (default: %(default)s)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["mtail", "postfix_exporter", "latency", "plain", "pure"])
    args = parser.parse_args(argv)

    work = Path(args.work)
    log, truth = bench_log(work, args.lines, args.seed)
    lines = truth["lines"]
    for daemon in stray_daemons():
        print(f"warning: {daemon} is running; stop it for a fair measurement", file=sys.stderr)
    print(f"log: {log}: {lines} lines, {truth['delivery_lines'] / lines:.1%} delivery lines, "
          f"{truth['domains']} domains; {args.repeat} runs per tool\nmachine: {machine()}\n")

    results = [run_ours(log, work, truth, args.repeat)]
    if "pure" not in args.skip and "compiled" in results[0].tool:
        results.append(run_ours(log, work, truth, args.repeat, pure=True))
    if "mtail" not in args.skip:
        results.append(run_mtail(log, work, truth, args.repeat) or Result("mtail: not installed"))
    if "postfix_exporter" not in args.skip:
        results.append(run_postfix_exporter(log, work, truth, args.repeat)
                       or Result("postfix_exporter: not installed"))
    if "plain" not in args.skip:
        results.append(run_plain(log, truth, args.repeat))
    ours = results[0].lines_per_second(lines)
    print(f"{'tool':38} {'lines/s':>10} {'peak RSS':>9} {'counts match':>12} {'ours ÷ it':>9}")
    for result in results:
        if not result.seconds:
            print(result.tool)
            continue
        speed = result.lines_per_second(lines)
        print(f"{result.tool:38} {speed:10,.0f} {result.rss_mib():7.1f} Mi "
              f"{'yes' if result.match else 'NO':>12} {ours / speed:9.1f}")
    print()
    for result in results:
        if result.note:
            print(f"{result.tool}: {result.note}")
    if "latency" not in args.skip:
        latencies, rss = run_latency(log, work, truth, args.probes)
        print(f"\nlive latency, append to visible on /metrics (bounce-exporter serve, {len(latencies)} "
              f"appends after reading the log): p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms;"
              f" serve peak RSS {rss / 1024:.1f} MiB")
    return 0 if all(r.match is not False for r in results if r.tool.startswith("bounce")) else 1


if __name__ == "__main__":
    sys.exit(main())
