"""Settings read from the environment (``GREENJUPYTER_<NAME>``), validated, with their origin."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from .errors import ConfigError
from .notices import notice


@dataclass(frozen=True)
class Settings:
    """Settings in force. ``origin`` maps each name to where its value came from."""

    powercap_root: str = "/sys/class/powercap"
    sample_interval_s: float = 0.25
    history_s: float = 3600.0  # how much live power history the sampler keeps
    cells_kept: int = 1000  # cell records kept in memory (the store keeps all)
    origin: dict = field(default_factory=dict, compare=False)


LIMITS = {
    "sample_interval_s": (0.01, 60.0),
    "history_s": (1.0, 86400.0),
    "cells_kept": (1, 1_000_000),
}


def check(name: str, raw) -> object:
    """Return ``raw`` converted to the type of setting ``name``; raise ConfigError naming what is accepted."""
    known = {f.name: f for f in fields(Settings) if f.name != "origin"}
    if name not in known:
        raise ConfigError(f"unknown setting {name!r}; known settings: {', '.join(sorted(known))}")
    kind = type(known[name].default)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if name in LIMITS:
        low, high = LIMITS[name]
        if not low <= value <= high:
            raise ConfigError(f"{name}={raw!r} is out of range; accepted: {low:g} to {high:g}")
    return value


def from_environment(environ=os.environ) -> Settings:
    """Return Settings from ``GREENJUPYTER_<NAME>`` variables; a bad value is reported and the default kept."""
    values, origin = {}, {}
    for f in fields(Settings):
        if f.name == "origin":
            continue
        variable = f"GREENJUPYTER_{f.name.upper()}"
        origin[f.name] = "default"
        if variable in environ:
            try:
                values[f.name] = check(f.name, environ[variable])
                origin[f.name] = f"environment {variable}"
            except ConfigError as error:
                notice(f"setting-{variable}", f"{variable}: {error}; using the default {f.default!r}")
    return Settings(**values, origin=origin)
