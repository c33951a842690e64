"""What greenjupyter adds to a Prometheus scrape of the Jupyter server's /metrics, by history size.

    .venv/bin/python bench/scrape_time.py        # prints the figures, writes bench/results/scrape_time.json

Histories of 1,000, 10,000 and 100,000 cells are written through the Store as kernels write them
(four components each, one of them estimated). For each, on the collector that the server
extension registers:
- the scrape right after the server starts, before anything was read (it reads for 20 ms at
  most and leaves the rest of the history to a background thread);
- reading the whole history, as that background thread does;
- the steady scrape: 10 new cells since the last one, the cache expired, timed around
  ``prometheus_client.generate_latest`` over a registry holding the collector (what the /metrics
  handler calls), 60 times;
- a scrape inside the cache's lifetime.
Then the whole GET /metrics of a real ``jupyter server`` (extension enabled, 10,000 cells in its
history, the server's own metrics included), refreshing scrapes 5 s apart with 10 new cells before
each, and a scrape straight after (cached) for comparison: their difference is greenjupyter's share
of the request; the rest is the server's own (HTTP, its other metrics).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import _hardware  # noqa: F401  (puts the repo root on sys.path)
from _report import figure, percentile, save
from run_all import busy_percent, commit

SIZES = (1_000, 10_000, 100_000)
NEW_PER_SCRAPE = 10
STEADY_SCRAPES = 60
HTTP_SCRAPES = 6
TARGET_MS = 50.0
ROOT = Path(__file__).resolve().parent.parent


def cells(n: int, start: int, rng: random.Random) -> list:
    from greenjupyter.measurement import CellRecord, Measurement
    from greenjupyter.store import StoredCell

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    out = []
    for i in range(start, start + n):
        parts = {"cpu:package-0": rng.uniform(0.01, 500), "cpu:package-1": rng.uniform(0.01, 500),
                 "gpu:0": rng.uniform(0, 3000), "dram:process": rng.uniform(0, 5)}
        m = Measurement(t0 + timedelta(seconds=i), 1.0, sum(parts.values()), parts, True, 10.0, 20.0, 0.1,
                        ("dram:process",), co2e_g=rng.uniform(0, 1), intensity_g_per_kwh=44.18, region="FR", pue=1.0)
        out.append(StoredCell(CellRecord(m, i % 50 + 1, f"cell-{i}", "analysis.ipynb", True, None, "x = 1"),
                              f"session-{i // 500}", "kernel", "bench; RAPL (cpu:package-0, cpu:package-1)"))
    return out


def write(path: str, n: int, start: int, rng: random.Random) -> None:
    from greenjupyter.store import Store

    store = Store(path)
    try:
        for chunk in range(start, start + n, 5000):
            store.add_many(cells(min(5000, start + n - chunk), chunk, rng))
        assert store.all_written
    finally:
        store.close()


def collector_figures(directory: Path, n: int) -> dict:
    from prometheus_client import CollectorRegistry, generate_latest

    from greenjupyter.server.collector import GreenJupyterCollector

    rng = random.Random(n)
    path = str(directory / f"history-{n}.sqlite")
    write(path, n, 0, rng)
    collector = GreenJupyterCollector(path)
    registry = CollectorRegistry()
    registry.register(collector)

    t = time.perf_counter()
    generate_latest(registry)  # the first scrape: starts the background read
    first_ms = (time.perf_counter() - t) * 1e3
    while collector._catching_up:  # let the background read finish before timing a whole read alone
        time.sleep(0.01)

    whole = GreenJupyterCollector(path)
    t = time.perf_counter()
    whole._read(deadline=None, lock_wait_s=2.0)
    whole_ms = (time.perf_counter() - t) * 1e3
    assert whole._published is not None and whole._published.cells == n

    steady, cached = [], []
    for i in range(STEADY_SCRAPES):
        write(path, NEW_PER_SCRAPE, n + i * NEW_PER_SCRAPE, rng)
        collector._collected_at = -float("inf")  # the cache has expired
        t = time.perf_counter()
        text = generate_latest(registry)
        steady.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        generate_latest(registry)
        cached.append((time.perf_counter() - t) * 1e3)
    expected = n + STEADY_SCRAPES * NEW_PER_SCRAPE
    assert f"greenjupyter_cells_total {float(expected)}".encode() in text, "the scrapes did not count every cell"
    return {"first_ms": first_ms, "whole_ms": whole_ms, "steady_ms": steady, "cached_ms": cached,
            "db_bytes": os.path.getsize(path)}


def http_figures(directory: Path, n: int = 10_000) -> dict:
    """GET /metrics of a real jupyter server whose history holds ``n`` cells."""
    from greenjupyter.server.collector import CACHE_S

    rng = random.Random(7)
    db = str(directory / "server-history.sqlite")
    write(db, n, 0, rng)
    config = directory / "config"
    (config / "jupyter_server_config.d").mkdir(parents=True)
    shutil.copy(ROOT / "jupyter-config/jupyter_server_config.d/greenjupyter.json", config / "jupyter_server_config.d")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "bench"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENJUPYTER_", "JUPYTER_"))}
    env.update({"JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(directory / "data"),
                "JUPYTER_RUNTIME_DIR": str(directory / "runtime"), "GREENJUPYTER_DB_PATH": db})
    root = directory / "notebooks"
    root.mkdir()
    log = open(directory / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--allow-root", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"token {token}"})

    def get() -> tuple[float, str]:
        t = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return (time.perf_counter() - t) * 1e3, text

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _, text = get()
                if f"greenjupyter_cells_total {float(n)}" in text:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("jupyter server did not serve the history:\n" + (directory / "server.log").read_text())
            time.sleep(0.5)
        refreshing, cached = [], []
        for i in range(HTTP_SCRAPES):
            write(db, NEW_PER_SCRAPE, n + i * NEW_PER_SCRAPE, rng)
            time.sleep(CACHE_S + 0.2)  # the last refreshing scrape's figures have expired
            ms, text = get()
            refreshing.append(ms)
            cached.append(get()[0])
        assert f"greenjupyter_cells_total {float(n + HTTP_SCRAPES * NEW_PER_SCRAPE)}" in text
        return {"refreshing_ms": refreshing, "cached_ms": cached, "bytes": len(text)}
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def main():
    busy = busy_percent()  # other processes' load just before: timings from a busy machine are inflated
    directory = Path(tempfile.mkdtemp(prefix="greenjupyter-scrape-"))
    try:
        results = {}
        for n in SIZES:
            results[n] = collector_figures(directory, n)
            r = results[n]
            print(f"{n:>7,} cells ({r['db_bytes'] / 1e6:.1f} MB): first scrape {r['first_ms']:.1f} ms, whole read "
                  f"{r['whole_ms']:.0f} ms, steady p50 {statistics.median(r['steady_ms']):.2f} ms "
                  f"p95 {percentile(r['steady_ms'], 95):.2f} ms max {max(r['steady_ms']):.2f} ms, cached p50 "
                  f"{statistics.median(r['cached_ms']) * 1e3:.0f} µs", flush=True)
        http = http_figures(directory)
        print(f"GET /metrics, real jupyter server, 10,000 cells: refreshing {', '.join(f'{x:.1f}' for x in http['refreshing_ms'])} ms; "
              f"cached {', '.join(f'{x:.1f}' for x in http['cached_ms'])} ms", flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    ten = results[10_000]
    figures = [
        figure("scrape, 10,000 cells in history, 10 new, p95", percentile(ten["steady_ms"], 95), "ms", TARGET_MS, 2),
        figure("scrape, 10,000 cells in history, 10 new, max", max(ten["steady_ms"]), "ms", digits=2),
        figure("first scrape after start, 10,000 cells (rest read in the background)", ten["first_ms"], "ms",
               TARGET_MS, 1),
        # The whole request, jupyter_server's own metrics and HTTP included: a refreshing scrape
        # against the cached one straight after it shows greenjupyter's share.
        figure("GET /metrics, real jupyter server, 10,000 cells, refreshing, median",
               statistics.median(http["refreshing_ms"]), "ms", digits=1),
        figure("GET /metrics, same server, cached (straight after), median", statistics.median(http["cached_ms"]),
               "ms", digits=1),
    ]
    for n in SIZES:
        r = results[n]
        figures += [
            figure(f"scrape, {n:,} cells in history, 10 new, p50", statistics.median(r["steady_ms"]), "ms", digits=2,
                   readme=False),
            figure(f"whole-history read (background), {n:,} cells", r["whole_ms"], "ms", digits=0, readme=False),
        ]
    figures.append(figure("scrape inside the cache's 5 s, p50", statistics.median(ten["cached_ms"]) * 1e3, "µs",
                          digits=0, readme=False))
    details = {str(n): {k: (round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v] if isinstance(v, list)
                            else v) for k, v in r.items()} for n, r in results.items()}
    details["http_10000"] = {k: [round(x, 2) for x in v] if isinstance(v, list) else v for k, v in http.items()}
    details["new_cells_per_scrape"] = NEW_PER_SCRAPE
    details["cpus_busy_before_percent"] = round(busy, 1)
    details["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    details["greenjupyter_commit"] = commit()[0]
    save("scrape_time", figures, details)


if __name__ == "__main__":
    main()
