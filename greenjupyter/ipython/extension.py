"""Measure every cell: IPython's pre/post_run_cell hooks around a meter window."""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections import deque

from .. import runtime
from ..measurement import CellRecord, Measurement
from ..meter import Meter
from ..notices import notice
from ..sources.cpu_model import read_cpu_info
from ..store import StoredCell
from ..totals import Totals
from .budget import Budget

_recorder: "CellRecorder | None" = None
# Readings waiting to become records. Each sampler tick finishes them all (a kernel runs far
# fewer than a thousand cells a second); past this many the cell path finishes them itself,
# so the queue stays bounded even if the sampler stops.
QUEUE_LIMIT = 1000


def current_recorder() -> "CellRecorder | None":
    return _recorder


class CellRecorder:
    """Open a window when a cell starts, close it when the cell ends, keep the record.

    The hooks only read the counters (the exact edges) and queue the reading; turning it
    into a CellRecord happens off the cell's path, on the sampler's next tick, or at once
    when someone asks for ``records`` or ``totals``. Every hook body is guarded: a failure
    here is reported once and the user's cell runs on.

    In a child of ``os.fork()`` (multiprocessing's default on Linux) the recorder does nothing:
    the meter, the sampler and the history connection it holds are the parent's.
    """

    def __init__(self, shell, meter: Meter, cells_kept: int = 1000, store=None):
        self.shell = shell
        self.meter = meter
        self.pid = os.getpid()  # the process whose cells this records
        self.store = store  # the history database, or None
        self.session = uuid.uuid4().hex  # this load of the extension in this kernel
        self.kernel_id = _kernel_id()
        self._hardware = None
        self.notebook = os.environ.get("JPY_SESSION_NAME")
        self.listeners: list = []  # called with each finished CellRecord, on the thread that finishes it
        self.stream = None  # the live stream to the sidebar, in a kernel
        self.budget = Budget(shell, self)
        self.monitor = None  # the %carbon monitor widget, once shown
        self._records: deque[CellRecord] = deque(maxlen=cells_kept)
        self._totals = Totals()
        self._open: list = []  # [start reading or handed Measurement, info]; a stack because run_cell can nest
        self._closed: deque = deque()  # (start or Measurement, stop or None, info, execution count, error name)
        self._lock = threading.Lock()

    @property
    def records(self) -> deque:
        self.finish()
        return self._records

    @property
    def totals(self) -> Totals:
        self.finish()
        return self._totals

    @property
    def busy(self) -> bool:
        """True while a cell runs."""
        return bool(self._open)

    def pre_run_cell(self, info) -> None:
        if self.pid != os.getpid():
            return
        try:
            self._open.append([self.meter.begin(), info])
        except Exception as error:
            notice("pre_run_cell", f"could not start measuring a cell ({error!r}); cells are not affected")

    def use_for_this_cell(self, measurement: Measurement) -> bool:
        """Record the running ``%%carbon`` cell with ``measurement`` (with its CO2e) instead of the
        hooks' own window, so that its output, record, badge and history show one figure.

        Return False (and change nothing) unless the innermost running cell is a ``%%carbon`` cell.
        """
        if self.pid != os.getpid() or not self._open:
            return False
        entry = self._open[-1]
        if not (getattr(entry[1], "raw_cell", None) or "").lstrip().startswith("%%carbon"):
            return False  # the magic was called from inside another cell: that cell keeps its window
        entry[0] = measurement
        return True

    def post_run_cell(self, result) -> None:
        if not self._open or self.pid != os.getpid():  # the cell that loaded the extension had no start
            return
        start, info = self._open.pop()
        try:
            error = result.error_in_exec or result.error_before_exec
            stop = None if isinstance(start, Measurement) else self.meter.snapshot()
            self._closed.append((start, stop, info, result.execution_count, error and type(error).__name__))
            if self.store is not None or len(self._closed) > QUEUE_LIMIT:
                self.finish()  # a stored row is written before the cell's reply leaves the kernel
        except Exception as error:
            notice("post_run_cell", f"could not finish measuring a cell ({error!r}); cells are not affected")

    def finish(self) -> None:
        """Turn every queued reading into a CellRecord (any thread; cheap when there is none)."""
        if not self._closed or self.pid != os.getpid():  # a forked child keeps what it has, in memory
            return
        with self._lock:
            while self._closed:
                try:
                    self._add(*self._closed.popleft())
                except Exception as error:
                    notice("finish", f"could not record a cell ({error!r}); cells are not affected")

    def _add(self, start, stop, info, execution_count, error) -> CellRecord:
        if stop is None:  # a %%carbon cell: the magic's own Measurement, CO2e included
            measurement = start
        else:
            measurement = runtime.with_carbon(self.meter.measurement(start, stop))
        record = CellRecord(
            measurement=measurement,
            execution_count=execution_count,
            cell_id=getattr(info, "cell_id", None),
            notebook=self.notebook,
            success=error is None,
            error=error,
            source_preview=_first_line(info.raw_cell),
        )
        self._records.append(record)
        self._totals.add(record)
        if self.store is not None:
            self.store.add(StoredCell(record, self.session, self.kernel_id, self.hardware))
        for listener in self.listeners:
            listener(record)
        for name in measurement.failed_components:
            notice(
                f"failed-{name}",
                f"{name} could not be read during cell [{execution_count}]; its energy is left out "
                "of every cell where that happens (details: %carbon sources)",
            )
        return record

    @property
    def hardware(self) -> str:
        """One line on what measures this kernel, for the history."""
        if self._hardware is None:
            self.meter.wait_ready()
            parts = [f"{s.kind} ({', '.join(s.components)})" for s in self.meter.sources]
            self._hardware = f"{read_cpu_info().model}; " + "; ".join(parts)
        return self._hardware

    def _on_sample(self, sample) -> None:
        self.finish()
        if self.store is not None:
            self.store.retry()

    def register(self) -> None:
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        self.meter.sampler.listeners.append(self._on_sample)

    def unregister(self) -> None:
        if self.stream is not None:
            self.stream.stop()
        self.budget.clear()
        if self.monitor is not None:
            self.monitor.stop()
        for event, callback in (("pre_run_cell", self.pre_run_cell), ("post_run_cell", self.post_run_cell)):
            try:
                self.shell.events.unregister(event, callback)
            except ValueError:
                pass
        if self._on_sample in self.meter.sampler.listeners:
            self.meter.sampler.listeners.remove(self._on_sample)
        self.finish()


def _kernel_id():
    """Return the Jupyter kernel's id from its connection file name, or None outside a kernel."""
    if "ipykernel" not in sys.modules:  # not in a kernel; importing it would cost ~120 ms
        return None
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # not in a kernel
        return None
    return name[len("kernel-"):-len(".json")] if name.startswith("kernel-") else name


def _first_line(source, limit: int = 80) -> str:
    """Return the first non-blank line, shortened; scans only as far as that line (cells can be huge)."""
    start = 0
    while source and start < len(source):
        end = source.find("\n", start)
        if end < 0:
            end = len(source)
        line = source[start:end].rstrip()
        if line.strip():
            return line if len(line) <= limit else line[: limit - 1] + "…"
        start = end + 1
    return ""


def install(shell, meter: Meter, cells_kept: int, store=None) -> CellRecorder:
    global _recorder
    if _recorder is not None:
        uninstall()
    _recorder = CellRecorder(shell, meter, cells_kept, store)
    _recorder.register()
    return _recorder


def uninstall() -> None:
    global _recorder
    recorder, _recorder = _recorder, None
    if recorder is not None:
        recorder.unregister()
