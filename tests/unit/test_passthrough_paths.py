"""``/upstream/<model>/<path>`` model lookup (server spec §10; scenarios 26 and 28)."""

from __future__ import annotations

import pytest

from modelswap.config import Config, load_config_text
from modelswap.server.inference import upstream_path
from modelswap.server.passthrough import find_model_in_path


def _config(models: list[str], peers: str = "") -> Config:
    entries = "\n".join(
        f'  "{m}":\n    cmd: "serve {m}"\n    proxy: "http://127.0.0.1:{9000 + i}"'
        for i, m in enumerate(models)
    )
    return load_config_text(f"models:\n{entries}\n{peers}", "t.yaml", environ={}).config


LOCAL = _config(["author", "author/model", "simple"])
PEERS = _config(
    ["local"],
    """
peers:
  p1: {proxy: "http://127.0.0.1:1", models: [shared, org/model]}
  p2: {proxy: "http://127.0.0.1:2", models: [shared, unique]}
""",
)


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("simple/v1/chat", ("simple", "simple", "/v1/chat")),
        ("author/model/v1/chat", ("author/model", "author/model", "/v1/chat")),
        ("author/model", ("author/model", "author/model", "/")),
        ("author/v1/chat", ("author", "author", "/v1/chat")),
        ("author%2Fmodel/api/x%2Fy", ("author/model", "author%2Fmodel", "/api/x%2Fy")),
        ("author/model/api/x%2Fy", ("author/model", "author/model", "/api/x%2Fy")),
        ("missing/v1", None),
        ("", None),
    ],
)
def test_s24_26_28_longest_local_match(rest: str, expected: tuple[str, str, str] | None) -> None:
    assert find_model_in_path(LOCAL, rest) == expected


@pytest.mark.parametrize(
    ("rest", "name"),
    [
        ("p1/shared/v1/chat", "p1/shared"),
        ("p2/shared/v1/chat", "p2/shared"),
        ("p1/org/model/v1/chat", "p1/org/model"),
        ("unique/v1/chat", "unique"),
        ("shared/v1/chat", None),  # ambiguous bare peer name
    ],
)
def test_s24_26_peer_names(rest: str, name: str | None) -> None:
    found = find_model_in_path(PEERS, rest)
    assert (found[0] if found else None) == name


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v/chat/completions", "/chat/completions"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/audioapi/v1/tasks/run", "/v1/tasks/run"),
    ],
)
def test_s24_10_prefix_stripping(path: str, expected: str) -> None:
    assert upstream_path(path) == expected
