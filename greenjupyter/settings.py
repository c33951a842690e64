"""Settings: one traitlets Configurable, fed by config files, the environment and ``%carbon config``.

Later wins: defaults, then ``c.GreenJupyter.<name>`` in Jupyter/IPython config files, then
``GREENJUPYTER_<NAME>`` environment variables, then ``%carbon config name=value``. Every value
remembers where it came from. A bad value is refused with a message that names it and what
would be accepted, and the previous value stays.
"""

from __future__ import annotations

import difflib
import math
import os
from typing import NamedTuple

from traitlets import Enum, Float, Int, TraitError, Unicode, validate
from traitlets.config import Configurable

from .errors import ConfigError
from .notices import notice


class Range(NamedTuple):
    """Accepted values of a numeric setting: finite, and within [low, high] (None: unbounded that side)."""

    low: float | None
    high: float | None
    low_excluded: bool = False  # True when ``low`` itself is refused (a share must be above 0)

    def holds(self, value) -> bool:
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_excluded else value >= self.low)
        return above and (self.high is None or value <= self.high)


# Every numeric setting is checked here, whichever way its value arrives.
LIMITS = {
    "sample_interval_s": Range(0.01, 60.0),
    "history_s": Range(1.0, 86400.0),
    "cluster_timeout_s": Range(0.0, 60.0, low_excluded=True),
    "cells_kept": Range(1, 1_000_000),
    "pue": Range(1.0, 3.0),
    "intensity_g_per_kwh": Range(0.0, 2000.0),
    "embodied_kg": Range(0.0, None),
    "lifetime_years": Range(0.1, 50.0),
    "resource_share": Range(0.0, 1.0, low_excluded=True),
    "idle_hint_after_s": Range(0.0, 604800.0),
    "idle_hint_gpu_w": Range(0.0, 5000.0),
}
# Settings the meter reads once, when it starts.
NEEDS_RELOAD = ("powercap_root", "history_s", "cells_kept", "db_path")
# Experiment trackers the `trackers` setting may name (greenjupyter/trackers.py logs to them).
TRACKERS = ("mlflow", "wandb")


class GreenJupyter(Configurable):
    """greenjupyter's settings; see the module docstring for where values come from."""

    powercap_root = Unicode(
        "/sys/class/powercap", help="Where Linux exposes the RAPL zones (powercap sysfs)."
    ).tag(config=True)
    sample_interval_s = Float(
        0.25, help="Seconds between two readings of every source by the sampler (0.01 to 60)."
    ).tag(config=True)
    history_s = Float(3600.0, help="Seconds of power samples kept in memory (1 to 86400).").tag(config=True)
    cells_kept = Int(1000, help="Cell records kept in memory; session totals count every cell.").tag(config=True)
    cluster = Enum(
        ["auto", "off"], default_value="auto",
        help="Measure a cell's work on the Dask cluster of the kernel's active distributed client (auto), or not (off).",
    ).tag(config=True)
    cluster_timeout_s = Float(
        2.0, help="Seconds (above 0, up to 60) a Dask cluster has to answer a cell's edge read; later, the "
        "cell lists 'cluster' as failed. Cells never wait for it."
    ).tag(config=True)
    region = Unicode(
        "",
        help="Where the electricity comes from: a country (FR, FRA, France), a US state (US-CA), a Canadian "
        "province (CA-QC), a cloud region (us-central1, aws:eu-west-3). Empty: the cloud region from the "
        "environment, else the time zone's country, else the world average.",
    ).tag(config=True)
    pue = Float(
        None,
        allow_none=True,
        help="Power usage effectiveness of the facility (1.0 to 3.0). Empty: 1.0 on your own machine, "
        "the provider's figure in a cloud region.",
    ).tag(config=True)
    intensity_g_per_kwh = Float(
        None, allow_none=True, help="Grid carbon intensity in gCO2e/kWh, instead of the region's figure."
    ).tag(config=True)
    embodied_kg = Float(
        0.0, help="Embodied emissions of this machine in kg CO2e, for the SCI embodied share; 0 turns it off."
    ).tag(config=True)
    lifetime_years = Float(4.0, help="Expected life of this machine in years, for the embodied share.").tag(
        config=True
    )
    resource_share = Float(
        None,
        allow_none=True,
        help="Share of the machine charged to this kernel in the embodied term (above 0, up to 1). Empty: the "
        "share of the machine's CPUs this process may use (CPU affinity, and a cgroup CPU quota when smaller).",
    ).tag(config=True)
    live_intensity = Enum(
        ["", "electricitymaps", "ukci"],
        default_value="",
        help="Live grid intensity, opt-in: electricitymaps (token in ELECTRICITYMAPS_TOKEN) or ukci "
        "(Great Britain, no key). Empty: embedded annual averages only.",
    ).tag(config=True)
    db_path = Unicode(
        "",
        help="The history database (SQLite). Empty: greenjupyter/history.sqlite in the Jupyter data "
        "directory; 'off': keep no history.",
    ).tag(config=True)
    units = Enum(
        ["auto", "metric", "imperial"], default_value="auto", help="Units for equivalents; auto follows the region."
    ).tag(config=True)
    idle_hint_after_s = Float(
        900.0, help="Seconds between two cells (0 to 604800) after which a GPU still drawing more than "
        "idle_hint_gpu_w gets one hint with what that idle time cost; 0 turns the hint off."
    ).tag(config=True)
    idle_hint_gpu_w = Float(
        30.0, help="Average watts (0 to 5000) above which a GPU counts as held while no cell runs, for the idle hint."
    ).tag(config=True)
    trackers = Unicode(
        "auto",
        help="Experiment trackers that get each cell's energy and CO2e while one of their runs is active: auto "
        "(any of mlflow, wandb the notebook has imported), off, or a comma list such as mlflow,wandb.",
    ).tag(config=True)

    @validate("trackers")
    def _known_trackers(self, proposal):
        names = [name.strip().lower() for name in proposal["value"].split(",")]
        if names in (["auto"], ["off"]) or set(names) <= set(TRACKERS):
            return ",".join(dict.fromkeys(names))  # one spelling: lower case, no spaces, no repeats
        raise Refused("trackers", proposal["value"], "not a known tracker")

    @validate(*LIMITS)
    def _within_limits(self, proposal):
        # The one check every route goes through: config files, environment, %carbon config, the CLI and
        # plain attribute assignment. NaN passes every comparison, so finiteness is checked first.
        name, value = proposal["trait"].name, proposal["value"]
        if value is not None and not LIMITS[name].holds(value):
            raise Refused(name, value, "not a finite number" if not math.isfinite(value) else "out of range")
        return value

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.origin = {name: "default" for name in self.names()}
        self.loaded_origin = dict(self.origin)  # where each value stood once files and environment were read

    @classmethod
    def names(cls) -> list[str]:
        return sorted(cls.class_trait_names(config=True))

    def set(self, name: str, raw, origin: str) -> None:
        """Set ``name`` from ``raw`` (a string or a value); raise ConfigError and keep the old value if bad."""
        if name not in self.names():
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown setting {name!r}{hint} Known settings: {', '.join(self.names())}")
        if name == "region" and isinstance(raw, str) and raw.strip():
            from .carbon.regions import lookup

            lookup(raw)  # an unknown region is refused with the closest matches
        try:
            setattr(self, name, _convert(self.traits()[name], raw))
        except (TraitError, ValueError, TypeError, OverflowError) as error:
            why = f"{error.reason}; " if isinstance(error, Refused) else ""
            raise ConfigError(f"{name}={raw!r} is refused ({why}accepted: {accepted(name)})") from None
        self.origin[name] = origin

    def overrides(self) -> dict[str, tuple[object, str]]:
        """Return {name: (value, origin)} for values set since loading (``%carbon config``): what a reload keeps."""
        return {name: (getattr(self, name), origin) for name, origin in self.origin.items()
                if origin != self.loaded_origin[name]}

    def describe(self) -> list[tuple[str, object, str]]:
        """Return (name, value, where it came from) for every setting; an automatic share as its figure."""
        rows = [(name, getattr(self, name), self.origin[name]) for name in self.names()]
        if self.resource_share is None:
            from .carbon.context import auto_resource_share

            rows = [(n, *auto_resource_share()) if n == "resource_share" else (n, v, o) for n, v, o in rows]
        return rows


class Refused(TraitError):
    """A numeric setting outside its range, or not finite; says which value and what is accepted."""

    def __init__(self, name: str, value, reason: str):
        self.reason = reason
        super().__init__(f"{name}={value!r} is refused ({reason}; accepted: {accepted(name)})")


def accepted(name: str) -> str:
    trait = GreenJupyter.class_traits()[name]
    if isinstance(trait, Enum):
        return "one of " + ", ".join(repr(v) for v in trait.values)
    if name == "trackers":
        return "'auto', 'off', or a comma list of " + ", ".join(repr(v) for v in TRACKERS)
    if name in LIMITS:
        low, high, low_excluded = LIMITS[name]
        kind = "a whole number" if isinstance(trait, Int) else "a number"
        bounds = f"{'above' if low_excluded else 'from'} {_number(low)}"
        bounds += (f" {'up ' if low_excluded else ''}to {_number(high)}" if high is not None else " up")
        return f"{kind} {bounds}" + (", or empty for automatic" if trait.allow_none else "")
    return "text"


def _number(x) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _convert(trait, raw):
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if isinstance(trait, (Float, Int)):
        if text.lower() in ("", "none", "auto") and trait.allow_none:
            return None
        return int(text) if isinstance(trait, Int) else float(text)
    return text


def load(config=None, environ=os.environ, overrides=None) -> GreenJupyter:
    """Return settings from config files (``config``: a traitlets Config), the environment, then ``overrides``.

    ``overrides`` ({name: (value, origin)}, from ``overrides()`` before a reload) win over files and
    environment, as they did before, and keep their origin. A bad value is reported once and
    skipped; the default or earlier value stays.
    """
    settings = GreenJupyter()
    layers = []
    if config is not None and "GreenJupyter" in config:
        layers += [(name, value, "config file") for name, value in config.GreenJupyter.items()]
    for name in GreenJupyter.names():
        variable = f"GREENJUPYTER_{name.upper()}"
        if variable in environ:
            layers.append((name, environ[variable], f"environment {variable}"))
    for name, value, origin in layers:
        _apply(settings, name, value, origin)
    settings.loaded_origin = dict(settings.origin)
    for name, (value, origin) in (overrides or {}).items():
        _apply(settings, name, value, origin)
    return settings


def _apply(settings: GreenJupyter, name: str, value, origin: str) -> None:
    try:
        settings.set(name, value, origin)
    except ConfigError as error:
        kept = getattr(settings, name, None)
        notice(f"setting-{origin}-{name}", f"{origin}: {error}; keeping {'automatic' if kept is None else repr(kept)}")
