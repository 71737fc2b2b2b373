"""ManagedProcess with real child processes (router.md §2, acceptance scenarios §8.8).

Waits are on facts: state-change events, lines in the child's captured output,
the fake upstream's event log, process exit. ``asyncio.timeout`` is only ever a
failure deadline. TTL runs on a fake clock with a short tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from modelswap.errors import (
    ProcessStoppedError,
    ServiceUnavailableError,
    ShuttingDownError,
    StartAbortedError,
    UpstreamExitedError,
    UpstreamStartError,
)
from modelswap.observability.log_fanout import LogFanout, dropped_marker
from modelswap.process.managed import ManagedProcess
from modelswap.process.spec import ProcessSpec
from modelswap.process.state import ProcessState, StateChange
from modelswap.testing.fake_process import (
    fake_upstream_cmd,
    fake_upstream_env,
    free_port,
    pid_alive,
    read_events,
    wait_event,
    wait_pid_gone,
)

pytestmark = pytest.mark.timeout(30)

S = ProcessState
PY = sys.executable
CYCLE = [
    (S.STOPPED, S.STARTING),
    (S.STARTING, S.READY),
    (S.READY, S.STOPPING),
    (S.STOPPING, S.STOPPED),
]


# --- helpers ------------------------------------------------------------------------


class StateLog:
    """Records every state change and lets a test wait for a state (no polling)."""

    def __init__(self, proc: ManagedProcess) -> None:
        self.changes: list[tuple[ProcessState, ProcessState]] = []
        self._waiters: list[tuple[ProcessState, asyncio.Future[None]]] = []
        proc.on_state_change(self._seen)

    def _seen(self, change: StateChange) -> None:
        self.changes.append((change.old, change.new))
        for state, fut in list(self._waiters):
            if state is change.new and not fut.done():
                fut.set_result(None)

    async def wait_for(self, state: ProcessState, timeout: float = 10.0) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((state, fut))
        async with asyncio.timeout(timeout):
            await fut


class FakeClock:
    """A hand-driven clock that also tells a test when someone has read it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.reads = 0
        self._read = asyncio.Event()

    def __call__(self) -> float:
        self.reads += 1
        self._read.set()
        return self.now

    async def wait_reads(self, n: int, timeout: float = 10.0) -> None:
        """Wait until the clock has been read ``n`` more times (e.g. n TTL ticks)."""
        target = self.reads + n
        async with asyncio.timeout(timeout):
            while self.reads < target:
                self._read.clear()
                await self._read.wait()


async def wait_output(proc: ManagedProcess, needle: str, timeout: float = 10.0) -> str:
    """Wait until the child's captured output contains ``needle``; return all of it."""
    seen = b""
    async with asyncio.timeout(timeout):
        with proc.logs.subscribe(with_history=True) as sub:
            async for chunk in sub:
                seen += chunk
                if needle.encode() in seen:
                    return seen.decode(errors="replace")
    raise AssertionError(f"output ended without {needle!r}: {seen!r}")


async def let_run() -> None:
    """Return once every task created before this call has taken its first step.

    The loop runs ready tasks in FIFO order, so awaiting a task created now
    orders us after them: an ordering guarantee, not a timing guess.
    """

    async def nothing() -> None:
        return None

    await asyncio.create_task(nothing())


def py_cmd(script: str, *args: object) -> str:
    """A ``cmd`` running an inline Python script (no shell involved)."""
    return shlex.join([PY, "-c", script, *map(str, args)])


Factory = Callable[..., ManagedProcess]


@pytest.fixture
async def make_proc(tmp_path: Path) -> AsyncIterator[Factory]:
    """Build ManagedProcesses for the fake upstream (or any cmd); all shut down after."""
    made: list[ManagedProcess] = []

    def factory(
        model_id: str = "m1",
        *,
        cmd: str | None = None,
        port: int | None = None,
        fake: dict[str, Any] | None = None,
        **spec_fields: Any,
    ) -> ManagedProcess:
        port = free_port() if port is None else port
        if cmd is None:
            events = tmp_path / f"{model_id}-{len(made)}.events"
            cmd = fake_upstream_cmd(port, model_id, event_log=events, **(fake or {}))
        ctor = {
            k: spec_fields.pop(k)
            for k in ("clock", "ttl_tick", "pipe_backstop", "logs", "upstream_sink")
            if k in spec_fields
        }
        spec_fields.setdefault("health_check_timeout", 10.0)
        spec = ProcessSpec(
            model_id=model_id, cmd=cmd, proxy=f"http://127.0.0.1:{port}", **spec_fields
        )
        proc = ManagedProcess(spec, base_env=fake_upstream_env(), **ctor)
        made.append(proc)
        return proc

    yield factory
    for proc in made:
        await proc.shutdown()
        assert proc.state is S.SHUTDOWN
        assert proc.pid is None


def events_path(tmp_path: Path, model_id: str = "m1", index: int = 0) -> Path:
    return tmp_path / f"{model_id}-{index}.events"


async def get(url: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url + path) as resp:
        return resp.status, await resp.text()


async def chat(proc: ManagedProcess) -> tuple[int, Any]:
    """One request through the forwarding handle (what the proxy step will do)."""
    async with (
        proc.track_request() as url,
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json={"model": proc.model_id}) as resp,
    ):
        return resp.status, await resp.json()


HANGING_HEALTH = """
import asyncio, sys
async def hang(reader, writer):
    print("health request accepted", flush=True)
    await asyncio.Event().wait()
async def main():
    await asyncio.start_server(hang, "127.0.0.1", int(sys.argv[1]))
    print("listening", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

SLEEPER = "import time; print('armed', flush=True); time.sleep(60)"


# --- §8.8 acceptance scenarios ---------------------------------------------------------


async def test_s88_120_ensure_ready_during_a_stop_waits_then_starts(make_proc: Factory) -> None:
    proc = make_proc(fake={"ignore_sigterm": True})
    states = StateLog(proc)
    await proc.ensure_ready()
    stopping = asyncio.create_task(proc.stop(0.5))
    await states.wait_for(S.STOPPING)
    await proc.ensure_ready()
    assert stopping.done() and stopping.exception() is None
    assert proc.state is S.READY
    assert states.changes == [*CYCLE, (S.STOPPED, S.STARTING), (S.STARTING, S.READY)]


async def test_s88_121_ensure_ready_is_idempotent_until_teardown(make_proc: Factory) -> None:
    proc = make_proc()
    for _ in range(3):
        await proc.ensure_ready()
        assert proc.state is S.READY
    assert proc.statistics().starts == 1
    await proc.shutdown()
    assert proc.state is S.SHUTDOWN
    with pytest.raises(ShuttingDownError, match=r"^\[m1\] shutdown$"):
        await proc.ensure_ready()
    with pytest.raises(ShuttingDownError):
        await proc.stop(1)
    with pytest.raises(ShuttingDownError):
        await proc.wait_ready()


async def test_s88_122_start_serve_stop(make_proc: Factory) -> None:
    proc = make_proc(fake={"response_text": "hello"})
    with pytest.raises(ServiceUnavailableError, match=r"^\[m1\] process is not ready$") as info:
        proc.base_url()
    assert info.value.status == 503
    run = asyncio.create_task(proc.run())
    await proc.wait_ready()
    status, body = await chat(proc)
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "hello"
    await proc.stop(2)
    assert proc.state is S.STOPPED
    await run  # returns (None) rather than raising: a stop is not an error
    with pytest.raises(ServiceUnavailableError):
        proc.base_url()


async def test_s88_123_second_run_while_running_fails(make_proc: Factory) -> None:
    proc = make_proc(cmd=py_cmd(SLEEPER), check_endpoint="none")
    first = asyncio.create_task(proc.run())
    await proc.wait_ready()
    with pytest.raises(ServiceUnavailableError, match=r"could not be started in ready state"):
        await proc.run()
    await proc.stop(1)
    await first  # the stop ends the first run without an error


async def test_s88_124_stop_is_idempotent(make_proc: Factory) -> None:
    proc = make_proc(cmd=py_cmd(SLEEPER), check_endpoint="none")
    states = StateLog(proc)
    await proc.stop(1)
    assert states.changes == []  # a no-op stop emits nothing
    run = asyncio.create_task(proc.run())
    await proc.wait_ready()
    await proc.stop(1)
    await run  # returns (None) rather than raising: a stop is not an error
    await proc.stop(1)
    assert states.changes == CYCLE


async def test_s88_125_stop_cancels_a_start(make_proc: Factory) -> None:
    port = free_port()
    proc = make_proc(cmd=py_cmd(HANGING_HEALTH, port), port=port, health_check_timeout=60)
    states = StateLog(proc)
    run = asyncio.create_task(proc.run())
    await wait_output(proc, "health request accepted")
    pid = proc.pid
    assert pid is not None
    await proc.stop(1)
    with pytest.raises(StartAbortedError, match=r"^aborted$"):
        await run
    assert proc.state is S.STOPPED
    assert not pid_alive(pid)
    assert states.changes == [(S.STOPPED, S.STARTING), (S.STARTING, S.STOPPED)]


async def test_s88_126_teardown_during_a_start(make_proc: Factory) -> None:
    port = free_port()
    proc = make_proc(cmd=py_cmd(HANGING_HEALTH, port), port=port, health_check_timeout=60)
    run = asyncio.create_task(proc.run())
    await wait_output(proc, "health request accepted")
    pid = proc.pid
    assert pid is not None
    began = time.monotonic()
    await proc.shutdown()
    with pytest.raises(ShuttingDownError, match="shutdown"):
        await run
    assert time.monotonic() - began < 5
    assert proc.state is S.SHUTDOWN
    assert not pid_alive(pid)


async def test_s88_127_run_stop_cycles_on_fresh_processes(make_proc: Factory) -> None:
    for i in range(3):
        proc = make_proc(f"cycle{i}")
        run = asyncio.create_task(proc.run())
        await proc.wait_ready()
        async with proc.track_request() as url:
            assert (await get(url, "/health"))[0] == 200
        await proc.stop(2)
        await run  # returns (None) rather than raising: a stop is not an error


# §8.8 128 (upstream disconnect mid-body) is the forwarder's: see
# tests/integration/test_proxy.py::test_s88_128_upstream_crash_mid_stream_ends_cleanly.


async def test_s88_129_ttl_stops_an_idle_model(make_proc: Factory) -> None:
    clock = FakeClock(now=100.0)
    proc = make_proc(ttl=1, unload_timeout=1, clock=clock, ttl_tick=0.005)
    states = StateLog(proc)
    run = asyncio.create_task(proc.run())
    await proc.wait_ready()
    assert proc.last_use == 100.0  # §9.7 fix: idle time counts from readiness
    clock.now = 100.5
    assert (await chat(proc))[0] == 200
    assert proc.last_use == 100.5
    await clock.wait_reads(3)  # the monitor looked and found it fresh
    assert proc.state is S.READY
    clock.now = 101.6  # > ttl since the request finished
    await states.wait_for(S.STOPPED)
    await run  # returns (None) rather than raising: a stop is not an error
    assert states.changes == CYCLE


async def test_s88_130_ttl_is_held_off_by_traffic(make_proc: Factory) -> None:
    clock = FakeClock(now=0.0)
    proc = make_proc(ttl=1, clock=clock, ttl_tick=0.002)
    run = asyncio.create_task(proc.run())
    await proc.wait_ready()
    # Requests every 10 ms of (fake) time for 1.5 s: never idle for longer than ttl.
    for _ in range(150):
        clock.now += 0.01
        async with proc.track_request():
            pass
        await clock.wait_reads(1)  # one TTL tick looked at it
        assert proc.state is S.READY
    # A request in flight (a long stream) holds the model however long it runs.
    async with proc.track_request():
        clock.now += 100
        await clock.wait_reads(3)
        assert proc.state is S.READY
        assert repr(proc).endswith("inflight=1>")
    await proc.stop(1)  # a manual stop ends it
    await run  # returns (None) rather than raising: a stop is not an error


# §8.8 131 (TTL ignores ignored websockets) needs the HTTP layer: see
# tests/integration/test_server_lifecycle.py::test_s88_131_ttl_ignores_ignored_websockets.


async def test_s88_132_ttl_zero_disables(make_proc: Factory) -> None:
    clock = FakeClock()
    proc = make_proc(ttl=0, clock=clock, ttl_tick=0.005)
    await proc.ensure_ready()
    assert (await chat(proc))[0] == 200
    clock.now += 1e9
    assert not proc._ttl.armed  # no monitor exists at all with ttl 0
    assert proc.state is S.READY


async def test_keep_alive_sets_this_runs_ttl(make_proc: Factory) -> None:
    """Ollama's ``keep_alive``: a TTL for the rest of the run, then the config's again."""
    clock = FakeClock(now=0.0)
    proc = make_proc(ttl=0, clock=clock, ttl_tick=0.005)
    states = StateLog(proc)
    proc.keep_alive(5)  # not loaded: nothing to keep, ignored
    await proc.ensure_ready()
    assert proc.ttl == 0
    assert (await chat(proc))[0] == 200
    proc.keep_alive(60)
    await clock.wait_reads(3)  # the new monitor looks: 0 s idle, keep it
    assert (proc.ttl, proc.state) == (60, S.READY)
    clock.now = 61.0
    await states.wait_for(S.STOPPED)
    assert proc.ttl == 0  # the override ended with the run
    await proc.ensure_ready()
    clock.now += 1e9
    assert not proc._ttl.armed  # back to the config's ttl 0: never unloads


async def test_keep_alive_zero_unloads_once_idle_and_inf_never(make_proc: Factory) -> None:
    clock = FakeClock(now=0.0)
    proc = make_proc(ttl=1, clock=clock, ttl_tick=0.005)
    states = StateLog(proc)
    await proc.ensure_ready()
    proc.keep_alive(math.inf)
    assert (await chat(proc))[0] == 200
    clock.now = 1e9
    assert proc.ttl == 0
    async with proc.track_request():
        proc.keep_alive(0)  # a request in flight holds it
        await clock.wait_reads(3)
        assert proc.state is S.READY
    clock.now += 0.001
    await states.wait_for(S.STOPPED)  # idle for any time at all: unloaded


async def test_s88_133_concurrent_run_and_stop_never_deadlock(make_proc: Factory) -> None:
    proc = make_proc(cmd="sleep 60", check_endpoint="none")
    for _ in range(10):
        run = asyncio.create_task(proc.run())
        stop = asyncio.create_task(proc.stop(0.5))
        async with asyncio.timeout(10):
            while not run.done():
                await proc.stop(0.5)
            await stop
        assert run.exception() is None or isinstance(run.exception(), StartAbortedError)
        assert proc.state is S.STOPPED
        assert proc.pid is None


async def test_s88_134_forking_wrapper_does_not_hang_stop(
    make_proc: Factory, tmp_path: Path
) -> None:
    port = free_port()
    inner = fake_upstream_cmd(port, "m1", event_log=tmp_path / "inner.events")
    proc = make_proc(
        cmd=shlex.join(["bash", "-c", f"{inner} & wait"]), port=port, pipe_backstop=0.25
    )
    run = asyncio.create_task(proc.run())
    await proc.wait_ready()
    began = time.monotonic()
    await proc.stop(2)
    assert time.monotonic() - began < 2.25
    assert proc.state is S.STOPPED
    await run  # returns (None) rather than raising: a stop is not an error


async def test_pipe_backstop_when_an_escaped_grandchild_holds_the_pipes(make_proc: Factory) -> None:
    # The middle process starts a sleeper in a new session and exits at once, so
    # the sleeper is neither in our group nor a descendant we can find: only the
    # pipe backstop keeps the stop from hanging on its open stdout.
    escape = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'],"
        " start_new_session=True); "
        "print('escaped', p.pid, flush=True)"
    )
    script = (
        "import subprocess, sys, time; "
        f"subprocess.run([sys.executable, '-c', {escape!r}]); "
        "print('armed', flush=True); time.sleep(60)"
    )
    proc = make_proc(cmd=py_cmd(script), check_endpoint="none", pipe_backstop=0.2)
    await proc.ensure_ready()
    out = await wait_output(proc, "armed")
    escaped = int(out.split("escaped ")[1].split()[0])
    try:
        began = time.monotonic()
        await proc.stop(2)
        assert time.monotonic() - began < 1.5
        assert proc.state is S.STOPPED
    finally:
        psutil.Process(escaped).kill()


async def test_s88_135_the_graceful_timeout_is_honoured(make_proc: Factory, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    script = (
        "import signal, sys, time\n"
        "def term(*_):\n"
        "    time.sleep(0.6)\n"
        "    open(sys.argv[1], 'w').write('done')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "print('armed', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = make_proc(cmd=py_cmd(script, marker), check_endpoint="none", pipe_backstop=0.2)
    await proc.ensure_ready()
    await wait_output(proc, "armed")
    began = time.monotonic()
    await proc.stop(5)
    assert time.monotonic() - began >= 0.5
    assert marker.read_text() == "done"


async def test_s88_136_the_grandchild_is_reaped(make_proc: Factory) -> None:
    proc = make_proc(fake={"fork_grandchild": True})
    await proc.ensure_ready()
    out = await wait_output(proc, "grandchild pid ")
    grandchild = int(out.split("grandchild pid ")[1].split()[0])
    assert pid_alive(grandchild)
    await proc.stop(2)
    await wait_pid_gone(grandchild, timeout=1.0)


async def test_s88_136_wrapper_background_job_is_killed(make_proc: Factory, tmp_path: Path) -> None:
    port = free_port()
    events = tmp_path / "inner.events"
    inner = fake_upstream_cmd(port, "m1", event_log=events)
    proc = make_proc(cmd=shlex.join(["bash", "-c", f"{inner} & wait"]), port=port)
    await proc.ensure_ready()
    server_pid = (await wait_event(events, "listening"))["pid"]
    assert server_pid != proc.pid  # it really is the wrapper's background job
    await proc.stop(2)
    await wait_pid_gone(server_pid, timeout=1.0)


async def test_s88_137_state_events_of_one_cycle(make_proc: Factory) -> None:
    proc = make_proc()
    states = StateLog(proc)
    run = asyncio.create_task(proc.run())
    await proc.wait_ready()
    await proc.stop(2)
    await run
    await proc.stop(2)  # no-op: no event
    assert states.changes == CYCLE


# --- start failures ------------------------------------------------------------------


async def test_early_exit_fails_fast_not_at_the_health_deadline(make_proc: Factory) -> None:
    proc = make_proc(fake={"exit_at_start": 3}, health_check_timeout=30)
    states = StateLog(proc)
    began = time.monotonic()
    with pytest.raises(UpstreamStartError, match=r"^upstream command exited prematurely$"):
        await proc.ensure_ready()
    assert time.monotonic() - began < 5
    assert proc.state is S.STOPPED
    assert b"exiting at start with code 3" in proc.logs.history()
    assert states.changes == [(S.STOPPED, S.STARTING), (S.STARTING, S.STOPPED)]


async def test_health_timeout_kills_the_child(make_proc: Factory, tmp_path: Path) -> None:
    proc = make_proc(fake={"never_healthy": True}, health_check_timeout=0.8)
    with pytest.raises(UpstreamStartError, match=r"^health check timed out after 800ms$"):
        await proc.ensure_ready()
    pid = (await wait_event(events_path(tmp_path), "listening"))["pid"]
    assert not pid_alive(pid)
    assert proc.state is S.STOPPED


async def test_hanging_health_endpoint_cannot_overrun_the_deadline(make_proc: Factory) -> None:
    port = free_port()
    proc = make_proc(cmd=py_cmd(HANGING_HEALTH, port), port=port, health_check_timeout=0.5)
    began = time.monotonic()
    with pytest.raises(UpstreamStartError, match="timed out after 500ms"):
        await proc.ensure_ready()
    assert (
        time.monotonic() - began < 3
    )  # 0.5 s deadline + the 5 s-grace kill of a SIGTERM-able child


async def test_spawn_failure_text(make_proc: Factory) -> None:
    proc = make_proc(cmd="/nonexistent/llama-server --port 1")
    states = StateLog(proc)
    with pytest.raises(UpstreamStartError) as info:
        await proc.ensure_ready()
    assert str(info.value).startswith(
        "failed to start command '/nonexistent/llama-server --port 1': "
    )
    assert proc.state is S.STOPPED
    assert states.changes == [(S.STOPPED, S.STARTING), (S.STARTING, S.STOPPED)]


async def test_config_failure_text(make_proc: Factory) -> None:
    proc = make_proc(cmd="   ")
    with pytest.raises(
        UpstreamStartError, match=r"^unable to get sanitized command: empty command$"
    ):
        await proc.ensure_ready()


async def test_a_failed_start_can_be_retried_and_waiters_hear_the_error(make_proc: Factory) -> None:
    proc = make_proc(fake={"exit_at_start": 1})
    waiter = asyncio.create_task(proc.wait_ready())
    with pytest.raises(UpstreamStartError):
        await proc.ensure_ready()
    with pytest.raises(UpstreamStartError, match="exited prematurely"):
        await waiter
    with pytest.raises(UpstreamStartError):
        await proc.ensure_ready()
    assert proc.statistics().starts == 2


async def test_joiners_of_a_failed_start_get_one_new_attempt(make_proc: Factory) -> None:
    proc = make_proc(fake={"exit_at_start": 2})
    states = StateLog(proc)
    requester = asyncio.create_task(proc.ensure_ready())
    await states.wait_for(S.STARTING)
    joiners = [asyncio.create_task(proc.ensure_ready()) for _ in range(3)]  # saw "starting"
    with pytest.raises(UpstreamStartError):
        await requester
    for joiner in joiners:  # they looked again, shared one retry, and heard its error
        with pytest.raises(UpstreamStartError, match="exited prematurely"):
            await joiner
    assert proc.statistics().starts == 2
    assert proc.state is S.STOPPED


# --- crash, stop, cmdStop ---------------------------------------------------------------


async def test_crash_while_ready_stops_and_restarts(make_proc: Factory) -> None:
    proc = make_proc(fake={"crash_after": 1})
    states = StateLog(proc)
    run = asyncio.create_task(proc.run())
    await proc.wait_ready()
    first_pid = proc.pid
    crashed = asyncio.create_task(states.wait_for(S.STOPPED))
    with contextlib.suppress(aiohttp.ClientError):  # it dies right after answering
        await chat(proc)
    await crashed
    with pytest.raises(UpstreamExitedError, match=r"^\[m1\] upstream exited unexpectedly$"):
        await run
    stats = proc.statistics()
    assert (stats.state, stats.crashes, stats.pid) == (S.STOPPED, 1, None)
    assert (S.READY, S.STOPPED) in states.changes and (S.READY, S.STOPPING) not in states.changes
    await proc.ensure_ready()
    assert proc.pid not in (None, first_pid)
    assert proc.statistics().restarts == 1


async def test_sigterm_ignoring_child_is_killed_after_the_grace(
    make_proc: Factory, tmp_path: Path
) -> None:
    proc = make_proc(fake={"ignore_sigterm": True})
    await proc.ensure_ready()
    pid = proc.pid
    assert pid is not None
    began = time.monotonic()
    await proc.stop(0.3)
    took = time.monotonic() - began
    assert 0.3 <= took < 2
    assert (await wait_event(events_path(tmp_path), "sigterm"))["ignored"] is True
    assert not pid_alive(pid)


async def test_cmd_stop_runs_with_pid_and_the_childs_env(
    make_proc: Factory, tmp_path: Path
) -> None:
    record = tmp_path / "cmdstop"
    stopper = (
        "import os, signal, sys; "
        "open(sys.argv[1], 'w').write(sys.argv[2] + ' ' + os.environ['MODEL_SECRET']); "
        "os.kill(int(sys.argv[2]), signal.SIGTERM)"
    )
    proc = make_proc(cmd_stop=py_cmd(stopper, record) + " ${PID}", env=("MODEL_SECRET=s3",))
    await proc.ensure_ready()
    pid = proc.pid
    await proc.stop(5)
    assert record.read_text() == f"{pid} s3"
    assert (await wait_event(events_path(tmp_path), "sigterm"))["ignored"] is False
    assert proc.state is S.STOPPED


async def test_unparsable_cmd_stop_falls_back_to_sigterm(
    make_proc: Factory, tmp_path: Path
) -> None:
    proc = make_proc(cmd_stop="kill 'unclosed ${PID}")
    await proc.ensure_ready()
    await proc.stop(5)
    assert (await wait_event(events_path(tmp_path), "sigterm"))["ignored"] is False


async def test_stop_during_start_aborts_every_waiter(make_proc: Factory) -> None:
    proc = make_proc(fake={"startup_delay": 30})
    states = StateLog(proc)
    waiters = [asyncio.create_task(proc.ensure_ready()) for _ in range(3)]
    watcher = asyncio.create_task(proc.wait_ready())
    await states.wait_for(S.STARTING)
    await proc.stop(1)
    for task in [*waiters, watcher]:
        with pytest.raises(StartAbortedError):
            await task
    assert proc.state is S.STOPPED
    assert states.changes == [(S.STOPPED, S.STARTING), (S.STARTING, S.STOPPED)]


async def test_wait_ready_never_starts_and_ignores_a_no_op_stop(make_proc: Factory) -> None:
    proc = make_proc(cmd=py_cmd(SLEEPER), check_endpoint="none")
    watcher = asyncio.create_task(proc.wait_ready())
    await let_run()
    await proc.stop(1)  # no-op: must not wake the watcher
    assert not watcher.done()
    assert proc.state is S.STOPPED  # and waiting started nothing
    await proc.ensure_ready()
    await watcher  # woken by readiness
    await proc.wait_ready()  # READY: returns at once


async def test_wait_ready_during_a_stop_hears_stopped(make_proc: Factory) -> None:
    proc = make_proc(fake={"ignore_sigterm": True})
    states = StateLog(proc)
    await proc.ensure_ready()
    stopper = asyncio.create_task(proc.stop(0.3))
    await states.wait_for(S.STOPPING)
    with pytest.raises(ProcessStoppedError, match=r"^\[m1\] stopped$"):
        await proc.wait_ready()
    await stopper


async def test_concurrent_ensure_ready_share_one_start(make_proc: Factory, tmp_path: Path) -> None:
    proc = make_proc(fake={"startup_delay": 0.2})
    await asyncio.gather(*(proc.ensure_ready() for _ in range(8)))
    assert proc.statistics().starts == 1
    assert len([e for e in read_events(events_path(tmp_path)) if e["event"] == "listening"]) == 1


# --- cancellation at each await point --------------------------------------------------


async def test_cancel_the_only_waiter_during_start_does_not_cancel_the_start(
    make_proc: Factory,
) -> None:
    proc = make_proc(fake={"startup_delay": 0.2})
    states = StateLog(proc)
    waiter = asyncio.create_task(proc.ensure_ready())
    await states.wait_for(S.STARTING)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await states.wait_for(S.READY)  # the load went on
    assert proc.statistics().starts == 1
    await proc.ensure_ready()  # and is usable, without another start
    assert proc.statistics().starts == 1


async def test_cancel_one_waiter_during_health_polling(make_proc: Factory, tmp_path: Path) -> None:
    proc = make_proc(fake={"startup_delay": 0.3})
    first = asyncio.create_task(proc.ensure_ready())
    second = asyncio.create_task(proc.ensure_ready())
    await wait_event(events_path(tmp_path), "listening")  # health polling is under way
    first.cancel()
    await second
    assert first.cancelled()
    assert proc.state is S.READY and proc.statistics().starts == 1


async def test_cancel_before_the_controller_ran(make_proc: Factory) -> None:
    proc = make_proc(cmd=py_cmd(SLEEPER), check_endpoint="none")
    states = StateLog(proc)
    waiter = asyncio.create_task(proc.ensure_ready())
    await let_run()  # it has posted its operation; the spawn is not finished
    waiter.cancel()
    await states.wait_for(S.READY)  # the request was made; the load happens
    assert proc.in_flight == 0


async def test_cancel_a_stop_caller_does_not_cancel_the_stop(make_proc: Factory) -> None:
    proc = make_proc(fake={"ignore_sigterm": True})
    states = StateLog(proc)
    await proc.ensure_ready()
    pid = proc.pid
    assert pid is not None
    stopper = asyncio.create_task(proc.stop(0.3))
    await states.wait_for(S.STOPPING)
    stopper.cancel()
    await states.wait_for(S.STOPPED)
    assert not pid_alive(pid)
    assert states.changes == CYCLE


async def test_cancel_ensure_ready_queued_behind_a_stop(make_proc: Factory) -> None:
    proc = make_proc(fake={"ignore_sigterm": True})
    states = StateLog(proc)
    await proc.ensure_ready()
    stopper = asyncio.create_task(proc.stop(0.3))
    await states.wait_for(S.STOPPING)
    queued = asyncio.create_task(proc.ensure_ready())
    await let_run()  # it has posted its operation behind the stop
    queued.cancel()
    await stopper
    await states.wait_for(S.READY)  # the queued start still happens, after the stop
    assert states.changes == [*CYCLE, (S.STOPPED, S.STARTING), (S.STARTING, S.READY)]


async def test_cancel_run_while_ready_leaves_the_child_running(make_proc: Factory) -> None:
    proc = make_proc(cmd=py_cmd(SLEEPER), check_endpoint="none")
    run = asyncio.create_task(proc.run())
    await proc.wait_ready()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert proc.state is S.READY and proc.pid is not None


async def test_cancel_shutdown_caller_still_tears_down(make_proc: Factory) -> None:
    proc = make_proc(fake={"ignore_sigterm": True})
    states = StateLog(proc)
    await proc.ensure_ready()
    pid = proc.pid
    assert pid is not None
    closer = asyncio.create_task(proc.shutdown())
    await states.wait_for(S.SHUTDOWN)
    closer.cancel()
    await proc.shutdown()  # joins the teardown in progress
    assert not pid_alive(pid)


async def test_cancel_track_request_releases_its_count(make_proc: Factory) -> None:
    clock = FakeClock(now=5.0)
    proc = make_proc(cmd=py_cmd(SLEEPER), check_endpoint="none", clock=clock)
    await proc.ensure_ready()
    entered = asyncio.Event()

    async def stream() -> None:
        async with proc.track_request():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stream())
    await entered.wait()
    assert proc.in_flight == 1
    clock.now = 9.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (proc.in_flight, proc.last_use) == (0, 9.0)


# --- logs ----------------------------------------------------------------------------


async def test_output_capture_fan_out_and_slow_subscriber(make_proc: Factory) -> None:
    """History, the shared sink and subscribers see every byte; a slow one gets a marker.

    Nothing here depends on how the pipes chunk the output: the slow
    subscriber's expected stream is computed from the chunks the sink saw, and
    it holds one entry, so with two pipes (at least one chunk each) it always
    overflows.
    """
    sink: list[bytes] = []
    logs = LogFanout("m1", sink=sink.append)
    lines = 200
    # One os.write per line: with PYTHONUNBUFFERED set, print() issues the text
    # and its newline as two writes, and the other pipe's output could land
    # between them in the (correctly) interleaved history.
    script = (
        "import os, time\n"
        f"for i in range({lines}):\n"
        "    os.write(1, f'line {i:04d}\\n'.encode())\n"
        "    os.write(2, f'err {i:04d}\\n'.encode())\n"
        "os.write(1, b'out done\\n')\n"
        "os.write(2, b'err done\\n')\n"
        "time.sleep(60)\n"
    )
    slow = logs.subscribe(queue_entries=1)  # never read until the end
    proc = make_proc(cmd=py_cmd(script), check_endpoint="none", logs=logs)
    await proc.ensure_ready()
    # Each pipe's whole last line (a needle without its newline could match while
    # the newline is still in the pipe, and history would then change under us).
    await wait_output(proc, "out done\n")
    await wait_output(proc, "err done\n")
    history = logs.history().decode()
    assert all(f"line {i:04d}\n" in history and f"err {i:04d}\n" in history for i in range(lines))
    assert b"".join(sink).decode() == history  # the shared sink saw every byte
    assert logs.bytes_written == len(history.encode())
    received = []
    while (chunk := slow.get_nowait()) is not None:
        received.append(chunk)
    assert len(sink) >= 2  # one pipe each at least
    assert received == [sink[0], dropped_marker(sum(len(c) for c in sink[1:]))]
    await proc.stop(1)
    assert proc.logs.history().decode() == history  # history outlives the child


async def test_repr_and_statistics(make_proc: Factory) -> None:
    proc = make_proc(cmd=py_cmd(SLEEPER), check_endpoint="none")
    port = proc.spec.port
    assert repr(proc) == f"<ManagedProcess 'm1' STOPPED pid=None port={port} inflight=0>"
    await proc.ensure_ready()
    async with proc.track_request():
        assert repr(proc) == f"<ManagedProcess 'm1' READY pid={proc.pid} port={port} inflight=1>"
    stats = proc.statistics()
    assert (stats.state, stats.in_flight, stats.starts, stats.restarts) == (S.READY, 0, 1, 0)


# --- a port another process already holds ----------------------------------------------


async def test_start_refuses_a_port_another_process_holds(make_proc: Factory) -> None:
    """A stale server on the port must not answer the new upstream's health check."""
    stale = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = stale.sockets[0].getsockname()[1]
    try:
        proc = make_proc(port=port)
        with pytest.raises(UpstreamStartError, match=f"port {port} is already in use"):
            await proc.ensure_ready()
        assert proc.state is S.STOPPED
        assert proc.pid is None  # nothing was spawned
    finally:
        stale.close()
        await stale.wait_closed()


async def test_a_cmd_that_does_not_name_the_port_may_front_a_running_server(
    make_proc: Factory,
) -> None:
    """``cmd`` wrapping a server that already runs elsewhere keeps working."""
    running = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = running.sockets[0].getsockname()[1]
    try:
        proc = make_proc(port=port, cmd=py_cmd(SLEEPER), check_endpoint="none")
        await proc.ensure_ready()
        assert proc.state is S.READY
    finally:
        running.close()
        await running.wait_closed()
