"""The config as typed data: what a llama-swap ``config.yaml`` decodes into.

Two top-level models share every ordinary key:

* :class:`ConfigDocument` is the YAML as written, decoded with llama-swap's
  type rules (§2.1): routing in both its canonical (``routing.router``) and
  legacy (top-level ``groups`` / ``matrix``) forms. It is what editors get as
  JSON Schema (:func:`config_json_schema`).
* :class:`Config` is the validated result that the rest of the program reads:
  every default resolved, aliases complete, routing normalised into one
  :class:`Routing` object (router ``group`` with its synthesised ``(default)``
  group, or a compiled ``matrix``). Build it with
  :func:`modelswap.config.load_config`; never by hand outside tests.

Both are frozen. Field names are snake_case; the exact llama-swap keys are
aliases. Unknown keys are ignored here and reported as warnings elsewhere.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, GetPydanticSchema, model_validator
from pydantic_core import PydanticCustomError, core_schema

from modelswap.config.names import NameIndex, ResolvedModel
from modelswap.config.resources import ByteSize
from modelswap.config.schema_models import (
    MODALITIES,
    PROTECTED_PARAM,
    Capabilities,
    Compat,
    Filters,
    FrozenModel,
    ModelConfig,
    ModelFilters,
    ModelTimeouts,
    PeerConfig,
    PeerTimeouts,
)
from modelswap.config.schema_types import Duration, IdMap, YamlBool, YamlFloat, YamlInt, YamlStr
from modelswap.core.matrix import CompiledMatrix

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_IGNORE_PATH",
    "DEFAULT_SESSION_HEADERS",
    "MODALITIES",
    "PROTECTED_PARAM",
    "Capabilities",
    "Compat",
    "Config",
    "ConfigDocument",
    "FifoSettings",
    "Filters",
    "GroupConfig",
    "HooksConfig",
    "MatrixSection",
    "ModelConfig",
    "ModelFilters",
    "ModelTimeouts",
    "OnStartupHooks",
    "PeerConfig",
    "PeerTimeouts",
    "PerformanceConfig",
    "ProfileConfig",
    "Routing",
    "RoutingSection",
    "SelectorConfig",
    "StoreConfig",
    "UiConfig",
    "UpstreamConfig",
    "config_json_schema",
]

DEFAULT_GROUP = "(default)"
"""ID of the synthesised group holding every model no other group lists."""

DEFAULT_IGNORE_PATH = r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$"
"""Default ``upstream.ignorePaths`` pattern: static assets never touch model state."""

DEFAULT_SESSION_HEADERS = ("X-Session-ID", "X-Litellm-Session-Id")


# --- routing ----------------------------------------------------------------------


class GroupConfig(FrozenModel):
    """A swap group (§11.2)."""

    swap: YamlBool = Field(True, description="At most one member runs at a time.")
    exclusive: YamlBool = Field(
        True, description="Starting a member unloads members of other non-persistent groups."
    )
    persistent: YamlBool = Field(False, description="Other groups never unload members.")
    members: tuple[YamlStr, ...] = Field((), description="Model IDs (not aliases).")


class MatrixSection(FrozenModel):
    """A matrix definition as written (§11.3); compiled by the loader."""

    vars: dict[YamlStr, YamlStr] = Field(
        default_factory=dict, description="Short name → model ID, usable in set expressions."
    )
    evict_costs: dict[YamlStr, YamlInt] = Field(
        default_factory=dict,
        description="Var or model ID → positive cost of evicting it (default 1).",
    )
    sets: dict[YamlStr, YamlStr] = Field(
        default_factory=dict,
        description="Ordered set name → DSL (`a & b`, `a | b`, `(…)`, `+set`).",
    )


class RouterSettings(FrozenModel):
    groups: IdMap[GroupConfig] = Field(default_factory=dict)
    matrix: MatrixSection | None = None


class RouterSection(FrozenModel):
    use: YamlStr = Field("", description="`group` (default) or `matrix`.")
    settings: RouterSettings = Field(default_factory=RouterSettings)


class FifoSettings(FrozenModel):
    """Settings of the FIFO scheduler (the only one)."""

    priority: dict[YamlStr, YamlInt] = Field(
        default_factory=dict,
        description="Model ID (or alias) → priority; higher is served first, default 0.",
    )
    max_wait: YamlFloat = Field(
        0.0,
        ge=0,
        alias="maxWait",
        description="modelswap extension. Seconds a queued request may wait for a swap "
        "while the running model keeps receiving new requests; after that the scheduler "
        "stops admitting new work to the running model so the waiting swap can happen "
        "(anti-starvation). 0 (default) = off, llama-swap's behaviour.",
    )
    min_residency: YamlFloat | None = Field(
        None,
        ge=0,
        alias="minResidency",
        description="modelswap extension. Seconds a freshly loaded model is protected from "
        "a maxWait-forced swap, so alternating demand cannot thrash loads. Default "
        "maxWait/3.",
    )


class SchedulerSettings(FrozenModel):
    fifo: FifoSettings = Field(default_factory=FifoSettings)


class SchedulerSection(FrozenModel):
    use: YamlStr = Field("", description="`fifo` (default; the only scheduler).")
    settings: SchedulerSettings = Field(default_factory=SchedulerSettings)


class RoutingSection(FrozenModel):
    """``routing:`` as written: which swap engine and scheduler to use (§11.1)."""

    router: RouterSection = Field(default_factory=RouterSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    resources: dict[YamlStr, ByteSize] = Field(
        default_factory=dict,
        description="modelswap extension. What the host has, resource name → size "
        "(`vram: 24GiB`, `vram:0: 24GiB`, `ram: 64GiB`); models are evicted until a new "
        "one fits. `vram` defaults to the GPUs' total memory (NVML) when a GPU is present.",
    )


# The compiled matrix is an opaque, already-validated object: pydantic only
# checks its type (and must not try to derive a schema from its internals).
CompiledMatrixField = Annotated[
    CompiledMatrix,
    GetPydanticSchema(lambda _tp, _handler: core_schema.is_instance_schema(CompiledMatrix)),
]


def _default_groups() -> dict[str, GroupConfig]:
    return {DEFAULT_GROUP: GroupConfig()}


class Routing(FrozenModel):
    """Routing after loading: one engine, one scheduler, names resolved.

    Both config forms (canonical ``routing.router`` and legacy top-level
    ``groups``/``matrix``) end up here.
    """

    router_use: Literal["group", "matrix"] = "group"
    groups: dict[str, GroupConfig] = Field(
        default_factory=_default_groups,
        description="Group mode: user groups plus `(default)`; empty in matrix mode.",
    )
    matrix: CompiledMatrixField | None = None
    scheduler_use: Literal["fifo"] = "fifo"
    priority: dict[str, int] = Field(default_factory=dict, description="Real model ID → priority.")
    max_wait: float = 0.0
    min_residency: float = 0.0
    resources: dict[str, int] = Field(
        default_factory=dict, description="The configured host budget, bytes per resource."
    )
    memory: bool = Field(
        False,
        description="Memory-aware eviction is on: a budget or a model's `resources` is "
        "configured. Models outside user groups then share the machine by the budget "
        "instead of the one-at-a-time `(default)` group.",
    )

    def group_of(self, model_id: str) -> str | None:
        """The ID of the group listing ``model_id`` (group mode), else None."""
        for group_id, group in self.groups.items():
            if model_id in group.members:
                return group_id
        return None


# --- profiles, selectors ----------------------------------------------------------


class ProfileConfig(FrozenModel):
    """A named set of pins (§12.1): requested name → target while active."""

    description: YamlStr = ""
    pins: dict[YamlStr, YamlStr] = Field(
        default_factory=dict,
        description='Requested name → model, alias, peer model or selector; "" or null '
        "disables the name while the profile is active.",
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_legacy_list(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError(
                "profile_legacy",
                "profile must be a mapping with description and pins; the legacy list "
                "syntax is no longer supported",
            )
        return data


class SelectorSettings(FrozenModel):
    spillover: YamlInt = Field(1, description="Spillover: in-flight requests per target.")


class SelectorConfig(FrozenModel):
    """A virtual model name that picks one of several targets per request (§12.2)."""

    strategy: YamlStr = Field("", description="`warm`, `pin` or `spillover` (required).")
    targets: tuple[YamlStr, ...] = Field((), description="Models or peer models (≥1).")
    settings: SelectorSettings = Field(default_factory=SelectorSettings)
    name: YamlStr = ""
    description: YamlStr = ""
    unlisted: YamlBool = False
    metadata: dict[YamlStr, Any] = Field(default_factory=dict)


# --- misc sections ----------------------------------------------------------------


class StoreConfig(FrozenModel):
    path: YamlStr = Field("", description="SQLite file for the activity store.")


class UiActivity(FrozenModel):
    session_id: tuple[YamlStr, ...] = Field(
        DEFAULT_SESSION_HEADERS,
        description="Request headers that carry a session ID; [] disables the lookup.",
    )


class UiConfig(FrozenModel):
    activity: UiActivity = Field(default_factory=UiActivity)


class PerformanceConfig(FrozenModel):
    disabled: YamlBool = False
    every: Duration = Field(
        5.0,
        description="Sampling period, a duration string (`5s`, `1m30s`); minimum 5s.",
        json_schema_extra={"default": "5s"},
    )


class UpstreamConfig(FrozenModel):
    ignore_paths: tuple[YamlStr, ...] = Field(
        (),
        alias="ignorePaths",
        description="Regexes for /upstream paths that never touch model state; "
        "empty = static-asset default.",
    )

    @cached_property
    def ignore_patterns(self) -> tuple[re.Pattern[str], ...]:
        """The compiled patterns (the loader has checked that they compile)."""
        return tuple(re.compile(p) for p in self.ignore_paths or (DEFAULT_IGNORE_PATH,))


class OnStartupHooks(FrozenModel):
    preload: tuple[YamlStr, ...] = Field(
        (), description="Models loaded one after another at startup."
    )


class OllamaConfig(FrozenModel):
    listen: YamlStr = Field(
        "",
        description="HOST:PORT of a listener serving Ollama's API at its own paths "
        "(e.g. 127.0.0.1:11434); empty = none. The main listener serves it under /ollama.",
    )


class HooksConfig(FrozenModel):
    on_startup: OnStartupHooks = Field(default_factory=OnStartupHooks)


# --- top level --------------------------------------------------------------------


class _ConfigFields(FrozenModel):
    """Top-level keys shared by the document as written and the loaded config."""

    health_check_timeout: YamlInt = Field(
        120, alias="healthCheckTimeout", description="Seconds to become healthy; min 15."
    )
    log_level: YamlStr = Field("info", alias="logLevel", description="debug/info/warn/error.")
    log_time_format: YamlStr = Field(
        "", alias="logTimeFormat", description="Go layout name (rfc3339, kitchen…); empty = none."
    )
    log_to_stdout: YamlStr = Field(
        "proxy", alias="logToStdout", description="proxy, upstream, both or none."
    )
    log_requests: YamlBool = Field(False, alias="logRequests", description="Parsed, unused.")
    metrics_max_in_memory: YamlInt = Field(
        1000, alias="metricsMaxInMemory", description="Activity rows kept in memory."
    )
    capture_buffer: YamlInt = Field(
        5, alias="captureBuffer", description="Capture cache in MiB; ≤0 disables captures."
    )
    store: StoreConfig | None = Field(None, description="Absent = in-memory store.")
    ui: UiConfig = Field(default_factory=UiConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    start_port: YamlInt = Field(5800, alias="startPort", description="First `${PORT}`.")
    global_ttl: YamlInt = Field(
        0, alias="globalTTL", description="Default model ttl (s); 0 = never unload."
    )
    unload_timeout: YamlInt = Field(
        10, alias="unloadTimeout", description="Graceful stop window (s); 0 = 10."
    )
    send_loading_state: YamlBool = Field(False, alias="sendLoadingState")
    include_aliases_in_list: YamlBool = Field(False, alias="includeAliasesInList")
    api_keys: tuple[YamlStr, ...] = Field(
        (), alias="apiKeys", description="Accepted API keys; empty = no authentication."
    )
    macros: dict[YamlStr, Any] = Field(
        default_factory=dict, description="Global macros (`${name}`), ordered."
    )
    models: IdMap[ModelConfig] = Field(default_factory=dict)
    profiles: IdMap[ProfileConfig] = Field(default_factory=dict)
    selectors: IdMap[SelectorConfig] = Field(default_factory=dict)
    peers: IdMap[PeerConfig] = Field(default_factory=dict)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    ollama: OllamaConfig = Field(default_factory=OllamaConfig)


class ConfigDocument(_ConfigFields):
    """The YAML document as decoded, before normalisation and validation."""

    routing: RoutingSection = Field(default_factory=RoutingSection)
    groups: IdMap[GroupConfig] = Field(
        default_factory=dict, description="Legacy form of routing.router.settings.groups."
    )
    matrix: MatrixSection | None = Field(
        None, description="Legacy form of routing.router.settings.matrix."
    )


class Config(_ConfigFields):
    """The loaded, validated configuration the program runs from."""

    routing: Routing = Field(default_factory=Routing)

    @cached_property
    def name_index(self) -> NameIndex:
        """Lookup tables for name resolution, built on first use."""
        return NameIndex.build(
            {model_id: model.aliases for model_id, model in self.models.items()},
            {peer_id: peer.models for peer_id, peer in self.peers.items()},
        )

    def resolve_model_id(self, name: str) -> str | None:
        """A local model ID or alias → the real model ID, else None."""
        return self.name_index.resolve_model_id(name)

    def resolve_base_model(self, name: str) -> ResolvedModel | None:
        """Local ID → alias → peer FQN → unique bare peer name → None (§10.2).

        Selectors and profile pins are resolved by the server before this.
        """
        return self.name_index.resolve_base_model(name)


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the config file (keys as written), for editors."""
    schema = ConfigDocument.model_json_schema(by_alias=True, mode="validation")
    schema["title"] = "modelswap / llama-swap configuration"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
