"""Build greenjupyter/_cellpath.c, the C cell path, into the wheel where a C compiler is found.

Without one (or with GREENJUPYTER_PURE_PYTHON=1) the wheel is pure Python and greenjupyter uses the
same functions written in Python (greenjupyter/fastpath.py): it works the same, about 27 µs slower
per cell (bench/cell_path_parts.py). The module is built in place, so that an editable install uses
it too.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = os.path.join("greenjupyter", "_cellpath.c")


def build_cell_path(root: str) -> str | None:
    """Compile the module next to its source; return its path relative to ``root``, or None (and say why)."""
    if os.environ.get("GREENJUPYTER_PURE_PYTHON") == "1":
        return None
    if os.name == "nt":
        return None  # no journal on Windows: the cell path there is the counters' reads alone
    target = os.path.join("greenjupyter", "_cellpath" + sysconfig.get_config_var("EXT_SUFFIX"))
    linker = shlex.split(os.environ.get("LDSHARED") or sysconfig.get_config_var("LDSHARED") or "cc -shared")
    command = [*linker, "-O2", "-fPIC", "-I" + sysconfig.get_paths()["include"], SOURCE, "-o", target]
    try:
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"greenjupyter: no C compiler ({error}); the cell path stays pure Python", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"greenjupyter: could not build {SOURCE}; the cell path stays pure Python:\n{done.stderr[-2000:]}",
              file=sys.stderr)
        return None
    return target


class CellPathBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        target = build_cell_path(self.root)
        if target is not None and version != "editable":
            build_data["pure_python"] = False
            build_data["infer_tag"] = True  # a wheel for this Python and platform
            build_data["artifacts"].append(target.replace(os.sep, "/"))
