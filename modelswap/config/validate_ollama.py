"""The ``ollama`` section: where Ollama's API gets a listener of its own (pure).

``ollama.listen`` is ``HOST:PORT`` (``:PORT`` = every interface, ``[v6]:PORT``),
the same forms as ``--listen``; empty (the default) means no extra listener —
the main listener serves the API under ``/ollama`` either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelswap.config.schema import OllamaConfig
from modelswap.config.validate_base import Reporter


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str | None
    """None: every interface."""
    port: int


def parse_listen_address(text: str) -> ListenAddress | str:
    """``HOST:PORT`` → the address, or the reason it is not one."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        return f"invalid listen address {text!r}: expected HOST:PORT"
    try:
        port = int(port_text)
    except ValueError:
        return f"invalid port in listen address {text!r}"
    if not 1 <= port <= 65535:
        return f"port out of range in listen address {text!r} (1-65535)"
    host = host.strip("[]")
    return ListenAddress(host or None, port)


def check_ollama(section: OllamaConfig, report: Reporter) -> OllamaConfig:
    """The section with ``listen`` trimmed; a malformed address stops loading."""
    listen = section.listen.strip()
    if listen:
        parsed = parse_listen_address(listen)
        if isinstance(parsed, str):
            report.fail(f"ollama.listen: {parsed}", "ollama", "listen")
    return section.model_copy(update={"listen": listen})
