"""CodeCarbon for the benchmarks, kept out of the project's own environment.

It is installed into bench/.venv-codecarbon (made here from this interpreter when missing: the
one network step, at install time; the benchmarks themselves run offline). ``tracker()`` puts
that venv's site-packages at the END of sys.path, so this process keeps its own versions of
the packages both share, and returns a started OfflineEmissionsTracker: the country is given,
nothing is saved or sent.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import sysconfig
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv-codecarbon"


def python() -> Path:
    """Return the venv's interpreter, creating the venv and installing CodeCarbon if needed."""
    exe = VENV / "bin" / "python"
    if not exe.exists():
        print(f"creating {VENV} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    if subprocess.run([str(exe), "-c", "import codecarbon"], capture_output=True, timeout=120,
                      check=False).returncode:
        print("installing codecarbon into it ...", file=sys.stderr, flush=True)
        subprocess.run([str(exe), "-m", "pip", "install", "-q", "codecarbon"], check=True, timeout=1200)
    return exe


def tracker(measure_power_secs: float = 15):
    """Return (a started OfflineEmissionsTracker, CodeCarbon's version), imported into this process."""
    python()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = VENV / "lib" / version / "site-packages"
    assert site.is_dir(), f"{site} is missing: the venv was made by another Python than {sysconfig.get_python_version()}"
    if str(site) not in sys.path:
        sys.path.append(str(site))
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    import codecarbon
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    found = OfflineEmissionsTracker(country_iso_code="FRA", save_to_file=False, log_level="error",
                                    measure_power_secs=measure_power_secs)
    found.start()
    return found, codecarbon.__version__
