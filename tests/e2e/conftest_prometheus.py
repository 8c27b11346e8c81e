"""Fixture for tests that need a real Prometheus server (see prometheus_lab.py).

Not a conftest.py (that one belongs to the Postfix lab): import the fixture into the test module,

    from .conftest_prometheus import make_prometheus  # noqa: F401  (pytest fixture)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .prometheus_lab import PrometheusLab
from .requirements import require


def require_prometheus() -> None:
    require("prometheus", "the Prometheus e2e tests need the prometheus package "
                          "(apt-get install prometheus)")


@pytest.fixture
def make_prometheus(tmp_path) -> Iterator[Callable[..., PrometheusLab]]:
    """make_prometheus(targets, rule_files=(), **kw) -> started PrometheusLab (see its
    docstring for the arguments). Its config, TSDB and log live in <tmp_path>/prometheus-N
    (kept by pytest for inspection); every server started is stopped at teardown, also when the
    test failed."""
    require_prometheus()
    started: list[PrometheusLab] = []

    def make(targets, rule_files=(), **kwargs) -> PrometheusLab:
        kwargs.setdefault("workdir", tmp_path / f"prometheus-{len(started)}")
        lab = PrometheusLab(targets, rule_files, **kwargs)
        started.append(lab)
        return lab.start()

    yield make
    for lab in reversed(started):
        lab.stop()
