"""Measure every cell: IPython's pre/post_run_cell hooks around a meter window."""

from __future__ import annotations

import atexit
import bisect
import os
import sys
import threading
import uuid
from collections import deque

from .. import journal, runtime, trackers
from ..cluster import ClusterMeter
from ..idle import Gaps, check_hint
from ..measurement import CellRecord, Measurement
from ..meter import Meter, Reading
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

    The hooks read the counters (the exact edges), queue the two readings and, with a history
    database, append them to the cell journal with one ``os.write``: that is all a cell pays,
    and a kernel killed right after the cell's reply still has the cell in its journal. Turning
    the readings into a CellRecord, its CO2e and its database row happens off the cell's path,
    on the sampler's next tick, or at once when someone asks for ``records`` or ``totals``.
    Every hook body is guarded: a failure here is reported once and the user's cell runs on.

    In a child of ``os.fork()`` (multiprocessing's default on Linux) the recorder does nothing:
    the meter, the sampler and the history connection it holds are the parent's.
    """

    def __init__(self, shell, meter: Meter, cells_kept: int = 1000, store=None):
        self.shell = shell
        self.meter = meter
        self.pid = os.getpid()  # the process whose cells this records
        self.forked = False  # set in a child of os.fork(): the hooks then do nothing (getpid is a system call)
        self._waited = False  # for GPU detection, before the first cell
        self.store = store  # the history database, or None
        self.session = uuid.uuid4().hex  # this load of the extension in this kernel
        self.kernel_id = _kernel_id()
        self._hardware = None
        self.notebook = os.environ.get("JPY_SESSION_NAME")
        self.listeners: list = []  # called with each finished CellRecord, on the thread that finishes it
        self.stream = None  # the live stream to the sidebar, in a kernel
        self.budget = Budget(shell, self)
        self.monitor = None  # the %carbon monitor widget, once shown
        self.cluster = ClusterMeter()  # a cell's work on the Dask cluster of an active client
        self.trackers = trackers.Trackers(self)  # logs cells to an active MLflow or W&B run
        self._records: deque[CellRecord] = deque(maxlen=cells_kept)
        self._totals = Totals()
        self.gaps = Gaps(meter)  # the time between cells; the first gap starts now, at the load
        # [start edge, info, (Measurement, start, stop) of a %%carbon cell or None, what attach() gave or None]
        self._open: list = []
        # (journal number, start, stop (edges, or a %%carbon cell's Readings), info, execution count, error name,
        #  Measurement or None, attached or None)
        self._closed: deque = deque()
        self._seq = 0  # the next cell's number in this session's journal
        self._tags: list = []  # (first journal number, tag or None): tag() changes, oldest first
        self._lock = threading.Lock()
        self._upkeep = threading.Lock()  # the sampler's journal upkeep against closing it; never on a cell's path
        self._journal_closed = False
        self._journal_layout = None  # the meter's layout the journal's header describes, once written
        self.journal = None
        if store is not None:
            store.before_read = self.flush  # rows are written on the sampler's tick: write them before a read
            if journal.SUPPORTED:
                self.journal = journal.JournalWriter(
                    journal.directory_for(store.path), self.session, self._journal_header)
        self._recovered = self.journal is None  # journals of dead kernels are recovered on the first tick

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
        if self.forked:
            return
        try:
            if not self._waited:  # the first cell waits for GPU detection (at most 10 s)
                self.meter.wait_ready()
                self._waited = True
            self._open.append([self.meter.edge(), info, None, None])
            self.cluster.begin(info)  # one dict lookup unless distributed is imported
        except Exception as error:
            notice("pre_run_cell", f"could not start measuring a cell ({error!r}); cells are not affected")

    def running_start(self) -> Reading | None:
        """Return the start of the outermost running cell as a Reading; None between cells."""
        running = self._open[:1]
        if not running:
            return None
        start = running[0][0]
        return self.meter.reading(start) if type(start) is tuple else start

    def use_for_this_cell(self, measurement: Measurement, start: Reading, stop: Reading) -> bool:
        """Record the running ``%%carbon`` cell with ``measurement`` (with its CO2e; the window from
        ``start`` to ``stop``) instead of the hooks' own window, so that its output, record, badge
        and history show one figure.

        Return False (and change nothing) unless the innermost running cell is a ``%%carbon`` cell.
        """
        if self.pid != os.getpid() or not self._open:
            return False
        entry = self._open[-1]
        if not (getattr(entry[1], "raw_cell", None) or "").lstrip().startswith("%%carbon"):
            return False  # the magic was called from inside another cell: that cell keeps its window
        entry[2] = (measurement, start, stop)
        return True

    def attach(self, metrics: dict | None = None, **fields) -> bool:
        """Attach ``metrics`` (merged with those attached before) and CellRecord ``fields`` (units, unit_name)
        to the running cell's record. Return False (and change nothing) when no cell runs."""
        if self.pid != os.getpid() or not self._open:
            return False
        entry = self._open[-1]
        attached = entry[3] = entry[3] or {}
        if metrics:
            attached["metrics"] = {**attached.get("metrics", {}), **metrics}
        attached.update(fields)
        return True

    def set_tag(self, name: str | None) -> None:
        """Tag the running cell (or, between cells, the next one) and every later cell with ``name`` (None: untagged)."""
        change = (self._seq, name)  # the running cell's journal number, given when it ends
        if self._tags and self._tags[-1][0] == self._seq:
            self._tags[-1] = change  # changed again in the same cell: the last one holds
        else:
            self._tags.append(change)

    def _tag_of(self, seq: int) -> str | None:
        at = bisect.bisect_right(self._tags, seq, key=lambda change: change[0])
        return self._tags[at - 1][1] if at else None

    def post_run_cell(self, result) -> None:
        if not self._open or self.forked:  # the cell that loaded the extension had no start
            return
        start, info, handed, attached = self._open.pop()
        try:
            stop = self.meter.edge() if handed is None else None  # the cell's end, first
            error = result.error_in_exec or result.error_before_exec
            error_name = error and type(error).__name__
            count = result.execution_count
            if count is None and getattr(info, "store_history", False):
                # IPython gives a fresh result without the count when showing the error itself failed
                # (%pdb on without stdin); the shell has already counted the cell.
                count = self.shell.execution_count - 1
            measurement = None
            if handed is not None:  # a %%carbon cell's Measurement and two Readings
                measurement, start, stop = handed
            else:  # two edges, as captured: turned into joules on the sampler's thread
                self.cluster.end(info)  # nothing to do unless the cell began with a Dask client
            if "mlflow" in sys.modules or "wandb" in sys.modules:  # before queueing: its record looks for this
                self.trackers.capture(count)
            seq, self._seq = self._seq, self._seq + 1
            self._closed.append((seq, start, stop, info, count, error_name, measurement, attached))
            if self.journal is not None:  # queued first: a journal file is deleted only once its cells are in
                self.journal.append(*self._journal_entry(seq, count, error is None, start, stop, info, error_name,
                                                         attached))
            if len(self._closed) > QUEUE_LIMIT or self.budget.limit is not None:
                self.finish()  # a budget's notice belongs under the cell that passed it
        except Exception as error:
            notice("post_run_cell", f"could not finish measuring a cell ({error!r}); cells are not affected")

    def _journal_entry(self, seq, count, success, start, stop, info, error_name, attached) -> tuple:
        """Return (magic, payload parts) of the cell's journal entry."""
        meter, cell_id = self.meter, getattr(info, "cell_id", None)
        if self._tags:  # what the user attached, and the run's tag, survive a kill too
            attached = {**(attached or {}), "tag": self._tag_of(seq)}
        if self._journal_layout is None:
            self.journal.header()  # written once, at the first file; it sets the layout its entries follow
        if type(start) is tuple and start[2] is stop[2] is self._journal_layout:  # the cell path's usual case
            if start[4] == stop[4] and not start[5] and not stop[5]:  # no failure, no sharing: the usual case
                failed = shared = ()
            else:
                failed, shared = meter.flags_between(start[4], stop[4], start[5], stop[5])
            return journal.EDGES_MAGIC, journal.edges_parts(seq, count, success, start, stop, failed, shared, cell_id,
                                                            info.raw_cell, error_name, meter.wall_offset, attached)
        if type(start) is tuple:  # sources were added since the journal's header was written
            start, stop = meter.reading(start), meter.reading(stop)
        failed, shared = meter.window_flags(start, stop)
        return journal.ENTRY_MAGIC, journal.entry_parts(seq, count, success, start, stop, failed, shared, cell_id,
                                                        journal.first_line(info.raw_cell), error_name, attached)

    def finish(self) -> None:
        """Turn every queued reading into a CellRecord and its row (any thread; cheap when there is none).

        The grid is looked up once and the rows written in one transaction, for all the cells
        that ended since the last time.
        """
        if not self._closed or self.pid != os.getpid():  # a forked child keeps what it has, in memory
            return
        with self._lock:
            carbon, rows = runtime.carbon_adder(), []
            while self._closed:
                try:
                    rows.append(self._add(*self._closed.popleft(), carbon))
                except Exception as error:
                    notice("finish", f"could not record a cell ({error!r}); cells are not affected")
            if self.store is not None:
                self.store.add_many(rows)

    def flush(self) -> None:
        """Write every cell that ended to the database now (before reading it back)."""
        self._recover()
        self.finish()
        if self.store is not None:
            self.store.retry()

    def _add(self, seq, start, stop, info, execution_count, error, measurement, attached, carbon) -> StoredCell:
        if type(start) is tuple:  # the hooks' edges (a %%carbon cell hands Readings)
            start, stop = self.meter.reading(start), self.meter.reading(stop)
        gap = self.gaps.close(start, stop)  # from the previous cell's end to this one's start
        cluster = self.cluster.take(info)  # a %%carbon cell keeps the kernel's figure only
        if measurement is None:  # else a %%carbon cell: the magic's own Measurement, CO2e included
            measurement = carbon(self.cluster.merge(self.meter.measurement(start, stop), cluster, self.meter))
        record = CellRecord(
            idle_before_j=None if gap is None else gap.energy_j,
            idle_before_s=None if gap is None else gap.duration_s,
            measurement=measurement,
            execution_count=execution_count,
            cell_id=getattr(info, "cell_id", None),
            notebook=self.notebook,
            success=error is None,
            error=error,
            source_preview=journal.first_line(info.raw_cell),
            tag=self._tag_of(seq) if self._tags else None,
            **(attached or {}),
        )
        self._records.append(record)
        self._totals.add(record)
        for listener in self.listeners:
            listener(record)
        for name in measurement.failed_components:
            notice(
                f"failed-{name}",
                f"{name} could not be read during cell [{execution_count}]; its energy is left out "
                "of every cell where that happens (details: %carbon sources)",
            )
        if gap is not None:
            check_hint(self.gaps, gap, execution_count, carbon, runtime.get_settings())
        return StoredCell(record, self.session, self.kernel_id, self.hardware, entry=seq)

    @property
    def hardware(self) -> str:
        """One line on what measures this kernel, for the history."""
        if self._hardware is None:
            self.meter.wait_ready()
            parts = [f"{s.kind} ({', '.join(s.components)})" for s in self.meter.sources]
            self._hardware = f"{read_cpu_info().model}; " + "; ".join(parts)
        return self._hardware

    def _journal_header(self) -> dict:
        layout = self.meter.layout
        info = self.meter.component_info()
        header = {
            "version": 1, "session": self.session, "kernel_id": self.kernel_id, "notebook": self.notebook,
            "hardware": self.hardware, "components": info.names, "period_s": info.period_s,
            "power_error_w": info.power_error_w, "estimated": info.estimated, "caps_w": info.caps_w,
        }
        if not layout.polled and info.names == layout.components:  # else entries carry readings
            header.update(journal.header_sources(layout))
            self._journal_layout = layout
        return header

    def _recover(self) -> None:
        """Add the cells of kernels killed before their rows were written (once, off the cell path)."""
        if self._recovered:
            return
        self._recovered = True
        self.hardware  # noqa: B018 (worked out here, not in the first cell's journal header)
        try:
            journal.recover(self.journal.directory, self.store, runtime.with_carbon)
        except Exception as error:
            notice("recover", f"could not recover the cells of a stopped kernel ({error!r}); they stay in "
                              f"{self.journal.directory} for the next try")

    def _on_sample(self, sample) -> None:
        """The sampler's tick: records and rows for the cells that ended, then the journal's upkeep."""
        if self.pid != os.getpid():
            return
        with self._upkeep:
            if self._journal_closed:
                return
            self._recover()
            retired = list(self.journal.retired) if self.journal is not None else ()
            self.finish()
            if self.store is None:
                return
            self.store.retry()
            if self.journal is not None and self.store.all_written:
                self.journal.delete(retired)
                self.journal.rotate()

    def register(self) -> None:
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        self.meter.sampler.listeners.append(self._on_sample)
        atexit.register(self._close_journal)  # a kernel that exits normally leaves its rows, not a journal

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
        atexit.unregister(self._close_journal)
        self._close_journal()
        self.trackers.close()
        self.cluster.close()  # after the last records: they wait for its reads

    def _close_journal(self) -> None:
        """Write what is left to the database; delete the journal if all of it is in."""
        if self.pid != os.getpid():
            return
        with self._upkeep:  # a tick may be under way: the sampler can outlive us at exit
            if self._journal_closed:
                return
            self._journal_closed = True
            self.finish()
            if self.journal is not None:
                self.store.retry()
                self.journal.close(delete=self.store.all_written)


def _after_fork_in_child() -> None:
    if _recorder is not None:
        _recorder.forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


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
