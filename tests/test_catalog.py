"""The code catalog: complete against the corpus registries, and checked as a whole when broken."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from bounce_exporter.classify.catalog import INTENDED, default_catalog_path, load_catalog
from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.errors import ConfigError

CORPUS = Path(__file__).parent.parent.parent / "shared" / "corpus"
CATALOG = Path(__file__).parent.parent / "config" / "catalog.yaml"

DISPOSITION_TO_INTENDED = {"success": "success", "soft": "transient", "hard": "permanent"}
# The closed category set of issue 15, in the catalog's order (the order explain and the README list).
CATEGORIES = ("none", "mailbox_full", "mailbox_inactive", "system_full", "user_unknown",
              "host_unknown", "sender_rejected", "relay_denied", "blocklisted", "sender_auth",
              "policy_blocked", "spam_content", "virus", "rate_limited", "greylisted",
              "unavailable", "smtp_auth", "network", "dns", "tls", "protocol", "message_too_big",
              "expired", "local", "other")


def read_tsv(name: str) -> list[dict[str, str]]:
    with open(CORPUS / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def tsv_classes(column: str) -> tuple[int, ...]:
    if column == "*":
        return (2, 4, 5)
    if column == "-":
        return ()
    return tuple(sorted(int(c) for c in column.split(",")))


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(CATALOG)


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load(CATALOG.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Classifier.load(path)
    return caught.value.problems


# --- Completeness -----------------------------------------------------------------------------

def test_every_basic_code_of_the_corpus_is_in_the_catalog_with_its_disposition(catalog):
    rows = read_tsv("basic-codes.tsv")
    assert len(rows) == 45
    for row in rows:
        info = catalog.basic_codes[row["code"]]
        assert info.category in catalog.categories, row["code"]
        assert info.intended == DISPOSITION_TO_INTENDED[row["disposition"]], row["code"]
        assert info.meaning.strip()


def test_every_enhanced_code_of_the_registry_is_in_the_catalog_with_its_classes(catalog):
    rows = read_tsv("enhanced-codes.tsv")
    assert len(rows) == 92
    for row in rows:
        info = catalog.enhanced_codes[row["code"]]
        assert info.category in catalog.categories, row["code"]
        assert info.intended in INTENDED, row["code"]
        assert info.classes == tsv_classes(row["class"]), row["code"]
        assert info.meaning.strip()
    assert set(catalog.enhanced_codes) == {row["code"] for row in rows}


def test_the_category_set_is_closed_and_holds_what_the_exporter_reports(catalog):
    assert tuple(catalog.categories) == CATEGORIES
    assert "auth_failure" not in catalog.categories  # renamed smtp_auth: it never meant SPF/DKIM
    for rule in catalog.text_rules:
        assert rule.category in catalog.categories


@pytest.mark.parametrize(("key", "category"), [
    ("X.2.1", "mailbox_inactive"), ("X.1.7", "sender_rejected"), ("X.1.8", "sender_rejected"),
    ("X.7.27", "sender_rejected"), ("X.7.23", "sender_auth"), ("X.7.25", "sender_auth"),
    ("X.7.26", "sender_auth"), ("X.7.8", "smtp_auth"), ("X.7.13", "smtp_auth"),
    ("X.7.1", "policy_blocked"),
])
def test_enhanced_codes_moved_to_the_finer_categories(catalog, key, category):
    assert catalog.enhanced_codes[key].category == category


@pytest.mark.parametrize(("code", "category"), [
    ("530", "smtp_auth"), ("535", "smtp_auth"), ("432", "smtp_auth"), ("571", "blocklisted"),
    ("554", "policy_blocked"),
])
def test_basic_codes_moved_to_the_finer_categories(catalog, code, category):
    assert catalog.basic_codes[code].category == category


def test_disk_full_431_and_4_3_1_say_what_to_do_on_each_side(catalog):
    for info in (catalog.basic_codes["431"], catalog.enhanced_codes["X.3.1"]):
        assert info.category == "system_full"
        assert info.intended == "transient"
        assert "does not clear by itself" in info.sender_action
        assert "postmaster" in info.sender_action
        assert "free disk space" in info.recipient_action
        assert "retries with back-off" in info.mta_action
        assert "until the queue lifetime" in info.mta_action and "then bounces" in info.mta_action
    assert catalog.categories["system_full"].severity == "high"


def test_every_category_has_a_severity_and_default_actions(catalog):
    for category in catalog.categories.values():
        assert category.severity in catalog.severities, category.name
        assert category.sender_action and category.recipient_action, category.name
    assert catalog.categories["local"].severity == "critical"
    assert set(catalog.kinds) == {"soft", "hard", "success", "unknown"}
    assert "queue lifetime" in catalog.kinds["soft"].mta_next
    assert "now" in catalog.kinds["hard"].mta_next


def test_text_rules_carry_what_explain_shows(catalog):
    for rule in catalog.text_rules:
        assert rule.meaning, rule.name
        assert rule.kind in (None, "soft", "hard"), rule.name
    kinds = {rule.name: rule.kind for rule in catalog.text_rules}
    assert kinds["network"] == kinds["dns"] == kinds["tls"] == "soft"
    assert kinds["local_loop"] == kinds["host_unknown"] == "hard"


def test_common_enhanced_codes_carry_sender_and_recipient_actions(catalog):
    for code in ("X.1.1", "X.1.2", "X.2.2", "X.3.1", "X.4.1", "X.4.3", "X.7.1", "X.7.8"):
        info = catalog.enhanced_codes[code]
        assert info.sender_action and info.recipient_action, code
    assert catalog.enhanced_codes["X.4.7"].sender_action


def test_enhanced_lookup_falls_back_to_the_subject_for_unregistered_details(catalog):
    assert catalog.enhanced("4.3.1").code == "X.3.1"
    assert catalog.enhanced("4.7.650").code == "X.7.X"
    assert catalog.enhanced("5.1.10").code == "X.1.10"
    assert catalog.enhanced(None) is None
    # three-digit subjects are not registered (RFC 3463 has 0-7): only the class entry applies
    assert catalog.enhanced("5.100.1") is None
    assert catalog.enhanced_class("5.100.1").code == "5.X.X"


def test_the_packaged_catalog_is_found_from_a_source_checkout():
    assert default_catalog_path().resolve() == CATALOG.resolve()
    assert load_catalog().source == str(default_catalog_path())


# --- Broken catalogs: every problem, with its location ----------------------------------------

def test_a_bad_regex_names_the_rule_by_index_and_name(tmp_path, raw):
    name = raw["text_rules"][3]["name"]
    raw["text_rules"][3]["pattern"] = "unclosed (group"
    path = write(tmp_path, raw)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: text_rules[3] (name '{name}'): invalid regex: ")


def test_an_unknown_category_is_reported_where_it_is_used(tmp_path, raw):
    raw["basic_codes"]["421"]["category"] = "foo"
    raw["text_rules"][0]["category"] = "bar"
    path = write(tmp_path, raw)
    name = raw["text_rules"][0]["name"]
    assert problems_of(path) == [
        f"{path}: basic_codes['421']: unknown category 'foo'",
        f"{path}: text_rules[0] (name '{name}'): unknown category 'bar'",
    ]


def plain_rule(raw: dict) -> int:
    """Index of the first text rule without a code/enhanced constraint."""
    return next(i for i, rule in enumerate(raw["text_rules"])
                if "code" not in rule and "enhanced" not in rule)


def test_missing_fields_are_reported_together(tmp_path, raw):
    index = plain_rule(raw)
    del raw["enhanced_codes"]["X.3.1"]["intended"]
    del raw["basic_codes"]["550"]["meaning"]
    del raw["text_rules"][index]["pattern"]
    del raw["categories"]["expired"]
    del raw["categories"]["tls"]["severity"]
    del raw["kinds"]["unknown"]
    path = write(tmp_path, raw)
    name = raw["text_rules"][index]["name"]
    problems = problems_of(path)
    assert f"{path}: enhanced_codes['X.3.1']: missing field 'intended'" in problems
    assert f"{path}: basic_codes['550']: missing field 'meaning'" in problems
    assert (f"{path}: text_rules[{index}] (name '{name}'): missing field 'pattern' "
            f"(required unless 'code' or 'enhanced' is given)") in problems
    assert f"{path}: categories.tls: missing field 'severity'" in problems
    assert f"{path}: kinds: kind 'unknown' is required (explain uses it)" in problems
    required = f"{path}: categories: category 'expired' is required (the classifier uses it)"
    assert required in problems
    # the catalog's own rules and codes that use "expired" are reported too
    assert f"{path}: enhanced_codes['X.4.7']: unknown category 'expired'" in problems


def test_intended_must_agree_with_the_registry_classes(tmp_path, raw):
    raw["enhanced_codes"]["X.2.2"]["intended"] = "permanent"
    path = write(tmp_path, raw)
    assert problems_of(path) == [
        (f"{path}: enhanced_codes['X.2.2']: intended 'permanent' disagrees with classes [4] "
        f"(expected 'transient')")]


def test_unknown_sections_fields_and_bad_keys_are_reported(tmp_path, raw):
    raw["extras"] = {}
    raw["basic_codes"]["999x"] = {"meaning": "m", "category": "other", "intended": "either"}
    raw["basic_codes"]["250"]["colour"] = "green"
    raw["text_rules"][2]["severity"] = "high"
    path = write(tmp_path, raw)
    name = raw["text_rules"][2]["name"]
    assert problems_of(path) == [
        f"{path}: unknown section 'extras'",
        f"{path}: basic_codes['250']: unknown field 'colour'",
        f"{path}: basic_codes['999x']: a code must look like three digits like \"431\"",
        f"{path}: text_rules[2] (name '{name}'): unknown field 'severity'",
    ]


def test_explain_fields_are_checked(tmp_path, raw):
    raw["categories"]["dns"]["severity"] = "dire"
    raw["text_rules"][0]["kind"] = "permanent"
    raw["text_rules"][1]["meaning"] = ""
    raw["severities"]["low"] = {}
    path = write(tmp_path, raw)
    zero, one = raw["text_rules"][0]["name"], raw["text_rules"][1]["name"]
    assert problems_of(path) == [
        f"{path}: severities.low: missing field 'description'",
        f"{path}: categories.dns: unknown severity 'dire'",
        f"{path}: text_rules[0] (name '{zero}'): kind 'permanent' is not one of soft, hard",
        f"{path}: text_rules[1] (name '{one}'): 'meaning' must be a non-empty string",
    ]


def test_rules_matching_everything_or_using_back_references_are_refused(tmp_path, raw):
    raw["text_rules"][1]["pattern"] = "x?"
    raw["text_rules"][2]["pattern"] = r"(a)\1|(?P<b>b)(?P=b)"
    path = write(tmp_path, raw)
    one, two = raw["text_rules"][1]["name"], raw["text_rules"][2]["name"]
    assert problems_of(path) == [
        (f"{path}: text_rules[1] (name '{one}'): regex matches empty text "
         f"(it would match every reply)"),
        f"{path}: text_rules[2] (name '{two}'): back-references are not allowed",
    ]


def test_duplicate_keys_are_reported_with_their_line(tmp_path):
    text = CATALOG.read_text(encoding="utf-8").replace(
        '  "221":', '  "220": {meaning: dup, category: none, intended: success}\n  "221":', 1)
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: line ") and problem.endswith("duplicate key '220'")


def test_invalid_yaml_and_a_missing_file_are_config_errors(tmp_path):
    bad = tmp_path / "catalog.yaml"
    bad.write_text("categories: [unclosed\n", encoding="utf-8")
    (problem,) = problems_of(bad)
    assert problem.startswith(f"{bad}: invalid YAML: ")
    missing = tmp_path / "nope.yaml"
    (problem,) = problems_of(missing)
    assert problem.startswith(f"{missing}: cannot read the catalog: ")


def test_extra_rules_from_the_config_file_are_checked_with_their_location():
    with pytest.raises(ConfigError) as caught:
        Classifier.load(extra_text_rules=[
            {"name": "ok", "pattern": "fine", "category": "local"},
            {"name": "x", "pattern": "(", "category": "nope"},
            "not a rule",
        ])
    problems = caught.value.problems
    assert problems[0].startswith("classification.text_rules[1] (name 'x'): invalid regex: ")
    assert problems[1:] == [
        "classification.text_rules[1] (name 'x'): unknown category 'nope'",
        "classification.text_rules[2]: must be a mapping with name, pattern and category",
    ]
