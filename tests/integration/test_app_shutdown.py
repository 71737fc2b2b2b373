"""The composition root end to end: ``python -m modelswap`` with fake upstreams and a preload.

Proves the wiring of ``app.py``: the router starts with the app, the startup
preload loads its model, ``/v1/models`` sees it loaded, and SIGTERM stops every
upstream before modelswap exits 0. Waits are on facts (the "listening" line,
the fake's event log, process exit); the timeouts are failure deadlines.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import aiohttp
import pytest

from modelswap.testing.fake_process import (
    fake_upstream_cmd,
    fake_upstream_env,
    free_port,
    pid_alive,
    read_events,
    wait_event,
)
from tests.integration.test_cli import serving, stop_with

pytestmark = pytest.mark.timeout(60)

DEADLINE = 20.0


def write_config(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two fake models, ``warm`` preloaded and ``cold`` not; returns config and event logs."""
    logs = (tmp_path / "warm.events", tmp_path / "cold.events")
    lines = ["healthCheckTimeout: 15", "hooks:", "  on_startup:", "    preload: [warm]", "models:"]
    for model_id, log in zip(("warm", "cold"), logs, strict=True):
        port = free_port()
        cmd = fake_upstream_cmd(port, model_id, event_log=log, startup_delay=0.1)
        lines += [
            f"  {model_id}:",
            f"    cmd: {json.dumps(cmd)}",
            f"    proxy: http://127.0.0.1:{port}",
        ]
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config, logs[0], logs[1]


async def test_preload_then_sigterm_stops_every_upstream_and_exits_0(tmp_path: Path) -> None:
    config, warm_log, cold_log = write_config(tmp_path)
    args = ["--config", str(config), "--listen", "127.0.0.1:0"]
    async with serving(args, cwd=tmp_path, env=fake_upstream_env()) as served:
        await wait_event(warm_log, "healthy", timeout=DEADLINE)
        pid = (await wait_event(warm_log, "listening", timeout=DEADLINE))["pid"]
        assert pid_alive(pid)

        async with (
            aiohttp.ClientSession() as session,
            session.get(served.url + "/v1/models") as resp,
        ):
            data = await resp.json()
        status = {record["id"]: record["status"]["value"] for record in data["data"]}
        assert status == {"warm": "loaded", "cold": "unloaded"}

        code = await stop_with(served, signal.SIGTERM)
        assert code == 0, "".join(served.output)
        # modelswap stopped (SIGTERM) and reaped the upstream before it exited.
        assert [ev["event"] for ev in read_events(warm_log)].count("sigterm") == 1
        assert not pid_alive(pid)
        assert read_events(cold_log) == []  # never preloaded, never started
