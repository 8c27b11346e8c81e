"""The reasons of skipped lines are known in advance: each source's series of
``bounce_exporter_lines_not_understood_total`` and ``bounce_exporter_lines_not_attempts_total``
start at 0, so that ``rate()`` is 0 (not empty) before the first skip."""

from __future__ import annotations

import ast
import inspect

from bounce_exporter.parsers import PARSERS, capabilities, make_parser

from .helpers import exporters, http_get, local_config, samples

PIPELINE_REASONS = {"too_long", "parser_error"}
EVERY_NOT_UNDERSTOOD = {"bad_stamp", "field_count", "malformed_csv", "malformed_deferral",
                        "malformed_delivery", "missing_field", "no_fields_header", "no_header",
                        "no_recipient"}
EVERY_NOT_ATTEMPT = {"blackholed", "queued_only", "retry_not_reached", "tempfail_without_session"}


def raised_reasons(name: str) -> set[str]:
    """The reasons of every ``LineNotUnderstood("...")`` in the sources of a parser's module and
    of the modules of the classes it inherits from (the compiled Postfix parser's is postfix)."""
    modules = {inspect.getmodule(cls) for cls in type(make_parser(name)).__mro__
               if cls.__module__.startswith("bounce_exporter.parsers.")}
    found = set()
    nodes = [node for module in modules for node in ast.walk(ast.parse(inspect.getsource(module)))]
    for node in nodes:
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "LineNotUnderstood" and node.args
                and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return found


def test_each_parser_names_exactly_the_reasons_it_gives():
    for name in PARSERS:
        if name == "auto":
            continue
        parser = make_parser(name)
        caps = capabilities(parser)
        assert set(caps.not_understood_reasons) == raised_reasons(name), name
        assert set(caps.not_attempt_reasons) == set(caps.counters()), name


def test_auto_names_the_reasons_of_every_format_before_its_first_line():
    caps = capabilities(make_parser("auto"))
    assert set(caps.not_understood_reasons) == EVERY_NOT_UNDERSTOOD
    assert set(caps.not_attempt_reasons) == EVERY_NOT_ATTEMPT


def reasons_exposed(found: dict, family: str, source: str) -> dict[str, float]:
    return {dict(labels)["reason"]: value for (name, labels), value in found.items()
            if name == family and dict(labels)["source"] == source}


def test_skip_counters_are_zero_from_the_start_for_every_source(tmp_path):
    logs = {fmt: tmp_path / f"{fmt}.log" for fmt in ("postfix", "exim", "auto")}
    for log in logs.values():
        log.write_text("")
    with exporters() as start:
        for fmt, log in logs.items():
            exporter = start(local_config(tmp_path / fmt, log_files=[str(log)], log_format=fmt))
            exporter.step()
            port = exporter.server.server_address[1]
            status, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            found = samples(body)
            source = str(log)
            not_understood = reasons_exposed(
                found, "bounce_exporter_lines_not_understood_total", source)
            not_attempts = reasons_exposed(
                found, "bounce_exporter_lines_not_attempts_total", source)
            if fmt == "postfix":
                assert not_understood == dict.fromkeys(
                    {"no_header", "malformed_delivery"} | PIPELINE_REASONS, 0.0)
                assert not_attempts == {}  # Postfix logs no line that is not an attempt
            elif fmt == "exim":
                assert not_understood == dict.fromkeys(
                    {"no_header", "malformed_delivery", "malformed_deferral", "bad_stamp"}
                    | PIPELINE_REASONS, 0.0)
                assert not_attempts == {"retry_not_reached": 0.0, "blackholed": 0.0}
            else:
                assert not_understood == dict.fromkeys(
                    EVERY_NOT_UNDERSTOOD | PIPELINE_REASONS, 0.0)
                assert not_attempts == dict.fromkeys(EVERY_NOT_ATTEMPT, 0.0)


def test_a_counted_skip_adds_to_its_zero(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("")
    with exporters() as start:
        exporter = start(local_config(tmp_path, log_files=[str(log)], log_format="postfix"))
        exporter.step()
        with log.open("a") as handle:
            handle.write("garbage status=x\n")
        exporter.step()
        port = exporter.server.server_address[1]
        found = samples(http_get(f"http://127.0.0.1:{port}/metrics")[2])
    assert reasons_exposed(found, "bounce_exporter_lines_not_understood_total", str(log)) == {
        "no_header": 1.0, "malformed_delivery": 0.0, "too_long": 0.0, "parser_error": 0.0}
