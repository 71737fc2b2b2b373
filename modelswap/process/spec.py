"""What a process needs to know about its model, and the pure helpers around it.

:class:`ProcessSpec` is deliberately *not* the pydantic config: the process
package must not depend on how the config is written, only on the handful of
values it acts on. The composition root (``app.py``) maps each model's config
entry to one of these.

Everything here is synchronous and pure (no clock, no I/O): argv/env building
and URL joining are tested without spawning anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from yarl import URL

from modelswap.errors import UpstreamStartError
from modelswap.process.command import split_command

NO_HEALTH_CHECK = "none"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """The model-level settings one managed process acts on.

    Times are in seconds. ``env`` entries are ``NAME=value`` strings appended to
    the inherited environment (the model's value wins on a clash).
    """

    model_id: str
    cmd: str
    proxy: str
    cmd_stop: str = ""
    check_endpoint: str = "/health"
    env: tuple[str, ...] = ()
    ttl: float = 0.0
    unload_timeout: float = 10.0
    health_check_timeout: float = 120.0

    @property
    def port(self) -> int | None:
        """The upstream's TCP port as the proxy URL names it (None if unparsable)."""
        try:
            return URL(self.proxy).port
        except (ValueError, TypeError):
            return None

    @property
    def health_check_enabled(self) -> bool:
        return self.check_endpoint.strip() != NO_HEALTH_CHECK


def build_env(base: Mapping[str, str], entries: Sequence[str]) -> dict[str, str]:
    """The child's environment: ``base`` plus the model's ``NAME=value`` entries.

    Later entries win over earlier ones and over ``base``, which is how
    appending to an environment list behaves for the child. An entry without
    ``=`` sets the variable to the empty string rather than being lost silently.
    """
    env = dict(base)
    for entry in entries:
        name, _, value = entry.partition("=")
        if name:
            env[name] = value
    return env


def parse_proxy_url(proxy: str) -> URL:
    """Parse ``proxy`` as an absolute http(s) URL; ValueError names the reason."""
    url = URL(proxy)  # raises ValueError on hard parse failures (bad port, …)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {url.scheme!r}, want http or https")
    if not url.host:
        raise ValueError("missing host")
    return url


def join_url(base: URL, endpoint: str) -> URL:
    """``base`` with ``endpoint``'s path joined on and its query merged in.

    ``http://h:1/v`` + ``/health?x=1`` → ``http://h:1/v/health?x=1``: the
    proxy's base path is kept, exactly one slash joins the two, and query
    parameters from both survive (the endpoint's come last).
    """
    path, _, query = endpoint.strip().partition("?")
    joined_path = base.path.rstrip("/") + "/" + path.lstrip("/")
    merged = base.with_path(joined_path, keep_query=True)
    if query:
        merged = merged.with_query(list(base.query.items()) + list(URL("?" + query).query.items()))
    return merged


def format_duration(seconds: float) -> str:
    """A duration the way llama-swap prints it: ``500ms``, ``5s``, ``2m0s``, ``1h0m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000):d}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:g}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


@dataclass(frozen=True, slots=True)
class Launch:
    """Everything needed to spawn one child, resolved from a spec before spawning."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    health_url: str | None  # None: ready as soon as the spawn succeeds


def prepare_launch(spec: ProcessSpec, base_env: Mapping[str, str]) -> Launch:
    """Validate ``spec`` in the spec's order (router.md §2.3) and resolve the launch.

    Raises :class:`UpstreamStartError` with llama-swap's texts, so a misconfigured
    model fails its start with a message users can search for.
    """
    if not spec.proxy.strip():
        raise UpstreamStartError("upstream proxy missing")
    try:
        argv = split_command(spec.cmd)
    except ValueError as exc:
        raise UpstreamStartError(f"unable to get sanitized command: {exc}") from None
    try:
        proxy = parse_proxy_url(spec.proxy.strip())
    except ValueError as exc:
        raise UpstreamStartError(f'invalid proxy URL "{spec.proxy}": {exc}') from None
    health_url = str(join_url(proxy, spec.check_endpoint)) if spec.health_check_enabled else None
    return Launch(argv=tuple(argv), env=build_env(base_env, spec.env), health_url=health_url)
