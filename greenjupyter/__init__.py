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
    "measure",
    "sources",
]


def cells() -> tuple:
    """Return the CellRecords of this kernel session kept in memory, oldest first."""
    from .ipython.extension import current_recorder

    recorder = current_recorder()
    return tuple(recorder.records) if recorder else ()


def load_ipython_extension(ipython) -> None:
    from .ipython import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .ipython import unload

    unload(ipython)
