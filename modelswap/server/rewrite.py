"""Rewrite the model a request names, wherever it carries it (server spec §7.2).

Used by profile pins, selectors and the peer router (FQN → the peer's own
model id). Unlike ``useModelName`` (see :mod:`modelswap.server.filters`), a
rewrite changes what the request is *routed* by too, so the returned
:class:`ModelRequest` has the new ``model``.

Where llama-swap and we differ, on purpose:

* **The query keeps its other parameters byte for byte**: only ``model=``
  pairs are replaced (llama-swap re-encodes and sorts the whole query).
* **Multipart** bodies keep boundary, order and file parts (see
  :mod:`modelswap.server.multipart`); when the model came from the query
  (query beats form), the query is rewritten too, so both agree.
* **Other/missing content types** carry the model in the query, so the query
  is rewritten and the body left alone. llama-swap replaces such a body with
  ``model=<target>`` and leaves the query, after which its routing still sees
  the old name (a quirk its spec tells ports not to copy).

``only_if`` restricts the rewrite to values equal to a given name (the peer
router rewrites only where the client wrote the qualified name).
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl, quote_plus, unquote_plus, urlencode

from modelswap.server.extract import BodyKind, ModelRequest, json_text
from modelswap.server.filters import RewriteError
from modelswap.server.json_body import encode_json
from modelswap.server.multipart import FormError, replace_field, text_fields


def replace_query_param(query_string: str, name: str, value: str, *, add: bool) -> str:
    """``query_string`` with every ``name=`` pair set to ``value``; appended if ``add``."""
    pieces = query_string.split("&") if query_string else []
    replacement = f"{quote_plus(name)}={quote_plus(value)}"
    found = False
    out: list[str] = []
    for piece in pieces:
        if unquote_plus(piece.partition("=")[0]) == name:
            out.append(replacement)
            found = True
        else:
            out.append(piece)
    if not found and add:
        out.append(replacement)
    return "&".join(out)


def _query_model(query_string: str) -> str | None:
    return next(
        (v for k, v in parse_qsl(query_string, keep_blank_values=True) if k == "model"), None
    )


def replace_model(
    request: ModelRequest, target: str, *, only_if: str | None = None
) -> ModelRequest:
    """The request naming ``target`` instead of its model (400 if a form cannot be parsed)."""

    def wanted(current: str | None) -> bool:
        return current is not None and (only_if is None or current == only_if)

    query = request.query_string
    if wanted(_query_model(query)) and request.kind is not BodyKind.JSON:
        query = replace_query_param(query, "model", target, add=False)
    data, document = request.data, request.json

    if request.kind is BodyKind.JSON and document is not None:
        if "model" in document and wanted(json_text(document["model"])):
            document = {**document, "model": target}
            data = encode_json(document)
    elif request.kind is BodyKind.MULTIPART and data is not None:
        try:
            fields = text_fields(data, request.boundary)
        except FormError as error:
            raise RewriteError(str(error)) from None
        current = next((v for k, v in fields if k == "model"), None)
        if wanted(current):
            data = replace_field(data, request.boundary, "model", target)
    elif request.kind is BodyKind.URLENCODED and data is not None:
        pairs = parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True)
        current = next((v for k, v in pairs if k == "model"), None)
        if wanted(current):
            data = urlencode([(k, target if k == "model" else v) for k, v in pairs]).encode()

    if query == request.query_string and data is request.data:
        return request
    model = target if only_if is None or request.model == only_if else request.model
    return dataclasses.replace(request, model=model, query_string=query, data=data, json=document)
