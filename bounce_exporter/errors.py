"""Errors that reach the user as one clear message (exit code 2)."""

from __future__ import annotations


class ConfigError(Exception):
    """A bad flag or config: carries every problem found, each naming where it is."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
