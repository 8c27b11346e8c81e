"""Command line: flags only; the wiring lives in bounce_exporter.app."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bounce_exporter import __version__
from bounce_exporter.config import (
    DEFAULT_CONFIG_FILE,
    DEFAULT_LOG_FILES,
    DEFAULT_STATE_FILE,
    LOG_LEVELS,
    config_file,
    load_config,
)
from bounce_exporter.errors import ConfigError
from bounce_exporter.parsers import PARSERS

DESCRIPTION = """\
Which remote domains defer or bounce your mail, with which SMTP reply, and since when.

bounce-exporter follows your mail server's log, turns every delivery attempt into an event,
classifies the reply (soft or hard, and a reason such as system_full for 431 4.3.1) and serves
Prometheus counters per recipient domain and reply on /metrics."""

EPILOG = f"""\
examples:
  bounce-exporter serve                                  the mail log, else Postfix's journal
  bounce-exporter serve --log.file /var/log/mail.log --web.listen-address 127.0.0.1:39431
  bounce-exporter serve --config.file {DEFAULT_CONFIG_FILE}
  bounce-exporter serve --log.journal postfix@-.service   follow Postfix in the systemd journal
  tail -F /var/log/mail.log | bounce-exporter serve --log.file -
  bounce-exporter parse /var/log/mail.log.1              one JSON object per delivery event
  bounce-exporter report /var/log/mail.log*              per-domain tables of the old logs
  bounce-exporter backfill /var/log/mail.log* > h.om     their history, for promtool tsdb
  bounce-exporter explain 431                            what a reply code means, what to do

The log format is detected per source (--log.format auto) unless given. Flags override the
config file; {DEFAULT_CONFIG_FILE} is read when it exists and no --config.file is given
(config/example.yml is a commented starter). Docs: README.md."""


LOOKBACK = 300.0  # Prometheus' default --query.lookback-delta, in seconds
CONFIG_HELP = f"YAML configuration file (default: {DEFAULT_CONFIG_FILE} if it exists)"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config.file", dest="config_file", metavar="PATH",
                        help=CONFIG_HELP + ": sources, limits, rules")
    parser.add_argument("--log.format", dest="log_format", choices=sorted(PARSERS),
                        help="log format of the sources (default: auto, detected per source "
                             "from its lines)")
    parser.add_argument("--log.level", dest="log_level", choices=LOG_LEVELS,
                        help="level of the exporter's own log on stderr (default: info)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bounce-exporter", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bounce-exporter {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="follow mail logs and serve Prometheus metrics",
        description="Follow mail logs and serve Prometheus metrics on /metrics.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    serve.add_argument("--log.file", dest="log_files", action="append", metavar="PATH",
                       help="mail log to follow ('-': standard input); repeatable, globs "
                            "allowed, rotated and .gz matches read once with --log.from-start "
                            "(default: the first of "
                            f"{', '.join(DEFAULT_LOG_FILES)} that exists, else the journal of "
                            "the Postfix units)")
    serve.add_argument("--log.journal", dest="journal_units", action="append", metavar="UNIT",
                       help="follow this systemd unit's journal (journalctl); repeatable "
                            "(default units: postfix@-.service, postfix.service)")
    serve.add_argument("--log.journal-directory", dest="journal_directory", metavar="DIR",
                       help="read the journal files of this directory (journalctl --directory) "
                            "instead of the system journal")
    serve.add_argument("--log.from-start", dest="from_start", action="store_true", default=None,
                       help="read existing log files from the beginning instead of their end")
    serve.add_argument("--log.poll-interval", dest="poll_interval", metavar="DURATION",
                       help="how often to check the logs when no file event arrives (default: 1s)")
    serve.add_argument("--web.listen-address", dest="listen_address", metavar="[HOST]:PORT",
                       help="address to serve on (default: :39431)")
    serve.add_argument("--web.telemetry-path", dest="telemetry_path", metavar="PATH",
                       help="path of the metrics (default: /metrics)")
    serve.add_argument("--web.config.file", dest="web_config_file", metavar="PATH",
                       help="TLS and basic auth, in the exporter-toolkit web config format "
                            "(default: none, plain HTTP)")
    serve.add_argument("--state.file", dest="state_file", metavar="PATH",
                       help="state kept across restarts (default: $STATE_DIRECTORY/state.json "
                            f"under systemd, else {DEFAULT_STATE_FILE} where writable, else "
                            "bounce-exporter/state.json in $XDG_STATE_HOME or ~/.local/state)")
    serve.add_argument("--queue.command", dest="queue_command", metavar="COMMAND",
                       help="command printing the Postfix queue as JSON, run at scrape time "
                            "(default: postqueue -j; '' turns the queue view off; e.g. "
                            "'postqueue -c /etc/postfix-out -j')")
    serve.add_argument("--queue.interval", dest="queue_interval", metavar="DURATION",
                       help="run the queue command at most this often (default: 30s)")
    _common(serve)
    _one_shot_commands(commands)
    return parser


def _one_shot_commands(commands) -> None:  # type: ignore[no-untyped-def]
    parse = commands.add_parser(
        "parse", help="print every delivery event of log files as JSON Lines",
        description="Read log files from the start and print one JSON object per delivery event: "
                    "file, line, time, mta, queue_id, recipient, domain, status, code, enhanced, "
                    "kind, category, text. On a terminal, a progress line on stderr.")
    parse.add_argument("files", nargs="+", metavar="FILE",
                       help="log file to read (.gz too; '-': standard input)")
    _common(parse)

    _history_commands(commands)

    explain = commands.add_parser(
        "explain",
        help="explain an SMTP reply, log line or code: meaning, soft or hard, what to do about it",
        description="Explain a reply, a log line or a bare code (431, 4.3.1): its meaning, soft or "
                    "hard (judged from the reply), category, severity, what the sender and the "
                    "recipient's admin can do, and what the MTA does next.")
    explain.add_argument("explain_text", nargs="+", metavar="TEXT",
                         help="the reply or log line (several words are joined; '-' reads stdin)")
    explain.add_argument("--json", dest="explain_json", action="store_true",
                         help="print one JSON object (parse's keys where they apply)")
    explain.add_argument("--config.file", dest="config_file", metavar="PATH",
                         help=CONFIG_HELP + ": its classification.text_rules apply")


FILES_HELP = ("log file to read (rotated and .gz files too, read oldest first with their live "
              "file; '-': standard input)")


def _history_commands(commands) -> None:  # type: ignore[no-untyped-def]
    report = commands.add_parser(
        "report", help="report on old logs: per domain and provider, deferral episodes, replies",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Read log files from the start through the exporter's own stages and report what its counters,
deferral tracker and ledgers hold at their end:
  - totals per kind and category;
  - per recipient domain and per provider: attempts, deliveries, deferrals, bounces, expiries,
    and the recipients still waiting at the end of the logs;
  - the deferral episodes of the persistent_deferrals rules: how each ended, what to do;
  - the most frequent replies per category.
On a terminal, a progress line on stderr.""")
    report.add_argument("files", nargs="+", metavar="FILE", help=FILES_HELP)
    report.add_argument("--format", dest="report_format", choices=("text", "json", "csv"),
                        default="text", help="aligned tables (default), one JSON object, or CSV "
                                             "rows each led by its table's name")
    _common(report)
    backfill = commands.add_parser(
        "backfill", help="write the metrics the exporter would have exposed over old logs, "
                         "as OpenMetrics for promtool",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Read log files from the start through the exporter's own stages and write, at every step of log
time, the bounce_* series a scrape would have shown then, as timestamped OpenMetrics text ending
with # EOF. The exporter's self-metrics and the waiting gauges are left out. Then:
  promtool tsdb create-blocks-from openmetrics FILE DIR
and move DIR's blocks into Prometheus' data directory (README: "Reports and history").""")
    backfill.add_argument("files", nargs="+", metavar="FILE", help=FILES_HELP)
    backfill.add_argument("--step", default="1m", metavar="DURATION",
                          help="time between two samples, as a scrape interval (default: 1m; "
                               "above 5m, Prometheus' default lookback, instant queries find "
                               "no value between two samples)")
    backfill.add_argument("--label", dest="labels", action="append", default=[],
                          metavar="NAME=VALUE",
                          help="a label for every series, such as the job and instance labels "
                               "Prometheus gives the live exporter's (repeatable)")
    backfill.add_argument("--output", metavar="PATH",
                          help="file to write (default: standard output)")
    _common(backfill)


def _report(err: ConfigError) -> int:
    print("bounce-exporter: configuration problems:", file=sys.stderr)
    for problem in err.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 2


def setup_logging(level: str) -> None:
    """The exporter's own loggers at ``level``; other libraries' (watchdog's) at warning, whatever
    the level: their debug output is not ours to turn on (and watchdog's would feed back when
    stderr goes to a file in a watched folder)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bounce_exporter").setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: value for key, value in vars(args).items()
                 if key not in ("command", "config_file", "files", "explain_text", "explain_json",
                                "report_format", "step", "output", "labels")}
    path = config_file(args.config_file)

    def loader():  # also re-reads the configuration at SIGHUP
        return load_config(path, overrides)

    try:
        config = loader()
    except ConfigError as err:
        return _report(err)
    # parse's output is its stdout: on stderr, warnings only (not which format it detected)
    quiet = args.command in ("parse", "report", "backfill") and args.log_level is None and config.log_level == "info"
    setup_logging("warning" if quiet else config.log_level)
    try:
        return _run(args, config, loader)
    except ConfigError as err:  # problems only found when the catalog and rules are loaded
        return _report(err)
    except BrokenPipeError:  # `parse FILE | head`: the reader is gone, nothing more to say
        return _closed_pipe()


def _closed_pipe() -> int:
    """Exit quietly, as a program killed by SIGPIPE would (141): what Python still holds for
    stdout goes to /dev/null, not into an error message at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def _run(args: argparse.Namespace, config, loader) -> int:
    if args.command in ("report", "backfill"):
        return _history(args, config)
    if args.command in ("parse", "explain"):
        if args.command == "parse":
            from bounce_exporter.oneshot import parse_files  # after the flags: --help stays fast

            status = parse_files(args.files, config, sys.stdout, sys.stderr)
        else:
            from bounce_exporter.classify.explain import run_explain

            status = run_explain(args.explain_text, config.text_rules, as_json=args.explain_json,
                                 out=sys.stdout, err=sys.stderr)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the exit
        return status
    from bounce_exporter.app import Exporter

    exporter = Exporter(config, loader=loader)
    exporter.install_signal_handlers()
    try:
        return exporter.run()
    except OSError as err:
        print(f"bounce-exporter: cannot serve on {config.listen_address}: {err}", file=sys.stderr)
        return 1


def _history(args: argparse.Namespace, config) -> int:  # type: ignore[no-untyped-def]
    from bounce_exporter import oneshot
    from bounce_exporter.checks import parse_duration
    from bounce_exporter.exposition.backfill import SERIES_LABELS, parse_labels

    if args.command == "report":
        status = oneshot.report_files(args.files, config, args.report_format, sys.stdout,
                                  sys.stderr)
        sys.stdout.flush()
        return status
    try:
        step = parse_duration(args.step)
    except ValueError as error:
        print(f"bounce-exporter backfill: --step: {error}", file=sys.stderr)
        return 2
    try:
        labels = parse_labels(args.labels, SERIES_LABELS)
    except ValueError as error:
        print(f"bounce-exporter backfill: --label {error}", file=sys.stderr)
        return 2
    if step <= 0:
        print("bounce-exporter backfill: --step must be more than 0", file=sys.stderr)
        return 2
    if step > LOOKBACK:
        print(f"bounce-exporter backfill: warning: --step {args.step} is longer than Prometheus' "
              "default lookback (5m): instant queries find no value between two samples unless "
              "--query.lookback-delta is at least the step", file=sys.stderr)
    if args.output is None:
        status = oneshot.backfill_files(args.files, config, step, sys.stdout, sys.stderr, labels)
        sys.stdout.flush()
        return status
    with open(args.output, "w", encoding="utf-8") as out:
        return oneshot.backfill_files(args.files, config, step, out, sys.stderr, labels)
