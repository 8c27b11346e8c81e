"""Skip-or-fail helper for end-to-end tests that need real components (Postfix, root, ...).

By default a missing component SKIPS the test, so a laptop without Postfix still runs the
rest of the suite. With BOUNCE_EXPORTER_REQUIRE_E2E=1 (set by CI) the same situation FAILS,
so a broken CI image cannot silently turn the end-to-end tests into skips.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REQUIRE_ENV = "BOUNCE_EXPORTER_REQUIRE_E2E"

# Postfix installs its commands in sbin folders, which are not always on a user's PATH.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def e2e_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0", "false", "no")


def find_binary(name: str) -> str | None:
    """Full path of a command, looking on PATH and then in the usual sbin folders."""
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require(binary_or_condition: str | bool | Callable[[], object], why: str) -> None:
    """Skip (or fail, when BOUNCE_EXPORTER_REQUIRE_E2E=1) unless the requirement is met.

    binary_or_condition: a command name (must be found by find_binary), a bool, or a
    callable returning something truthy.
    """
    if isinstance(binary_or_condition, str):
        ok = find_binary(binary_or_condition) is not None
        what = f"command {binary_or_condition!r} not found"
    elif callable(binary_or_condition):
        try:
            ok = bool(binary_or_condition())
        except Exception as exc:  # noqa: BLE001 - a probe that raises means "not available"
            ok = False
            what = f"probe raised {exc!r}"
        else:
            what = "condition not met"
    else:
        ok = bool(binary_or_condition)
        what = "condition not met"
    if ok:
        return
    message = f"{why} ({what})"
    if e2e_required():
        pytest.fail(f"{REQUIRE_ENV}=1 but {message}", pytrace=False)
    pytest.skip(message)
