"""Steps 14–18 of §2.3: everything that refers to models by name.

Preload lists, API keys, peers (and the namespace their fully qualified names
reserve), selectors and profiles. All of them resolve names through one
:class:`NameIndex`, the same one the server uses at request time, so a name
that loads is a name that routes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from modelswap.config.names import NameIndex, ResolvedModel
from modelswap.config.schema import ConfigDocument, ModelConfig, PeerConfig, Routing
from modelswap.config.urlcheck import url_parse_error
from modelswap.config.validate_base import Reporter
from modelswap.config.validate_routing import coexistence_error

STRATEGIES = ("warm", "pin", "spillover")


def clean_preload(names: Iterable[str], index: NameIndex) -> tuple[str, ...]:
    """Step 14: trim, skip blanks, aliases → model IDs, drop unknown (and peer) names."""
    kept: list[str] = []
    for name in names:
        model_id = index.resolve_model_id(name.strip()) if name.strip() else None
        if model_id is not None:
            kept.append(model_id)
    return tuple(kept)


def check_api_keys(keys: Iterable[str], report: Reporter) -> None:
    """Step 15: no empty keys and no ASCII spaces, first failure in list order."""
    for index, key in enumerate(keys):
        if not key:
            report.fail("empty api key found in apiKeys", "apiKeys", index)
        if " " in key:
            report.fail(f"apiKeys[{index}]: api key cannot contain spaces", "apiKeys", index)


def check_peers(peers: Mapping[str, PeerConfig], report: Reporter) -> dict[str, PeerConfig]:
    """Step 16, first half: each peer is usable; model lists lose duplicates."""
    checked: dict[str, PeerConfig] = {}
    for peer_id in sorted(peers):
        peer = peers[peer_id]
        if not peer.proxy.strip():
            report.fail(f"peers.{peer_id}: proxy is required", "peers", peer_id)
        error = url_parse_error(peer.proxy)
        if error is not None:
            report.fail(
                f"peers.{peer_id}: invalid peer proxy URL ({peer.proxy}): {error}",
                "peers",
                peer_id,
                "proxy",
            )
        if not peer.models:
            report.fail(f"peers.{peer_id}: peer models can not be empty", "peers", peer_id)
        checked[peer_id] = peer.model_copy(update={"models": tuple(dict.fromkeys(peer.models))})
    return {peer_id: checked[peer_id] for peer_id in peers}


def check_namespace(
    doc: ConfigDocument,
    models: Mapping[str, ModelConfig],
    peers: Mapping[str, PeerConfig],
    report: Reporter,
) -> None:
    """Step 16, second half: every peer FQN is reserved (§10.3)."""
    fqns: dict[str, tuple[str, str]] = {}
    for peer_id in sorted(peers):
        for model in peers[peer_id].models:
            fqn = f"{peer_id}/{model}"
            previous = fqns.setdefault(fqn, (peer_id, model))
            if previous != (peer_id, model):
                report.fail(
                    f'peer model name "{fqn}" is ambiguous between peers.{previous[0]} model '
                    f'"{previous[1]}" and peers.{peer_id} model "{model}"',
                    "peers",
                    peer_id,
                    "models",
                )
    suffix = "conflicts with fully qualified peer model name"
    for model_id in sorted(models):
        if model_id in fqns:
            report.fail(f'model ID "{model_id}" {suffix}', "models", model_id)
    for model_id in sorted(models):
        for alias in models[model_id].aliases:
            if alias in fqns:
                report.fail(f'model {model_id} alias "{alias}" {suffix}', "models", model_id)
    for selector_id in sorted(doc.selectors):
        if selector_id in fqns:
            report.fail(f'selector ID "{selector_id}" {suffix}', "selectors", selector_id)
    for profile in sorted(doc.profiles):
        for pin in doc.profiles[profile].pins:
            if pin in fqns:
                report.fail(
                    f'profile {profile} pin "{pin}" {suffix}', "profiles", profile, "pins", pin
                )


def check_selectors(
    doc: ConfigDocument,
    models: Mapping[str, ModelConfig],
    names: NameIndex,
    routing: Routing,
    report: Reporter,
) -> None:
    """Step 17, each selector in sorted order, its checks in the spec's order."""
    for selector_id in sorted(doc.selectors):
        selector = doc.selectors[selector_id]
        at = ("selectors", selector_id)
        prefix = f"selectors.{selector_id}"
        if not selector_id.strip():
            report.fail("selectors: selector names cannot be empty", *at)
        if selector_id in models:
            report.fail(f'{prefix}: name conflicts with model ID "{selector_id}"', *at)
        if selector_id in names.alias_owner:
            report.fail(f'{prefix}: name conflicts with model alias "{selector_id}"', *at)
        if not selector.strategy:
            report.fail(f"{prefix}.strategy is required", *at)
        if selector.strategy not in STRATEGIES:
            report.fail(
                f'{prefix}.strategy: unknown strategy "{selector.strategy}" '
                "(valid: warm, pin, spillover)",
                *at,
                "strategy",
            )
        if not selector.targets:
            report.fail(f"{prefix}.targets must contain at least one entry", *at)
        resolved: list[ResolvedModel] = []
        for index, target in enumerate(selector.targets):
            where = (*at, "targets", index)
            if target in doc.selectors:
                report.fail(
                    f'{prefix}.targets[{index}] references selector "{target}"; selector '
                    "chaining is not supported",
                    *where,
                )
            found = names.resolve_base_model(target)
            if found is None:
                report.fail(
                    f'{prefix}.targets[{index}] references unknown model "{target}"', *where
                )
            if selector.strategy == "warm" and not found.is_local:
                report.fail(
                    f'{prefix}.targets[{index}] must resolve to a local model for strategy "warm"',
                    *where,
                )
            resolved.append(found)
        if selector.strategy == "spillover":
            _check_spillover(selector_id, selector.settings.spillover, resolved, routing, report)


def _check_spillover(
    selector_id: str,
    spillover: int,
    resolved: list[ResolvedModel],
    routing: Routing,
    report: Reporter,
) -> None:
    at = ("selectors", selector_id)
    prefix = f"selectors.{selector_id}"
    if spillover < 1:
        report.fail(f"{prefix}.settings.spillover must be >= 1", *at, "settings", "spillover")
    seen: set[str] = set()
    for target in resolved:
        if target.key in seen:
            report.fail(
                f'{prefix}.targets contains duplicate resolved model "{target.key}"',
                *at,
                "targets",
            )
        seen.add(target.key)
    local = [t.key for t in resolved if t.is_local]
    error = coexistence_error(selector_id, routing, local)
    if error is not None:
        report.fail(error, *at, "targets")


def check_profiles(doc: ConfigDocument, names: NameIndex, report: Reporter) -> None:
    """Step 18: pins resolve to a model, alias, peer model or selector (no chaining)."""
    for profile_id in sorted(doc.profiles):
        profile = doc.profiles[profile_id]
        at = ("profiles", profile_id)
        if not profile_id.strip():
            report.fail("profiles: profile names cannot be empty", *at)
        if not profile.pins:
            report.fail(f"profiles.{profile_id}.pins must contain at least one entry", *at)
        for pin, target in profile.pins.items():
            if not pin.strip():
                report.fail(f"profiles.{profile_id}.pins: pin names cannot be empty", *at, "pins")
            if not target or target in doc.selectors:
                continue
            if names.resolve_base_model(target) is None:
                report.fail(
                    f'profiles.{profile_id}.pins.{pin} references unknown model "{target}"',
                    *at,
                    "pins",
                    pin,
                )
