"""The process-wide meter shared by the IPython extension and ``measure()``."""

from __future__ import annotations

import functools
import os
import threading

from .measurement import Measurement
from .meter import Meter
from .notices import forget, notice
from .settings import GreenJupyter, load
from .sources import Detection, detect_cpu_memory, detect_gpus

_lock = threading.Lock()
_meter: Meter | None = None
_settings: GreenJupyter | None = None
_located: dict = {}  # region setting -> (GridIntensity, origin, hint); time zone and tables read once
_live = None  # (provider, zone, LiveIntensity) while a live provider is configured
_store = False  # the history Store; False until first asked for, None when off or unusable
_kept: dict = {}  # values set with %carbon config, kept by shutdown(keep_settings=True) for the next load
_inherited: list = []  # a forked child's copies of its parent's meter, store and live source, never closed


def _after_fork_in_child() -> None:
    """Start the child of ``os.fork()`` clean: its own lock, and its own meter and store on first use.

    The parent's objects came without their threads, and their locks may have been held at the
    fork. They are kept, unused and never closed: they share NVML and the SQLite file with the
    parent, which still uses them. Notices are per process, so the child may say its own.
    """
    global _lock, _meter, _store, _live
    _lock = threading.Lock()
    _inherited.append((_meter, _store, _live))
    _meter, _store, _live = None, False, None
    forget()


os.register_at_fork(after_in_child=_after_fork_in_child)  # costs nothing until a fork


def get_settings(config=None) -> GreenJupyter:
    """Return the settings in force, reading config files (``config``) and the environment the first time.

    Values a shutdown(keep_settings=True) kept (those set with ``%carbon config``) are applied last.
    """
    global _settings
    with _lock:
        if _settings is None:
            _settings = load(config, overrides=_kept)
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
    return carbon_adder(region)(measurement)


def carbon_adder(region: str | None = None):
    """Return a function that adds CO2e to Measurements, on the grid in force now (looked up once, for a batch)."""
    from .carbon import context

    try:
        grid, settings = current_grid(region), get_settings()
    except Exception as error:
        notice("carbon", f"could not work out CO2e ({error!r}); energy is still recorded")
        return lambda measurement: measurement

    def add(measurement: Measurement) -> Measurement:
        try:
            return context.footprint(measurement, grid, settings)
        except Exception as error:
            notice("carbon", f"could not work out CO2e ({error!r}); energy is still recorded")
            return measurement

    return add


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


def shutdown(keep_settings: bool = False) -> None:
    """Stop the sampler and close every source; the next use reads settings and sources afresh.

    ``keep_settings``: the values set with ``%carbon config`` win again at the next use, with their
    origin (``%reload_ext``, in the same kernel); without it they are forgotten.
    """
    global _meter, _settings, _live, _store, _kept
    with _lock:
        if not keep_settings:
            _kept = {}
        elif _settings is not None:
            _kept = _settings.overrides()
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


class measure:
    """Measure a block or each call of a function: ``with measure() as m: ...`` then ``m.energy_j``.

    After the block the object stands for its Measurement (``m.result``; attribute access
    passes through). As a decorator each call is measured and the decorated function's
    ``measurement`` holds the last call to finish. Windows are kept per thread, so calls may
    recurse and run in several threads at once; ``result`` read on a thread is the last
    Measurement finished on that thread (or, on a thread that finished none, on any thread).

    ``units``: the functional units each window serves (1000, "1000 predictions"); then ``sci``
    is its carbon per unit (greenjupyter.carbon.sci.SCI) and the result shows it. A value that
    is not a number above 0 raises ConfigError (a ValueError) at once.
    """

    def __init__(self, meter: Meter | None = None, *, units=None):
        self._meter = meter
        self._local = threading.local()  # per thread: a stack of open windows, and the last result
        self._last: Measurement | None = None  # the last one finished on any thread
        self._units = units
        if units is not None:
            from .carbon.sci import parse_units

            parse_units(units)  # refused here, before the work runs

    @property
    def result(self) -> Measurement | None:
        return getattr(self._local, "result", None) or self._last

    @property
    def sci(self):
        """Return the SCI of ``result`` for the units given, or None without units, result or CO2e."""
        result = self.result
        if self._units is None or result is None or result.co2e_g is None:
            return None
        from .carbon.sci import sci

        return sci(result, self._units)

    def __enter__(self) -> "measure":
        meter = self._meter or get_meter()
        windows = self._local.__dict__.setdefault("windows", [])  # a stack: recursive calls nest
        windows.append((meter, meter.begin(), os.getpid()))
        return self

    def __exit__(self, *exc) -> bool:
        self._finish()
        return False

    def _finish(self) -> Measurement | None:
        meter, window, pid = self._local.windows.pop()
        if pid != os.getpid():  # opened before os.fork(): that meter is the parent's, maybe locked
            notice("measure-forked", "a measure() window opened before os.fork() has no result in the child")
            return None
        result = with_carbon(meter.end(window))
        self._local.result = self._last = result
        return result

    def __call__(self, func):
        @functools.wraps(func)
        def measured(*args, **kwargs):
            self.__enter__()
            try:
                return func(*args, **kwargs)
            finally:
                measured.measurement = self._finish() or measured.measurement

        measured.measurement = None  # the Measurement of the last call to finish
        return measured

    def __getattr__(self, name):
        if name.startswith("_"):  # internals (and copy/pickle probes) are never the Measurement's
            raise AttributeError(name)
        result = self.result
        if result is None:
            raise AttributeError(f"{name!r}: the measurement is not finished yet (read it after the with block)")
        return getattr(result, name)

    def __repr__(self) -> str:
        return f"measure(result={self.result!r})"

    def __str__(self) -> str:
        from .format import measurement_text

        return measurement_text(self.result, self.sci) if self.result else "measure(running)"

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self):
        from .format import measurement_html

        return measurement_html(self.result, self.sci) if self.result else None
