"""The shipped alerting rules: promtool accepts them, their unit tests pass, and every alert is
tested both firing and not firing. Skipped without promtool, unless
BOUNCE_EXPORTER_REQUIRE_E2E=1, which turns the skip into a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
ALERTS = RULES_DIR / "alerts.yml"
ALERTS_TEST = RULES_DIR / "alerts_test.yml"
METRIC_PREFIXES = ("bounce_",)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("BOUNCE_EXPORTER_REQUIRE_E2E") == "1":
            pytest.fail("promtool not found, and BOUNCE_EXPORTER_REQUIRE_E2E=1")
        pytest.skip("promtool not found (install the prometheus package)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    [group] = doc["groups"]
    assert group["name"] == "bounce-exporter"
    return group["rules"]


@pytest.mark.e2e
def test_promtool_check_rules_accepts_alerts_yml():
    result = run("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.e2e
def test_promtool_unit_tests_pass():
    result = run("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_the_issue_asks_for_are_there():
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for name in (
        "BouncePersistentDeferral431",
        "BouncePersistentDeferral",
        "BounceHardBounceRatioHigh",
        "BounceExporterLogStalled",
    ):
        assert name in names


def test_every_alert_has_severity_summary_and_description():
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing():
    tested: dict[str, set[bool]] = {}
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            tested.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    for rule in alert_rules():
        assert tested.get(rule["alert"]) == {True, False}, rule["alert"]
