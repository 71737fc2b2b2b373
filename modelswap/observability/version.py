"""Build metadata for ``GET /api/version``: version, commit and build date.

The version is the package's. A packaged build may ship ``_build_info.json``
next to the package (``{"commit": …, "build_date": …}``), written by the build;
a source checkout has none, so the commit is read from the checkout's ``.git``
files directly (no ``git`` subprocess, no environment), and the build date is
``unknown``. Anything not discoverable is ``"unknown"``, never an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import modelswap

UNKNOWN = "unknown"
PACKAGE_DIR = Path(modelswap.__file__).resolve().parent


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _git_dir(checkout: Path) -> Path | None:
    """``.git`` as a directory, or the directory a worktree's ``.git`` file points to."""
    dot_git = checkout / ".git"
    if dot_git.is_dir():
        return dot_git
    text = _read(dot_git)
    if text and text.startswith("gitdir:"):
        target = Path(text.removeprefix("gitdir:").strip())
        return target if target.is_absolute() else (checkout / target).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common_text = _read(git_dir / "commondir")
    common = (git_dir / common_text).resolve() if common_text else git_dir
    for base in (git_dir, common):
        value = _read(base / ref)
        if value:
            return value
    for line in (_read(common / "packed-refs") or "").splitlines():
        sha, _, name = line.partition(" ")
        if name == ref:
            return sha
    return None


def git_commit(checkout: Path) -> str | None:
    """The commit ``HEAD`` names in ``checkout``'s git files, or None."""
    git_dir = _git_dir(checkout)
    if git_dir is None:
        return None
    head = _read(git_dir / "HEAD")
    if not head:
        return None
    if head.startswith("ref:"):
        return _resolve_ref(git_dir, head.removeprefix("ref:").strip())
    return head


def version_info(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """``{"version", "commit", "build_date"}``. Reads a few small files: call it off the loop."""
    info = {"version": modelswap.__version__, "commit": UNKNOWN, "build_date": UNKNOWN}
    built = _read(package_dir / "_build_info.json")
    if built:
        try:
            data = json.loads(built)
        except ValueError:
            data = {}
        if isinstance(data, dict):
            for key in ("commit", "build_date"):
                if isinstance(data.get(key), str) and data[key]:
                    info[key] = data[key]
    if info["commit"] == UNKNOWN:
        info["commit"] = git_commit(package_dir.parent) or UNKNOWN
    return info
