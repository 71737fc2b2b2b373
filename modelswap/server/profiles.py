"""Profiles (server spec §7): the active profile and its pins, plus pure pin resolution.

A profile pins requested names to targets while it is active (``""`` =
disabled name). The active profile is runtime state of one server instance:
none at start, none again after every config reload (a new instance). It is
owned by :class:`ProfileState`; observers (the event stream, later) are told
about every real change — setting the current value again is not one.

The rewrite itself is the caller's: for inference routes
:func:`pinned_target` gives the target and
:func:`modelswap.server.rewrite.replace_model` applies it; for
``/upstream/<path>`` :func:`pin_upstream_path` rewrites the path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from modelswap.config import ProfileConfig
from modelswap.errors import ClientError, ModelNotFoundError

ProfileObserver = Callable[[str | None], None]


def pinned_target(pins: Mapping[str, str], requested: str) -> str | None:
    """The pin target for the exact requested string (``""`` = disabled), else None."""
    return pins.get(requested)


def pin_upstream_path(pins: Mapping[str, str], rest: str) -> str | None:
    """``/upstream/<rest>`` with the longest matching pin applied, or None if none matches.

    ``rest`` is the percent-encoded path after ``/upstream/``. A pin matches the
    whole of it or a prefix followed by ``/`` (compared decoded, so
    ``author%2Fpublic`` matches the pin ``author/public``). The remainder keeps
    its encoding. A disabled pin yields ``""`` (the path becomes ``/upstream/``).
    """
    best: tuple[int, str] | None = None
    cuts = [i for i, char in enumerate(rest) if char == "/"] + [len(rest)]
    for cut in cuts:
        name = unquote(rest[:cut])
        if name in pins and (best is None or cut > best[0]):
            best = (cut, pins[name])
    if best is None:
        return None
    cut, target = best
    return target + rest[cut:] if target else ""


def parse_active_request(body: Any) -> str | None:
    """The name in a ``PUT /api/profiles/active`` body (``None`` / ``""`` = no profile)."""
    if not isinstance(body, dict):
        raise ClientError("invalid profile request")
    if "name" not in body:
        raise ClientError("profile name is required")
    name = body["name"]
    if name is not None and not isinstance(name, str):
        raise ClientError("profile name must be a string or null")
    return name or None


class ProfileState:
    """The active profile of one server instance."""

    def __init__(self, profiles: Mapping[str, ProfileConfig]) -> None:
        self._profiles = dict(profiles)
        self._active: str | None = None
        self.observers: list[ProfileObserver] = []

    def __repr__(self) -> str:
        return f"<ProfileState active={self._active!r} profiles={len(self._profiles)}>"

    @property
    def active(self) -> str | None:
        return self._active

    def reconfigure(self, profiles: Mapping[str, ProfileConfig]) -> None:
        """A config reload: the active profile stays active if it still exists.

        Its pins are read from the new definition (observers are told when they
        differ); a profile that is gone is deactivated, as by any switch.
        """
        before = self.pins
        self._profiles = dict(profiles)
        if self._active is not None and self._active not in self._profiles:
            self.set_active(None)
        elif self._active is not None and self.pins != before:
            for observer in self.observers:  # same profile, new pins: a change all the same
                observer(self._active)

    @property
    def pins(self) -> Mapping[str, str]:
        """The active profile's pins (empty when none is active)."""
        if self._active is None:
            return {}
        return {name: target or "" for name, target in self._profiles[self._active].pins.items()}

    def set_active(self, name: str | None) -> bool:
        """Activate ``name`` (None/"" = none); True if it changed. Unknown → 404, unchanged."""
        name = name or None
        if name is not None and name not in self._profiles:
            raise ModelNotFoundError(f'profile "{name}" not found')
        if name == self._active:
            return False
        self._active = name
        for observer in self.observers:
            observer(name)
        return True

    def view(self) -> dict[str, Any]:
        """The ``GET /api/profiles`` body: active name (or null) and profiles sorted by id."""
        return {
            "active": self._active,
            "profiles": [
                {
                    "id": profile_id,
                    "description": profile.description,
                    "pins": {name: target or "" for name, target in profile.pins.items()},
                }
                for profile_id, profile in sorted(self._profiles.items())
            ],
        }
