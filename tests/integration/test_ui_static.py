"""The web UI's static files (server spec §22, scenario 89) through the real app.

The app serves a temporary UI directory (``app[UI_ROOT]``) holding known
files, so every answer can be checked byte for byte; a secret file next to
that directory is what every traversal attempt tries, and must never get.
The last tests check that the package data rule ships ``modelswap/ui/`` in a
non-editable install (setuptools' own ``build_py`` on a copy of the source).
"""

from __future__ import annotations

import email.utils
import glob
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

import modelswap
from modelswap.app import build_app
from modelswap.config import load_config_text
from modelswap.server.ui_static import UI_ROOT, accepts_brotli, resolve_ui_file
from modelswap.testing.fake_process import fake_upstream_env
from tests.integration.proxy_harness import serving
from tests.integration.server_harness import config_text, fake

pytestmark = [pytest.mark.timeout(60)]

INDEX = b"<!doctype html><title>modelswap</title><script type=module src=app.js></script>"
APP_JS = b"export const answer = 42;\n"
APP_JS_BR = b"\x1b\x19\x00\xf8brotli-bytes-as-stored"  # served as stored, never decoded
SECRET = b"TOP-SECRET-OUTSIDE-THE-UI-DIRECTORY"
KEY = "sk-ui-test-key"


def make_ui(tmp: Path) -> Path:
    """A UI directory with one file of each kind, siblings, nesting and symlinks."""
    (tmp / "secret.txt").write_bytes(SECRET)
    (tmp / "outside").mkdir()
    (tmp / "outside" / "secret.txt").write_bytes(SECRET)
    root = tmp / "ui"
    (root / "pages").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "app.js").write_bytes(APP_JS)
    (root / "app.js.br").write_bytes(APP_JS_BR)
    (root / "app.js.gz").write_bytes(b"\x1f\x8b gzip sibling: never chosen")
    (root / "app.css").write_bytes(b"body { color: black }")
    (root / "logo.svg").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "data.json").write_bytes(b"{}")
    (root / "shot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "pages" / "models.js").write_bytes(b"export default 1;\n")
    (root / "favicon.ico").write_bytes(b"\x00\x00\x01\x00icon")
    (root / "inside-link.js").symlink_to(root / "app.js")  # inside: allowed
    (root / "leak.txt").symlink_to(tmp / "secret.txt")  # outside: refused
    (root / "leakdir").symlink_to(tmp / "outside", target_is_directory=True)
    return root


@asynccontextmanager
async def ui_server(tmp: Path, head: str = "", root: Path | None = None) -> AsyncIterator[str]:
    text = config_text([fake(tmp, "m")], head)
    app = build_app(
        load_config_text(text, "ui.yaml", environ={}).config, base_env=fake_upstream_env()
    )
    app[UI_ROOT] = root if root is not None else make_ui(tmp)
    async with serving(app) as url:
        yield url


async def fetch(
    session: aiohttp.ClientSession, url: str, method: str = "GET", **headers: str
) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
    headers.setdefault("Accept-Encoding", "identity")
    async with session.request(
        method, URL(url, encoded=True), headers=headers, allow_redirects=False
    ) as resp:
        return resp.status, await resp.read(), resp.headers


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(auto_decompress=False)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", False),
        ("gzip", False),
        ("deflate", False),
        ("brotli", False),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("BR", True),
        ("gzip, br;q=0", False),
        ("br;q=0.001", True),
        ("br;q=bogus", False),
    ],
)
def test_accepts_brotli(header: str, expected: bool) -> None:
    assert accepts_brotli(header) is expected


async def test_scenario_89(tmp_path: Path) -> None:
    async with ui_server(tmp_path) as url, client() as s:
        status, body, headers = await fetch(s, f"{url}/ui/app.js")
        assert (status, body) == (200, APP_JS)
        assert headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert headers["Cache-Control"] == "no-cache"
        assert "Content-Encoding" not in headers

        for accept in ("gzip, deflate, br", "br;q=1.0, gzip;q=0.8"):
            status, body, headers = await fetch(
                s, f"{url}/ui/app.js", **{"Accept-Encoding": accept}
            )
            assert (status, body) == (200, APP_JS_BR), accept
            assert headers["Content-Encoding"] == "br"
            assert headers["Vary"] == "Accept-Encoding"
            assert headers["Content-Type"] == "text/javascript; charset=utf-8"

        for accept in ("gzip", "gzip, deflate", "brotli"):  # a .gz sibling is never chosen
            status, body, headers = await fetch(
                s, f"{url}/ui/app.js", **{"Accept-Encoding": accept}
            )
            assert (status, body) == (200, APP_JS), accept
            assert "Content-Encoding" not in headers

        for path in ("/ui/", "/ui/index.html", "/ui/models", "/ui/activity/123", "/ui/pages/"):
            status, body, headers = await fetch(s, url + path)
            assert (status, body) == (200, INDEX), path
            assert headers["Content-Type"] == "text/html; charset=utf-8"

        status, body, _ = await fetch(s, f"{url}/ui/missing.js")
        assert (status, body) == (404, b"404 page not found\n")
        assert (await fetch(s, f"{url}/ui/pages/missing.css"))[0] == 404

        status, _, headers = await fetch(s, f"{url}/ui")
        assert (status, headers["Location"]) == (301, "/ui/")
        status, _, headers = await fetch(s, f"{url}/")
        assert (status, headers["Location"]) == (302, "/ui")


async def test_content_types(tmp_path: Path) -> None:
    expected = {
        "/ui/app.css": "text/css; charset=utf-8",
        "/ui/logo.svg": "image/svg+xml",
        "/ui/data.json": "application/json",
        "/ui/shot.png": "image/png",
        "/ui/pages/models.js": "text/javascript; charset=utf-8",
        "/ui/index.html": "text/html; charset=utf-8",
        "/favicon.ico": "image/x-icon",
    }
    async with ui_server(tmp_path) as url, client() as s:
        for path, content_type in expected.items():
            status, _, headers = await fetch(s, url + path)
            assert (status, headers["Content-Type"]) == (200, content_type), path


async def test_conditional_requests_and_ranges(tmp_path: Path) -> None:
    root = make_ui(tmp_path)
    async with ui_server(tmp_path, root=root) as url, client() as s:
        status, _, headers = await fetch(s, f"{url}/ui/app.js")
        etag, modified = headers["ETag"], headers["Last-Modified"]
        status, body, headers = await fetch(s, f"{url}/ui/app.js", **{"If-None-Match": etag})
        assert (status, body) == (304, b"")
        assert headers["ETag"] == etag
        status, _, _ = await fetch(s, f"{url}/ui/app.js", **{"If-Modified-Since": modified})
        assert status == 304

        # The brotli variant is another representation: its own validator.
        status, _, br_headers = await fetch(s, f"{url}/ui/app.js", **{"Accept-Encoding": "br"})
        assert status == 200 and br_headers["ETag"] != etag

        status, body, headers = await fetch(s, f"{url}/ui/app.js", Range="bytes=7-11")
        assert (status, body) == (206, APP_JS[7:12])
        status, body, headers = await fetch(s, f"{url}/ui/app.js", "HEAD")
        assert (status, body, headers["Content-Length"]) == (200, b"", str(len(APP_JS)))

        # A changed file is picked up: the old validator no longer matches.
        (root / "app.js").write_bytes(b"export const answer = 43;\n")
        later = os.stat(root / "app.js").st_mtime + 10
        os.utime(root / "app.js", (later, later))
        status, body, headers = await fetch(s, f"{url}/ui/app.js", **{"If-None-Match": etag})
        assert (status, body) == (200, b"export const answer = 43;\n")
        assert headers["ETag"] != etag
        since = email.utils.formatdate(later - 5, usegmt=True)
        status, _, _ = await fetch(s, f"{url}/ui/app.js", **{"If-Modified-Since": since})
        assert status == 200


TRAVERSALS = [
    "/ui/../secret.txt",
    "/ui/%2e%2e/secret.txt",
    "/ui/%2E%2E/%2e%2e/secret.txt",
    "/ui/..%2fsecret.txt",
    "/ui/pages/..%2F..%2Fsecret.txt",
    "/ui/pages/%2e%2e/%2e%2e/secret.txt",
    "/ui/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/ui/..\\secret.txt",
    "/ui/%5c..%5csecret.txt",
    "/ui//secret.txt",
    "/ui/%2F{tmp}/secret.txt",
    "/ui/{tmp}/secret.txt",
    "/ui/leak.txt",
    "/ui/leakdir/secret.txt",
    "/ui/leakdir/%2e%2e/secret.txt",
    "/ui/leak.txt%00.js",
]


async def test_no_path_leaves_the_directory(tmp_path: Path) -> None:
    async with ui_server(tmp_path) as url, client() as s:
        for template in TRAVERSALS:
            path = template.format(tmp=str(tmp_path).lstrip("/"))
            for accept in ("identity", "br"):
                status, body, _ = await fetch(s, url + path, **{"Accept-Encoding": accept})
                assert SECRET not in body, path
                assert status in (404, 400) or body == INDEX, (path, status)
        # A symlink that stays inside the directory is an ordinary file.
        assert (await fetch(s, f"{url}/ui/inside-link.js"))[1] == APP_JS


def test_resolver_refuses_escapes(tmp_path: Path) -> None:
    """The pure resolver, without the HTTP layer's own URL normalisation in front."""
    root = make_ui(tmp_path)
    for rel in ("../secret.txt", "pages/../../secret.txt", "leak.txt", "leakdir/secret.txt"):
        assert resolve_ui_file(root, rel, brotli=True) is None, rel
    found = resolve_ui_file(root, str(tmp_path / "secret.txt"), brotli=False)  # absolute
    assert found is None
    assert resolve_ui_file(root, "models", brotli=False) == (
        root / "index.html",
        "text/html; charset=utf-8",
        False,
    )
    missing = resolve_ui_file(tmp_path / "nope", "", brotli=False)
    assert missing is None


async def test_api_keys_protect_the_ui_but_not_the_favicon(tmp_path: Path) -> None:
    async with ui_server(tmp_path, f"apiKeys: [{KEY}]") as url, client() as s:
        for path in ("/ui/", "/ui/app.js", "/ui/models", "/ui"):
            status, _, headers = await fetch(s, url + path)
            assert status == 401, path
            assert headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
        status, body, _ = await fetch(s, f"{url}/ui/", Authorization=f"Bearer {KEY}")
        assert (status, body) == (200, INDEX)
        status, body, _ = await fetch(s, f"{url}/favicon.ico")
        assert (status, body) == (200, b"\x00\x00\x01\x00icon")


async def test_missing_favicon_and_missing_ui(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    async with ui_server(tmp_path, root=empty) as url, client() as s:
        assert (await fetch(s, f"{url}/favicon.ico"))[0] == 404
        assert (await fetch(s, f"{url}/ui/"))[0] == 404  # no index.html to fall back on
        assert (await fetch(s, f"{url}/ui/models"))[0] == 404


async def test_the_package_ui_is_served_by_default(tmp_path: Path) -> None:
    package_ui = Path(modelswap.__file__).parent / "ui"
    text = config_text([fake(tmp_path, "m")])
    app: web.Application = build_app(load_config_text(text, "ui.yaml", environ={}).config)
    async with serving(app) as url, client() as s:
        status, body, _ = await fetch(s, f"{url}/ui/")
    assert (status, body) == (200, (package_ui / "index.html").read_bytes())


# --- packaging ---------------------------------------------------------------------------

REPO = Path(modelswap.__file__).parent.parent
UI_KINDS = ["index.html", "js/app.js", "pages/deep/x.js", "app.css", "icon.svg", "shot.png",
            "js/app.js.br", "data.json", "favicon.ico"]  # fmt: skip


def package_data_patterns() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns: list[str] = pyproject["tool"]["setuptools"]["package-data"]["modelswap"]
    return patterns


def test_package_data_rule_covers_every_ui_file() -> None:
    """setuptools expands package-data globs recursively from the package dir; so do we."""
    package = REPO / "modelswap"
    shipped: set[str] = set()
    for pattern in package_data_patterns():
        shipped |= {
            p
            for p in glob.glob(pattern, root_dir=package, recursive=True)
            if (package / p).is_file()
        }
    ui_files = {str(p.relative_to(package)) for p in (package / "ui").rglob("*") if p.is_file()}
    assert "ui/index.html" in ui_files
    assert ui_files <= shipped, ui_files - shipped


def test_a_non_editable_build_ships_the_ui(tmp_path: Path) -> None:
    """setuptools' ``build_py`` (what a wheel contains) on a copy with one file of each kind."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(
        REPO / "modelswap",
        src / "modelswap",
        ignore=shutil.ignore_patterns("__pycache__", "ui"),
    )
    for name in UI_KINDS:
        path = src / "modelswap" / "ui" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    out = tmp_path / "build"
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
         "--build-lib", str(out)],
        cwd=src, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in UI_KINDS:
        assert (out / "modelswap" / "ui" / name).is_file(), name
