"""Which Postfix block scan runs: the compiled one (the optional C extension) or pure Python.

The one place that decides. The C extension (``bounce_exporter_fastscan``, built from
``parsers/_fastscan.c`` by ``pip install .`` where a C compiler and Python's headers are there) is
used unless ``BOUNCE_EXPORTER_PURE_PYTHON`` is set to a non-empty value other than ``0``, or it is
missing or of another build (``ABI_VERSION``). Either way the events are the same: the pure-Python
parser is the fallback and the compiled path's test oracle (tests/test_speedups.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from types import ModuleType

log = logging.getLogger(__name__)

PURE_PYTHON_ENV = "BOUNCE_EXPORTER_PURE_PYTHON"
ABI_VERSION = 2  # of _fastscan.c: an extension built from other sources is not used

try:
    import bounce_exporter_fastscan as _compiled
except ImportError:  # no compiler at install time: pure Python
    _compiled = None
if _compiled is not None and getattr(_compiled, "ABI_VERSION", None) != ABI_VERSION:
    _compiled = None


def compiled() -> ModuleType | None:
    """The C extension, whatever the environment says (None when it is not installed)."""
    return _compiled


def forced_pure() -> bool:
    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")


def scanner() -> ModuleType | None:
    """The extension to use now: None when pure Python runs."""
    return None if forced_pure() else _compiled


def line_counter() -> Callable[[bytes], int] | None:
    """``data.count(b"\\n")``, the extension's (16 bytes at a time); None when pure Python
    runs."""
    compiled = scanner()
    return None if compiled is None else compiled.count_lines


def accelerated() -> bool:
    """True when new Postfix parsers use the compiled scan."""
    return scanner() is not None


def describe() -> str:
    """One line for the start-up log: which path runs, and why."""
    if _compiled is None:
        return ("Postfix parser: pure Python (the C extension bounce_exporter_fastscan is not "
                "installed: it needs a C compiler and Python's headers at install time)")
    if forced_pure():
        return f"Postfix parser: pure Python ({PURE_PYTHON_ENV} is set)"
    return "Postfix parser: compiled block scan (C extension bounce_exporter_fastscan)"
