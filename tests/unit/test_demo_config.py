"""The built-in demo config must load cleanly and show co-residency."""

from __future__ import annotations

from modelswap.config import load_config_text
from modelswap.demo import demo_config_text


def test_demo_config_loads_without_warnings() -> None:
    loaded = load_config_text(demo_config_text("/opt/my python/bin/python3"), environ={})
    assert loaded.warnings == ()
    config = loaded.config
    assert len(config.models) >= 3
    for model in config.models.values():
        assert model.cmd.startswith(
            "'/opt/my python/bin/python3' -m modelswap.testing.fake_upstream"
        )
    non_swapping = [g for g in config.routing.groups.values() if not g.swap and len(g.members) >= 2]
    assert non_swapping, "the demo needs a swap: false pair so co-residency is visible"
