"""Where each key of a config tree came from: file and line, by key path.

Split out of yaml_io so that the macro engine and the typed decoder can point
at lines without depending on the parser.
"""

from __future__ import annotations

from collections.abc import Iterator

from modelswap.errors import ConfigError, ConfigProblem

KeyPath = tuple[str | int, ...]
"""Where a value sits in the tree: mapping keys (always str) and list indices."""


def format_path(path: KeyPath) -> str:
    """Render a key path the way error messages show it: ``peers.x.models[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class Locations:
    """Source position of every mapping key and list item of a parsed document.

    Later stages (macro expansion, typed decode) only see plain data; they ask
    this object where a value came from so that every error can name a file
    and line. Values created by expansion have no entry of their own, which is
    why ``lookup`` falls back to the nearest ancestor that has one.
    """

    def __init__(self, default_file: str | None = None) -> None:
        self._entries: dict[KeyPath, tuple[str, int]] = {}
        self.default_file = default_file

    def add(self, path: KeyPath, file: str, line: int) -> None:
        """Record (or overwrite) the position of the key/item at ``path``."""
        self._entries[path] = (file, line)

    def setdefault(self, path: KeyPath, file: str, line: int) -> None:
        """Record the position unless one is already known (first source wins)."""
        self._entries.setdefault(path, (file, line))

    def get(self, path: KeyPath) -> tuple[str, int] | None:
        """The exact entry for ``path``, or None."""
        return self._entries.get(path)

    def lookup(self, path: KeyPath) -> tuple[str | None, int | None]:
        """Position of ``path`` or of its nearest ancestor that has one."""
        for end in range(len(path), 0, -1):
            found = self._entries.get(path[:end])
            if found is not None:
                return found
        return (self.default_file, None)

    def problem(self, path: KeyPath, message: str, *, with_path: bool = True) -> ConfigProblem:
        """A ConfigProblem located at ``path`` (file, line and dotted key path).

        ``with_path=False`` leaves the key path out, for messages that already
        start with it (it would be printed twice).
        """
        file, line = self.lookup(path)
        shown = format_path(path) if with_path else ""
        return ConfigProblem(message, file, line, shown or None)

    def error(self, path: KeyPath, message: str, *, with_path: bool = True) -> ConfigError:
        """A ConfigError for one problem at ``path``; callers ``raise`` it."""
        return ConfigError([self.problem(path, message, with_path=with_path)])

    def items(self) -> Iterator[tuple[KeyPath, tuple[str, int]]]:
        """All recorded entries, in insertion order."""
        return iter(self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Locations {len(self._entries)} entries file={self.default_file!r}>"
