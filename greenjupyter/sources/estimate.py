"""Modelled energy for when no counter can be read: the kernel process's CPU and memory.

CPU: the process's own CPU seconds (children included, from ``os.times``) times watts per
busy logical CPU. On bare metal with a known model that is TDP / threads per package;
under a hypervisor (where the VM's thread count says nothing of the chip's) or for an
unknown model it is a per-vCPU figure from Cloud Carbon Footprint.
Memory: resident set size times watts per GB (Green Algorithms).
Both describe the kernel's own share, not the whole machine, and are labelled estimated.
The CPU model's maximum is its watts times the CPUs this process may run on; the meter
caps a window's estimate there (the children's CPU time arrives in 10 ms ticks, which in a
window of a few milliseconds would read as more CPUs than the machine has).
"""

from __future__ import annotations

import json
import os
import time
from functools import cached_property

from .base import PowerIntegral, Source
from .cpu_model import DATA_DIR, CpuInfo, lookup_tdp, read_cpu_info

BYTES_PER_GB = 1e9


def load_models() -> dict:
    with open(os.path.join(DATA_DIR, "estimate_models.json"), encoding="utf-8") as f:
        return json.load(f)


class EstimateSource(Source):
    """Model CPU and/or memory energy of this process; see the module docstring."""

    kind = "estimate"
    estimated = True
    polled = True

    def __init__(self, cpu: bool = True, memory: bool = True, cpu_info: CpuInfo | None = None):
        self._models = load_models()
        self._cpu_info = cpu_info
        self._want_cpu, self._want_memory = cpu, memory
        self.components = (("cpu:process",) if cpu else ()) + (("dram:process",) if memory else ())
        self.update_period_s = (0.0,) * len(self.components)
        self.power_error_w = (0.0,) * len(self.components)
        self._statm = _open_statm()
        self._page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._ram_w_per_byte = self._models["ram_w_per_gb"]["value"] / BYTES_PER_GB
        self._ram = PowerIntegral()

    @cached_property
    def cpu_watts(self) -> tuple[float, str]:
        """Return (watts per busy logical CPU, how that figure was chosen).

        Resolved on first use: the TDP table is a hundred KB and is not read at load.
        """
        info = self._cpu_info or read_cpu_info()
        default = self._models["cpu_w_per_busy_vcpu"]["value"]
        if info.virtual:
            return default, f"{default} W per busy vCPU (virtual machine; Cloud Carbon Footprint average)"
        match = lookup_tdp(info.model)
        if match is None or not info.threads_per_package:
            return default, f"{default} W per busy CPU ({info.model!r} not in the TDP table; Cloud Carbon Footprint average)"
        name, tdp = match
        watts = tdp / info.threads_per_package
        return watts, f"{watts:.2f} W per busy thread (TDP {tdp:g} W of {name} / {info.threads_per_package} threads)"

    @cached_property
    def max_power_w(self) -> tuple[float, ...]:
        """Return the model's most per component: every CPU this process may use busy; all of RAM."""
        out = ()
        if self._want_cpu:
            out += (self.cpu_watts[0] * _usable_cpus(),)
        if self._want_memory:
            out += (_total_ram_bytes() * self._ram_w_per_byte,)
        return out

    def read(self, edge: bool = False) -> list[float]:
        return self.read_polled(edge)[0]

    def read_polled(self, edge: bool = False) -> tuple[list[float], list[float]]:
        out, variation = [], []
        if self._want_cpu:
            # process_time is high resolution; os.times adds reaped children (10 ms ticks).
            children = os.times()
            seconds = time.process_time() + children.children_user + children.children_system
            out.append(seconds * self.cpu_watts[0])
            variation.append(0.0)
        if self._want_memory:
            joules, varied = self._ram.poll(self._rss_bytes() * self._ram_w_per_byte)
            out.append(joules)
            variation.append(varied)
        return out, variation

    def _rss_bytes(self) -> int:
        if self._statm is not None:
            return int(os.pread(self._statm, 64, 0).split()[1]) * self._page_size
        import psutil  # only where /proc is missing (macOS, Windows)

        return psutil.Process().memory_info().rss

    def describe(self) -> list[str]:
        lines = []
        if self._want_cpu:
            lines.append(f"cpu:process: kernel CPU time x {self.cpu_watts[1]}")
        if self._want_memory:
            ram = self._models["ram_w_per_gb"]["value"]
            lines.append(f"dram:process: kernel resident memory x {ram} W/GB, Green Algorithms")
        return lines

    def close(self) -> None:
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _total_ram_bytes() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return float("inf")


def _open_statm():
    try:
        return os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return None
