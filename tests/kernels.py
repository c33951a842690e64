"""Real kernels for tests: on this very interpreter, whatever kernelspecs the machine has."""

import json
import os
import sys

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager, KernelManager

KERNEL = "greenjupyter-test"


def kernel_manager(tmp_path, asynchronous: bool = False):
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)
    manager = AsyncKernelManager if asynchronous else KernelManager
    return manager(kernel_name=KERNEL, kernel_spec_manager=specs)


def kernel_environment(tmp_path) -> dict:
    """The test's environment without greenjupyter settings, no RAPL (deterministic anywhere), its own history."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENJUPYTER_")}
    env["GREENJUPYTER_POWERCAP_ROOT"] = str(tmp_path / "no-powercap")
    env["GREENJUPYTER_DB_PATH"] = str(tmp_path / "history.sqlite")
    return env


def run_then_kill(tmp_path, env: dict, cells) -> list[str]:
    """Start a real kernel with ``env``, load greenjupyter, run ``cells`` and kill it with SIGKILL
    right after the last reply; return each cell's printed output."""
    import signal

    manager = kernel_manager(tmp_path)
    manager.start_kernel(env=env, cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    printed = []
    try:
        client.wait_for_ready(timeout=60)
        client.execute_interactive("%load_ext greenjupyter", timeout=30)
        for cell in cells:
            out = []
            reply = client.execute_interactive(cell, timeout=30,
                                               output_hook=lambda m: out.append(m["content"].get("text", "")))
            assert reply["content"]["status"] == "ok", reply["content"]
            printed.append("".join(out))
        os.kill(manager.provisioner.process.pid, signal.SIGKILL)  # at once, after the last reply
        manager.provisioner.process.wait(10)
    finally:
        client.stop_channels()
        manager.cleanup_resources()
    return printed


def history_after_recovery(monkeypatch, db_path: str) -> list:
    """Load greenjupyter in this process on ``db_path`` (which recovers the journals of killed kernels
    there) and return its whole history."""
    from IPython.core.interactiveshell import InteractiveShell

    import greenjupyter

    monkeypatch.setenv("GREENJUPYTER_DB_PATH", db_path)
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    try:
        return greenjupyter.history()
    finally:
        shell.run_cell("%unload_ext greenjupyter")
