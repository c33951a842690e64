"""A stand-in for nvidia-ml-py's ``pynvml`` module with the same names, units and errors.

Energy is in millijoules since "driver load", power in milliwatts. GPUs advance in real
time at a set wattage. A ``counter`` GPU has the total-energy counter (Volta and newer),
updated every ``counter_period_s``; otherwise that call raises NVMLError(NOT_SUPPORTED)
as it does on older GPUs. ``fail(code)`` makes every later call on that GPU raise, e.g.
``NVML_ERROR_GPU_IS_LOST`` for a GPU that fell off the bus.

Each GPU has a ``uuid`` (``GPU-…``), ``mig_slices`` MIG slices in ``gpu.mig`` (each with its
``MIG-…`` uuid), and the pids NVML lists on it: set ``gpu.processes`` (compute) or
``gpu.graphics_processes`` (and the same on a slice).
"""

from __future__ import annotations

import time
import types
import uuid as uuid_module

from tests.fakes.schedule import Schedule

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
    """One GPU. ``watts`` is a number or a Schedule (power that changes, tests/fakes/schedule.py);
    time runs from the GPU's creation, on the monotonic clock the meter's perf_counter shares."""

    def __init__(self, name="NVIDIA H100 80GB HBM3", watts=300.0, counter=True, counter_period_s=0.02, start_mj=123_456_789,
                 uuid=None, mig_slices=0):
        self.name, self.counter = name, counter
        self.schedule = watts if isinstance(watts, Schedule) else Schedule.constant(watts)
        self.counter_period_s = counter_period_s
        self.start_mj = start_mj
        self.error = None
        self.t0 = time.monotonic()
        self.uuid = uuid or f"GPU-{uuid_module.uuid4()}"
        self.mig = [FakeMig(self, i) for i in range(mig_slices)]  # slices, in MIG mode
        self.processes: list[int] = []  # pids NVML lists as compute processes on this GPU
        self.graphics_processes: list[int] = []
        self._reset_at = None  # seconds from t0 when the driver was last reloaded

    @property
    def watts(self) -> float:
        return self.schedule.power(time.monotonic() - self.t0)

    def reset_counter(self):
        """Restart the energy counter from zero, as a driver reload does."""
        self._reset_at = time.monotonic() - self.t0

    def fail(self, code=NVML_ERROR_GPU_IS_LOST):
        self.error = code

    def recover(self):
        self.error = None

    def joules_between(self, t0: float, t1: float) -> float:
        """Return the exact energy between two monotonic/perf_counter times."""
        return self.schedule.energy(t0 - self.t0, t1 - self.t0)

    def _check(self):
        if self.error is not None:
            raise NVMLError(self.error)

    def energy_mj(self) -> int:
        self._check()
        if not self.counter:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        tick = int((time.monotonic() - self.t0) / self.counter_period_s) * self.counter_period_s
        if self._reset_at is not None:
            return max(0, int((self.schedule.cumulative(tick) - self.schedule.cumulative(self._reset_at)) * 1000))
        return self.start_mj + int(self.schedule.cumulative(tick) * 1000)

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
    _add_gpu_identity(module)
    return module


# CUDA_VISIBLE_DEVICES, MIG and shared GPUs: UUIDs, MIG slices and process lists, with nvidia-ml-py
# 12/13's names, return types and errors (checked against nvidia-ml-py 13.615.71's pynvml.py).
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
MAX_MIG_DEVICES = 7  # what nvmlDeviceGetMaxMigDeviceCount says for an A100/H100 in MIG mode
_MESSAGES.update({
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
})
NOT_A_MIG_INSTANCE = 0xFFFFFFFF  # gpuInstanceId/computeInstanceId of a process outside MIG


class NVMLLibraryMismatchError(Exception):
    """Raised by nvidia-ml-py's unversioned functions when the driver lacks the newest version."""


class FakeMig:
    """One MIG slice of a FakeGpu: its own UUID and processes; no energy or power reading of its own."""

    def __init__(self, parent, index):
        self.parent, self.index = parent, index
        self.uuid = f"MIG-{uuid_module.uuid4()}"
        self.name = f"{parent.name} MIG 1g.10gb"
        self.processes: list[int] = []
        self.graphics_processes: list[int] = []

    def _check(self):
        self.parent._check()

    def energy_mj(self):
        self._check()
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def power_mw(self):
        self._check()
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)


def _process_info(pid: int, mig=None):
    # nvidia-ml-py returns nvmlFriendlyObjects with the fields of c_nvmlProcessInfo_t (usedGpuMemory
    # is None where the driver cannot say, e.g. Windows WDDM).
    instance = NOT_A_MIG_INSTANCE if mig is None else mig.index
    return types.SimpleNamespace(pid=pid, usedGpuMemory=512 * 2**20, gpuInstanceId=instance, computeInstanceId=0 if mig else instance)


def _add_gpu_identity(module) -> None:
    """Add UUID, MIG and process-list functions to a fake module. ``module.strings_as_bytes``
    makes strings come back as bytes (nvidia-ml-py 11); ``module.old_driver`` a driver without
    the _v3 process functions, so the unversioned names raise NVMLLibraryMismatchError."""
    module.NVMLLibraryMismatchError = NVMLLibraryMismatchError
    for name, value in globals().items():
        if name.startswith("NVML_"):
            setattr(module, name, value)
    module.strings_as_bytes = False
    module.old_driver = False

    def need_init():
        if not module.state["initialised"]:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def text(value: str):
        return value.encode() if module.strings_as_bytes else value

    def nvmlDeviceGetUUID(handle):
        need_init()
        handle._check()
        return text(handle.uuid)

    def listing(attribute):
        def processes(handle):
            need_init()
            handle._check()
            if isinstance(handle, FakeMig):
                return [_process_info(pid, handle) for pid in getattr(handle, attribute)]
            # A GPU in MIG mode answers for all its slices (NVML needs privileges for that; granted here).
            found = [_process_info(pid) for pid in getattr(handle, attribute)]
            return found + [_process_info(pid, mig) for mig in handle.mig for pid in getattr(mig, attribute)]
        return processes

    def versioned(function, version):
        def call(handle):
            if module.old_driver and version == 3:
                raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
            return function(handle)
        return call

    def unversioned(function):
        def call(handle):
            if module.old_driver:
                raise NVMLLibraryMismatchError("Unversioned function called and the pyNVML version does not match")
            return function(handle)
        return call

    def nvmlDeviceGetMaxMigDeviceCount(handle):
        need_init()
        handle._check()
        if isinstance(handle, FakeMig):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return MAX_MIG_DEVICES if handle.mig else 0  # "zero if MIG is not supported or enabled"

    def nvmlDeviceGetMigDeviceHandleByIndex(handle, index):
        need_init()
        handle._check()
        if isinstance(handle, FakeMig) or not handle.mig or not 0 <= index < MAX_MIG_DEVICES:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if index >= len(handle.mig):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return handle.mig[index]

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle):
        need_init()
        if not isinstance(handle, FakeMig):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return handle.parent

    def nvmlDeviceIsMigDeviceHandle(handle):
        need_init()
        return int(isinstance(handle, FakeMig))

    def nvmlDeviceGetMigMode(handle):
        need_init()
        handle._check()
        if isinstance(handle, FakeMig):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        mode = NVML_DEVICE_MIG_ENABLE if handle.mig else NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    for function in (nvmlDeviceGetUUID, nvmlDeviceGetMaxMigDeviceCount, nvmlDeviceGetMigDeviceHandleByIndex,
                     nvmlDeviceGetDeviceHandleFromMigDeviceHandle, nvmlDeviceIsMigDeviceHandle, nvmlDeviceGetMigMode):
        setattr(module, function.__name__, function)
    for kind, attribute in (("Compute", "processes"), ("Graphics", "graphics_processes")):
        function = listing(attribute)
        name = f"nvmlDeviceGet{kind}RunningProcesses"
        setattr(module, f"{name}_v2", versioned(function, 2))
        setattr(module, f"{name}_v3", versioned(function, 3))
        setattr(module, name, unversioned(versioned(function, 3)))  # the plain name is the newest (_v3)
