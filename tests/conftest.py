import os
import sys

import pytest

from greenjupyter import notices, runtime
from greenjupyter.sources import nvml as nvml_source
from tests.fakes import pynvml as fake_pynvml
from tests.fakes.powercap import SERVER, FakePowercap


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Every test starts with no shared meter, no said notices, no real hardware and its own history."""
    for name in list(os.environ):
        if name.startswith("GREENJUPYTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GREENJUPYTER_POWERCAP_ROOT", "/nonexistent-powercap")
    monkeypatch.setenv("GREENJUPYTER_DB_PATH", str(tmp_path / "history.sqlite"))
    monkeypatch.setattr(nvml_source, "DRIVER_MARKERS", ("/nonexistent-nvidia",))
    notices.forget()
    yield
    runtime.shutdown()
    notices.forget()


@pytest.fixture
def shell():
    """A real IPython shell with greenjupyter loaded (test files that need another set-up define their own)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter", store_history=True)
    yield shell
    shell.run_line_magic("unload_ext", "greenjupyter")
    shell.user_ns.pop("m", None)


@pytest.fixture
def powercap(tmp_path, monkeypatch):
    """A two-socket RAPL tree (packages + DRAM) advancing in real time; the env points at it."""
    fake = FakePowercap(tmp_path / "powercap", SERVER)
    monkeypatch.setenv("GREENJUPYTER_POWERCAP_ROOT", str(fake.root))
    with fake:
        yield fake


@pytest.fixture
def gpus(tmp_path, monkeypatch):
    """Two GPUs behind a pynvml stand-in: an H100 with the energy counter, a P100 with power only."""
    devices = [fake_pynvml.FakeGpu("NVIDIA H100 80GB HBM3", 300.0), fake_pynvml.FakeGpu("Tesla P100-PCIE-16GB", 150.0, counter=False)]
    module = fake_pynvml.make(devices)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # both GPUs are the kernel's unless a test says
    marker = tmp_path / "nvidiactl"
    marker.write_text("")
    monkeypatch.setattr(nvml_source, "DRIVER_MARKERS", (str(marker),))
    return module
