"""Experiment trackers: each cell's energy and CO2e, logged to the MLflow or W&B run active as it ends.

Neither package is imported here: a tracker is looked for only once the notebook has imported it
(``sys.modules``). On the cell's own thread ``capture`` only notes which runs are active (MLflow
keeps its active run per thread); the record is made later, as every cell's is, and sent from a
thread of its own, so a tracker server that is slow or down never holds up a cell or the sampler.
W&B rows are also sent before the next cell starts, because that cell may call ``wandb.finish()``.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections import deque

from . import runtime
from .notices import notice

STEP = "greenjupyter_execution_count"  # W&B's x-axis for the metrics below; MLflow's step is the same number
CELL_METRICS = ("greenjupyter_energy_j", "greenjupyter_co2e_g", "greenjupyter_duration_s")
SESSION_METRICS = ("greenjupyter_session_energy_j", "greenjupyter_session_co2e_g", "greenjupyter_session_cells")
CLOSE_WAIT_S = 5.0  # at unload and exit, how long the rows still queued may take to reach their tracker


class Trackers:
    """Send each finished cell to the tracker runs that were active as it ended; one per CellRecorder."""

    def __init__(self, recorder):
        self.recorder = recorder
        self._settings = runtime.get_settings()
        self._kinds = _kinds_for(self._settings.trackers)  # the tracker kinds the setting lets us log to
        self._settings.observe(self._setting_changed, names="trackers")
        self._runs: dict = {}  # (module name, run id) -> _Run: each run seen, with this session's totals in it
        self._seen: dict = {}  # module name -> (the run object seen at the last cell's end, its _Run)
        self._captured: dict = {}  # execution count -> [_Run], until the cell's record is made
        self._outboxes = {kind.module: _Outbox() for kind in KINDS}
        self._wandb_due = self._wandb_settled = 0  # W&B cells captured, and captured before the last cell began
        self._hooked = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._stopping = self._closed = False
        recorder.listeners.append(self._on_record)

    def capture(self, count) -> None:
        """Note the runs active as a cell ends (the cell's thread, only when mlflow or wandb is imported)."""
        try:
            if count is None or self._closed:  # no execution count, no step to log it at
                return
            found = []
            for kind in self._kinds:
                module = sys.modules.get(kind.module)
                run = None if module is None else kind.active(module)
                if run is None:
                    continue
                seen = self._seen.get(kind.module)
                if seen is None or seen[0] is not run:
                    seen = self._seen[kind.module] = (run, self._run_for(kind, module, run))
                found.append(seen[1])
                if kind.settle_before_next_cell:
                    self._wandb_due += 1
                    self._hook()
            if found:
                self._captured[count] = found
        except Exception as error:
            notice("trackers", f"could not look for an active MLflow or W&B run ({error!r}); cells are not affected")

    def flush(self) -> None:
        """Send every finished cell to its trackers now, on this thread."""
        self.recorder.finish()
        for outbox in self._outboxes.values():
            outbox.drain()

    def close(self) -> None:
        """Send what is queued (waiting up to CLOSE_WAIT_S for the trackers), then stop: at unload and at exit."""
        atexit.unregister(self.close)
        if self._closed or os.getpid() != self.recorder.pid:
            return
        self._unhook()
        self._settings.unobserve(self._setting_changed, names="trackers")
        self.recorder.finish()
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        thread.join(CLOSE_WAIT_S)
        if thread.is_alive():
            notice("trackers-close", f"an experiment tracker did not answer within {CLOSE_WAIT_S:g} s; the cells "
                                     "still queued for it are not logged there (greenjupyter's history has them)")

    def _setting_changed(self, change) -> None:
        self._kinds = _kinds_for(change["new"])

    def _run_for(self, kind, module, run) -> "_Run":
        key = (kind.module, kind.id_of(run))
        tracked = self._runs.get(key)
        if tracked is None:
            tracked = self._runs[key] = kind(module, run)
            # Registered again for each new run, so it runs before the exit handlers the tracker set
            # up for that run (atexit runs the latest first): the last rows go in before the run ends.
            atexit.unregister(self.close)
            atexit.register(self.close)
        tracked.run = run  # a run resumed under the same id is a new object
        return tracked

    def _on_record(self, record) -> None:
        """The recorder's listener (any thread): queue the record for the runs its cell was captured with."""
        runs = self._captured.pop(record.execution_count, None) if self._captured else None
        if not runs:
            return
        for run in runs:
            self._outboxes[run.module].items.append((record, run))
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._work, name="greenjupyter-trackers", daemon=True)
                self._thread.start()
        self._wake.set()

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            stopping = self._stopping  # read before draining: a stop asked for meanwhile gets one more round
            for outbox in self._outboxes.values():
                outbox.drain()
            if stopping:
                return

    def _before_cell(self, info=None) -> None:
        """Send the W&B rows of earlier cells before this cell runs: it may call ``wandb.finish()``."""
        if self._wandb_due == self._wandb_settled:
            return
        self._wandb_settled = self._wandb_due
        try:
            self.recorder.finish()
            self._outboxes[_WandbRun.module].drain()
        except Exception as error:
            notice("trackers-before-cell", f"could not log earlier cells to W&B ({error!r}); cells are not affected")

    def _hook(self) -> None:
        if not self._hooked:
            self._hooked = True
            # First in line, so that sending stays out of the window greenjupyter measures for the cell.
            self.recorder.shell.events.callbacks["pre_run_cell"].insert(0, self._before_cell)

    def _unhook(self) -> None:
        if self._hooked:
            self._hooked = False
            try:
                self.recorder.shell.events.unregister("pre_run_cell", self._before_cell)
            except ValueError:
                pass


class _Outbox:
    """Records waiting for one kind of tracker; drained by the worker, or by a cell's thread when it must."""

    def __init__(self):
        self.items: deque = deque()  # (CellRecord, _Run)
        self.lock = threading.Lock()  # one sender at a time, so rows go out in order

    def drain(self) -> None:
        with self.lock:
            while self.items:
                record, run = self.items.popleft()
                run.log(record)


class _Run:
    """One tracker run and this session's totals in it; used under its kind's outbox lock only."""

    module = title = ""
    settle_before_next_cell = False

    def __init__(self, run):
        self.run = run
        self.run_id = self.id_of(run)
        self.cells = 0
        self.energy_j = 0.0
        self.co2e_g = None  # None until a cell's CO2e is known
        self.failed = False

    def log(self, record) -> None:
        if self.failed:
            return
        m = record.measurement
        values = {"greenjupyter_energy_j": m.energy_j, "greenjupyter_duration_s": m.duration_s}
        if m.co2e_g is not None:
            values["greenjupyter_co2e_g"] = m.co2e_g
            self.co2e_g = (self.co2e_g or 0.0) + m.co2e_g
        self.cells += 1
        self.energy_j += m.energy_j
        values["greenjupyter_session_energy_j"] = self.energy_j
        if self.co2e_g is not None:
            values["greenjupyter_session_co2e_g"] = self.co2e_g
        values["greenjupyter_session_cells"] = self.cells
        try:
            self.send(record, values)
        except Exception as error:
            self.failed = True
            notice(f"tracker-{self.module}-{self.run_id}",
                   f"could not log cell [{record.execution_count}] to {self.title} run {self.run_id} ({error!r}); "
                   "nothing more goes to that run; cells and greenjupyter's history are not affected")

    def send(self, record, values: dict) -> None:
        raise NotImplementedError


class _MlflowRun(_Run):
    module, title = "mlflow", "MLflow"

    @staticmethod
    def active(mlflow):
        return mlflow.active_run()

    @staticmethod
    def id_of(run) -> str:
        return run.info.run_id

    def __init__(self, mlflow, run):
        super().__init__(run)
        self.uri = mlflow.get_tracking_uri()  # as the cell saw it: the notebook may point elsewhere later
        self.client = None

    def send(self, record, values: dict) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        if self.client is None:
            self.client = MlflowClient(tracking_uri=self.uri)
        m = record.measurement
        ended_ms = int((m.started_at.timestamp() + m.duration_s) * 1000)
        metrics = [Metric(key, float(value), ended_ms, record.execution_count) for key, value in values.items()]
        # synchronous: a failure is raised here, where it is reported, rather than in MLflow's own queue
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)


class _WandbRun(_Run):
    module, title = "wandb", "W&B"
    settle_before_next_cell = True

    @staticmethod
    def active(wandb):
        return wandb.run

    @staticmethod
    def id_of(run) -> str:
        return run.id

    def __init__(self, wandb, run):
        super().__init__(run)
        self.defined = None  # the run object the metrics were defined on

    def send(self, record, values: dict) -> None:
        run = self.run
        if self.defined is not run:
            # Our own x-axis rather than step=: W&B's step must only grow, and the notebook's own
            # wandb.log calls keep theirs.
            run.define_metric(STEP, hidden=True)
            for name in CELL_METRICS + SESSION_METRICS:
                run.define_metric(name, step_metric=STEP)
            self.defined = run
        run.log({STEP: record.execution_count, **values})


KINDS = (_MlflowRun, _WandbRun)


def _kinds_for(setting: str) -> tuple:
    """Return the kinds a `trackers` value (as settings.py spells it: auto, off, or names) lets us log to."""
    names = {"auto": [kind.module for kind in KINDS], "off": []}.get(setting, setting.split(","))
    return tuple(kind for kind in KINDS if kind.module in names)
