"""Which ``cmd`` claims the proxy's port (pure; the probe itself is tested with real sockets)."""

from __future__ import annotations

import pytest

from modelswap.process.portcheck import claimed_port


@pytest.mark.parametrize(
    ("argv", "proxy", "claim"),
    [
        (["llama-server", "--port", "5800"], "http://localhost:5800", ("localhost", 5800)),
        (["docker", "run", "-p", "5801:8080", "img"], "http://127.0.0.1:5801", ("127.0.0.1", 5801)),
        (["server", "--listen=0.0.0.0:6000"], "http://127.0.0.1:6000", ("127.0.0.1", 6000)),
        (["server", "--port", "58000"], "http://localhost:5800", None),  # not the same number
        (["sleep", "infinity"], "http://127.0.0.1:8080", None),  # fronts a running server
        (["server", "--port", "80"], "http://localhost", None),  # no explicit port
    ],
)
def test_claimed_port(argv: list[str], proxy: str, claim: tuple[str, int] | None) -> None:
    assert claimed_port(argv, proxy) == claim
