"""A fake OpenAI/Anthropic/llama-server compatible inference server.

Every integration test, the demo and the benchmarks put this behind modelswap
instead of a real llama-server, so it has to be three things at once:

* **real**: an actual child process speaking HTTP on a port, so the process
  machinery (spawn, health, SIGTERM, group kill) is exercised for real;
* **observable**: every answer names the model id that served it and echoes
  what it received (body, model, headers), and ``--event-log`` writes one
  JSON line per lifecycle event, so tests wait on facts instead of sleeping;
* **fast**: no per-request logging, uvloop when importable, small writes.

Run it as ``python -m modelswap.testing.fake_upstream --port N --model-id X``.
Failure modes (``--exit-at-start``, ``--never-healthy``, ``--crash-after``,
``--ignore-sigterm``, ``--fork-grandchild``, ``--slow-body``) let process tests
provoke each path of spec router.md §2. This module decides what each
endpoint answers and runs the process; payload shapes live in
:mod:`modelswap.testing.fake_shapes`, request parsing and response writing in
:mod:`modelswap.testing.fake_wire`, spawning helpers in
:mod:`modelswap.testing.fake_process`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from modelswap.testing import fake_shapes as shapes
from modelswap.testing import fake_wire as wire
from modelswap.testing.fake_options import Options, parse_args
from modelswap.testing.fake_shapes import JsonDict
from modelswap.testing.fake_wire import BadRequest, Call, Endpoint, EventLog

GRANDCHILD_SECONDS = 600  # long enough for any test, short enough not to linger for ever
# SIGTERM back to default: an ignored disposition (--ignore-sigterm) is inherited.
_GRANDCHILD_CODE = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    f"time.sleep({GRANDCHILD_SECONDS})"
)


class FakeUpstream:
    """The server: options, a few counters, and the aiohttp handlers as methods.

    All state lives on the one event loop thread, so plain attributes suffice.
    """

    def __init__(self, opts: Options, log: EventLog, clock: Callable[[], float] = time.monotonic):
        self.opts = opts
        self.log = log
        self._clock = clock
        self._listening_at: float | None = None
        self._healthy = False
        self._completed = 0
        self._ids = itertools.count(1)
        self.stopping = False
        self._ok = json.dumps({"status": "ok", "model_id": opts.model_id}).encode()
        self._loading = json.dumps(
            {
                "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"},
                "model_id": opts.model_id,
            }
        ).encode()

    def __repr__(self) -> str:
        return (
            f"<FakeUpstream {self.opts.model_id!r} port={self.opts.port} "
            f"healthy={self._healthy} completed={self._completed}>"
        )

    def mark_listening(self) -> None:
        self._listening_at = self._clock()

    # --- app wiring -------------------------------------------------------------

    def build_app(self) -> web.Application:
        middlewares = [wire.close_after_response] if self.opts.close_after_response else []
        app = web.Application(client_max_size=wire.MAX_BODY, middlewares=middlewares)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/v1/models", self.models)
        r.add_get("/models", self.models)
        r.add_get("/props", self.props)
        if self.opts.metrics:
            r.add_get("/metrics", self.prometheus)
        endpoints: dict[str, Endpoint] = {
            "/v1/chat/completions": self.chat,
            "/v1/completions": self.completions,
            "/v1/embeddings": self.embeddings,
            "/v1/rerank": self.rerank,
            "/v1/reranking": self.rerank,
            "/rerank": self.rerank,
            "/reranking": self.rerank,
            "/v1/messages": self.messages,
            "/v1/messages/count_tokens": self.count_tokens,
            "/v1/audio/speech": self.speech,
            "/v1/images/generations": self.images,
            "/completion": self.llama_completion,
            "/infill": self.llama_completion,
            "/v1/responses": self.responses,
        }
        for path, endpoint in endpoints.items():
            r.add_post(path, self._inference(endpoint, wire.json_call))
        r.add_post("/v1/audio/transcriptions", self._inference(self.transcribe, wire.form_call))
        r.add_route("*", "/{tail:.*}", self.catch_all)
        return app

    def _headers(self, received_model: Any = None) -> dict[str, str]:
        headers = {"X-Fake-Model-Id": self.opts.model_id}
        if isinstance(received_model, str):
            headers["X-Fake-Received-Model"] = received_model
        return headers

    def _stamp(self, payload: JsonDict, call: Call, *, echo: bool = True) -> JsonDict:
        """Add who-served-what fields; ``echo`` adds the received body and headers."""
        payload["model_id"] = self.opts.model_id
        payload["received_model"] = call.model
        if echo:
            payload["received"] = call.body
            payload["received_headers"] = wire.headers_dict(call.request)
        return payload

    def _inference(
        self, endpoint: Endpoint, parse: Callable[[web.Request], Awaitable[Call]]
    ) -> wire.Handler:
        """Wrap an endpoint with parsing, the event log and crash-after accounting.

        The endpoint writes its response itself (prepare → write_eof) so that
        "completed" really means the bytes were handed to the socket: only then
        may ``--crash-after`` pull the plug.
        """

        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                call = await parse(request)
            except BadRequest as exc:
                self.log.emit("request", path=request.path, model=None, error=str(exc))
                resp: web.StreamResponse = await self._send_error(request, 400, str(exc))
                self._finish(request.path, None, resp.status)
                return resp
            self.log.emit("request", path=request.path, model=call.model, stream=call.stream)
            try:
                resp = await endpoint(call)
            except asyncio.CancelledError:  # handler_cancellation: the client went away
                self._disconnected(call)
                raise
            except ConnectionError:  # a write raced the cancellation
                self._disconnected(call)
                # Raising would make aiohttp log a 500 traceback; a response it
                # cannot write is dropped silently instead.
                return web.Response(status=499)
            self._finish(request.path, call.model, resp.status)
            return resp

        return handler

    def _disconnected(self, call: Call) -> None:
        if not self.stopping:
            self.log.emit("client_disconnected", path=call.request.path, model=call.model)

    def _finish(self, path: str, model: Any, status: int) -> None:
        self.log.emit("request_done", path=path, model=model, status=status)
        self._completed += 1
        if self.opts.crash_after is not None and self._completed >= self.opts.crash_after:
            self.log.emit("crash", completed=self._completed)
            sys.stdout.flush()
            os._exit(1)  # abrupt on purpose: no cleanup, like a segfaulting server

    # --- writing ----------------------------------------------------------------

    async def _send_bytes(
        self, request: web.Request, data: bytes, content_type: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        """Write a complete body now, in slow pieces when ``--slow-body`` asks."""
        return await wire.send_bytes(
            request, data, content_type, headers, slow_body=self.opts.slow_body
        )

    async def _send_json(self, call: Call, payload: Any) -> web.StreamResponse:
        return await self._send_bytes(
            call.request,
            json.dumps(payload).encode(),
            "application/json",
            self._headers(call.model),
        )

    async def _send_error(self, request: web.Request, status: int, message: str) -> web.Response:
        error = {"code": status, "message": message, "type": "invalid_request_error"}
        body = {"error": error, "model_id": self.opts.model_id}
        resp = web.json_response(body, status=status, headers=self._headers())
        await resp.prepare(request)
        await resp.write_eof()
        return resp

    async def _stream(
        self, call: Call, events: Sequence[shapes.Frame], *, done: bool
    ) -> web.StreamResponse:
        """Send SSE events ``--chunk-interval`` apart; ``done`` appends ``[DONE]``.

        Every event says who served it; the first also echoes what was received.
        """
        frames = [
            wire.sse(self._stamp(data, call, echo=i == 0), name)
            for i, (name, data) in enumerate(events)
        ]
        if done:
            frames.append(wire.SSE_DONE)
        headers = self._headers(call.model)
        return await wire.send_sse(call.request, headers, frames, interval=self.opts.chunk_interval)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{os.getpid()}-{next(self._ids)}"

    # --- plain endpoints ----------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        if self.opts.never_healthy or not self._past_startup_delay():
            return web.Response(
                body=self._loading,
                status=503,
                content_type="application/json",
                headers=self._headers(),
            )
        if not self._healthy:
            self._healthy = True
            self.log.emit("healthy")
        return web.Response(body=self._ok, content_type="application/json", headers=self._headers())

    def _past_startup_delay(self) -> bool:
        if self.opts.startup_delay <= 0:
            return True
        started = self._listening_at
        return started is not None and self._clock() - started >= self.opts.startup_delay

    async def models(self, request: web.Request) -> web.Response:
        body = shapes.models_list(self.opts.model_id, int(time.time()))
        body["model_id"] = self.opts.model_id
        return web.json_response(body, headers=self._headers())

    async def props(self, request: web.Request) -> web.Response:
        model = request.query.get("model")
        body = shapes.props(self.opts.model_id)
        body.update(
            model_id=self.opts.model_id,
            received_model=model,
            query=dict(request.query),
            received_headers=wire.headers_dict(request),
        )
        return web.json_response(body, headers=self._headers(model))

    async def prometheus(self, request: web.Request) -> web.Response:
        """A few of llama-server's ``--metrics`` families, from this fake's own counters."""
        text = (
            "# HELP llamacpp:requests_processing Number of requests processing.\n"
            "# TYPE llamacpp:requests_processing gauge\n"
            "llamacpp:requests_processing 0\n"
            "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
            "# TYPE llamacpp:prompt_tokens_total counter\n"
            f"llamacpp:prompt_tokens_total {self._completed * 10}\n"
            "# HELP fake_completed_requests_total Inference requests completed.\n"
            "# TYPE fake_completed_requests_total counter\n"
            f'fake_completed_requests_total{{model="{self.opts.model_id}"}} {self._completed}\n'
        )
        return web.Response(
            body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def catch_all(self, request: web.Request) -> web.Response:
        """Echo anything unrouted, for ``/upstream/<model>/...`` passthrough tests."""
        try:
            raw = await wire.read_body(request)
        except BadRequest as exc:
            return await self._send_error(request, 400, str(exc))
        body = {
            "path": request.path,
            "raw_path": request.raw_path.partition("?")[0],
            "method": request.method,
            "model_id": self.opts.model_id,
            "query": dict(request.query),
            "query_string": request.query_string,
            "received_headers": wire.headers_dict(request),
            "body": raw.decode("utf-8", "replace"),
        }
        return web.json_response(body, headers=self._headers())

    # --- inference endpoints ----------------------------------------------------------

    def _pieces(self) -> list[str]:
        return shapes.split_text(self.opts.text, self.opts.chunks)

    async def chat(self, call: Call) -> web.StreamResponse:
        rid, model, created = self._new_id("chatcmpl-"), self.opts.model_id, int(time.time())
        prompt_n = shapes.count_words(call.body.get("messages"))
        text, extras = shapes.chat_extras(call.body, model, self.opts.text)
        calls_only = not text and "tool_calls" in extras
        pieces = [] if calls_only else shapes.split_text(text, self.opts.chunks)
        if call.stream:
            frames = shapes.chat_stream(
                rid, model, created, pieces, prompt_n, wire.include_usage(call.body), extras
            )
            return await self._stream(call, frames, done=True)
        n = len(pieces) or 1
        body = shapes.chat_completion(rid, model, created, text, prompt_n, n, extras)
        return await self._send_json(call, self._stamp(body, call))

    async def completions(self, call: Call) -> web.StreamResponse:
        rid, model, created = self._new_id("cmpl-"), self.opts.model_id, int(time.time())
        prompt_n, pieces = shapes.count_words(call.body.get("prompt")), self._pieces()
        if call.stream:
            frames = shapes.completion_stream(
                rid, model, created, pieces, prompt_n, wire.include_usage(call.body)
            )
            return await self._stream(call, frames, done=True)
        body = shapes.text_completion(rid, model, created, self.opts.text, prompt_n, len(pieces))
        return await self._send_json(call, self._stamp(body, call))

    async def embeddings(self, call: Call) -> web.StreamResponse:
        raw = call.body.get("input", call.body.get("content", ""))
        inputs = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
        texts = [t if isinstance(t, str) else json.dumps(t) for t in inputs]
        dims = call.body.get("dimensions")
        fmt = call.body.get("encoding_format") or "float"
        body = shapes.embeddings(
            self.opts.model_id, texts, dims if isinstance(dims, int) and dims > 0 else 8, fmt
        )
        return await self._send_json(call, self._stamp(body, call))

    async def rerank(self, call: Call) -> web.StreamResponse:
        docs = [d if isinstance(d, str) else json.dumps(d) for d in call.body.get("documents", [])]
        top_n = call.body.get("top_n")
        body = shapes.rerank(
            self.opts.model_id,
            str(call.body.get("query", "")),
            docs,
            top_n if isinstance(top_n, int) else None,
        )
        return await self._send_json(call, self._stamp(body, call))

    def _anthropic_input_n(self, body: JsonDict) -> int:
        return shapes.count_words([body.get("system"), body.get("messages")])

    async def messages(self, call: Call) -> web.StreamResponse:
        rid, model = self._new_id("msg_"), self.opts.model_id
        input_n, pieces = self._anthropic_input_n(call.body), self._pieces()
        if not call.stream:
            body = shapes.anthropic_message(rid, model, self.opts.text, input_n, len(pieces))
            return await self._send_json(call, self._stamp(body, call))
        frames = shapes.anthropic_stream_events(rid, model, pieces, input_n)
        return await self._stream(call, frames, done=False)

    async def count_tokens(self, call: Call) -> web.StreamResponse:
        body = {"input_tokens": self._anthropic_input_n(call.body)}
        return await self._send_json(call, self._stamp(body, call))

    async def transcribe(self, call: Call) -> web.StreamResponse:
        if call.body.get("response_format") == "text":
            return await self._send_bytes(
                call.request, self.opts.text.encode(), "text/plain", self._headers(call.model)
            )
        file = call.body.get("file")
        body = {"text": self.opts.text, "file": file}
        return await self._send_json(call, self._stamp(body, call))

    async def speech(self, call: Call) -> web.StreamResponse:
        data = shapes.speech_bytes(str(call.body.get("input", "")), self.opts.model_id)
        return await self._send_bytes(call.request, data, "audio/mpeg", self._headers(call.model))

    async def images(self, call: Call) -> web.StreamResponse:
        n = call.body.get("n", 1)
        count = n if isinstance(n, int) and 0 < n <= 10 else 1
        image = {
            "b64_json": base64.b64encode(shapes.TINY_PNG).decode(),
            "revised_prompt": str(call.body.get("prompt", "")),
        }
        body = {"created": int(time.time()), "data": [dict(image) for _ in range(count)]}
        return await self._send_json(call, self._stamp(body, call))

    async def llama_completion(self, call: Call) -> web.StreamResponse:
        """llama-server ``/completion`` and ``/infill`` (the latter answers an array)."""
        model, pieces = self.opts.model_id, self._pieces()
        prompt_n = shapes.count_words(
            [call.body.get(k) for k in ("prompt", "input_prefix", "input_suffix", "input_extra")]
        )
        if call.stream:
            return await self._stream(
                call, shapes.llama_stream(model, pieces, prompt_n), done=False
            )
        final = shapes.llama_completion(model, self.opts.text, prompt_n, len(pieces), stop=True)
        self._stamp(final, call)
        return await self._send_json(call, [final] if call.request.path == "/infill" else final)

    async def responses(self, call: Call) -> web.StreamResponse:
        rid, model, created = self._new_id("resp_"), self.opts.model_id, int(time.time())
        input_n, pieces = shapes.count_words(call.body.get("input")), self._pieces()
        if call.stream:
            frames = shapes.responses_stream(rid, model, created, pieces, input_n)
            return await self._stream(call, frames, done=False)
        body = shapes.response_object(rid, model, created, self.opts.text, input_n, len(pieces))
        return await self._send_json(call, self._stamp(body, call))

    # --- signals ---------------------------------------------------------------------

    def on_sigterm(self, stop: asyncio.Event) -> None:
        self.log.emit("sigterm", ignored=self.opts.ignore_sigterm)
        if not self.opts.ignore_sigterm:
            stop.set()


def spawn_grandchild() -> subprocess.Popen[bytes]:
    """A sleeper in OUR process group (no new session): it survives a kill of
    the parent alone, and dies only if the whole group is signalled, which is
    exactly what process-supervision tests need to prove. It inherits stdout
    and stderr, like a wrapper script's background job would, so it also holds
    the supervisor's pipes open (spec router.md §2.5 step 4)."""
    return subprocess.Popen(
        [sys.executable, "-c", _GRANDCHILD_CODE],
        stdin=subprocess.DEVNULL,
    )


async def serve(opts: Options) -> int:
    """Listen until SIGTERM/SIGINT; return the process exit code."""
    log = EventLog(opts.event_log)
    fake = FakeUpstream(opts, log)
    # Cancel the handler when the client goes away, so a disconnect during a
    # sleep (chunk interval, slow body) is noticed at once, not at the next write.
    runner = web.AppRunner(
        fake.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, opts.host, opts.port, reuse_address=True, shutdown_timeout=0.5)
        await site.start()
    except OSError as exc:
        print(f"fake upstream {opts.model_id}: cannot listen: {exc}", file=sys.stderr, flush=True)
        await runner.cleanup()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, fake.on_sigterm, stop)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    fake.mark_listening()
    log.emit("listening", host=opts.host, port=opts.port, pid=os.getpid())
    print(f"fake upstream {opts.model_id} listening on http://{opts.host}:{opts.port}", flush=True)
    try:
        await stop.wait()
    finally:
        fake.stopping = True
        await runner.cleanup()
        log.close()
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is the optional "fast" extra
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.ignore_sigterm:
        # Ignore from the very first instruction; the loop handler replaces
        # this later only to log the signal.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if opts.exit_at_start is not None:
        print(
            f"fake upstream {opts.model_id}: exiting at start with code {opts.exit_at_start}",
            file=sys.stderr,
            flush=True,
        )
        return opts.exit_at_start
    if opts.fork_grandchild:
        child = spawn_grandchild()
        print(f"grandchild pid {child.pid}", flush=True)
    if opts.nagle:  # a different server on purpose: see fake_nagle's docstring
        from modelswap.testing.fake_nagle import serve_nagle

        return serve_nagle(opts)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(serve(opts))


if __name__ == "__main__":
    sys.exit(main())
