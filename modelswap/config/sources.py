"""Several config sources (``-config`` plus ``-config-dir``) read and merged into one document.

llama-swap merges files before anything else looks at them (config spec §17):
identity maps such as ``models`` must not repeat a key, other mappings merge
recursively, lists concatenate, and scalars must agree. Each merged key keeps
the file and line it came from, so later errors still point at the right file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from modelswap.config.locations import KeyPath, Locations, format_path
from modelswap.config.yaml_io import (
    ENV_REF,
    YamlDocument,
    env_value,
    parse_with_content,
    substitute_env,
)
from modelswap.errors import ConfigError, ConfigProblem

# --- several sources (§1, §17) ----------------------------------------------------------


def _dir_sources(config_dir: str) -> list[str]:
    """The *.yml / *.yaml files directly inside ``config_dir``, sorted."""
    try:
        names = os.listdir(config_dir)
    except OSError as exc:
        raise ConfigError([f"-config-dir {config_dir}: {exc}"]) from None
    paths = [os.path.join(config_dir, n) for n in names if n.endswith((".yml", ".yaml"))]
    return sorted(p for p in paths if os.path.isfile(p))


def _source_paths(config_path: str | None, config_dir: str | None) -> list[str]:
    if not config_path and not config_dir:
        raise ConfigError(["at least one of -config or -config-dir must be provided"])
    paths = [config_path] if config_path else []
    if config_dir:
        in_dir = _dir_sources(config_dir)
        if config_path:
            real = os.path.realpath(config_path)
            if any(os.path.realpath(p) == real for p in in_dir):
                raise ConfigError(
                    [
                        f"-config path {config_path} is also present in -config-dir "
                        f"{config_dir}; remove it from one"
                    ]
                )
        paths.extend(in_dir)
        if not paths:
            raise ConfigError(["no configuration sources found"])
    return paths


def source_files(config_path: str | None, config_dir: str | None) -> list[str]:
    """The files a load of these sources reads now, in merge order (for watching).

    Unlike loading it never raises: a missing directory lists nothing, and the
    next load reports the problem with its file.
    """
    try:
        return _source_paths(config_path, config_dir)
    except ConfigError:
        return [config_path] if config_path else []


def _read_source(path: str, environ: Mapping[str, str]) -> tuple[YamlDocument, bool]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(f"failed to read config {path}: {exc}", path)]) from None
    try:
        text = substitute_env(text, path, environ)
    except ConfigError as exc:
        first = exc.problems[0]
        problem = ConfigProblem(f"config {path}: {first.message}", path, first.line)
        raise ConfigError([problem]) from None
    return parse_with_content(text, path)


def load_sources(
    config_path: str | None, config_dir: str | None, environ: Mapping[str, str]
) -> YamlDocument:
    """Read, env-substitute, parse and merge the config file and/or directory.

    Empty files are skipped; when several files contribute, they are merged
    with the §17 rules and the merged tree is env-substituted once more.
    """
    documents = []
    for path in _source_paths(config_path, config_dir):
        document, has_content = _read_source(path, environ)
        if has_content:
            documents.append(document)
    if not documents:
        return YamlDocument({}, Locations(config_path))
    if len(documents) == 1:
        return documents[0]
    merged = _merge_documents(documents)
    data = _substitute_env_tree(merged.data, (), merged.locations, environ)
    return YamlDocument(data, merged.locations)


# --- merging (§17) ----------------------------------------------------------------------

_IDENTITY_MAPS: frozenset[KeyPath] = frozenset(
    [
        ("models",),
        ("groups",),
        ("profiles",),
        ("selectors",),
        ("peers",),
        ("matrix",),
        ("routing", "router", "settings", "groups"),
        ("routing", "router", "settings", "matrix"),
    ]
)
_KIND_SEQUENCE, _KIND_MAPPING, _KIND_SCALAR = 2, 4, 8  # yaml.v3 node kind numbers


def _kind(value: Any) -> int:
    if isinstance(value, dict):
        return _KIND_MAPPING
    return _KIND_SEQUENCE if isinstance(value, list) else _KIND_SCALAR


class _Merger:
    """Folds one source document into the accumulated tree, with §17's rules.

    Tracks how list indices of the incoming file shift (sequences are
    concatenated) so that its locations can be re-keyed into the merged tree.
    """

    def __init__(self, source: YamlDocument) -> None:
        self.source = source
        self.file = source.locations.default_file or "<config>"
        self.offsets: dict[KeyPath, int] = {}
        self.replaced: set[KeyPath] = set()

    def value(self, old: Any, new: Any, path: KeyPath) -> Any:
        if new is None:
            return old
        if old is None:
            self.replaced.add(path)
            return new
        old_kind, new_kind = _kind(old), _kind(new)
        if old_kind != new_kind:
            raise self._error(
                path,
                f'conflict at "{format_path(path)}": incompatible YAML node kinds '
                f"(kind {old_kind} vs {new_kind}) introduced by {self.file}",
            )
        if isinstance(old, dict):
            return self.mapping(old, new, path)
        if isinstance(old, list):
            self.offsets[path] = len(old)
            return old + new
        if type(old) is type(new) and old == new:
            return old
        raise self._error(
            path,
            f'conflict at "{format_path(path)}": {self.file} sets a different value '
            "than a previous source",
        )

    def mapping(self, old: dict[str, Any], new: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        merged = dict(old)
        for key, value in new.items():
            child = (*path, key)
            if key not in merged:
                merged[key] = value
            elif path in _IDENTITY_MAPS:
                name = path[-1]
                raise self._error(
                    child,
                    f'duplicate {name} "{key}" found in {self.file} '
                    "(already defined in another config source)",
                )
            else:
                merged[key] = self.value(merged[key], value, child)
        return merged

    def relocate(self, target: Locations) -> None:
        """Copy the source's locations into ``target``, shifting concatenated lists."""
        for path, (file, line) in self.source.locations.items():
            shifted = self._shift(path)
            if shifted in self.replaced:
                target.add(shifted, file, line)
            else:
                target.setdefault(shifted, file, line)

    def _shift(self, path: KeyPath) -> KeyPath:
        for end in range(len(path)):
            offset = self.offsets.get(path[:end])
            index = path[end]
            if offset is not None and isinstance(index, int):
                return (*path[:end], index + offset, *path[end + 1 :])
        return path

    def _error(self, path: KeyPath, message: str) -> ConfigError:
        file, line = self.source.locations.lookup(path)
        return ConfigError([ConfigProblem(message, file, line, format_path(path))])


def _merge_documents(documents: list[YamlDocument]) -> YamlDocument:
    """Merge parsed sources in order; locations keep the file each key came from."""
    first = documents[0]
    locations = Locations(None)
    for path, (file, line) in first.locations.items():
        locations.add(path, file, line)
    data: dict[str, Any] = first.data
    for document in documents[1:]:
        merger = _Merger(document)
        data = merger.mapping(data, document.data, ())
        merger.relocate(locations)
    return YamlDocument(data, locations)


def _substitute_env_tree(
    value: Any, path: KeyPath, locations: Locations, environ: Mapping[str, str]
) -> Any:
    """The "merged text once more" env pass of §7, done on the tree.

    After each file was substituted, a ``${env.X}`` can only remain if an
    inserted value itself contained one; it is replaced the same way (escaped,
    as text).
    """
    if isinstance(value, dict):
        return {
            k: _substitute_env_tree(v, (*path, k), locations, environ) for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _substitute_env_tree(v, (*path, i), locations, environ) for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "${env." not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        try:
            return env_value(match.group(1), environ)
        except ValueError as exc:
            raise locations.error(path, str(exc)) from None

    return ENV_REF.sub(replace, value)
