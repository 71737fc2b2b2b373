"""The web UI's files at ``/ui/`` and ``/favicon.ico`` (server spec §22, scenario 89).

The UI is static ES modules shipped inside the package (``modelswap/ui/``,
package data): no build step, nothing fetched from the internet. This module
only serves them, as a normal static server would:

* ``GET /ui`` → 301 ``/ui/``; ``GET /ui/`` → ``index.html``;
* a client whose ``Accept-Encoding`` lists ``br`` gets ``<file>.br`` when it
  exists, with ``Content-Encoding: br``, ``Vary: Accept-Encoding`` and the
  original file's type (:func:`accepts_brotli` is exact: ``brotli`` is not
  ``br``, and ``br;q=0`` refuses it);
* a missing file whose last path segment contains a ``.`` is a 404; any other
  missing path is the single-page app's route (``/ui/models``) and gets
  ``index.html``;
* ``ETag``/``Last-Modified`` with 304s, ranges, ``HEAD`` — aiohttp's
  :class:`~aiohttp.web.FileResponse` does these; ``Cache-Control: no-cache``
  makes browsers revalidate, so a changed UI is picked up at once (a 304 costs
  one round trip on loopback);
* the path can never leave the directory: ``..`` segments are refused, and the
  resolved file (symlinks followed) must lie inside the resolved root.

File-system calls run in a worker thread. The root is ``app[UI_ROOT]`` when
set (tests), else the package's ``ui`` directory. ``/favicon.ico`` is public
(``auth.UNPROTECTED_PATHS``); ``/ui/…`` is protected by ``apiKeys``, so a
browser shows its login prompt (any user name, the key as password).
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from aiohttp import web

from modelswap.server.errors import NOT_FOUND_TEXT

__all__ = [
    "PACKAGE_UI_ROOT",
    "UI_ROOT",
    "accepts_brotli",
    "add_ui_routes",
    "content_type_for",
    "resolve_ui_file",
]

PACKAGE_UI_ROOT = Path(__file__).resolve().parent.parent / "ui"
UI_ROOT: web.AppKey[Path] = web.AppKey("ui_root", Path)
"""Optional: serve the UI from this directory instead of the package's."""

INDEX = "index.html"
CACHE_MAX_FILE = 1024 * 1024
"""UI files up to this size are served from memory."""

_UiCache = dict[tuple[str, bool], "_Cached"]
UI_CACHE: web.AppKey[_UiCache] = web.AppKey("ui_cache", dict)
"""The app's UI files in memory, keyed by (path after /ui/, brotli)."""

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # ES modules refuse other types
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".map": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}


def content_type_for(name: str) -> str:
    """The ``Content-Type`` of a file name (fixed table first: the OS's may be wrong)."""
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _TYPES:
        return _TYPES[suffix]
    guessed = mimetypes.guess_type(name)[0]
    return guessed or "application/octet-stream"


def accepts_brotli(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` lists ``br`` with a non-zero quality."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() != "br":
            continue
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value.strip()) > 0
                except ValueError:
                    return False
        return True
    return False


def _inside(root: Path, rel_parts: list[str]) -> Path | None:
    """The regular file at ``root/rel_parts`` if it exists inside ``root`` (symlinks followed)."""
    try:
        path = root.joinpath(*rel_parts).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a loop, a bad name
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def resolve_ui_file(root: Path, rel: str, brotli: bool) -> tuple[Path, str, bool] | None:
    """What ``GET /ui/<rel>`` serves: (file to send, its content type, is brotli); None → 404.

    Blocking (file-system lookups). ``rel`` is the decoded path after ``/ui/``.
    """
    try:
        root = root.resolve(strict=True)
    except OSError:
        return None
    parts = [part for part in rel.split("/") if part not in ("", ".")]
    if any(part == ".." or "\\" in part or "\0" in part for part in parts):
        return None
    found = _inside(root, parts) if parts else None
    if found is None:
        if "." in rel.rsplit("/", 1)[-1]:
            return None
        parts = [INDEX]  # the single-page app's own route
        found = _inside(root, parts)
        if found is None:
            return None
    content_type = content_type_for(parts[-1])
    if brotli:
        compressed = _inside(root, [*parts[:-1], parts[-1] + ".br"])
        if compressed is not None:
            return compressed, content_type, True
    return found, content_type, False


class _ChosenFile(web.FileResponse):
    """A file we already chose: aiohttp must not pick ``.br``/``.gz`` siblings itself.

    aiohttp's own negotiation matches ``br`` as a substring (``brotli`` would
    pass) and also serves ``.gz``; the spec wants exactly the behaviour of
    :func:`resolve_ui_file`.
    """

    def _get_file_path_stat_encoding(
        self, accept_encoding: str
    ) -> tuple[Path | None, os.stat_result, str | None]:
        return super()._get_file_path_stat_encoding("")


def _not_found() -> web.Response:
    return web.Response(status=404, text=NOT_FOUND_TEXT)


@dataclass(frozen=True, slots=True)
class _Cached:
    """One UI file held in memory, with the validators a browser revalidates against."""

    path: Path
    headers: dict[str, str]
    body: bytes
    mtime_ns: int
    size: int

    def fresh(self) -> bool:
        """Whether the file on disk is still this one (one ``stat``, microseconds)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return st.st_mtime_ns == self.mtime_ns and st.st_size == self.size


def _load(path: Path, headers: dict[str, str]) -> _Cached | None:
    """Read a small UI file with its validators (``ETag`` as aiohttp's FileResponse makes it)."""
    try:
        st = os.stat(path)
        if st.st_size > CACHE_MAX_FILE:
            return None
        body = path.read_bytes()
    except OSError:
        return None
    validators = {
        "ETag": f'"{st.st_mtime_ns:x}-{st.st_size:x}"',
        "Last-Modified": formatdate(st.st_mtime, usegmt=True),
    }
    return _Cached(path, {**headers, **validators}, body, st.st_mtime_ns, st.st_size)


def _not_modified(request: web.Request, cached: _Cached) -> bool:
    etag = cached.headers["ETag"]
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags
    since = request.if_modified_since
    return since is not None and cached.mtime_ns // 1_000_000_000 <= since.timestamp()


async def _serve(request: web.Request, rel: str) -> web.StreamResponse:
    """Serve one UI file: from memory for plain requests, by aiohttp for ranges.

    A page load fetches a dozen small modules; holding them in memory (checked
    against the disk with one ``stat`` per request) answers each without the
    two thread hops a :class:`~aiohttp.web.FileResponse` costs, which is most
    of the page's load time on a busy 2-core machine.
    """
    root = request.app.get(UI_ROOT, PACKAGE_UI_ROOT)
    brotli = accepts_brotli(request.headers.get("Accept-Encoding", ""))
    ranged = "Range" in request.headers or "If-Range" in request.headers
    cache = request.app[UI_CACHE]
    key = (rel, brotli)
    cached = None if ranged else cache.get(key)
    if cached is not None and not cached.fresh():
        cached = None
    if cached is None:
        chosen = await asyncio.to_thread(resolve_ui_file, root, rel, brotli)
        if chosen is None:
            cache.pop(key, None)
            return _not_found()
        path, content_type, compressed = chosen
        headers = {"Content-Type": content_type, "Cache-Control": "no-cache"}
        if compressed:
            headers["Content-Encoding"] = "br"
            headers["Vary"] = "Accept-Encoding"
        if ranged:
            return _ChosenFile(path, headers=headers)
        cached = await asyncio.to_thread(_load, path, headers)
        if cached is None:  # too large to hold, or vanished: let aiohttp stream it
            return _ChosenFile(path, headers=headers)
        cache[key] = cached
    if _not_modified(request, cached):
        return web.Response(status=304, headers={"ETag": cached.headers["ETag"]})
    return web.Response(body=cached.body, headers=cached.headers)


async def _ui_file(request: web.Request) -> web.StreamResponse:
    return await _serve(request, request.match_info["path"])


async def _ui_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/ui/")


async def _favicon(request: web.Request) -> web.StreamResponse:
    root = request.app.get(UI_ROOT, PACKAGE_UI_ROOT)
    found = await asyncio.to_thread(lambda: _inside(root.resolve(), ["favicon.ico"]))
    if found is None:
        return _not_found()
    return _ChosenFile(found, headers={"Content-Type": "image/x-icon", "Cache-Control": "no-cache"})


def add_ui_routes(app: web.Application) -> None:
    """Register ``/ui``, ``/ui/{path}`` and ``/favicon.ico``."""
    app[UI_CACHE] = {}
    app.router.add_get("/ui", _ui_redirect)
    app.router.add_get("/ui/{path:.*}", _ui_file)
    app.router.add_get("/favicon.ico", _favicon)
