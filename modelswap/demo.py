"""The built-in demo config: fake upstream models, so modelswap runs with no GPU and no model files.

It is generated rather than shipped as a file because the fake upstream must be
started with the same Python interpreter that runs modelswap.
"""

from __future__ import annotations

import shlex
import sys

DEMO_FILENAME = "<built-in demo config>"

_TEMPLATE = """\
# modelswap built-in demo: every model is the bundled fake upstream.
healthCheckTimeout: 30
sendLoadingState: true

macros:
  fake: >-
    {python} -m modelswap.testing.fake_upstream
    --port ${{PORT}} --model-id ${{MODEL_ID}}

models:
  chat-small:
    name: "Small chat model (fake)"
    cmd: ${{fake}} --startup-delay 0.5 --chunks 8 --chunk-interval 0.05
    aliases: [gpt-4o-mini]
    ttl: 300
  chat-large:
    name: "Large chat model (fake)"
    cmd: ${{fake}} --startup-delay 1.5 --chunks 16 --chunk-interval 0.05
    ttl: 300
  embed:
    name: "Embedding model (fake)"
    cmd: ${{fake}} --startup-delay 0.3
  rerank:
    name: "Reranker (fake)"
    cmd: ${{fake}} --startup-delay 0.3
    capabilities:
      reranker: true

groups:
  # chat models swap with each other (one at a time) ...
  chat:
    swap: true
    exclusive: false
    members: [chat-small, chat-large]
  # ... while the embedding model and the reranker stay loaded side by side.
  helpers:
    swap: false
    exclusive: false
    persistent: true
    members: [embed, rerank]
"""


def demo_config_text(python: str | None = None) -> str:
    """Return the demo config, wired to ``python`` (default: this interpreter)."""
    return _TEMPLATE.format(python=shlex.quote(python or sys.executable))
