"""greenjupyter: energy and carbon of every notebook cell.

In IPython or Jupyter: ``%load_ext greenjupyter``, then ``%%carbon`` and ``%carbon``.
In plain Python: ``with greenjupyter.measure() as m: ...``.
"""

from .errors import ConfigError, GreenJupyterError, SourceUnavailable
from .history import history
from .measurement import CellRecord, Measurement
from .runtime import measure, sources

__version__ = "0.1.0"
__all__ = [
    "CellRecord",
    "ConfigError",
    "GreenJupyterError",
    "Measurement",
    "SourceUnavailable",
    "cells",
    "history",
    "log",
    "measure",
    "sci",
    "sources",
    "tag",
    "whatif",
]


def cells() -> tuple:
    """Return the CellRecords of this kernel session kept in memory, oldest first."""
    from .ipython.extension import current_recorder

    recorder = current_recorder()
    return tuple(recorder.records) if recorder else ()


def whatif(energy_j=None, regions=None, notebook=None, since=None):
    """Return the CO2e of this session's energy (or ``energy_j``, or the stored cells of ``notebook``
    and/or ``since``) on your grid and on other grids: rows of region, intensity, PUE, CO2e and the
    change in %. See greenjupyter.carbon.whatif."""
    from .carbon.whatif import whatif

    return whatif(energy_j, regions, notebook, since)


def log(**metrics) -> None:
    """Attach metrics to the running cell's record, e.g. ``log(accuracy=0.93, loss=0.21)``; see greenjupyter.compare."""
    from .compare import log

    log(**metrics)


def tag(name) -> None:
    """Name the run of this cell and the following ones (``None``: no run), for ``%carbon compare``."""
    from .compare import tag

    tag(name)


def sci(measurement, units):
    """Return the SCI, gCO2e per functional unit, of ``measurement`` for ``units`` (1000, "1000 predictions");
    see greenjupyter.carbon.sci."""
    from .carbon.sci import sci

    return sci(measurement, units)


def load_ipython_extension(ipython) -> None:
    from .ipython import load

    load(ipython)
    from . import live_status  # this kernel's power, for the Jupyter server's /metrics

    live_status.start()


def unload_ipython_extension(ipython) -> None:
    from . import live_status
    from .ipython import unload

    live_status.stop()
    unload(ipython)


def _jupyter_server_extension_points() -> list:
    """The jupyter_server extension (greenjupyter.server): energy and CO2e on the server's /metrics."""
    return [{"module": "greenjupyter.server"}]
