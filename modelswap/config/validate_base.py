"""Shared plumbing of the validation steps: locating and raising problems.

Every check of §2.3 reports llama-swap's exact message; the loader adds the
file and line of the key the message is about, so ``globalTTL must be >= 0``
is shown as ``config.yaml:3: globalTTL must be >= 0``. Checks stop at the
first error, as llama-swap does, which is why the order of steps matters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from modelswap.config.locations import KeyPath, format_path
from modelswap.errors import ConfigError, ConfigProblem

__all__ = ["KeyPath", "Locate", "Reporter", "nowhere"]

Locate = Callable[[KeyPath], tuple[str | None, int | None]]
"""Maps a key path to (file, line) of the nearest located ancestor."""


def nowhere(path: KeyPath) -> tuple[str | None, int | None]:
    """The locator for trees that did not come from a file (tests, API)."""
    return (None, None)


@dataclass
class Reporter:
    """Raises errors and collects warnings, each located in the source."""

    locate: Locate = nowhere
    warnings: list[ConfigProblem] = field(default_factory=list)

    def problem(self, message: str, path: KeyPath, key: str | None = None) -> ConfigProblem:
        file, line = self.locate(path)
        return ConfigProblem(message, file=file, line=line, path=key)

    def fail(self, message: str, *path: str | int) -> NoReturn:
        """Stop loading with ``message`` (the spec's text) located at ``path``."""
        raise ConfigError([self.problem(message, path)])

    def warn(self, message: str, *path: str | int) -> None:
        self.warnings.append(self.problem(message, path, key=format_path(path) or None))
