"""Config reload: load and validate the sources again, then switch by difference.

Three triggers end here — ``POST /api/config/reload``, ``SIGHUP`` and
``--watch-config`` (:mod:`~modelswap.server.config_watch`) — and one path
serves them all (docs/architecture.md, "Config reload"):

1. **Validate first.** The sources are loaded completely (YAML, merge, macros,
   ``${env.X}``, validation) off the event loop, and the router's part is
   built from them (a model that can never fit in the memory budget NVML
   detected at startup is caught here). Any error stops here: nothing has
   changed; the error, naming file, line and key, is logged to the proxy log,
   published as a ``configReload`` event and returned to an API caller.
2. **Diff.** :func:`modelswap.config.diff.diff_configs` says what changed,
   for the summary and the warnings (restart-only keys, TLS files).
3. **One event.** :meth:`LocalRouter.reconfigure` applies the router's part
   in one step of its loop and, in that same step, calls
   :meth:`ServerState.apply_config`, which switches every per-request reader
   (models list, aliases, filters, ``apiKeys``, peers, profiles, selectors).

Reloads are serialised here (one at a time, in trigger order) so each one is
diffed against the config actually in force; the router itself takes no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from modelswap.config import LoadedConfig, load_config
from modelswap.config.diff import ConfigDiff, diff_configs
from modelswap.config.macros import PortAssignment
from modelswap.errors import ConfigError, ConfigProblem, ModelswapError
from modelswap.observability.events_hub import EVENTS_HUB, EventsHub
from modelswap.router.build import router_update
from modelswap.router.update import RouterUpdate
from modelswap.server.config_watch import ConfigWatcher
from modelswap.server.context import SERVER_STATE, ServerState
from modelswap.server.errors import error_type_and_code
from modelswap.server.events import EVENTS_FEED

log = logging.getLogger("modelswap.reload")

__all__ = [
    "RELOADER",
    "ConfigReloader",
    "ConfigSource",
    "ReloadRefused",
    "add_reload_routes",
    "setup_reload",
]

EVENT_TYPE = "configReload"
"""The ``/api/events`` message type of every reload outcome (docs/api.md)."""

MEMORY_WITHOUT_MEASURING = (
    "resources are configured but memory routing was off at startup: declared sizes and "
    "routing.resources apply now; measuring footprints and the budget detected from the "
    "GPUs (NVML) start only after a restart"
)
"""Warned by a reload that turns memory routing on: the memory source opens at startup."""


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where the running config came from, so it can be read again.

    ``restart_files`` are files read once at startup (the TLS certificate and
    key, by flag name): a reload that finds them changed says a restart is
    needed, and changes nothing.
    """

    config_path: str | None = None
    config_dir: str | None = None
    environ: Mapping[str, str] | None = None
    restart_files: Mapping[str, str] = field(default_factory=dict)
    ports: PortAssignment = field(default_factory=PortAssignment)
    """The ``${PORT}`` assignment of the config loaded at startup (see :meth:`load`)."""

    def load(self, keep_ports: PortAssignment | None = None) -> LoadedConfig:
        """Read the sources again; models in ``keep_ports`` keep their ``${PORT}``."""
        return load_config(self.config_path, self.config_dir, self.environ, keep_ports)


class ReloadRefused(ModelswapError):
    """A reload that changed nothing: invalid config (422), nothing to reload (409),
    shutting down (503)."""

    def __init__(self, status: int, problems: tuple[ConfigProblem, ...]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.status = status
        self.problems = problems

    def as_json(self) -> dict[str, Any]:
        """The error envelope, with each problem located (file, line, key)."""
        error_type, code = error_type_and_code(self.status)
        return {
            "src": "llama-swap",
            "error": {
                "message": self.message,
                "type": error_type,
                "param": None,
                "code": "invalid_config" if self.status == 422 else code,
                "problems": [_problem_json(p) for p in self.problems],
            },
        }


def _problem_json(problem: ConfigProblem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "key": problem.path,
        "message": problem.message,
    }


def _file_digest(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.blake2b(handle.read(), digest_size=16).hexdigest()
    except OSError:
        return ""


class ConfigReloader:
    """Runs reloads for one app (see module docstring)."""

    def __init__(
        self,
        state: ServerState,
        source: ConfigSource | None,
        hub: EventsHub,
        on_reloaded: Callable[[], None] | None = None,
        *,
        detected_resources: Mapping[str, int] | None = None,
        measuring: bool = False,
    ) -> None:
        self._state = state
        self._detected = detected_resources
        self._measuring = measuring
        self._on_reloaded = on_reloaded
        self._source = source
        self._ports = source.ports if source is not None else PortAssignment()
        """The running config's ``${PORT}``s: unchanged models keep theirs across reloads."""
        self._hub = hub
        self._serial = asyncio.Lock()
        self._restart_digests = {
            name: _file_digest(path)
            for name, path in (source.restart_files if source else {}).items()
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reloads = 0
        """Reloads applied so far (for tests and ``repr``)."""

    def __repr__(self) -> str:
        return f"<ConfigReloader reloads={self.reloads} source={self._source}>"

    @property
    def source(self) -> ConfigSource | None:
        return self._source

    async def reload(self, trigger: str) -> dict[str, Any]:
        """Reload now; the summary, or :class:`ReloadRefused` with nothing changed."""
        async with self._serial:
            try:
                loaded = await self._load()
                update = self._router_update(loaded)
            except ReloadRefused as refused:
                self._refused(trigger, refused)
                raise
            diff = diff_configs(self._state.config, loaded.config)
            new = loaded.config
            try:
                await self._state.router.reconfigure(
                    update, on_applied=lambda: self._state.apply_config(new)
                )
            except ModelswapError as error:  # shutting down: the old config ends with us
                stopping = ReloadRefused(error.status, (ConfigProblem(error.message),))
                self._refused(trigger, stopping)
                raise stopping from None
            self.reloads += 1
            self._ports = loaded.ports
            if self._on_reloaded is not None:
                self._on_reloaded()  # e.g. a new modelStatus: the model list changed
            return self._applied(trigger, diff, loaded)

    def start(self, trigger: str) -> asyncio.Task[dict[str, Any]]:
        """Run a reload as a task the reloader owns: a caller that goes away (an
        API client disconnecting) cannot cut a reload short half-way."""
        task = asyncio.get_running_loop().create_task(
            self.reload(trigger), name=f"modelswap.reload[{trigger}]"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieve)
        return task

    async def reload_quietly(self, trigger: str) -> None:
        """Reload; a refusal is only logged and published (signals, the watcher)."""
        with contextlib.suppress(ModelswapError):
            await asyncio.shield(self.start(trigger))

    async def aclose(self) -> None:
        """Cancel reloads still running in the background (app cleanup)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _load(self) -> LoadedConfig:
        source = self._source
        if source is None:
            problem = ConfigProblem("the config was not read from files: nothing to reload")
            raise ReloadRefused(409, (problem,))
        try:
            return await asyncio.to_thread(source.load, self._ports)
        except ConfigError as error:
            raise ReloadRefused(422, error.problems) from None

    def _router_update(self, loaded: LoadedConfig) -> RouterUpdate:
        """The router's part of ``loaded``, with the machine's memory detected at startup."""
        try:
            return router_update(loaded.config, self._detected)
        except ConfigError as error:
            raise ReloadRefused(422, error.problems) from None

    def _refused(self, trigger: str, refused: ReloadRefused) -> None:
        for problem in refused.problems:
            log.error("config reload (%s) refused, nothing changed: %s", trigger, problem)
        self._hub.publish(
            EVENT_TYPE,
            {
                "ok": False,
                "trigger": trigger,
                "error": refused.message,
                "problems": [_problem_json(p) for p in refused.problems],
            },
        )

    def _applied(self, trigger: str, diff: ConfigDiff, loaded: LoadedConfig) -> dict[str, Any]:
        warnings = [*diff.warnings(self._restart_files_changed()), *map(str, loaded.warnings)]
        if loaded.config.routing.memory and not self._measuring:
            warnings.append(MEMORY_WITHOUT_MEASURING)
        summary = diff.summary()
        log.info(
            "config reloaded (%s): %s",
            trigger,
            "no changes" if diff.empty else _describe(summary),
        )
        for warning in warnings:
            log.warning("config reload: %s", warning)
        body = {"ok": True, "trigger": trigger, "summary": summary, "warnings": warnings}
        self._hub.publish(EVENT_TYPE, body)
        return body

    def _restart_files_changed(self) -> tuple[str, ...]:
        if self._source is None:
            return ()
        return tuple(
            name
            for name, path in sorted(self._source.restart_files.items())
            if _file_digest(path) != self._restart_digests.get(name)
        )


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background reload's error as seen: it was logged and published already."""
    if not task.cancelled():
        task.exception()


def _describe(summary: Mapping[str, list[str]]) -> str:
    parts = [
        f"{key} {', '.join(values)}"
        for key, values in summary.items()
        if values and key != "unchanged"
    ]
    return "; ".join(parts)


RELOADER: web.AppKey[ConfigReloader] = web.AppKey("config_reloader", ConfigReloader)


async def handle_reload(request: web.Request) -> web.Response:
    """``POST /api/config/reload``: 200 with the summary, or the refusal's envelope."""
    try:
        body = await asyncio.shield(request.app[RELOADER].start("api"))
    except ReloadRefused as refused:
        return web.json_response(refused.as_json(), status=refused.status)
    return web.json_response(body)


def add_reload_routes(app: web.Application) -> None:
    app.router.add_post("/api/config/reload", handle_reload)


def setup_reload(
    app: web.Application,
    source: ConfigSource | None,
    *,
    watch: bool,
    detected_resources: Mapping[str, int] | None = None,
    measuring: bool = False,
) -> None:
    """Create ``app[RELOADER]``; with ``watch``, poll the sources while the app runs.

    ``detected_resources`` is the machine's memory read at startup (NVML), the
    default budget of every reload; ``measuring`` says footprints are measured
    (memory routing was on at startup).

    Call once ``SERVER_STATE`` and ``EVENTS_HUB`` are set, and *after* adding
    the router's cleanup context: contexts unwind in reverse, so the watcher
    and any reload still running end before the router shuts down.
    """
    feed = app.get(EVENTS_FEED)
    reloader = ConfigReloader(
        app[SERVER_STATE],
        source,
        app[EVENTS_HUB],
        on_reloaded=None if feed is None else feed.publish_model_status,
        detected_resources=detected_resources,
        measuring=measuring,
    )
    app[RELOADER] = reloader

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        watcher_task: asyncio.Task[None] | None = None
        if watch and source is not None:
            watcher = ConfigWatcher(
                source.config_path, source.config_dir, lambda: reloader.reload_quietly("watch")
            )
            watcher_task = asyncio.get_running_loop().create_task(
                watcher.run(), name="modelswap.config-watch"
            )
            log.info("watching the config for changes")
        try:
            yield
        finally:
            if watcher_task is not None:
                watcher_task.cancel()
                await asyncio.gather(watcher_task, return_exceptions=True)
            await reloader.aclose()

    app.cleanup_ctx.append(lifecycle)
