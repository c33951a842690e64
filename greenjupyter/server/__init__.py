"""The jupyter_server extension: greenjupyter's metrics on the server's own /metrics, for Prometheus.

``pip install greenjupyter`` enables it (``etc/jupyter/jupyter_server_config.d/greenjupyter.json``).
It adds one Collector to prometheus_client's global registry, which jupyter_server serves at
``{base_url}/metrics`` with the same authentication as its own metrics. The collector reads the
history database that this server's kernels write (the ``db_path`` setting, from the server's
config or the environment, which the kernels inherit) and nothing else.
"""

from __future__ import annotations

import os

_collector = None  # the one registered in this process


def _load_jupyter_server_extension(serverapp) -> None:
    global _collector
    from prometheus_client import REGISTRY

    from ..settings import load
    from ..store import default_path
    from .collector import GreenJupyterCollector

    log = serverapp.log
    if _collector is not None:  # a second server in this process: the newest one's settings win
        REGISTRY.unregister(_collector)
        _collector.close()
        _collector = None
    db_path = load(serverapp.config).db_path
    if db_path.strip().lower() == "off":
        log.info("greenjupyter: history is off (db_path is 'off'), so /metrics has no greenjupyter metrics")
        return
    collector = GreenJupyterCollector(os.path.abspath(db_path or default_path()), log)
    REGISTRY.register(collector)
    collector.start_catch_up()
    _collector = collector
    log.info("greenjupyter: energy and CO2e metrics from %s are served on /metrics", collector.db_path)
