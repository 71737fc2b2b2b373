"""Helpers for router integration tests: fake-upstream configs, a state recorder, requests.

Everything waits on facts — process state changes, the router's own change
notifications, the fake's event log — and ``asyncio.timeout`` is only ever a
failure deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from modelswap.config import load_config_text
from modelswap.process import StateChange
from modelswap.router.api import Upstream
from modelswap.router.build import build_router
from modelswap.router.runtime import LocalRouter, RouterStatistics
from modelswap.testing.fake_process import (
    fake_upstream_cmd,
    fake_upstream_env,
    free_port,
    read_events,
    wait_pid_gone,
)

DEADLINE = 10.0

TOGETHER = """
groups:
  all:
    swap: false
    exclusive: false
    members: [{members}]
"""
"""Routing where nothing evicts anything (format with ``members``)."""


@dataclass
class Fake:
    """One fake upstream as configured; its event log tells what really happened."""

    model_id: str
    port: int
    event_log: Path
    options: dict[str, Any]
    settings: dict[str, Any]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [ev for ev in read_events(self.event_log) if ev.get("event") == name]

    @property
    def starts(self) -> int:
        """Children that got as far as listening."""
        return len(self.events("listening"))

    @property
    def requests(self) -> int:
        return len(self.events("request"))

    def yaml(self) -> str:
        cmd = fake_upstream_cmd(self.port, self.model_id, event_log=self.event_log, **self.options)
        lines = [
            f"  {self.model_id}:",
            f"    cmd: {json.dumps(cmd)}",
            f"    proxy: http://127.0.0.1:{self.port}",
        ]
        lines += [f"    {key}: {json.dumps(value)}" for key, value in self.settings.items()]
        return "\n".join(lines)


class Recorder:
    """Every state change of every process, in order, plus markers a test adds.

    Entries read ``"a:starting"``; :meth:`mark` adds free text (``"r1 done"``)
    so a test can assert what happened before what.
    """

    def __init__(self, router: LocalRouter) -> None:
        self.log: list[str] = []
        self._changed = asyncio.Event()
        self.callbacks: list[Callable[[StateChange], None]] = []
        for process in router.processes.values():
            process.on_state_change(self._seen)

    def _seen(self, change: StateChange) -> None:
        self.log.append(f"{change.model_id}:{change.new.value}")
        self._changed.set()
        for callback in list(self.callbacks):
            callback(change)

    def mark(self, text: str) -> None:
        self.log.append(text)
        self._changed.set()

    def count(self, entry: str) -> int:
        return self.log.count(entry)

    def index(self, entry: str) -> int:
        return self.log.index(entry)

    async def wait(self, entry: str, count: int = 1, timeout: float = DEADLINE) -> None:
        async with asyncio.timeout(timeout):
            while self.log.count(entry) < count:
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Lab:
    """Builds routers over fake upstreams and tears every one down afterwards."""

    tmp_path: Path
    fakes: dict[str, Fake] = field(default_factory=dict)
    routers: list[LocalRouter] = field(default_factory=list)

    def model(
        self, model_id: str, *, settings: dict[str, Any] | None = None, **options: Any
    ) -> Fake:
        """Add a model; ``settings`` are config keys (``unloadTimeout``…), options fake flags."""
        fake = Fake(
            model_id,
            free_port(),
            self.tmp_path / f"{model_id}.events",
            options,
            {"unloadTimeout": 2, **(settings or {})},
        )
        self.fakes[model_id] = fake
        return fake

    def config_text(self, routing: str = "", head: str = "") -> str:
        models = "\n".join(fake.yaml() for fake in self.fakes.values())
        return f"healthCheckTimeout: 15\n{head}\nmodels:\n{models}\n{routing}\n"

    def build(self, routing: str = "") -> tuple[LocalRouter, Recorder]:
        config = load_config_text(self.config_text(routing), "test.yaml", environ={}).config
        router = build_router(config, base_env=fake_upstream_env())
        self.routers.append(router)
        return router, Recorder(router)

    async def close(self) -> None:
        for router in self.routers:
            if router.statistics().shutting_down:
                await router.wait_closed()
            else:
                await router.shutdown(1)
            stats = router.statistics()
            assert all(p.state.value == "shutdown" for p in stats.processes.values()), stats
            assert stats.tasks == 0 and stats.swap_workers == 0, stats
        for fake in self.fakes.values():
            for ev in fake.events("listening"):
                await wait_pid_gone(ev["pid"], timeout=DEADLINE)


async def chat(upstream: Upstream) -> str:
    """One real chat completion through the upstream the grant named."""
    body = {"model": upstream.model_id, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(upstream.base_url + "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        return str(data["choices"][0]["message"]["content"])


async def serve(
    router: LocalRouter,
    model_id: str,
    *,
    hold: asyncio.Event | None = None,
    serving: asyncio.Event | None = None,
) -> str:
    """Admit, wait for the grant, forward one request; optionally hold the grant open."""
    ticket = await router.admit(model_id)
    try:
        async with ticket.granted() as upstream:
            if serving is not None:
                serving.set()
            if hold is not None:
                await hold.wait()
            return await chat(upstream)
    finally:
        ticket.cancel()


async def settled(router: LocalRouter, *, loading: bool = False) -> RouterStatistics:
    """Statistics once every posted event is handled; asserts nothing is left over.

    ``loading``: a swap whose waiters all left may still be loading (§3.10).
    """
    await router.wait_idle()
    stats = router.statistics()
    assert stats.in_flight == {}, stats
    assert stats.reservations == {}, stats
    assert stats.queue == (), stats
    assert loading or stats.scheduler.swaps == (), stats
    assert all(not swap.waiters for swap in stats.scheduler.swaps), stats
    assert stats.tickets == 0, stats
    return stats


async def until(router: LocalRouter, predicate: Callable[[RouterStatistics], bool]) -> None:
    async with asyncio.timeout(DEADLINE):
        await router.wait_for(predicate)


def waiters(stats: RouterStatistics, model_id: str) -> int:
    return sum(len(s.waiters) for s in stats.scheduler.swaps if s.model == model_id)
