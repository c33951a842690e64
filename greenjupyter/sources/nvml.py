"""NVIDIA GPUs through NVML (nvidia-ml-py, imported as ``pynvml`` only when a driver is present)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

from ..errors import SourceUnavailable
from ..notices import notice
from .base import NAN, PLAUSIBLE_OVER_LIMIT, STEP_SLACK_S, PowerIntegral, Source
from .cuda_visible import visible_gpus

# The energy counter's update period is not documented; reports range from 10 to 100 ms.
COUNTER_PERIOD_S = 0.1
# Where NVML states no power limit: above any single GPU's board power (1.2 kW for the
# largest in 2026), far below what a counter reset would read as.
FALLBACK_MAX_POWER_W = 3000.0
# nvidia-smi states its power readings as +/- 5 W.
POWER_ERROR_W = 5.0
DRIVER_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU charged to this process, named ``gpu:<ordinal>`` after its CUDA ordinal.

    ``mig``: the slices of it that CUDA_VISIBLE_DEVICES names (the figure is still the whole
    GPU's); ``process_handles``: where its processes are listed (each MIG slice, else the GPU);
    ``slices``: how many MIG slices it has.
    """

    ordinal: int
    nvml_index: int
    uuid: str = ""
    mig: tuple[str, ...] = ()
    process_handles: tuple = ()
    slices: int = 0


class NvmlSource(Source):
    """Read each GPU's total-energy counter (Volta and newer), or integrate polled power.

    Counters: the sampler's reads move the state (last raw value, total before it); an edge
    read only adds its step, so edges never wait for the sampler. A counter that went back
    (the driver was reloaded) or jumped further than the GPU could draw reads as NaN, and the
    sampler starts again from the new value.

    Power only (before Volta): every read polls, edges included, and the polls are integrated
    by PowerIntegral, whose variation term says how much the power moved between polls.

    A GPU that raises an NVML error reads as NaN for that call; the meter marks it failed
    for the windows that saw it, and the other GPUs carry on.
    """

    kind = "nvml"
    polled = True

    def __init__(self, nvml, handles: list, names: list[str], gpus: list[GpuInfo] | None = None,
                 notes: list[str] | None = None):
        self._nvml = nvml
        self._handles = handles
        self.names = names
        self.gpus = gpus or [GpuInfo(i, i, process_handles=(h,)) for i, h in enumerate(handles)]
        self.notes = notes or []  # source-wide lines for describe(), e.g. CUDA_VISIBLE_DEVICES entries dropped
        self.components = tuple(f"gpu:{gpu.ordinal}" for gpu in self.gpus)
        # What sharing() has seen, per GPU, for describe(); only the sampler thread writes these.
        self._checked = [False] * len(handles)
        self._own_seen = [False] * len(handles)
        self._most_others = [0] * len(handles)
        self._sharing_error = [""] * len(handles)
        self._verdicts: dict[int, bool] = {}  # pid -> whether it is this process's descendant
        self._process_suffix = ""
        self.has_counter = [self._supports_counter(h) for h in handles]
        self.update_period_s = tuple(COUNTER_PERIOD_S if c else 0.0 for c in self.has_counter)
        self.power_error_w = tuple(0.0 if c else POWER_ERROR_W for c in self.has_counter)
        self.max_power_w = tuple(self._plausible_power_w(h) for h in handles)
        self._max_mj_per_s = [w * 1e3 for w in self.max_power_w]
        self.last_error = [""] * len(handles)
        self.resets = [0] * len(handles)
        self._integrals = [PowerIntegral() for _ in handles]
        raws = [nvml.nvmlDeviceGetTotalEnergyConsumption(h) if c else 0 for h, c in zip(handles, self.has_counter)]
        # (perf_counter time, raw counter per GPU in mJ, mJ counted before them), replaced whole.
        self._state = (time.perf_counter(), raws, [0] * len(handles))

    def _plausible_power_w(self, handle) -> float:
        """Return the most this GPU can draw: twice its highest settable power limit, else a fallback."""
        try:
            low, high = self._nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
            return PLAUSIBLE_OVER_LIMIT * high * 1e-3 if high > 0 else FALLBACK_MAX_POWER_W
        except (self._nvml.NVMLError, AttributeError, TypeError, ValueError):
            return FALLBACK_MAX_POWER_W

    def _supports_counter(self, handle) -> bool:
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except self._nvml.NVMLError:
            return False

    def read(self, edge: bool = False) -> list[float]:
        return self.read_polled(edge)[0]

    def read_polled(self, edge: bool = False) -> tuple[list[float], list[float]]:
        nvml = self._nvml
        started = time.perf_counter()
        then, raws, totals = self._state
        new_raws, new_totals = list(raws), list(totals)
        out, variation = [], []
        for i, handle in enumerate(self._handles):
            try:
                if self.has_counter[i]:
                    now = time.perf_counter()
                    mj = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                    step = mj - raws[i]
                    if step < 0 or step > self._max_mj_per_s[i] * (now - then + STEP_SLACK_S):
                        out.append(NAN)  # reset (driver reload) or a reading no GPU can give
                        if not edge:
                            new_raws[i] = mj
                            self.resets[i] += 1
                    else:
                        out.append((totals[i] + step) * 1e-3)
                        new_raws[i], new_totals[i] = mj, totals[i] + step
                    variation.append(0.0)
                    continue
                integral = self._integrals[i]
                watts = nvml.nvmlDeviceGetPowerUsage(handle) * 1e-3
                if not 0.0 <= watts <= self.max_power_w[i]:
                    integral.restart()
                    out.append(NAN)
                    variation.append(0.0)
                    continue
                joules, varied = integral.poll(watts)
                out.append(joules)
                variation.append(varied)
            except nvml.NVMLError as error:
                self.last_error[i] = str(error)
                self._integrals[i].restart()  # no integration across the gap
                out.append(NAN)
                variation.append(0.0)
        if not edge and any(self.has_counter):
            self._state = (started, new_raws, new_totals)
        return out, variation

    def describe(self) -> list[str]:
        lines = []
        for i, name in enumerate(self.names):
            gpu = self.gpus[i]
            how = "total-energy counter" if self.has_counter[i] else "power polled and integrated (no energy counter)"
            where = f"NVML index {gpu.nvml_index}" + (f", {gpu.uuid}" if gpu.uuid else "")
            line = f"{self.components[i]}: {name}, NVML {how}; {where}"
            if gpu.mig:
                line += (f"; MIG slice {', '.join(gpu.mig)}: NVML has no energy reading per slice, so the figure "
                         f"is the whole GPU's ({gpu.slices} slices)")
            if self._sharing_error[i]:
                line += f"; its processes cannot be listed ({self._sharing_error[i]}), so sharing is not known"
            elif self._most_others[i]:
                line += (f"; shared: up to {self._most_others[i]} other processes seen on it so far, and the "
                         "figure is the whole device's, theirs included")
                if not self._own_seen[i]:
                    line += (" (this process is not in NVML's list, as before it first uses the GPU or in a "
                             "container whose PIDs differ from the host's, so every listed process counts)")
            elif self._checked[i]:
                line += "; no other process seen on it so far"
            if self.last_error[i]:
                line += f"; last error: {self.last_error[i]}"
            lines.append(line)
        return lines + [f"gpu: {note}" for note in self.notes]

    def sharing(self) -> tuple[int, ...]:
        """Return, per component, how many other processes use that GPU now.

        This process and its descendants (by /proc parent links) do not count. The counter is
        the whole device's, so any other process's energy is in the figure. A GPU in MIG mode
        is listed slice by slice (a parent handle may need privileges), all slices counted; a
        MIG slice named in CUDA_VISIBLE_DEVICES counts at least 1 while its GPU has slices this
        process was not given, as their tenants' energy is in the GPU's counter too.
        Called by the sampler every tick: cheap, never raises; a GPU whose processes cannot be
        listed reads 0, with one notice.
        """
        if not self._handles:  # closed: NVML is shut down
            return (0,) * len(self.gpus)
        own, counts, verdicts = os.getpid(), [], {}
        for i, gpu in enumerate(self.gpus):
            try:
                pids = self._pids_on(gpu.process_handles)
            except Exception as error:  # never let the sampler thread die of it
                if not self._sharing_error[i]:
                    self._sharing_error[i] = str(error) or type(error).__name__
                    notice(f"nvml-sharing-{self.components[i]}",
                           f"cannot list the processes on {self.components[i]} ({self._sharing_error[i]}); "
                           "whether other processes share it is not known")
                counts.append(0)
                continue
            self._checked[i] = True
            self._own_seen[i] = self._own_seen[i] or own in pids
            others = 0
            for pid in pids:
                if pid != own:
                    ours = verdicts.get(pid, self._verdicts.get(pid))
                    verdicts[pid] = ours = _is_descendant(pid, own) if ours is None else ours
                    others += not ours
            self._most_others[i] = max(self._most_others[i], others)
            counts.append(max(others, 1) if gpu.mig and gpu.slices > len(gpu.mig) else others)
        self._verdicts = verdicts  # kept for the pids still listed, so each is looked up once
        return tuple(counts)

    def _pids_on(self, handles) -> set[int]:
        nvml, pids = self._nvml, set()
        for handle in handles:
            for kind in ("Compute", "Graphics"):
                try:
                    pids.update(p.pid for p in self._processes(kind, handle))
                except nvml.NVMLError as error:
                    if error.value != nvml.NVML_ERROR_NOT_SUPPORTED:  # e.g. no graphics list on a compute GPU
                        raise
        return pids

    def _processes(self, kind: str, handle) -> list:
        # nvidia-ml-py 12/13: the plain name calls the _v3 C function and raises
        # NVMLLibraryMismatchError (not an NVMLError) where the driver lacks it; _v2 works there.
        name = f"nvmlDeviceGet{kind}RunningProcesses"
        try:
            return getattr(self._nvml, name + self._process_suffix)(handle)
        except getattr(self._nvml, "NVMLLibraryMismatchError", ()):
            if self._process_suffix:
                raise
            self._process_suffix = "_v2"
            return getattr(self._nvml, name + "_v2")(handle)

    def close(self) -> None:
        if self._handles:
            self._handles = []
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass


def open_nvml() -> NvmlSource:
    """Return an NvmlSource over the GPUs this process may use, or raise SourceUnavailable.

    Which GPUs: those CUDA shows this process under ``CUDA_VISIBLE_DEVICES`` (``visible_gpus``);
    all of them when it is unset. Each becomes ``gpu:N``, N being the CUDA ordinal the user
    sees (``cuda:N`` in PyTorch); ``describe()`` gives its NVML index and UUID.
    """
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not any(os.path.exists(p) for p in DRIVER_MARKERS):
        # Importing pynvml costs ~80 ms; skip it where no NVIDIA driver is loaded.
        raise SourceUnavailable("no NVIDIA driver loaded (no /proc/driver/nvidia, no /dev/nvidiactl)")
    if spec is not None and not spec.strip():
        raise SourceUnavailable("CUDA_VISIBLE_DEVICES is set and empty, so CUDA shows this kernel no GPU; none is charged")
    try:
        import pynvml
    except ImportError:
        raise SourceUnavailable(
            "an NVIDIA driver is loaded but nvidia-ml-py is not installed", "pip install nvidia-ml-py"
        ) from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise SourceUnavailable(f"NVML could not start: {error}") from None
    try:
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        if not handles:
            raise SourceUnavailable("NVML found no GPUs")
        uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
        slices = [_mig_slices(pynvml, h) for h in handles]
        mig_parents = {uuid: i for i, found in enumerate(slices) for uuid, _ in found}
        chosen, dropped = visible_gpus(spec, uuids, mig_parents)
        if not chosen:
            raise SourceUnavailable(
                f"CUDA_VISIBLE_DEVICES={spec!r} shows this kernel no GPU: {dropped}; none is charged",
                "nvidia-smi -L lists this host's GPUs and their UUIDs",
            )
        gpus: dict[int, GpuInfo] = {}  # by NVML index: MIG slices of one GPU share its counter, charged once
        for ordinal, (index, mig) in enumerate(chosen):
            known = gpus.get(index)
            if known is None:
                handles_for_processes = tuple(h for _, h in slices[index]) or (handles[index],)
                gpus[index] = GpuInfo(ordinal, index, uuids[index], (mig,) if mig else (), handles_for_processes,
                                      len(slices[index]))
            elif mig:
                gpus[index] = replace(known, mig=known.mig + (mig,))
        names = [_text(pynvml.nvmlDeviceGetName(handles[i])) for i in gpus]
        notes = [f"CUDA_VISIBLE_DEVICES={spec!r}: {dropped}"] if dropped else []
        by_index = spec is not None and not spec.startswith(("GPU-", "MIG-"))
        all_names = {_text(pynvml.nvmlDeviceGetName(h)) for h in handles} if by_index else set()
        if len(all_names) > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
            notes.append(
                "CUDA_VISIBLE_DEVICES gives indices, read here in NVML's (PCI bus) order; CUDA numbers mixed "
                "GPU models fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, so set that (or use UUIDs)"
            )
        return NvmlSource(pynvml, [handles[i] for i in gpus], names, gpus=list(gpus.values()), notes=notes)
    except pynvml.NVMLError as error:
        pynvml.nvmlShutdown()
        raise SourceUnavailable(f"NVML error while listing GPUs: {error}") from None
    except SourceUnavailable:
        pynvml.nvmlShutdown()
        raise


def _mig_slices(nvml, handle) -> list[tuple[str, object]]:
    """Return (UUID, handle) of each MIG slice of a GPU; none where MIG is off or unsupported."""
    try:
        # NVML: "Returns zero if MIG is not supported or enabled"; GPUs before Ampere may refuse instead.
        most = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    except (nvml.NVMLError, AttributeError):
        return []
    found = []
    for index in range(most):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
            found.append((_text(nvml.nvmlDeviceGetUUID(mig)), mig))
        except nvml.NVMLError:  # NOT_FOUND: no slice at that index
            continue
    return found


def _is_descendant(pid: int, ancestor: int) -> bool:
    """Return True if ``pid`` is ``ancestor`` or one of its children, grandchildren and so on."""
    for _ in range(64):  # a bound against a loop of reused pids
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        parent = _parent_pid(pid)
        if parent is None:
            return False
        pid = parent
    return False


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        if os.path.isdir("/proc"):
            return None  # gone, or a pid from another PID namespace (a container seeing host pids)
        try:  # no procfs (Windows): psutil, a dependency, is imported only here
            import psutil

            return psutil.Process(pid).ppid()
        except Exception:
            return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
    return int(stat[stat.rindex(b")") + 1:].split()[1])


def _text(value) -> str:
    # nvidia-ml-py 11 returns bytes; 12 and later return str.
    return value.decode() if isinstance(value, bytes) else str(value)
