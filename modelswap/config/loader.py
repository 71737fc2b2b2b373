"""Text or files → validated :class:`Config`: the one entry point of config loading.

The pipeline (config spec §2.2) is a chain of pure steps, each owned by its
own module:

1. ``yaml_io``: ``${env.X}`` substitution, YAML parse (llama-swap's dialect,
   line numbers kept), multi-file merge;
2. ``macros``: macro declarations, expansion, ``${PORT}`` allocation,
   leftover check;
3. ``warnings``: unknown keys → warnings (never errors);
4. ``decode``: typed decode, all type errors at once;
5. ``validate``: §2.3 normalisation and checks, first error stops.

This module only wires them and is the only place in modelswap that reads the
process environment (and only when no ``environ`` is passed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelswap.config.decode import decode_document
from modelswap.config.macros import PortAssignment, expand_with_ports
from modelswap.config.schema import Config
from modelswap.config.sources import load_sources
from modelswap.config.validate import validate_document
from modelswap.config.warnings import unknown_key_warnings
from modelswap.config.yaml_io import YamlDocument, load_text
from modelswap.errors import ConfigError, ConfigProblem


@dataclass(frozen=True)
class LoadedConfig:
    """A loaded config, what was wrong-but-harmless in it, and the expanded tree."""

    config: Config
    warnings: tuple[ConfigProblem, ...]
    expanded: dict[str, Any]
    """The macro-expanded plain tree, for ``check-config`` to print."""
    ports: PortAssignment = field(default_factory=PortAssignment)
    """The ``${PORT}`` each model got: a reload passes it back to keep them."""


def load_config(
    config_path: str | None = None,
    config_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    keep_ports: PortAssignment | None = None,
) -> LoadedConfig:
    """Load ``-config`` and/or ``-config-dir`` (merged per §17); raise ConfigError.

    ``keep_ports``: a reload's running assignment (:class:`PortAssignment`).
    """
    document = load_sources(config_path, config_dir, _environ(environ))
    return load_document(document, keep_ports)


def load_config_text(
    text: str, filename: str = "config.yaml", environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Load one config given as text; ``filename`` is only used in messages."""
    return load_document(load_text(text, filename, _environ(environ)))


def load_document(document: YamlDocument, keep_ports: PortAssignment | None = None) -> LoadedConfig:
    """Expand, decode and validate an already parsed (and merged) document."""
    data = {} if document.data is None else document.data
    locations = document.locations
    if not isinstance(data, dict):
        file, line = locations.lookup(())
        raise ConfigError([ConfigProblem("top-level YAML must be a mapping", file, line)])
    expanded, ports = expand_with_ports(data, locations, keep_ports)
    warnings = unknown_key_warnings(expanded, locations.lookup)
    validated = validate_document(decode_document(expanded, locations.lookup), locations.lookup)
    return LoadedConfig(validated.config, (*warnings, *validated.warnings), expanded, ports)


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ
