"""Replaying a request whose upstream died before answering: the pure parts.

The decision (:func:`replayable`), the events that end a cut SSE stream, the
``retryOnCrash`` key and the Prometheus counter. The real thing — crashes,
restarts, a replay into a loading stream — is in tests/integration/test_replay.py.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelswap.config import config_json_schema, load_config_text
from modelswap.errors import (
    ModelUnloadedError,
    ProcessStoppedError,
    RouterShuttingDownError,
    ServiceUnavailableError,
    ShuttingDownError,
    SwapFailedError,
    TooManyRequestsError,
)
from modelswap.observability.prometheus import PrometheusMetrics
from modelswap.server.proxy import (
    UpstreamConnectionLostError,
    UpstreamUnreachableError,
    sse_epilogue,
)
from modelswap.server.replay import replayable

LOST = UpstreamConnectionLostError("upstream error: Connection reset by peer")
NOT_READY = ServiceUnavailableError("[m] process is not ready")


@pytest.mark.parametrize(
    ("error", "serving", "expected"),
    [
        (LOST, True, True),  # refused / reset / closed before the status line
        (NOT_READY, False, True),  # crashed between the grant and its use
        (NOT_READY, True, False),  # a 503 from elsewhere, once serving
        (UpstreamUnreachableError("upstream error: timeout awaiting response headers"), True,
         False),  # may still be working on it
        (UpstreamUnreachableError("upstream error: payload not completed"), True, False),
        (ProcessStoppedError("[m] stopped"), False, False),
        (ShuttingDownError("shutting down"), False, False),
        (RouterShuttingDownError("group is shutting down"), False, False),
        (SwapFailedError("health check timed out"), False, False),
        (ModelUnloadedError("group: model unloaded"), False, False),
        (TooManyRequestsError("Too many requests", 1), False, False),
        (ValueError("not ours"), True, False),
    ],
)  # fmt: skip
def test_what_may_be_replayed(error: BaseException, serving: bool, expected: bool) -> None:
    assert replayable(error, serving=serving, relayed=False, body=b"{}", enabled=True) is expected


@pytest.mark.parametrize(
    ("relayed", "body", "enabled"),
    [(True, b"{}", True), (False, None, True), (False, b"{}", False)],
)
def test_never_replayed_once_relayed_streamed_or_switched_off(
    relayed: bool, body: bytes | None, enabled: bool
) -> None:
    for error, serving in ((LOST, True), (NOT_READY, False)):
        assert not replayable(error, serving=serving, relayed=relayed, body=body, enabled=enabled)


def test_an_empty_body_in_memory_is_replayable() -> None:
    assert replayable(LOST, serving=True, relayed=False, body=b"", enabled=True)


def _events(data: bytes) -> list[object]:
    assert data.endswith(b"\n\n")
    out: list[object] = []
    for block in data.split(b"\n\n")[:-1]:
        payload = block.strip().removeprefix(b"data: ").decode()
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


@pytest.mark.parametrize(
    ("last", "prefix"),
    [
        (b"", b""),
        (b'data: {"a":1}\n\n', b""),
        (b'data: {"a":1}\n', b"\n"),  # the event's blank line is still to come
        (b'data: {"a"', b"\n\n"),  # cut inside an event: close it first
    ],
)
def test_a_cut_sse_stream_ends_with_an_error_event_and_done(last: bytes, prefix: bytes) -> None:
    epilogue = sse_epilogue(last, "upstream error")
    assert epilogue.startswith(prefix + b"data: {")
    error, done = _events(epilogue[len(prefix) :])
    assert done == "[DONE]"
    assert error == {
        "src": "llama-swap",
        "error": {
            "message": "upstream error: upstream disconnected mid-stream",
            "type": "server_error",
            "param": None,
            "code": "bad_gateway",
        },
    }


CONFIG = """
models:
  on:
    cmd: serve --port ${PORT}
  off:
    cmd: serve --port ${PORT}
    retryOnCrash: false
"""


def test_retry_on_crash_is_a_known_key_defaulting_to_true() -> None:
    loaded = load_config_text(CONFIG, "config.yaml", environ={})
    assert loaded.warnings == ()
    assert loaded.config.models["on"].retry_on_crash is True
    assert loaded.config.models["off"].retry_on_crash is False


def test_retry_on_crash_in_the_json_schema() -> None:
    schema = config_json_schema()
    key = schema["$defs"]["ModelConfig"]["properties"]["retryOnCrash"]
    assert key["default"] is True and "re-admitted once" in key["description"]
    validator = jsonschema.Draft202012Validator(schema)
    good = {"models": {"m": {"cmd": "x", "retryOnCrash": False}}}
    assert list(validator.iter_errors(good)) == []
    bad = {"models": {"m": {"cmd": "x", "retryOnCrash": "sometimes"}}}
    assert [tuple(e.absolute_path) for e in validator.iter_errors(bad)] == [
        ("models", "m", "retryOnCrash")
    ]


def test_replays_are_counted_per_model() -> None:
    metrics = PrometheusMetrics()
    metrics.on_replay("a")
    metrics.on_replay("a")
    metrics.on_replay("b")
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }
    assert found[("modelswap_replayed_requests_total", (("model", "a"),))] == 2
    assert found[("modelswap_replayed_requests_total", (("model", "b"),))] == 1
