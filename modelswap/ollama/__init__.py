"""Ollama's API, served as a translation onto the models' OpenAI-compatible upstreams.

Ollama clients (Open WebUI's Ollama connection, Continue, Home Assistant, the
official ``ollama`` libraries) speak ``/api/chat``, ``/api/generate``,
``/api/embed``… with NDJSON streams. Nothing here talks to a model directly:
pure functions map an Ollama request to the upstream's OpenAI body
(:mod:`.request`), and the upstream's JSON or SSE back to Ollama's JSON or
NDJSON (:mod:`.response`, :mod:`.stream`); names and listings are
:mod:`.names` and :mod:`.listing`. The I/O is three small modules: the
translating forwarder (:mod:`.relay`), the routes, which send every inference
request through the same admit → grant → forward path as the OpenAI routes
(:mod:`.routes`), and the optional listener at Ollama's plain paths
(:mod:`.listener`).
"""
