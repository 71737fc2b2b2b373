"""``--watch-config``: notice an edit of any config source and ask for a reload.

Polling, not inotify: four times a second the watcher lists the sources again
(``-config`` plus every ``*.yaml``/``*.yml`` in ``-config-dir``, so a file added
to or removed from the directory counts) and hashes their contents. Configs
are a few kilobytes, so this costs microseconds, needs no dependency and works
the same on every filesystem, including bind mounts where inotify is silent.

A change is acted on once two consecutive polls agree, so an editor that
writes a file in several pieces is reloaded once, from the finished text —
within 0.25-0.5 s of the last write. A text that is still invalid is refused
by the reload itself (validate first), and the watcher waits for the next
change rather than retrying the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

from modelswap.config.sources import source_files

log = logging.getLogger("modelswap.reload")

__all__ = ["POLL_INTERVAL", "ConfigWatcher", "fingerprint"]

POLL_INTERVAL = 0.25
"""Seconds between polls: an edit is picked up within two of them."""

Fingerprint = tuple[tuple[str, str], ...]


def fingerprint(config_path: str | None, config_dir: str | None) -> Fingerprint:
    """``(path, content hash)`` per source file now ("" for one that cannot be read)."""
    entries = []
    for path in source_files(config_path, config_dir):
        try:
            with open(path, "rb") as handle:
                digest = hashlib.blake2b(handle.read(), digest_size=16).hexdigest()
        except OSError:
            digest = ""
        entries.append((path, digest))
    return tuple(entries)


class ConfigWatcher:
    """Polls the config sources; calls ``on_change`` once per settled edit."""

    def __init__(
        self,
        config_path: str | None,
        config_dir: str | None,
        on_change: Callable[[], Awaitable[object]],
        *,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self._path = config_path
        self._dir = config_dir
        self._on_change = on_change
        self._interval = interval
        self._applied = fingerprint(config_path, config_dir)
        self.changes = 0
        """Settled edits seen so far (for tests and ``repr``)."""

    def __repr__(self) -> str:
        return f"<ConfigWatcher files={len(self._applied)} changes={self.changes}>"

    async def run(self) -> None:
        """Poll until cancelled. A failing ``on_change`` is logged, never fatal."""
        previous = self._applied
        while True:
            await asyncio.sleep(self._interval)
            current = fingerprint(self._path, self._dir)
            settled = current == previous
            previous = current
            if not settled or current == self._applied:
                continue
            self._applied = current
            self.changes += 1
            try:
                await self._on_change()
            except Exception:  # the reload reports its own errors; this is a bug
                log.exception("config watcher: reload failed")
