"""Every series the exporter exposes for each real corpus log, exactly as reviewed in
tests/golden/ (``python -m tests.golden`` rewrites them; read the diff before committing), on the
compiled Postfix path and on the pure-Python one."""

from __future__ import annotations

import difflib

import pytest

from .golden import GOLDEN, LOGS, exposition


@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure-python"])
@pytest.mark.parametrize("name", LOGS)
def test_the_exposition_of_a_real_log_is_the_reviewed_one(name, pure):
    expected = (GOLDEN / f"{name}.prom").read_text()
    got = exposition(name, pure=pure)
    diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                        got.splitlines(keepends=True),
                                        f"tests/golden/{name}.prom", "now"))
    assert got == expected, f"the exposition changed (python -m tests.golden rewrites it):\n{diff}"
