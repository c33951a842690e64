"""NVIDIA GPUs through NVML (nvidia-ml-py, imported as ``pynvml`` only when a driver is present)."""

from __future__ import annotations

import os
import time

from ..errors import SourceUnavailable
from .base import NAN, PowerIntegral, Source

# The energy counter's update period is not documented; reports range from 10 to 100 ms.
COUNTER_PERIOD_S = 0.1
# nvidia-smi states its power readings as +/- 5 W.
POWER_ERROR_W = 5.0
DRIVER_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


class NvmlSource(Source):
    """Read each GPU's total-energy counter (Volta and newer), or integrate polled power.

    A GPU that raises an NVML error reads as NaN for that call; the meter marks it failed
    for the windows that saw it, and the other GPUs carry on.
    """

    kind = "nvml"

    def __init__(self, nvml, handles: list, names: list[str]):
        self._nvml = nvml
        self._handles = handles
        self.names = names
        self.components = tuple(f"gpu:{i}" for i in range(len(handles)))
        self.has_counter = [self._supports_counter(h) for h in handles]
        self.update_period_s = tuple(COUNTER_PERIOD_S if c else 0.0 for c in self.has_counter)
        self.power_error_w = tuple(0.0 if c else POWER_ERROR_W for c in self.has_counter)
        self.last_error = [""] * len(handles)
        self._base_mj = [0] * len(handles)
        self._integrals = [PowerIntegral() for _ in handles]
        for i, handle in enumerate(handles):
            if self.has_counter[i]:
                self._base_mj[i] = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)

    def _supports_counter(self, handle) -> bool:
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except self._nvml.NVMLError:
            return False

    def read(self, edge: bool = False) -> list[float]:
        nvml = self._nvml
        out = []
        for i, handle in enumerate(self._handles):
            try:
                if self.has_counter[i]:
                    mj = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                    out.append((mj - self._base_mj[i]) * 1e-3)
                    continue
                integral, now = self._integrals[i], time.perf_counter()
                if edge and integral.polled:
                    out.append(integral.at(now))
                else:
                    out.append(integral.poll(now, nvml.nvmlDeviceGetPowerUsage(handle) * 1e-3))
            except nvml.NVMLError as error:
                self.last_error[i] = str(error)
                self._integrals[i].restart()  # no integration across the gap
                out.append(NAN)
        return out

    def describe(self) -> list[str]:
        lines = []
        for i, name in enumerate(self.names):
            how = "total-energy counter" if self.has_counter[i] else "power polled and integrated (no energy counter)"
            error = f"; last error: {self.last_error[i]}" if self.last_error[i] else ""
            lines.append(f"gpu:{i}: {name}, NVML {how}{error}")
        return lines

    def close(self) -> None:
        if self._handles:
            self._handles = []
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass


def open_nvml() -> NvmlSource:
    """Return an NvmlSource over every GPU NVML lists, or raise SourceUnavailable."""
    if not any(os.path.exists(p) for p in DRIVER_MARKERS):
        # Importing pynvml costs ~80 ms; skip it where no NVIDIA driver is loaded.
        raise SourceUnavailable("no NVIDIA driver loaded (no /proc/driver/nvidia, no /dev/nvidiactl)")
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
        names = [_text(pynvml.nvmlDeviceGetName(h)) for h in handles]
        if not handles:
            raise SourceUnavailable("NVML found no GPUs")
        return NvmlSource(pynvml, handles, names)
    except pynvml.NVMLError as error:
        pynvml.nvmlShutdown()
        raise SourceUnavailable(f"NVML error while listing GPUs: {error}") from None
    except SourceUnavailable:
        pynvml.nvmlShutdown()
        raise


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
