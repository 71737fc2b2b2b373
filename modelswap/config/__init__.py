"""Config loading: llama-swap ``config.yaml`` text → validated, frozen :class:`Config`.

Use :func:`load_config` (files) or :func:`load_config_text` (a string). Both
return a :class:`LoadedConfig` with the config, the warnings (unknown keys…)
and the expanded tree, or raise :class:`modelswap.errors.ConfigError` whose
problems name file, line and key path.
"""

from __future__ import annotations

from modelswap.config.loader import LoadedConfig, load_config, load_config_text, load_document
from modelswap.config.names import NameIndex, ResolvedModel
from modelswap.config.schema import (
    DEFAULT_GROUP,
    DEFAULT_IGNORE_PATH,
    Capabilities,
    Compat,
    Config,
    ConfigDocument,
    FifoSettings,
    Filters,
    GroupConfig,
    HooksConfig,
    ModelConfig,
    ModelFilters,
    ModelTimeouts,
    OllamaConfig,
    PeerConfig,
    PeerTimeouts,
    PerformanceConfig,
    ProfileConfig,
    Routing,
    SelectorConfig,
    StoreConfig,
    UiConfig,
    UpstreamConfig,
    config_json_schema,
)

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_IGNORE_PATH",
    "Capabilities",
    "Compat",
    "Config",
    "ConfigDocument",
    "FifoSettings",
    "Filters",
    "GroupConfig",
    "HooksConfig",
    "LoadedConfig",
    "ModelConfig",
    "ModelFilters",
    "ModelTimeouts",
    "NameIndex",
    "OllamaConfig",
    "PeerConfig",
    "PeerTimeouts",
    "PerformanceConfig",
    "ProfileConfig",
    "ResolvedModel",
    "Routing",
    "SelectorConfig",
    "StoreConfig",
    "UiConfig",
    "UpstreamConfig",
    "config_json_schema",
    "load_config",
    "load_config_text",
    "load_document",
]
