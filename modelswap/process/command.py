"""``cmd`` / ``cmdStop`` text → argv, the way llama-swap splits it (§8.2, §8.3).

Commands are executed directly, never through a shell, so this is the only
place where quoting matters: POSIX shell-word rules, comment lines dropped,
trailing-backslash continuations joined. No variable expansion, globbing or
pipes: the first word is the program.
"""

from __future__ import annotations

import shlex

PID_TOKEN = "${PID}"


def _join_lines(cmd: str) -> str:
    """Drop ``#`` comment lines and turn trailing ``\\`` continuations into spaces."""
    kept: list[str] = []
    for line in cmd.split("\n"):
        trimmed = line.strip()
        if trimmed.startswith("#"):
            continue
        kept.append(trimmed[:-1] + " " if trimmed.endswith("\\") else line)
    return "\n".join(kept)


def split_command(cmd: str) -> list[str]:
    """Split a command into argv.

    Raises ValueError("empty command") when no words remain, and ValueError
    with shlex's reason (e.g. "No closing quotation") when quoting is broken.
    """
    words = shlex.split(_join_lines(cmd), comments=False, posix=True)
    if not words:
        raise ValueError("empty command")
    return words


def stop_command_argv(cmd_stop: str, pid: int) -> list[str] | None:
    """argv of the graceful stop command for ``pid``, or None to fall back to SIGTERM.

    None when ``cmd_stop`` is empty or cannot be parsed, as llama-swap then
    signals the process instead of failing the stop.
    """
    if not cmd_stop.strip():
        return None
    try:
        return split_command(cmd_stop.replace(PID_TOKEN, str(pid)))
    except ValueError:
        return None
