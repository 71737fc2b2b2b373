"""The translating forwarder: one granted Ollama request, sent upstream in OpenAI form.

It plugs into :func:`~modelswap.server.dispatch.serve_local` as its
``forward`` (the seam the plain byte relay uses), so admission, queueing,
swaps, 429s, replays and the router's "serve done" stay where they are. It
opens the upstream request with the app's
:class:`~modelswap.server.proxy.UpstreamClient` and translates the answer:

* the upstream's bytes are teed into the request's observation *as the
  upstream sent them* (OpenAI JSON/SSE), so activity rows, token counts and
  captures work as for ``/v1/chat/completions``; its headers time the
  response and add ``Server-Timing``;
* an upstream error status is passed on with Ollama's ``{"error": "..."}``;
* a stream is NDJSON (``application/x-ndjson``), written object by object;
  if the upstream dies mid-stream the client gets an ``{"error"}`` line;
* a request that only loads the model is answered without an upstream call.

The client leaving cancels this task; ``finally`` closes the upstream
response, which aborts the upstream request (as the byte relay does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from modelswap.ollama import response as translate
from modelswap.ollama.request import UpstreamCall
from modelswap.ollama.stream import SSEDecoder, StreamTranslator, ndjson
from modelswap.server.access_log import add_body_bytes, remember_response
from modelswap.server.context import SERVER_STATE
from modelswap.server.fast_upstream import UpstreamResponse
from modelswap.server.proxy import UPSTREAM_ERRORS, Target, UpstreamUnreachableError, describe
from modelswap.server.recording import Observation, observation

log = logging.getLogger("modelswap.ollama")

NDJSON = "application/x-ndjson"
MAX_WHOLE_BODY = 64 * 1024 * 1024
"""A non-streamed upstream answer larger than this is refused (502), not buffered."""
TOO_LARGE = "answer too large to translate"


@dataclass(slots=True)
class Translation:
    """One Ollama request's forwarder (see module docstring)."""

    call: UpstreamCall
    model: str
    """The name the client asked for; Ollama answers with it."""
    started: float
    """``time.monotonic()`` at the request's arrival (``total_duration``)."""
    granted: bool = False

    async def forward(
        self,
        request: web.Request,
        target: Target,
        body: bytes | None,
        loading: web.StreamResponse | None,
    ) -> web.StreamResponse:
        """Send the translated request, answer in Ollama's form (``loading`` is unused)."""
        self.granted = True
        if self.call.load_only:
            payload = translate.load_response(self.call.kind, self.model, time.time(), unload=False)
            return _json(request, payload, 200, CIMultiDict())
        seen = observation(request)
        upstream = await request.app[SERVER_STATE].client.open(request, target, body)
        try:
            headers: CIMultiDict[str] = CIMultiDict()
            if seen is not None:
                seen.response_headers(upstream.status, headers)  # adds Server-Timing
            if upstream.status >= 400:
                data = await _read_whole(upstream, target, seen)
                message = translate.error_message(data, upstream.status)
                return _json(request, {"error": message}, upstream.status, headers)
            if self.call.stream and self.call.kind in ("chat", "generate"):
                return await self._stream(request, upstream, target, headers, seen)
            data = await _read_whole(upstream, target, seen)
            return _json(request, self._whole(data, seen), 200, headers)
        finally:
            upstream.close()  # a no-op once released; else aborts: never pooled half-read

    def timing(self, seen: Observation | None) -> translate.Timing:
        """``total_duration`` up to now and the ``load_duration`` the request waited for."""
        explain = seen.explain() if seen is not None else None
        load_ms = explain.load_ms if explain is not None and explain.load_ms else 0.0
        total = time.monotonic() - self.started
        return translate.Timing(int(total * translate.NS), int(load_ms * 1_000_000))

    def _whole(self, data: bytes, seen: Observation | None) -> translate.JsonDict:
        try:
            payload = json.loads(data)
        except ValueError:
            raise UpstreamUnreachableError("upstream error: the answer is not JSON") from None
        if not isinstance(payload, dict):
            raise UpstreamUnreachableError("upstream error: the answer is not a JSON object")
        kind, timing, wall = self.call.kind, self.timing(seen), time.time()
        if kind == "chat":
            return translate.chat_response(payload, self.model, self.call.think, timing, wall)
        if kind == "generate":
            return translate.generate_response(payload, self.model, self.call.think, timing, wall)
        if kind == "embed":
            return translate.embed_response(payload, self.model, timing)
        return translate.embeddings_response(payload)

    async def _stream(
        self,
        request: web.Request,
        upstream: UpstreamResponse,
        target: Target,
        headers: CIMultiDict[str],
        seen: Observation | None,
    ) -> web.StreamResponse:
        headers["Content-Type"] = NDJSON
        response = web.StreamResponse(status=200, headers=headers)
        remember_response(request, response)
        await response.prepare(request)
        decoder = SSEDecoder()
        translator = StreamTranslator(self.call.kind, self.model, self.call.think)
        whole_json = "text/event-stream" not in upstream.headers.get("Content-Type", "")
        buffered = b""
        while True:
            try:
                chunk = await upstream.content.readany()
            except UPSTREAM_ERRORS as error:
                reason = describe(error)
                log.warning("[%s] upstream disconnected mid-stream: %s", target.name, reason)
                lost = f"{target.error_prefix}: upstream disconnected mid-stream"
                await _write(response, ndjson([{"error": lost}]))
                break
            if seen is not None and chunk:
                seen.tee(chunk)
            if whole_json:  # an upstream that ignored "stream": one object at the end
                buffered += chunk
                if chunk and len(buffered) <= MAX_WHOLE_BODY:
                    continue
                try:
                    if chunk:
                        raise UpstreamUnreachableError(f"{target.error_prefix}: {TOO_LARGE}")
                    upstream.release()  # read to the end
                    objects = [self._whole(buffered, seen)]
                except UpstreamUnreachableError as error:
                    objects = [{"error": error.message}]
                chunk = b""  # this is the end either way
            elif chunk:
                wall = time.time()
                objects = [
                    obj for data in decoder.feed(chunk) for obj in translator.payload(data, wall)
                ]
            else:
                upstream.release()  # read to the end: the connection may be pooled again
                wall = time.time()
                rest = [obj for data in decoder.close() for obj in translator.payload(data, wall)]
                objects = rest + translator.finish(self.timing(seen), wall)
            if objects and not await _write(response, ndjson(objects)):
                break  # the client left
            if not chunk:
                break
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response


async def _write(response: web.StreamResponse, data: bytes) -> bool:
    try:
        await response.write(data)
    except ConnectionError:
        return False
    add_body_bytes(response, len(data))
    return True


async def _read_whole(
    upstream: UpstreamResponse, target: Target, seen: Observation | None
) -> bytes:
    """The whole upstream body (bounded); a failure before its end is a 502."""
    length = upstream.content_length
    if length is not None and length > MAX_WHOLE_BODY:
        raise UpstreamUnreachableError(f"{target.error_prefix}: {TOO_LARGE}")
    try:
        data = await upstream.content.read(MAX_WHOLE_BODY + 1)
        # read(n) returns what is there up to n: loop to the end (or the bound).
        while len(data) <= MAX_WHOLE_BODY:
            more = await upstream.content.read(MAX_WHOLE_BODY + 1 - len(data))
            if not more:
                break
            data += more
    except UPSTREAM_ERRORS as error:
        raise UpstreamUnreachableError(f"{target.error_prefix}: {describe(error)}") from None
    if len(data) > MAX_WHOLE_BODY:
        raise UpstreamUnreachableError(f"{target.error_prefix}: {TOO_LARGE}")
    upstream.release()  # read to the end: the connection may be pooled again
    if seen is not None:
        seen.tee(data)
    return data


def _json(
    request: web.Request, payload: object, status: int, headers: CIMultiDict[str]
) -> web.Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    response = web.Response(status=status, body=body, headers=headers)
    response.content_type = "application/json"
    add_body_bytes(response, len(body))
    remember_response(request, response)
    return response
