"""One exception tree for the whole program.

Every error says whose fault it was (the client's, the config's, an upstream's,
or ours) and carries the HTTP status it maps to. The server turns any of these
into an OpenAI-style JSON body in exactly one place, so handlers never build
error responses by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class ModelswapError(Exception):
    """Base of every error modelswap raises on purpose."""

    status: int = 500
    #: OpenAI-style ``error.code``; None means "derive it from the status".
    code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- the client's fault -------------------------------------------------------


class ClientError(ModelswapError):
    """The request is wrong; retrying it unchanged will fail again."""

    status = 400


class ModelNotFoundError(ClientError):
    """The request names a model that no model, alias, peer or selector provides."""

    status = 404


class TooManyRequestsError(ClientError):
    """A model's concurrency limit is reached; the client should retry later."""

    status = 429
    code = "concurrency_limit"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- the config's fault ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config, located as precisely as the loader knows.

    Rendered as ``config.yaml:14: models.qwen.ttl: must be >= 0``; parts that are
    unknown (a problem spanning the whole document has no line) are left out.
    """

    message: str
    file: str | None = None
    line: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


class ConfigError(ModelswapError):
    """The config cannot be loaded. Holds every problem found, first one first."""

    status = 500

    def __init__(self, problems: Iterable[ConfigProblem | str]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(
            p if isinstance(p, ConfigProblem) else ConfigProblem(p) for p in problems
        )
        if not self.problems:
            self.problems = (ConfigProblem("invalid configuration"),)
        super().__init__("\n".join(str(p) for p in self.problems))


# --- an upstream's fault ---------------------------------------------------------


class UpstreamError(ModelswapError):
    """An upstream server failed to start, crashed, or could not be reached."""

    status = 502


class UpstreamStartError(UpstreamError):
    """An upstream process exited early or never became healthy."""


# --- ours / the service's state -------------------------------------------------


class ServiceUnavailableError(ModelswapError):
    """modelswap cannot serve this now (shutting down, model not ready)."""

    status = 503


class ShuttingDownError(ServiceUnavailableError):
    """The router or a process is shutting down and accepts no new work."""


# --- process lifecycle (modelswap.process) ---------------------------------------


class StartAbortedError(UpstreamStartError):
    """A stop or teardown interrupted a start; its requester and waiters get ``aborted``."""


class UpstreamExitedError(UpstreamError):
    """A ready upstream's child exited by itself: ``[<id>] upstream exited unexpectedly``."""


class ProcessStoppedError(ServiceUnavailableError):
    """A ready process was stopped while someone waited on it: ``[<id>] stopped``."""


class IllegalTransitionError(ModelswapError):
    """Our bug: a process tried a state change its transition table forbids."""

    status = 500


class ModelNotLoadedError(ClientError):
    """An ignored websocket named a model that is not ready; it may not start one (409)."""

    status = 409


# --- the local router (modelswap.router) -------------------------------------------


class RouterError(ModelswapError):
    """An admitted request could not be served: llama-swap's 500 ``unspecific error: <reason>``.

    ``message`` (what the client sees) carries the prefix; ``reason`` is the bare
    router text (``group: model unloaded``, ``health check timed out after 2m0s``)
    for logs and for the loading stream.
    """

    status = 500

    def __init__(self, reason: str) -> None:
        super().__init__(f"unspecific error: {reason}")
        self.reason = reason


class SwapFailedError(RouterError):
    """The swap a request waited on failed (the target did not become ready)."""


class ModelUnloadedError(RouterError):
    """The request's model was unloaded while the request waited: ``<router>: model unloaded``."""


class RouterShuttingDownError(RouterError, ShuttingDownError):
    """The router is shutting down: 500 ``unspecific error: <router> is shutting down``.

    Also a :class:`ShuttingDownError`, so ``except ShuttingDownError`` sees it;
    the status stays llama-swap's 500, not 503.
    """


class ShutdownInProgressError(ModelswapError):
    """``shutdown()`` was called again: ``<router> shutdown already in progress``."""

    status = 500
