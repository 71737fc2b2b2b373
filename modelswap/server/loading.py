"""The loading-state stream (router spec §5): SSE progress while a model starts.

A streaming chat request for a model that is not ready gets a 200
``text/event-stream`` at once; while it waits for its grant, text arrives as
``reasoning_content`` deltas so chat UIs show it as "thinking":

* opening lines ``━━━━━`` and ``llama-swap loading model: <id>``, then (modelswap)
  ``expected ~12 s, from the last 5 loads`` when the model has loaded before;
* every 750 ms: the newest queue position (``Queue position: #N``), else a
  remark when one is due (the first tick always; then every 5–9 s), else ``.``;
* on the grant: ``Done! (<s>s)`` and ``━━━━━`` lines, then the upstream's own
  SSE bytes follow in the same response.

Text goes out in 5-character chunks paced at 75 characters per second, one
SSE event each. The clock, the sleep and the RNG are injected, so tests run
the whole schedule on a fake clock without sleeping.

The writer runs in its own task (the opening is not written on the
handler's path, fixing router spec §9 item 10), is stopped by :meth:`finish`
(closing lines, at most :attr:`Pacing.handover` seconds, then *fenced* so it
can never write again, even halfway through a message; a grant that arrives
during the opening lines cuts them short rather than wait for them) or :meth:`abort`
(client gone: stop, no closing lines). A grant that fails after the stream
started is written by :meth:`write_error` as an SSE ``data:`` event carrying
the error envelope followed by ``data: [DONE]`` — not a raw JSON body as in
llama-swap (router spec §9 item 11), so SSE clients can parse it.

Typical use (the handler owns ``ticket`` from ``router.admit``)::

    response, write = await start_loading_response(request)
    loading = LoadingStream(write, model_id)
    loading.start(ticket)
    try:
        async with ticket.granted() as upstream:
            await loading.finish()
            await client.forward(request, target, body, response=response)
    except ModelswapError as error:
        await loading.finish()
        await loading.write_error(error.status, error.message, error.code)
    finally:
        await loading.abort()          # no-op when already finished
        ticket.cancel()                # no-op once granted (router/api.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from modelswap.observability.load_eta import LoadEstimate
from modelswap.server.access_log import add_body_bytes, remember_response
from modelswap.server.errors import error_type_and_code
from modelswap.server.loading_remarks import REMARKS

Write = Callable[[bytes], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]

RULE = "━━━━━"
LOADING_PATH_PREFIX = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class Pacing:
    """The schedule of the loading stream; the defaults are llama-swap's."""

    chunk_chars: int = 5
    chars_per_second: float = 75.0
    tick: float = 0.75
    remark_min: int = 5
    remark_max: int = 9
    handover: float = 1.0
    """Longest wait for the closing lines before the writer is fenced off (real time)."""


DEFAULT_PACING = Pacing()


class PositionSource(Protocol):
    """What the stream needs of a router ticket: its queue position and changes to it."""

    @property
    def position(self) -> int | None: ...

    async def wait_position_change(self) -> int | None: ...


def should_stream_loading(path: str, streaming: bool, send_loading_state: bool, state: str) -> bool:
    """True when a request gets the loading stream (evaluated once, after admission)."""
    return (
        path.startswith(LOADING_PATH_PREFIX)
        and streaming
        and send_loading_state
        and state != "ready"
    )


def _sse(payload: Any) -> bytes:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def reasoning_event(text: str) -> bytes:
    """One SSE event carrying ``text`` as ``choices[0].delta.reasoning_content``."""
    return _sse({"choices": [{"delta": {"reasoning_content": text}}]})


def error_events(status: int, message: str, code: str | None = None) -> bytes:
    """The error envelope as an SSE event, then ``data: [DONE]``."""
    error_type, default_code = error_type_and_code(status)
    envelope = {
        "src": "llama-swap",
        "error": {
            "message": message,
            "type": error_type,
            "param": None,
            "code": code or default_code,
        },
    }
    return _sse(envelope) + b"data: [DONE]\n\n"


async def start_loading_response(request: web.Request) -> tuple[web.StreamResponse, Write]:
    """Send the 200 SSE headers now; return the response and a byte-counting writer."""
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "Connection": "keep-alive",
            "X-Accel-Buffering": "no",
        },
    )
    remember_response(request, response)
    await response.prepare(request)

    async def write(data: bytes) -> None:
        await response.write(data)
        add_body_bytes(response, len(data))

    return response, write


class _Stopped(Exception):
    """The writer may not write any more (fenced, or the client left); it stops quietly."""


class LoadingStream:
    """The paced loading-state writer of one request (see module docstring)."""

    def __init__(
        self,
        write: Write,
        model_id: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        remarks: Sequence[str] = REMARKS,
        pacing: Pacing = DEFAULT_PACING,
        estimate: LoadEstimate | None = None,
    ) -> None:
        self._write = write
        self._model_id = model_id
        self._estimate = estimate
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._remarks = list(remarks) or ["Loading"]
        self._rng.shuffle(self._remarks)
        self._next_remark = 0
        self._pacing = pacing
        self._pending_position: int | None = None
        self._opened_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._fenced = False
        self._gone = False
        self.events = 0
        """SSE events written so far."""

    def __repr__(self) -> str:
        state = "gone" if self._gone else "fenced" if self._fenced else "running"
        return f"<LoadingStream {self._model_id!r} {state} events={self.events}>"

    @property
    def fenced(self) -> bool:
        return self._fenced

    @property
    def client_gone(self) -> bool:
        return self._gone

    def start(self, positions: PositionSource | None = None) -> None:
        """Begin writing (opening, then ticks); follow ``positions`` for queue updates."""
        self._opened_at = self._clock()
        self._tasks.append(asyncio.create_task(self._run(), name=f"loading {self._model_id}"))
        if positions is not None:
            self.post_position(positions.position)
            self._tasks.append(asyncio.create_task(self._follow(positions)))

    def post_position(self, position: int | None) -> None:
        """Note a queue position to show at the next tick (only the newest is kept)."""
        if position is not None:
            self._pending_position = position

    async def finish(self) -> None:
        """Stop ticking, write the closing lines (bounded by the hand-over), then fence."""
        await self._stop()
        if not self._gone and not self._fenced:
            with contextlib.suppress(TimeoutError, _Stopped):
                async with asyncio.timeout(self._pacing.handover):
                    await self._closing()
        self._fenced = True

    async def abort(self) -> None:
        """Stop and fence without closing lines (client gone, or cleanup); idempotent."""
        self._fenced = True
        await self._stop()

    async def write_error(self, status: int, message: str, code: str | None = None) -> None:
        """After :meth:`finish`: the error as an SSE event, then ``[DONE]`` (client permitting)."""
        if self._gone:
            return
        with contextlib.suppress(ConnectionError):
            await self._write(error_events(status, message, code))

    # --- internals ----------------------------------------------------------------

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, positions: PositionSource) -> None:
        while True:
            self.post_position(await positions.wait_position_change())

    async def _emit(self, text: str) -> None:
        if self._fenced or self._gone:
            raise _Stopped
        try:
            await self._write(reasoning_event(text))
        except ConnectionError:
            self._gone = True
            raise _Stopped from None
        self.events += 1

    async def _paced(self, text: str) -> None:
        size = self._pacing.chunk_chars
        for start in range(0, len(text), size):
            if start:
                await self._sleep(size / self._pacing.chars_per_second)
            await self._emit(text[start : start + size])

    async def _line(self, text: str) -> None:
        await self._paced(text)
        await self._emit("\n")

    async def _inline(self, text: str) -> None:
        await self._emit("\n")
        await self._paced(text)
        await self._emit(" ")

    def _remark_delay(self) -> float:
        return float(self._rng.randint(self._pacing.remark_min, self._pacing.remark_max))

    async def _run(self) -> None:
        with contextlib.suppress(_Stopped):
            await self._line(RULE)
            await self._line(f"llama-swap loading model: {self._model_id}")
            if self._estimate is not None:
                await self._line(f"expected {self._estimate.describe()}")
            await self._tick_forever()

    async def _tick_forever(self) -> None:
        tick = self._pacing.tick
        remark_due: float | None = None  # None: the first tick always remarks
        next_tick = self._clock() + tick
        while True:
            delay = next_tick - self._clock()
            if delay > 0:
                await self._sleep(delay)
            now = self._clock()
            if self._pending_position is not None:
                position, self._pending_position = self._pending_position, None
                await self._inline(f"Queue position: #{position}")
                remark_due = now + self._remark_delay()
            elif remark_due is None or now >= remark_due:
                remark = self._remarks[self._next_remark % len(self._remarks)]
                self._next_remark += 1
                await self._inline(remark)
                remark_due = now + self._remark_delay()
            else:
                await self._emit(".")
            next_tick += tick
            while next_tick <= self._clock():  # ticks missed while writing are dropped
                next_tick += tick

    async def _closing(self) -> None:
        elapsed = self._clock() - self._opened_at
        await self._emit("\n")
        await self._line(f"Done! ({elapsed:.2f}s)")
        await self._line(RULE)
        await self._line(" ")
