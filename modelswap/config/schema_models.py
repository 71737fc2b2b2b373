"""Typed sections of one model or peer: filters, timeouts, compat, capabilities.

Split from :mod:`modelswap.config.schema` to keep each module readable; the
public names are re-exported there. Every model here is frozen, takes the
exact llama-swap camelCase keys as aliases (snake_case names work in Python
code), ignores unknown keys (they are reported as warnings by
:mod:`modelswap.config.warnings`, never as errors, as llama-swap ignores them)
and treats an explicit YAML null as "not set" so the default applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelswap.config.resources import ByteSize
from modelswap.config.schema_types import IdMap, YamlBool, YamlInt, YamlStr

PROTECTED_PARAM = "model"
"""The one request parameter filters may never strip or set."""

MODALITIES = ("text", "audio", "image")
"""Valid entries of ``capabilities.in`` / ``capabilities.out``."""


class FrozenModel(BaseModel):
    """Base of every config section: frozen, alias-keyed, lenient about extras."""

    model_config = ConfigDict(
        frozen=True,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
        arbitrary_types_allowed=True,
    )

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy without cached derived values, which may describe the old fields."""
        copied = super().model_copy(update=update, deep=deep)
        for name in _cached_names(type(self)):
            copied.__dict__.pop(name, None)
        return copied

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        # `ttl:` or `ttl: ~` in YAML reads as "not given", so the documented
        # default applies instead of Go's zero value (ttl 0 = never unload would
        # silently differ from the -1 "use globalTTL" default).
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


def _cached_names(cls: type) -> list[str]:
    return [
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, cached_property)
    ]


def _sanitised_params(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in params.items() if k != PROTECTED_PARAM))


class Filters(FrozenModel):
    """Request rewriting applied before forwarding (§5): strip, then set."""

    strip_params: YamlStr = Field(
        "",
        alias="stripParams",
        description="Comma-separated request parameters to remove (JSON paths, `a.b` "
        "nests). `model` is protected and never stripped.",
    )
    set_params: dict[YamlStr, Any] = Field(
        default_factory=dict,
        alias="setParams",
        description="Parameters forced into every request (a mapping value replaces the "
        "whole key). `model` is ignored.",
    )
    set_params_by_id: IdMap[dict[YamlStr, Any]] = Field(
        default_factory=dict,
        alias="setParamsByID",
        description="Requested name → parameters, applied after setParams. For models each "
        "key also becomes an alias of the model.",
    )

    @cached_property
    def strip_params_list(self) -> tuple[str, ...]:
        """``stripParams`` split, trimmed, without blanks, ``model`` and duplicates, sorted."""
        names = {part.strip() for part in self.strip_params.split(",")}
        return tuple(sorted(names - {"", PROTECTED_PARAM}))

    @cached_property
    def set_params_items(self) -> tuple[tuple[str, Any], ...]:
        """``setParams`` without ``model``, in the sorted order they are applied."""
        return _sanitised_params(self.set_params)

    def set_params_for(self, requested: str) -> tuple[tuple[str, Any], ...]:
        """``setParamsByID[requested]`` sanitised like ``setParams`` (empty if absent)."""
        return _sanitised_params(self.set_params_by_id.get(requested, {}))


class ModelFilters(Filters):
    """Model filters also accept the legacy ``strip_params`` spelling."""

    legacy_strip_params: YamlStr = Field(
        "",
        alias="strip_params",
        exclude=True,
        description="Legacy spelling of stripParams, used only when stripParams is empty.",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_strip_params(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("stripParams") and data.get("strip_params"):
            return {**data, "stripParams": data["strip_params"]}
        return data


class ModelTimeouts(FrozenModel):
    """Upstream HTTP transport timeouts in seconds; 0 disables one (no range check)."""

    connect: YamlInt = Field(30, description="TCP connect timeout (s).")
    keepalive: YamlInt = Field(30, description="TCP keep-alive period (s).")
    response_header: YamlInt = Field(
        0, alias="responseHeader", description="Wait for response headers (s); 0 = no limit."
    )
    tls_handshake: YamlInt = Field(10, alias="tlsHandshake", description="TLS handshake (s).")
    expect_continue: YamlInt = Field(
        1, alias="expectContinue", description="Wait for 100-continue (s)."
    )
    idle_conn: YamlInt = Field(90, alias="idleConn", description="Idle pooled connection (s).")


class PeerTimeouts(ModelTimeouts):
    """Peer timeouts: as for models, but a remote gets 60 s to send headers."""

    response_header: YamlInt = Field(
        60, alias="responseHeader", description="Wait for response headers (s); 0 = no limit."
    )


class Compat(FrozenModel):
    """Compatibility switches (§4.2)."""

    ignore_websockets: YamlBool = Field(
        False,
        alias="ignoreWebsockets",
        description="Websocket upgrades never start, queue or count against this model.",
    )


class Capabilities(FrozenModel):
    """What a model can do, advertised in model listings (§4.1)."""

    input_modalities: tuple[YamlStr, ...] = Field(
        (), alias="in", description="Input modalities: text, audio, image."
    )
    output_modalities: tuple[YamlStr, ...] = Field(
        (), alias="out", description="Output modalities: text, audio, image."
    )
    tools: YamlBool = Field(False, description="Supports tool calling.")
    reranker: YamlBool = Field(False, description="Is a reranker.")
    context: YamlInt = Field(0, description="Context length in tokens; 0 = unknown.")

    @property
    def is_empty(self) -> bool:
        """Empty capabilities add no capability fields to listings."""
        return not (
            self.input_modalities
            or self.output_modalities
            or self.tools
            or self.reranker
            or self.context
        )


class ModelConfig(FrozenModel):
    """One entry of ``models:`` (§4). After loading every default is resolved."""

    cmd: YamlStr = Field("", description="Command that starts the upstream server.")
    cmd_stop: YamlStr = Field(
        "",
        alias="cmdStop",
        description="Graceful stop command run instead of SIGTERM; `${PID}` is the child PID.",
    )
    proxy: YamlStr = Field(
        "",
        description="Base URL requests are forwarded to. Default `http://localhost:${PORT}` "
        "(filled in by the macro phase, so a cmd without `${PORT}` needs an explicit proxy).",
    )
    aliases: tuple[YamlStr, ...] = Field(
        (),
        description="Other names for this model, unique across models. After loading it "
        "also holds the setParamsByID keys.",
    )
    env: tuple[YamlStr, ...] = Field((), description="`NAME=value` entries for the child.")
    check_endpoint: YamlStr = Field(
        "/health",
        alias="checkEndpoint",
        description="Path polled until HTTP 200 while starting; `none` disables the check.",
    )
    ttl: YamlInt = Field(
        -1,
        description="Idle seconds before unloading; -1 = globalTTL, 0 = never. After "
        "loading it is the effective value.",
    )
    unload_timeout: YamlInt = Field(
        0,
        alias="unloadTimeout",
        description="Graceful stop window (s); 0 = global unloadTimeout.",
    )
    unlisted: YamlBool = Field(False, description="Hide from /v1/models (still routable).")
    use_model_name: YamlStr = Field(
        "", alias="useModelName", description="Replaces `model` in forwarded requests."
    )
    name: YamlStr = Field("", description="Display name.")
    description: YamlStr = Field("", description="Display description.")
    concurrency_limit: YamlInt = Field(
        0,
        alias="concurrencyLimit",
        description="Max admitted requests; 0 = the built-in limit of 10.",
    )
    filters: ModelFilters = Field(default_factory=ModelFilters)
    macros: dict[YamlStr, Any] = Field(
        default_factory=dict,
        description="Model macros (`${name}`), ordered; they override same-named globals.",
    )
    metadata: dict[YamlStr, Any] = Field(
        default_factory=dict, description="Free-form data shown in /v1/models."
    )
    send_loading_state: YamlBool | None = Field(
        None,
        alias="sendLoadingState",
        description="Stream loading progress while starting; unset = the global value. "
        "Always a bool after loading.",
    )
    timeouts: ModelTimeouts = Field(default_factory=ModelTimeouts)
    compat: Compat = Field(default_factory=Compat)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    health_check_timeout: YamlInt = Field(
        0,
        alias="healthCheckTimeout",
        description="Ignored in a model: always overwritten by the global value.",
    )
    resources: dict[YamlStr, ByteSize] = Field(
        default_factory=dict,
        description="modelswap extension. What the model needs, resource name → size "
        "(`vram: 10GiB`, `ram: 4GiB`); see routing.resources.",
    )
    retry_on_crash: YamlBool = Field(
        True,
        alias="retryOnCrash",
        description="modelswap only. A request whose upstream died before answering "
        "(connection refused, reset or closed before the status line; not a timeout) is "
        "re-admitted once, restarting the model, when its body is in memory. "
        "false = answer 502 at once, as llama-swap does.",
    )

    @property
    def loading_state(self) -> bool:
        """The effective ``sendLoadingState`` (resolved by the loader)."""
        return bool(self.send_loading_state)


class PeerConfig(FrozenModel):
    """A remote OpenAI-compatible server whose models are proxied, never started (§10)."""

    proxy: YamlStr = Field("", description="Base URL of the peer (required).")
    api_key: YamlStr = Field(
        "",
        alias="apiKey",
        description="Sent as `Authorization: Bearer` and `x-api-key` when set.",
    )
    models: tuple[YamlStr, ...] = Field(
        (), description="Model IDs served by the peer (required, ≥1)."
    )
    filters: Filters = Field(default_factory=Filters)
    timeouts: PeerTimeouts = Field(default_factory=PeerTimeouts)
