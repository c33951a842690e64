"""A stand-in for nvidia-ml-py's ``pynvml`` module with the same names, units and errors.

Energy is in millijoules since "driver load", power in milliwatts. GPUs advance in real
time at a set wattage. A ``counter`` GPU has the total-energy counter (Volta and newer),
updated every ``counter_period_s``; otherwise that call raises NVMLError(NOT_SUPPORTED)
as it does on older GPUs. ``fail(code)`` makes every later call on that GPU raise, e.g.
``NVML_ERROR_GPU_IS_LOST`` for a GPU that fell off the bus.
"""

from __future__ import annotations

import time
import types

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value

    def __str__(self):
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


class FakeGpu:
    def __init__(self, name="NVIDIA H100 80GB HBM3", watts=300.0, counter=True, counter_period_s=0.02, start_mj=123_456_789):
        self.name, self.watts, self.counter = name, watts, counter
        self.counter_period_s = counter_period_s
        self.start_mj = start_mj
        self.error = None
        self.t0 = time.monotonic()

    def fail(self, code=NVML_ERROR_GPU_IS_LOST):
        self.error = code

    def recover(self):
        self.error = None

    def joules_between(self, t0: float, t1: float) -> float:
        return self.watts * (t1 - t0)

    def _check(self):
        if self.error is not None:
            raise NVMLError(self.error)

    def energy_mj(self) -> int:
        self._check()
        if not self.counter:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        ticks = int((time.monotonic() - self.t0) / self.counter_period_s)
        return self.start_mj + int(self.watts * ticks * self.counter_period_s * 1000)

    def power_mw(self) -> int:
        self._check()
        return int(self.watts * 1000)


def make(gpus, init_error=None) -> types.ModuleType:
    """Return a module that behaves like ``pynvml`` over ``gpus`` (a list of FakeGpu)."""
    module = types.ModuleType("pynvml")
    module.NVMLError = NVMLError
    for name, value in globals().items():
        if name.startswith("NVML_"):
            setattr(module, name, value)
    state = {"initialised": False, "shutdowns": 0}
    module.state = state
    module.gpus = gpus

    def need_init():
        if not state["initialised"]:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def nvmlInit():
        if init_error is not None:
            raise NVMLError(init_error)
        state["initialised"] = True

    def nvmlShutdown():
        need_init()
        state["initialised"] = False
        state["shutdowns"] += 1

    def nvmlDeviceGetCount():
        need_init()
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index):
        need_init()
        if not 0 <= index < len(gpus):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return gpus[index]

    def nvmlDeviceGetName(handle):
        need_init()
        handle._check()
        return handle.name

    def nvmlDeviceGetTotalEnergyConsumption(handle):
        need_init()
        return handle.energy_mj()

    def nvmlDeviceGetPowerUsage(handle):
        need_init()
        return handle.power_mw()

    for function in (nvmlInit, nvmlShutdown, nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetName,
                     nvmlDeviceGetTotalEnergyConsumption, nvmlDeviceGetPowerUsage):
        setattr(module, function.__name__, function)
    return module
