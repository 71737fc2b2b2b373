"""Config for memory-aware eviction: sizes, per-device budgets, never-fits errors, schema."""

from __future__ import annotations

import pytest

from modelswap.config import config_json_schema, load_config_text
from modelswap.config.resources import (
    effective_resources,
    parse_size,
    resource_budget,
    visible_devices,
)
from modelswap.config.schema import DEFAULT_GROUP
from modelswap.errors import ConfigError
from modelswap.router.build import build_memory_policy, build_policy

GiB = 1 << 30


def load(text: str) -> object:
    return load_config_text(text, "c.yaml", environ={}).config


def model(name: str, extra: str = "") -> str:
    return f"  {name}:\n    cmd: srv --port ${{PORT}}\n{extra}"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("10GiB", 10 * GiB),
        ("10 GiB", 10 * GiB),
        ("1.5GiB", 3 * GiB // 2),
        ("512MB", 512_000_000),
        ("512MiB", 512 << 20),
        ("2GB", 2_000_000_000),
        ("1TiB", 1 << 40),
        ("100B", 100),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10G", "-1GB", "GiB", "1,5GB", "ten"])
def test_bad_sizes(text: str) -> None:
    assert parse_size(text) is None


def test_config_sizes_decode_and_turn_memory_routing_on() -> None:
    config = load(
        "models:\n"
        + model("a", "    resources:\n      vram: 10GiB\n      ram: 4096\n")
        + "routing:\n  resources:\n    vram: 24GiB\n"
    )
    assert config.models["a"].resources == {"vram": 10 * GiB, "ram": 4096}  # type: ignore[attr-defined]
    assert config.routing.resources == {"vram": 24 * GiB}  # type: ignore[attr-defined]
    assert config.routing.memory  # type: ignore[attr-defined]


def test_bad_size_names_file_line_and_key() -> None:
    text = "models:\n" + model("a", "    resources:\n      vram: 10G\n")
    with pytest.raises(ConfigError) as info:
        load(text)
    assert str(info.value).startswith("c.yaml:5: models.a.resources.vram: must be a size")


def test_bad_resource_name() -> None:
    with pytest.raises(ConfigError, match=r'c\.yaml:6: resource name "v ram" is not valid'):
        load("models:\n" + model("a") + 'routing:\n  resources:\n    "v ram": 1GB\n')


def test_a_model_that_never_fits_is_an_error_naming_it() -> None:
    text = (
        "models:\n"
        + model("small", "    resources: {vram: 1GiB}\n")
        + model("huge", "    resources:\n      vram: 30GiB\n")
        + "routing:\n  resources: {vram: 24GiB}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(text)
    assert str(info.value) == (
        'c.yaml:8: model "huge" can never fit: it needs 30GiB of vram but the budget '
        "is 24GiB (routing.resources.vram)"
    )


def test_per_device_budget_uses_cuda_visible_devices() -> None:
    text = (
        "models:\n"
        + model("a", "    env: [CUDA_VISIBLE_DEVICES=1]\n    resources:\n      vram: 30GiB\n")
        + "routing:\n  resources:\n    vram:0: 40GiB\n    vram:1: 24GiB\n"
    )
    with pytest.raises(ConfigError, match=r"c\.yaml:6: .*30GiB of vram:1 .*24GiB"):
        load(text)


def test_visible_devices_and_split() -> None:
    assert visible_devices(("CUDA_VISIBLE_DEVICES=0,1",)) == (0, 1)
    assert visible_devices(("CUDA_VISIBLE_DEVICES=GPU-abc",)) is None
    assert visible_devices(("X=1",)) is None
    assert visible_devices(("CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=2")) == (2,)
    assert effective_resources({"vram": 10}, ("CUDA_VISIBLE_DEVICES=0,1",)) == {
        "vram": 10,
        "vram:0": 5,
        "vram:1": 5,
    }
    explicit = {"vram": 10, "vram:1": 8}
    assert effective_resources(explicit, ("CUDA_VISIBLE_DEVICES=0,1",)) == explicit
    assert effective_resources({"ram": 1}, ("CUDA_VISIBLE_DEVICES=0",)) == {"ram": 1}


def test_budget_defaults_come_from_detection_and_device_sums() -> None:
    assert resource_budget({"vram:0": 8, "vram:1": 8}) == {"vram:0": 8, "vram:1": 8, "vram": 16}
    detected = {"vram": 48, "vram:0": 24, "vram:1": 24}
    assert resource_budget({"vram": 40}, detected) == {"vram": 40, "vram:0": 24, "vram:1": 24}
    assert resource_budget({}, None) == {}


def test_no_resources_keeps_the_default_group_and_no_memory_policy() -> None:
    config = load("models:\n" + model("a") + model("b"))
    assert not config.routing.memory  # type: ignore[attr-defined]
    _name, policy, models = build_policy(config)  # type: ignore[arg-type]
    assert policy.eviction_for("b", ("a",)) == ("a",)  # one at a time, as llama-swap
    assert build_memory_policy(config, models) is None  # type: ignore[arg-type]


def test_resources_drop_the_default_group_but_keep_user_groups() -> None:
    config = load(
        "models:\n"
        + model("a", "    resources: {vram: 8GiB}\n")
        + model("b", "    resources: {vram: 8GiB}\n")
        + model("g1")
        + model("g2")
        + "groups:\n  pair:\n    members: [g1, g2]\n"
        + "routing:\n  resources: {vram: 24GiB}\n"
    )
    assert DEFAULT_GROUP in config.routing.groups  # type: ignore[attr-defined]
    _name, policy, models = build_policy(config)  # type: ignore[arg-type]
    assert models == frozenset({"a", "b", "g1", "g2"})
    assert policy.eviction_for("b", ("a",)) == ()  # no (default) group any more
    assert policy.eviction_for("g2", ("a", "g1")) == ("a", "g1")  # the user group still swaps
    memory = build_memory_policy(config, models)  # type: ignore[arg-type]
    assert memory is not None and memory.spec.budget == {"vram": 24 * GiB}


def test_matrix_evict_costs_weight_the_memory_policy() -> None:
    config = load(
        "models:\n"
        + model("a", "    resources: {vram: 8GiB}\n")
        + model("b", "    resources: {vram: 8GiB}\n")
        + "routing:\n  resources: {vram: 24GiB}\n  router:\n    use: matrix\n"
        "    settings:\n      matrix:\n        evict_costs: {a: 5}\n"
        "        sets:\n          both: a & b\n"
    )
    memory = build_memory_policy(config, frozenset({"a", "b"}))  # type: ignore[arg-type]
    assert memory is not None and memory.spec.evict_cost == {"a": 5.0, "b": 1.0}


def test_schema_documents_resources() -> None:
    schema = config_json_schema()
    text = str(schema)
    assert "resources" in text
    assert "GiB" in text


def test_spillover_targets_outside_groups_may_run_together_under_a_budget() -> None:
    selectors = "selectors:\n  s:\n    strategy: spillover\n    targets: [a, b]\n"
    plain = "models:\n" + model("a") + model("b") + selectors
    with pytest.raises(ConfigError, match="must share a group with swap: false"):
        load(plain)
    budgeted = plain + "routing:\n  resources: {vram: 24GiB}\n"
    assert load(budgeted).selectors["s"].targets == ("a", "b")  # type: ignore[attr-defined]
