"""Command line: flags only; the wiring lives in bounce_exporter.app."""

from __future__ import annotations

import argparse
import logging
import sys

from bounce_exporter import __version__
from bounce_exporter.config import DEFAULT_LOG_FILES, DEFAULT_STATE_FILE, LOG_LEVELS, load_config
from bounce_exporter.errors import ConfigError
from bounce_exporter.parsers import PARSERS

DESCRIPTION = """\
Which remote domains defer or bounce your mail, with which SMTP reply, and since when.

bounce-exporter follows your mail server's log, turns every delivery attempt into an event,
classifies the reply (soft or hard, and a reason such as system_full for 431 4.3.1) and serves
Prometheus counters per recipient domain and reply on /metrics."""

EPILOG = """\
examples:
  bounce-exporter serve                                  follow /var/log/mail.log, serve :39431
  bounce-exporter serve --log.file /var/log/mail.log --web.listen-address 127.0.0.1:39431
  bounce-exporter serve --config.file /etc/bounce-exporter.yml
  bounce-exporter serve --log.journal postfix@-.service   follow Postfix in the systemd journal
  tail -F /var/log/mail.log | bounce-exporter serve --log.file -
  bounce-exporter parse /var/log/mail.log.1              one JSON object per delivery event
  bounce-exporter explain 431                            what a reply code means, what to do

Flags override the config file. Docs: README.md."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config.file", dest="config_file", metavar="PATH",
                        help="YAML configuration file (sources, limits, rules)")
    parser.add_argument("--log.format", dest="log_format", choices=sorted(PARSERS),
                        help="log format of the sources (default: postfix)")
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
                            f"{', '.join(DEFAULT_LOG_FILES)} that exists)")
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
                       help=f"state kept across restarts (default: {DEFAULT_STATE_FILE})")
    _common(serve)

    parse = commands.add_parser(
        "parse", help="print every delivery event of log files as JSON Lines",
        description="Read log files from the start and print one JSON object per delivery event: "
                    "file, line, time, mta, queue_id, recipient, domain, status, code, enhanced, "
                    "kind, category, text.")
    parse.add_argument("files", nargs="+", metavar="FILE", help="log file to read (.gz too)")
    _common(parse)

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
                         help="YAML configuration file: its classification.text_rules apply")
    return parser


def _report(err: ConfigError) -> int:
    print("bounce-exporter: configuration problems:", file=sys.stderr)
    for problem in err.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: value for key, value in vars(args).items()
                 if key not in ("command", "config_file", "files", "explain_text", "explain_json")}
    def loader():  # also re-reads the configuration at SIGHUP
        return load_config(args.config_file, overrides)

    try:
        config = loader()
    except ConfigError as err:
        return _report(err)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args, config, loader)
    except ConfigError as err:  # problems only found when the catalog and rules are loaded
        return _report(err)


def _run(args: argparse.Namespace, config, loader) -> int:
    from bounce_exporter import app  # after the flags: --help stays fast

    if args.command == "parse":
        return app.parse_files(args.files, config, sys.stdout, sys.stderr)
    if args.command == "explain":
        from bounce_exporter.classify.explain import run_explain

        return run_explain(args.explain_text, config.text_rules, as_json=args.explain_json,
                           out=sys.stdout, err=sys.stderr)
    exporter = app.Exporter(config, loader=loader)
    exporter.install_signal_handlers()
    try:
        return exporter.run()
    except OSError as err:
        print(f"bounce-exporter: cannot serve on {config.listen_address}: {err}", file=sys.stderr)
        return 1
