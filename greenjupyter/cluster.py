"""A cell's work on a Dask cluster, measured on every host it ran on.

On the workers, ``worker_snapshot()`` (run in each worker process by ``Client.run``) returns
the host's identity, its raw RAPL counters, the energy counter of each GPU the worker may use,
and the worker's own CPU time as the per-CPU model prices it. No meter and no thread: a few
reads through handles kept open for the worker's life.

In the kernel, ``ClusterMeter`` queues a read at each edge of a cell while a ``distributed``
client is active; one background thread does the reads, so a cell never waits. Workers on one
host read the same counters, so each (host, counter) and each GPU UUID counts once, and what
the kernel's own meter reads on its own host is left to it. A host with no CPU counter gets its
workers' CPU time x the per-CPU model, labelled estimated. ``merge`` adds the window's
components to the cell's Measurement off the cell's path, waiting for a read at most
``cluster_timeout_s`` after its edge.

Components are named ``cluster:<host>:<component>`` (``cluster:node7:cpu:package-0``,
``cluster:node7:gpu:0`` with the GPU's NVML index, ``cluster:node7:cpu:process`` for the
estimate). Failures: ``cluster`` when the cluster did not answer, ``cluster:<host>`` when a
host's workers changed during the cell (a worker lost, restarted or added), and
``cluster:<host>:<component>`` for one counter that was lost or reset.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from .measurement import Measurement
from .notices import notice
from .sources.base import STEP_SLACK_S
from .sources.nvml import COUNTER_PERIOD_S as NVML_PERIOD_S
from .sources.rapl import UPDATE_PERIOD_S as RAPL_PERIOD_S

HOST_ID_ENV = "GREENJUPYTER_HOST_ID"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# While a cell runs the counters are also read between its edges, so that none can wrap twice
# between two reads: half the shortest time any counter takes to wrap at its highest power.
LONGEST_POLL_S = 30.0
SHORTEST_POLL_S = 0.1
RATE_SPAN_S = 0.02  # between an edge's two reads: twenty RAPL updates, for the rate just after the edge


class Counter(NamedTuple):
    """One counter as a worker read it: ``raw`` x ``joules_per_unit`` joules, wrapping at ``wrap``
    (0: never), at most ``max_power_w``, updated every ``period_s``; ``uuid`` names a GPU."""

    raw: int | float
    joules_per_unit: float
    wrap: int
    max_power_w: float
    period_s: float
    uuid: str = ""
    estimated: bool = False


def host_identity() -> tuple[str, str, str]:
    """Return (identity, label, boot id) of the machine this process runs on.

    The boot id names one running Linux kernel: every process and container on a machine share
    it, and its counters and monotonic clock, until the next boot. It is the identity; the
    hostname is the label. ``GREENJUPYTER_HOST_ID`` replaces both (tests stand two hosts on one
    machine); the boot id still says whose clock a timestamp is on.
    """
    try:
        with open(BOOT_ID_PATH) as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    override = os.environ.get(HOST_ID_ENV, "").strip()
    if override:
        return override, override, boot
    hostname = socket.gethostname()
    return boot or hostname, hostname, boot


# -- on each worker ---------------------------------------------------------------------------


class _WorkerCounters:
    """What one worker process reads, opened at its first snapshot and kept for its life."""

    def __init__(self):
        from .errors import SourceUnavailable
        from .settings import load
        from .sources.estimate import EstimateSource
        from .sources.nvml import open_nvml
        from .sources.rapl import find_zones

        self.pid = os.getpid()
        self.host = host_identity()
        self.notes: list[str] = []
        self.rapl = []  # (component, fd, wrap, max watts)
        try:
            zones, _ = find_zones(load().powercap_root)
        except SourceUnavailable as why:
            zones = []
            self.notes.append(f"no RAPL ({why})")
        for zone in zones:
            try:
                fd = os.open(os.path.join(zone.path, "energy_uj"), os.O_RDONLY)
            except OSError as error:
                self.notes.append(f"{zone.component}: cannot open its RAPL counter ({error.strerror})")
                continue
            self.rapl.append((zone.component, fd, zone.max_energy_range_uj, zone.max_power_w))
        self.nvml, self.gpus = None, []  # (component, uuid, handle, max watts)
        try:
            self._nvml_source = open_nvml()  # kept: it holds NVML open
        except SourceUnavailable as why:
            if "no NVIDIA driver" not in str(why):
                self.notes.append(f"no GPU ({why})")
        else:
            import pynvml

            self.nvml = pynvml
            source = self._nvml_source
            for gpu, counter, max_w in zip(source.gpus, source.has_counter, source.max_power_w):
                if counter:
                    handle = pynvml.nvmlDeviceGetHandleByIndex(gpu.nvml_index)
                    self.gpus.append((f"gpu:{gpu.nvml_index}", gpu.uuid, handle, max_w))
                else:
                    self.notes.append(f"gpu:{gpu.nvml_index} has no energy counter, so it is not measured")
        self.cpu = EstimateSource(cpu=True, memory=False)

    def snapshot(self) -> dict:
        counters = {}
        before = time.perf_counter()
        for name, fd, wrap, max_w in self.rapl:
            try:
                counters[name] = Counter(int(os.pread(fd, 32, 0)), 1e-6, wrap, max_w, RAPL_PERIOD_S)
            except (OSError, ValueError):
                continue  # missing at this edge: the window says it failed
        for name, uuid, handle, max_w in self.gpus:
            try:
                mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except self.nvml.NVMLError:
                continue
            counters[name] = Counter(mj, 1e-3, 0, max_w, NVML_PERIOD_S, uuid)
        after = time.perf_counter()
        counters["cpu:process"] = Counter(self.cpu.read()[0], 1.0, 0, self.cpu.max_power_w[0], 0.0, estimated=True)
        identity, label, boot = self.host
        return {"host": identity, "label": label, "boot": boot, "t": (before + after) / 2,
                "counters": counters, "notes": self.notes}


_worker_counters: _WorkerCounters | None = None


def worker_snapshot() -> dict:
    """Return this worker's host and counters now; run in each worker by ``Client.run``.

    ``t`` is perf_counter time in the worker (the host's monotonic clock) halfway through the
    reads; ``counters`` maps a component to its Counter, ``cpu:process`` being this worker's
    CPU time priced by the per-CPU model; ``notes`` say what the host cannot measure and why.
    """
    global _worker_counters
    if _worker_counters is None or _worker_counters.pid != os.getpid():
        _worker_counters = _WorkerCounters()
    return _worker_counters.snapshot()


# -- in the kernel ----------------------------------------------------------------------------


class _Seen(NamedTuple):
    """A counter in one read: its running total (joules since first seen), when, and which run of it."""

    total_j: float
    t: float
    epoch: int
    counter: Counter
    host: str
    label: str
    boot: str


class _Value(NamedTuple):
    """A counter at a cell's edge: joules, the rate it was taken back to the edge at, and how far."""

    joules: float
    watts: float
    lag_s: float
    clock_error_s: float
    epoch: int
    counter: Counter
    host: str
    label: str


@dataclass
class _Edge:
    """One edge of a cell on the cluster, filled by the reading thread; ``t`` is the kernel's edge."""

    client: object
    t: float
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    values: dict = field(default_factory=dict)  # (host or GPU uuid, component) -> _Value
    workers: dict = field(default_factory=dict)  # address -> host, for workers that answered
    labels: dict = field(default_factory=dict)  # host -> label
    notes: dict = field(default_factory=dict)  # host -> what it cannot measure
    lost: dict = field(default_factory=dict)  # address -> why it did not answer
    error: str = ""


class ClusterMeter:
    """Read a Dask cluster's counters at each cell's edges, off the cell's path; see the module docstring.

    The hooks call ``begin(key)`` when a cell starts and ``end(key)`` when it ends; ``take(key)``
    hands the window to whoever finishes the record, and ``merge`` adds it to the cell's
    Measurement. Without ``distributed`` imported, ``begin`` and ``active()`` are one dict lookup.
    """

    def __init__(self):
        self._windows: dict = {}  # cell key -> [begin _Edge, end _Edge or None]
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._settings = None
        self._host = None  # the kernel's (identity, label, boot id)
        # The reading thread's own state: per counter [raw, running total, t, epoch].
        self._state: dict = {}
        self._epochs = itertools.count()
        self._poll_s = LONGEST_POLL_S
        self._client = None  # the client of the latest edge, for the polls between edges
        self._without: set = set()  # workers that cannot import greenjupyter

    def active(self) -> bool:
        """Return True when a running ``distributed`` client is the kernel's default."""
        return "distributed" in sys.modules and self._current_client() is not None

    def _current_client(self):
        try:
            client = sys.modules["distributed"].default_client()
        except (ValueError, AttributeError, KeyError):  # no client; or distributed is not (fully) imported
            return None
        if client.status != "running" or self._get_settings().cluster == "off":
            return None
        return client

    def _get_settings(self):
        if self._settings is None:
            from . import runtime

            self._settings = runtime.get_settings()
        return self._settings

    def begin(self, key) -> None:
        """Queue the read of a cell's start on the cluster, if a client is active; ``key`` names the
        cell until ``take``."""
        if "distributed" not in sys.modules:  # the usual case: one dict lookup
            return
        client = self._current_client()
        if client is None:
            return
        self._windows[key] = [self._queue(client), None]

    def end(self, key) -> None:
        """Queue the read of a cell's end (nothing to do for a cell that began without a client)."""
        if not self._windows:
            return
        window = self._windows.get(key)
        if window is not None and window[1] is None:
            window[1] = self._queue(window[0].client)

    def take(self, key):
        """Return the cell's window (to give to ``merge``), or None when it had no client."""
        return self._windows.pop(key, None) if self._windows else None

    def _queue(self, client) -> _Edge:
        now = time.perf_counter()
        edge = _Edge(client, now, now + self._get_settings().cluster_timeout_s)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="greenjupyter-cluster", daemon=True)
            self._thread.start()
        self._requests.put(edge)
        return edge

    def close(self) -> None:
        """Stop the reading thread (windows still open are failed when merged)."""
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join(5.0)
            self._thread = None

    # The reading thread.

    def _run(self) -> None:
        while True:
            try:
                first = self._requests.get(timeout=self._poll_s if self._windows else None)
            except queue.Empty:
                self._poll()
                continue
            queued = [first]  # every edge queued by now shares one read: a burst of short cells never waits
            while queued[-1] is not None:
                try:
                    queued.append(self._requests.get_nowait())
                except queue.Empty:
                    break
            by_client: dict = {}
            for edge in queued:
                if edge is not None:
                    by_client.setdefault(id(edge.client), []).append(edge)
            for edges in by_client.values():
                try:
                    self._read_edges(edges[0].client, edges)
                except Exception as error:  # never let the thread die: those edges fail
                    for edge in edges:
                        edge.error = edge.error or f"{type(error).__name__}: {error}"
                finally:
                    for edge in edges:
                        edge.done.set()
            if queued[-1] is None:
                return

    def _poll(self) -> None:
        """Read between edges, only to keep the running totals across counter wraps."""
        client = self._client
        if client is None or client.status != "running":
            return
        try:
            self._read(client, self._get_settings().cluster_timeout_s)
        except Exception:
            pass  # a poll that fails changes nothing; the edges say what failed

    def _read_edges(self, client, edges: list) -> None:
        """Read every worker twice, RATE_SPAN_S apart, and take each counter back to each kernel edge.

        The reads reach the workers some milliseconds after the edges; the rate between the two
        reads says how much a counter moved in that time, where it updates often enough to say.
        Each edge still fails if its read comes later than its own deadline (``merge`` sees to it).
        """
        self._client = client
        for edge in edges:
            if edge.deadline <= time.perf_counter():
                edge.error = "no answer within cluster_timeout_s"
        edges = [edge for edge in edges if not edge.error]
        reads = []
        for second_read in (False, True):
            if second_read:
                time.sleep(RATE_SPAN_S)
            remaining = max((edge.deadline for edge in edges), default=0.0) - time.perf_counter()
            if remaining <= 0:
                for edge in edges:
                    edge.error = "no answer within cluster_timeout_s"
                return
            try:
                reads.append(self._read(client, remaining))
            except Exception as error:  # a timeout, a closed client, a scheduler gone
                for edge in edges:
                    edge.error = f"{type(error).__name__}: {error}".rstrip(": ")
                return
        (first, workers, lost, sent, received), (second, workers_b, lost_b, _, _) = reads
        lost.update(lost_b)
        for address in workers.keys() - workers_b.keys() - lost.keys():
            lost[address] = "did not answer the second read"
        kernel_boot = self._kernel_host()[2]
        for edge in edges:
            for key, a in first.items():
                b = second.get(key)
                if b is None or b.epoch != a.epoch:
                    continue  # not read at this edge: the window says so
                span = b.t - a.t
                coarse = span <= 0 or span < 10 * a.counter.period_s  # too few updates to take it back with
                watts = 0.0 if coarse else (b.total_j - a.total_j) / span
                if a.boot and a.boot == kernel_boot:  # one running kernel: one monotonic clock
                    lag, clock_error = a.t - edge.t, 0.0
                else:  # another clock: the read happened between sending and receiving
                    lag, clock_error = (sent + received) / 2 - edge.t, (received - sent) / 2
                lag = max(lag, 0.0)
                edge.values[key] = _Value(a.total_j - watts * lag, watts, lag, clock_error, a.epoch,
                                          a.counter, a.host, a.label)
            edge.workers = {address: host for address, (host, _, _) in workers.items() if address in workers_b}
            edge.labels = {host: label for host, label, _ in workers.values()}
            edge.notes = {host: notes for host, _, notes in workers.values() if notes}
            edge.lost = lost

    def _read(self, client, timeout_s: float):
        """Run ``worker_snapshot`` on every worker; move the running totals; return what was seen.

        Returns (counters seen: key -> _Seen, workers: address -> (host, label, notes),
        lost: address -> why, sent, received).
        """
        sent = time.perf_counter()
        answers = client.run(worker_snapshot, on_error="return", callback_timeout=timeout_s)
        received = time.perf_counter()
        seen, workers, lost = {}, {}, {}
        for address in sorted(answers):
            answer = answers[address]
            if _cannot_import_greenjupyter(answer):
                self._without.add(address)
                continue
            if not isinstance(answer, dict):
                lost[address] = f"{type(answer).__name__}: {answer}".rstrip(": ")
                continue
            host, label = answer["host"], answer["label"]
            workers[address] = (host, label, tuple(answer["notes"]))
            for name, counter in answer["counters"].items():
                if counter.estimated:
                    key = (address, name)  # each worker's own CPU time
                else:  # the host's counter, whichever worker reads it; a GPU by its UUID
                    key = (counter.uuid or host, name)
                if key not in seen:
                    total, epoch = self._advance(key, counter, answer["t"])
                    seen[key] = _Seen(total, answer["t"], epoch, counter, host, label, answer["boot"])
        for key in self._state.keys() - seen.keys():
            del self._state[key]  # not read now: a later reading starts it again, in a new epoch
        wraps = [c.wrap * c.joules_per_unit / c.max_power_w for c in (s.counter for s in seen.values())
                 if c.wrap and c.max_power_w > 0]
        self._poll_s = min(LONGEST_POLL_S, max(SHORTEST_POLL_S, min(wraps, default=2 * LONGEST_POLL_S) / 2))
        return seen, workers, lost, sent, received

    def _advance(self, key, counter: Counter, t: float) -> tuple[float, int]:
        """Add a counter's step since its last read to its running total, as the kernel's RAPL source does.

        A counter that went back wrapped if it wraps; a step beyond what the device can draw in
        the time (or a counter going back that does not wrap) is a reset or a restarted process:
        the total goes on from the new value in a new epoch, and windows across it fail.
        """
        state = self._state.get(key)
        if state is None:
            self._state[key] = [counter.raw, 0.0, t, next(self._epochs)]
            return 0.0, self._state[key][3]
        raw, total, then, epoch = state
        step = counter.raw - raw
        if step < 0 and counter.wrap:
            step += counter.wrap
        joules = step * counter.joules_per_unit
        plausible = counter.estimated or joules <= counter.max_power_w * (t - then + STEP_SLACK_S)
        if joules < 0 or not plausible:
            epoch = next(self._epochs)
        else:
            total += joules
        state[:] = [counter.raw, total, t, epoch]
        return total, epoch

    def _kernel_host(self) -> tuple[str, str, str]:
        if self._host is None:
            self._host = host_identity()
        return self._host

    # The window, on whichever thread finishes the cell's record.

    def merge(self, measurement: Measurement, window, meter) -> Measurement:
        """Return ``measurement`` with the cluster's components for ``window`` (from ``take``) added.

        Waits for each edge's read until ``cluster_timeout_s`` after that edge at most; a read
        that did not come, or failed, adds ``cluster`` to the failed components. ``meter`` is the
        kernel's: what it reads on its own host is not counted again.
        """
        if window is None:
            return measurement
        begin, end = window
        for edge in (begin, end):
            if edge is not None and not edge.done.wait(max(0.0, edge.deadline - time.perf_counter())):
                edge.error = edge.error or "no answer within cluster_timeout_s"
        why = "the cell's end was not read" if end is None else (begin.error or end.error)
        if why:
            notice("cluster-failed", f"the Dask cluster's energy could not be read ({why}); cells where that "
                                     f"happens list 'cluster' as failed (cluster_timeout_s="
                                     f"{self._get_settings().cluster_timeout_s:g})")
            return measurement.replace(failed_components=measurement.failed_components + ("cluster",))
        self._report(begin, end)
        parts, estimated, failed, uncertainty = self._window(begin, end, meter)
        if not parts and not failed:
            return measurement
        energy = measurement.energy_j + sum(parts.values())
        duration = measurement.duration_s
        added_w = sum(parts.values()) / duration if duration > 0 else 0.0
        return measurement.replace(
            components={**measurement.components, **parts},
            energy_j=energy,
            estimated=measurement.estimated or bool(estimated),
            estimated_components=measurement.estimated_components + tuple(estimated),
            failed_components=measurement.failed_components + tuple(sorted(failed)),
            uncertainty_j=measurement.uncertainty_j + uncertainty,
            avg_power_w=energy / duration if duration > 0 else 0.0,
            peak_power_w=measurement.peak_power_w + added_w,  # the cluster's share of the peak: its average
        )

    def _window(self, begin: _Edge, end: _Edge, meter):
        """Return (components, estimated names, failed names, uncertainty) of the cluster between two edges.

        Counters, per edge, at the highest power the counter showed (the window's average or the
        rate at either edge): one update period; the lag from the kernel's edge to the read (taken
        back at the rate just after it, but what the power did in that time is not known); and,
        for a host whose clock is not the kernel's, half the read's round trip.
        """
        duration = end.t - begin.t
        kernel_host = self._kernel_host()[0]
        kernel_names, kernel_uuids = _kernel_reads(meter)
        labels = _unique_labels({**begin.labels, **end.labels})
        by_host_begin, by_host_end = _by_host(begin.workers), _by_host(end.workers)
        changed = {host for host in by_host_begin.keys() | by_host_end.keys()
                   if by_host_begin.get(host) != by_host_end.get(host)}
        measured_cpu = {v.host for edge in (begin, end) for key, v in edge.values.items()
                        if key[1].startswith("cpu:") and not v.counter.estimated}
        if any(name.startswith("cpu:") for name in kernel_names):
            measured_cpu.add(kernel_host)
        parts, estimated, failed, uncertainty = {}, [], set(), 0.0
        for key in begin.values.keys() | end.values.keys():
            first, last = begin.values.get(key), end.values.get(key)
            counter, host = (first or last).counter, (first or last).host
            if host == kernel_host and (counter.uuid in kernel_uuids if counter.uuid else key[1] in kernel_names):
                continue  # the kernel's meter reads this one
            if counter.estimated and host in measured_cpu:
                continue  # the host's counters hold its workers' CPU
            if host in changed:
                failed.add(f"cluster:{labels[host]}")
                continue
            name = f"cluster:{labels[host]}:{key[1]}"
            if first is None or last is None or first.epoch != last.epoch:
                failed.add(name)
                continue
            joules = max(last.joules - first.joules, 0.0)
            if counter.estimated:
                joules = min(joules, counter.max_power_w * duration) if duration > 0 else 0.0
                if name not in parts:
                    estimated.append(name)
                parts[name] = parts.get(name, 0.0) + joules
                continue
            watts = max(joules / duration if duration > 0 else 0.0, first.watts, last.watts)
            for edge in (first, last):
                uncertainty += watts * (counter.period_s + edge.lag_s + edge.clock_error_s)
            parts[name] = joules
        return dict(sorted(parts.items())), estimated, failed, uncertainty

    def _report(self, begin: _Edge, end: _Edge) -> None:
        """Say once what the cluster cannot measure: workers without greenjupyter, lost workers, host notes."""
        if self._without:
            notice("cluster-no-greenjupyter",
                   f"Dask worker(s) {', '.join(sorted(self._without))} cannot import greenjupyter, so they are "
                   "left out (install greenjupyter in the workers' environment to measure their hosts)")
        for address, why in {**begin.lost, **end.lost}.items():
            notice("cluster-lost", f"Dask worker {address} did not answer during a cell ({why}); its host is "
                                   "listed as failed (cluster:<host>) in the cells where a worker is lost or added")
        for host, notes in {**begin.notes, **end.notes}.items():
            label = end.labels.get(host) or begin.labels.get(host, host)
            notice(f"cluster-notes-{host}", f"Dask host {label}: {'; '.join(notes)}; where it has no CPU "
                                            "counter its workers' CPU time is estimated")


def _cannot_import_greenjupyter(answer) -> bool:
    """Return True for a worker's answer saying it cannot import greenjupyter.

    The worker fails to unpickle ``worker_snapshot``; the scheduler passes that on as a plain
    Exception whose text is the ImportError's repr.
    """
    if not isinstance(answer, Exception):
        return False
    text = str(answer)
    return "greenjupyter" in text and (isinstance(answer, ImportError) or "ModuleNotFoundError" in text
                                       or "ImportError" in text)


def _kernel_reads(meter) -> tuple[set, set]:
    """Return the components the kernel's meter measures (not estimates), and its GPUs' UUIDs."""
    names = {name for name, estimated in zip(meter.components, meter.estimated_flags) if not estimated}
    uuids = {gpu.uuid for source in meter.sources for gpu in getattr(source, "gpus", ()) if gpu.uuid}
    return names, uuids


def _by_host(workers: dict) -> dict:
    hosts: dict = {}
    for address, host in workers.items():
        hosts.setdefault(host, set()).add(address)
    return hosts


def _unique_labels(labels: dict) -> dict:
    """Return host -> label, the label made unique where two hosts share a hostname."""
    count: dict = {}
    for label in labels.values():
        count[label] = count.get(label, 0) + 1
    return {host: label if count[label] == 1 else f"{label}-{host[:8]}" for host, label in labels.items()}
