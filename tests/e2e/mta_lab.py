"""What every MTA lab (postfix_lab, exim_lab, opensmtpd_lab) shares.

- its folder: made (mkdtemp) unless one is given, opened to the MTA's own users (0755), and removed
  by ``cleanup()`` only if the lab made it;
- the log the MTA writes (``maillog``), read as lines, and its tail;
- use as a context manager (``start()``, then ``cleanup()``);
- polling that shows the log's tail when it times out.
A lab sets ``maillog`` and implements ``start()`` and ``stop()`` (idempotent).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Self

from ..helpers import T, wait_until


class MtaLab:
    log_label = "maillog"  # how a timeout's message names the log
    base: Path
    maillog: Path

    def _make_base(self, base_dir: str | os.PathLike[str] | None, prefix: str) -> None:
        self._own_base = base_dir is None
        base = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix=prefix))
        base.mkdir(parents=True, exist_ok=True)
        # The MTA's users must reach the folders below it (and `postfix check` dislikes
        # writable parents).
        os.chmod(base, 0o755)
        self.base = base.resolve()

    def start(self, timeout: float = 20) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 15) -> None:
        raise NotImplementedError

    def _tidy(self) -> None:
        """What the lab left outside its folder, removed by ``cleanup()`` after ``stop()``."""

    def cleanup(self) -> None:
        """stop(), tidy up, then remove the lab folder if this object made it."""
        self.stop()
        self._tidy()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def log_lines(self) -> list[str]:
        try:
            return self.maillog.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_lines()[-n:])

    def wait_until(
        self, predicate: Callable[[], T], timeout: float, *, interval: float = 0.1, what: str = ""
    ) -> T:
        """Poll predicate() until it returns something truthy (returned), at most `timeout` s."""
        return wait_until(predicate, timeout, what, interval=interval,
                          context=lambda: f"{self.log_label} tail:\n{self.log_tail()}")
