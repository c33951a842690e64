"""The process-wide meter shared by the IPython extension and ``measure()``."""

from __future__ import annotations

import threading
from contextlib import ContextDecorator

from .measurement import Measurement
from .meter import Meter
from .notices import notice
from .settings import GreenJupyter, load
from .sources import Detection, detect_cpu_memory, detect_gpus

_lock = threading.Lock()
_meter: Meter | None = None
_settings: GreenJupyter | None = None
_located: dict = {}  # region setting -> (GridIntensity, origin, hint); time zone and tables read once
_live = None  # (provider, zone, LiveIntensity) while a live provider is configured
_store = False  # the history Store; False until first asked for, None when off or unusable


def get_settings(config=None) -> GreenJupyter:
    """Return the settings in force, reading config files (``config``) and the environment the first time."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = load(config)
        return _settings


def get_meter() -> Meter:
    """Return the shared Meter, creating it (and starting its sampler) on first use.

    CPU and memory sources are found at once; GPUs on the sampler thread, because loading
    NVML takes longer than ``%load_ext`` should.
    """
    global _meter
    settings = get_settings()
    with _lock:
        if _meter is None:
            detection = detect_cpu_memory(settings.powercap_root)
            meter = Meter(detection.sources, settings.sample_interval_s, settings.history_s)
            meter.detection = detection

            def find_gpus():
                gpus = detect_gpus()
                detection.unavailable += gpus.unavailable
                detection.notes += gpus.notes
                detection.sources += gpus.sources
                return gpus.sources

            meter.start(late_setup=find_gpus)
            _meter = meter
        return _meter


def get_store():
    """Return the history Store for the settings in force, opening it on first use; None when off or broken."""
    global _store
    settings = get_settings()
    with _lock:
        if _store is False:
            _store = _open_store(settings.db_path)
        return _store


def _open_store(db_path: str):
    import sqlite3

    from .store import Store, default_path

    if db_path.strip().lower() == "off":
        return None
    path = db_path or default_path()
    try:
        return Store(path)
    except (OSError, sqlite3.Error) as error:
        notice("store", f"history database {path} cannot be used ({error}); cells are kept in memory only")
        return None


def current_grid(region: str | None = None):
    """Return the Grid in force now (or for ``region``); see greenjupyter.carbon.context."""
    from .carbon import context

    settings = get_settings()
    wanted = settings.region if region is None else region
    if wanted not in _located:
        _located[wanted] = context.locate(wanted)
    found, origin, hint = _located[wanted]
    grid = context.grid_for(settings, region, _live_for(settings, found), located=(found, origin, hint))
    return grid


def with_carbon(measurement: Measurement, region: str | None = None) -> Measurement:
    """Return ``measurement`` with its grams CO2e on the grid in force (or ``region``'s).

    Carbon is a layer on top: if it fails, the energy is kept and the failure said once.
    """
    from .carbon import context

    try:
        return context.footprint(measurement, current_grid(region), get_settings())
    except Exception as error:
        notice("carbon", f"could not work out CO2e ({error!r}); energy is still recorded")
        return measurement


def _live_for(settings, found):
    """Return the live intensity source for the settings in force, starting or stopping it as they change."""
    global _live
    provider = settings.live_intensity
    if provider == "ukci" and found.country != "GB":
        notice("live-ukci-region", f"live_intensity=ukci covers Great Britain only; {found.region} keeps its embedded figure")
        provider = ""
    zone = (found.country or "") if provider == "electricitymaps" else "GB"
    if _live is not None and _live[:2] != (provider, zone):
        _live[2].close()
        _live = None
    if provider and _live is None:
        from .carbon.live import make_live

        _live = (provider, zone, make_live(provider, zone))
    return _live[2] if _live else None


def shutdown() -> None:
    """Stop the sampler and close every source; the next use reads settings and sources afresh."""
    global _meter, _settings, _live, _store
    with _lock:
        meter, _meter, _settings = _meter, None, None
        if _store:
            _store.close()
        _store = False
        _located.clear()
        if _live is not None:
            _live[2].close()
            _live = None
    if meter is not None:
        meter.close()


def sources() -> Detection:
    """Return what is measured, what is estimated, and why other sources are missing."""
    meter = get_meter()
    meter.wait_ready()
    return meter.detection


class measure(ContextDecorator):
    """Measure a block or each call of a function: ``with measure() as m: ...`` then ``m.energy_j``.

    After the block the object stands for its Measurement (``m.result``; attribute access
    passes through). As a decorator each call is measured and ``result`` holds the last one.
    """

    def __init__(self, meter: Meter | None = None):
        self._meter = meter
        self._windows = []  # a stack, so recursive decorated calls work
        self.result: Measurement | None = None

    def __enter__(self) -> "measure":
        meter = self._meter or get_meter()
        self._windows.append((meter, meter.begin()))
        return self

    def __exit__(self, *exc) -> bool:
        meter, window = self._windows.pop()
        self.result = with_carbon(meter.end(window))
        return False

    def __getattr__(self, name):
        result = self.__dict__.get("result")
        if result is None:
            raise AttributeError(f"{name!r}: the measurement is not finished yet (read it after the with block)")
        return getattr(result, name)

    def __repr__(self) -> str:
        return f"measure(result={self.result!r})"

    def __str__(self) -> str:
        return str(self.result) if self.result else "measure(running)"

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self):
        return self.result._repr_html_() if self.result else None
