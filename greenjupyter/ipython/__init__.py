"""The IPython extension: the only part of greenjupyter that knows about IPython."""

from __future__ import annotations

from .. import runtime
from ..notices import forget, notice
from . import stream
from .extension import current_recorder, install, uninstall


def load(shell) -> None:
    """Measure every cell of ``shell`` from now on and register the ``%carbon`` magics."""
    if current_recorder() is not None and current_recorder().shell is shell:
        return  # loading twice must not count twice
    try:
        settings = runtime.get_settings(shell.config)
        meter = runtime.get_meter()
        recorder = install(shell, meter, settings.cells_kept, runtime.get_store())
        from .magics import CarbonMagics

        shell.register_magics(CarbonMagics(shell))
        publish = stream.publisher(shell)
        if publish is not None:  # a kernel: the sidebar listens
            recorder.stream = stream.Stream(publish, recorder, grid=runtime.current_grid)
            recorder.stream.start()
    except Exception as error:
        uninstall()
        runtime.shutdown(keep_settings=True)
        notice("load", f"could not load ({error!r}); cells run unmeasured")


def unload(shell) -> None:
    """Remove every hook and magic, stop the sampler and close the sources; %carbon config values stay for a reload."""
    uninstall()
    for kind in ("line", "cell"):
        shell.magics_manager.magics[kind].pop("carbon", None)
    runtime.shutdown(keep_settings=True)
    forget()
