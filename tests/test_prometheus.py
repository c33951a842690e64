"""Fleet metrics: the jupyter_server extension's /metrics, the kernels' live power files, the
Pushgateway push of ``greenjupyter measure``, and the Grafana dashboard.

The main test starts a real ``jupyter server`` (the extension enabled by the config file the wheel
installs), runs cells in a kernel the server manages (REST + websocket, as JupyterLab does), scrapes
/metrics with the token and parses it with prometheus_client's parser. The fakes stand only at the
hardware: a powercap tree whose counters a separate process advances at set watts.
"""

import json
import logging
import math
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from greenjupyter import cli, live_status
from greenjupyter.server import pushgateway
from greenjupyter.server import collector as collector_module
from greenjupyter.server.collector import GreenJupyterCollector
from greenjupyter.server.history_sums import BUCKETS_J, MAX_SERIES
from greenjupyter.store import Store, StoredCell
from greenjupyter.measurement import CellRecord, Measurement
from greenjupyter.sampler import Sample
from tests.fakes.powercap import FakePowercap
from tests.kernels import kernel_environment, kernel_manager

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "greenjupyter-metrics-test"
# Two RAPL packages and no DRAM zone: the packages are read from counters, memory is estimated,
# so both sources appear.
PACKAGES = [("intel-rapl:0", "package-0", 60.0), ("intel-rapl:1", "package-1", 45.0)]
BUSY = "total = 0\nfor i in range(300_000):\n    total += i"
WAIT_S = 60  # for conditions on a busy 2-core machine; each poll returns as soon as it holds
# Float sums of the same values in another order differ in the last bits only (n * 2^-53 relative
# for n terms); a cell counted twice or left out changes a sum by far more than this.
SUM_REL = 1e-9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, what: str, timeout: float = WAIT_S, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


# ------------------------------------------------------------------ a real jupyter server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("server")
    root, data, config = base / "notebooks", base / "data", base / "config"
    root.mkdir()
    kernel = data / "kernels" / "python3"
    kernel.mkdir(parents=True)
    kernel.joinpath("kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    # The file pip installs into etc/jupyter/jupyter_server_config.d enables the extension.
    (config / "jupyter_server_config.d").mkdir(parents=True)
    shutil.copy(ROOT / "jupyter-config/jupyter_server_config.d/greenjupyter.json", config / "jupyter_server_config.d")
    db = base / "history.sqlite"
    powercap = FakePowercap(base / "powercap", PACKAGES, period_s=0.01)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENJUPYTER_", "JUPYTER_"))}
    env.update({
        "JUPYTER_DATA_DIR": str(data), "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "IPYTHONDIR": str(base / "ipython"), "GREENJUPYTER_POWERCAP_ROOT": str(powercap.root),
        "GREENJUPYTER_DB_PATH": str(db), "GREENJUPYTER_REGION": "FR",
    })
    port = free_port()
    log_path = base / "server.log"
    with powercap, open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(BIN / "jupyter"), "server", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             "--KernelManager.shutdown_wait_time=30"],  # a kernel shut down exits by itself, even on a busy machine
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _up(url) or process.poll() is not None, "jupyter server to start")
            assert process.poll() is None, "jupyter server did not start:\n" + log_path.read_text()
            yield {"url": url, "port": port, "db": db, "log": log_path, "powercap": powercap}
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _up(url: str) -> bool:
    try:
        urllib.request.urlopen(_request(url + "/api/status"), timeout=5)
        return True
    except OSError:
        return False


def _request(url: str, method: str = "GET", body: dict | None = None, token: str | None = TOKEN):
    headers = {"Authorization": f"token {token}"} if token else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    return urllib.request.Request(url, data=data, headers=headers, method=method)


def scrape(server, token: str | None = TOKEN) -> dict:
    """GET /metrics; return {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(_request(server["url"] + "/metrics", token=token), timeout=30) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def ours(samples: dict) -> dict:
    return {key: value for key, value in samples.items() if key[0].startswith("greenjupyter_")}


class ServerKernel:
    """A kernel the server starts and manages, driven over its websocket as JupyterLab drives it."""

    def __init__(self, server):
        import websocket

        self.server = server
        with urllib.request.urlopen(_request(server["url"] + "/api/kernels", "POST", {"name": "python3"}),
                                    timeout=60) as response:
            self.id = json.loads(response.read())["id"]
        self.session = uuid.uuid4().hex
        self.socket = websocket.create_connection(
            f"ws://127.0.0.1:{server['port']}/api/kernels/{self.id}/channels",
            header=[f"Authorization: token {TOKEN}"], timeout=WAIT_S)

    def execute(self, code: str) -> dict:
        """Run ``code`` as a cell; return the execute_reply's content."""
        msg_id = uuid.uuid4().hex
        self.socket.send(json.dumps({
            "header": {"msg_id": msg_id, "session": self.session, "username": "test", "msg_type": "execute_request",
                       "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": False}}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("msg_type") == "execute_reply" and message["parent_header"].get("msg_id") == msg_id:
                return message["content"]

    def shut_down(self) -> None:
        self.socket.close()
        urllib.request.urlopen(_request(f"{self.server['url']}/api/kernels/{self.id}", "DELETE"), timeout=60)


def history(db: Path) -> dict:
    """The figures /metrics must show, worked out here from every row of the history database."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT components, estimated_components, energy_j, co2e_g FROM cells "
                                  "ORDER BY id").fetchall()
    finally:
        connection.close()
    energy = {}
    for components, estimated, _, _ in rows:
        for name, joules in json.loads(components).items():
            key = (name, "estimate" if name in json.loads(estimated) else "counter")
            energy[key] = energy.get(key, 0.0) + joules
    return {"cells": len(rows), "energy": energy, "co2e": math.fsum(r[3] or 0.0 for r in rows),
            "buckets": [sum(1 for r in rows if r[2] <= b) for b in BUCKETS_J], "sum": math.fsum(r[2] for r in rows)}


def assert_matches_history(samples: dict, expected: dict) -> None:
    energy = {(dict(labels)["component"], dict(labels)["source"]): value
              for (name, labels), value in samples.items() if name == "greenjupyter_energy_joules_total"}
    assert energy.keys() == expected["energy"].keys()
    for key, joules in expected["energy"].items():
        assert energy[key] == pytest.approx(joules, rel=SUM_REL), key
    assert samples[("greenjupyter_cells_total", ())] == expected["cells"]
    assert samples[("greenjupyter_co2e_grams_total", ())] == pytest.approx(expected["co2e"], rel=SUM_REL)
    for bound, count in zip(BUCKETS_J, expected["buckets"]):
        le = next(v for (n, labels), v in samples.items()
                  if n == "greenjupyter_cell_energy_joules_bucket" and float(dict(labels)["le"]) == bound)
        assert le == count, bound
    assert samples[("greenjupyter_cell_energy_joules_count", ())] == expected["cells"]
    assert samples[("greenjupyter_cell_energy_joules_sum", ())] == pytest.approx(expected["sum"], rel=SUM_REL)


def rows_in(db: Path) -> int:
    if not db.exists():
        return 0
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT count(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # the first kernel is still creating it
        return 0
    finally:
        connection.close()


def test_metrics_of_a_real_server_match_the_history_and_only_grow(server):
    db = server["db"]
    before = ours(scrape(server))
    assert before[("greenjupyter_cells_total", ())] == 0  # no history yet: zeros, not an error
    assert before[("greenjupyter_live_kernels", ())] == 0
    assert not any(name == "greenjupyter_power_watts" for name, _ in before)

    kernel = ServerKernel(server)
    try:
        assert kernel.execute("%load_ext greenjupyter")["status"] == "ok"
        cells = [BUSY, "import time\ntime.sleep(0.3)", "1 / 0", "print('hello')", BUSY]
        statuses = [kernel.execute(code)["status"] for code in cells]
        assert statuses == ["ok", "ok", "error", "ok", "ok"]
        wait_for(lambda: rows_in(db) == len(cells), "the kernel's rows in the history")
        first = wait_for(lambda: (s := ours(scrape(server)))[("greenjupyter_cells_total", ())] == len(cells) and s,
                         "/metrics to count the cells")
        assert_matches_history(first, history(db))
        assert {source for (name, labels) in first if name == "greenjupyter_energy_joules_total"
                for key, source in labels if key == "source"} == {"counter", "estimate"}

        # Power now, from the kernel's live file: each package at its fake watts (one sampler
        # interval's average; 20% leaves room for a fake writer descheduled on a busy machine).
        live = wait_for(lambda: (s := ours(scrape(server)))[("greenjupyter_live_kernels", ())] == 1 and s,
                        "the running kernel's power")
        watts = {dict(labels)["component"]: v for (name, labels), v in live.items() if name == "greenjupyter_power_watts"}
        assert watts["cpu:package-0"] == pytest.approx(60.0, rel=0.2)
        assert watts["cpu:package-1"] == pytest.approx(45.0, rel=0.2)
        assert 0 < watts["dram:process"] < 5  # a process's resident memory at 0.3725 W/GB

        more = [BUSY, "x = 1"]
        for code in more:
            assert kernel.execute(code)["status"] == "ok"
        total = len(cells) + len(more)
        wait_for(lambda: rows_in(db) == total, "the new rows")
        second = wait_for(lambda: (s := ours(scrape(server)))[("greenjupyter_cells_total", ())] == total and s,
                          "/metrics to count the new cells")
        assert_matches_history(second, history(db))
        for key, value in first.items():
            if key[0].endswith(("_total", "_bucket", "_count", "_sum")):
                assert second[key] >= value, key  # counters never go back while the history grows
        assert second[("greenjupyter_energy_joules_total", (("component", "cpu:package-0"), ("source", "counter")))] > \
            first[("greenjupyter_energy_joules_total", (("component", "cpu:package-0"), ("source", "counter")))]
    finally:
        kernel.shut_down()

    # A kernel that exits deletes its file: no power is left behind, and the counters stay.
    live_dir = Path(live_status.directory_for(str(db)))
    wait_for(lambda: not list(live_dir.glob("*.json")), "the kernel's live file to be deleted")
    after = wait_for(lambda: (s := ours(scrape(server)))[("greenjupyter_live_kernels", ())] == 0 and s,
                     "/metrics to drop the stopped kernel")
    assert not any(name == "greenjupyter_power_watts" for name, _ in after)
    assert_matches_history(after, history(db))


def test_a_scrape_without_the_token_is_refused(server):
    for token in (None, "not-the-token"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(server, token=token)
        assert refused.value.code == 403
    assert ("greenjupyter_cells_total", ()) in scrape(server)


# ------------------------------------------------------------------ the collector in-process


def make_cells(n: int, start: int = 0, components=None) -> list:
    cells = []
    for i in range(start, start + n):
        parts = components or {"cpu:package-0": 1.0 + i % 7, "dram:process": 0.25}
        m = Measurement(
            started_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
            duration_s=1.0, energy_j=sum(parts.values()), components=parts, estimated=True, avg_power_w=1.0,
            peak_power_w=1.0, estimated_components=("dram:process",), co2e_g=0.001 * (i % 5))
        cells.append(StoredCell(CellRecord(m, i, None, "nb.ipynb", True, None, "x"), "session"))
    return cells


def write_history(path: Path, cells) -> None:
    store = Store(str(path))
    try:
        store.add_many(cells)
        assert store.all_written
    finally:
        store.close()


def collect(collector) -> dict:
    collector._collected_at = -math.inf  # this scrape reads, whatever the cache says
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in collector.collect() for s in f.samples}


def caught_up(collector, cells: int) -> dict:
    return wait_for(lambda: (s := collect(collector)).get(("greenjupyter_cells_total", ())) == cells and s,
                    f"the collector to count {cells} cells")


def test_a_replaced_or_pruned_history_starts_the_counters_over(tmp_path):
    db = tmp_path / "history.sqlite"
    write_history(db, make_cells(30))
    collector = GreenJupyterCollector(str(db))
    assert_matches_history(caught_up(collector, 30), history(db))

    connection = sqlite3.connect(db)
    connection.execute("DELETE FROM cells WHERE id <= 5")  # old rows pruned
    connection.commit()
    connection.close()
    assert_matches_history(caught_up(collector, 25), history(db))

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    write_history(db, make_cells(3, start=100))  # a new file at the same path
    assert_matches_history(caught_up(collector, 3), history(db))


def test_a_locked_database_holds_a_scrape_back_briefly_and_keeps_the_figures(tmp_path):
    db = tmp_path / "history.sqlite"
    write_history(db, make_cells(5))
    collector = GreenJupyterCollector(str(db))
    caught_up(collector, 5)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode = DELETE")  # a rollback journal: a writer's lock keeps readers out
    writer.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    samples = collect(collector)
    # The scrape waits 20 ms for the lock, not SQLite's default 5 s; 2 s leaves room for a busy machine.
    assert time.monotonic() - started < 2
    assert samples[("greenjupyter_cells_total", ())] == 5  # the figures stay, no counter reset
    writer.execute("ROLLBACK")
    writer.close()
    write_history(db, make_cells(2, start=5))
    assert_matches_history(caught_up(collector, 7), history(db))


def test_a_missing_or_foreign_database_gives_zeros_and_one_log_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="greenjupyter")
    missing = GreenJupyterCollector(str(tmp_path / "none.sqlite"))
    for _ in range(3):
        samples = collect(missing)
    assert samples[("greenjupyter_cells_total", ())] == 0
    assert samples[("greenjupyter_co2e_grams_total", ())] == 0
    other = tmp_path / "other.sqlite"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    connection.commit()
    connection.close()
    foreign = GreenJupyterCollector(str(other))
    for _ in range(3):
        samples = collect(foreign)
    assert samples[("greenjupyter_cells_total", ())] == 0
    lines = [r.getMessage() for r in caplog.records if "greenjupyter" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "no history database at" in lines[0] and str(tmp_path / "none.sqlite") in lines[0]
    assert "is it a greenjupyter history?" in lines[1]


def test_hostile_rows_are_left_out_and_labels_stay_bounded(tmp_path):
    db = tmp_path / "history.sqlite"
    write_history(db, make_cells(2))
    many = {f"gpu:{i}": 1.0 for i in range(200)}  # more components than any machine: folded into "other"
    write_history(db, make_cells(1, start=2, components=many))
    connection = sqlite3.connect(db)
    template = connection.execute("SELECT * FROM cells WHERE id = 1").fetchone()
    columns = [d[1] for d in connection.execute("PRAGMA table_info(cells)")]
    for changes in ({"components": "not json"}, {"components": '{"cpu:package-0": -5}'},
                    {"components": '{"cpu:package-0": 1e300}', "energy_j": 1e300},
                    {"components": '{"cpu:package-0": "many"}'}, {"co2e_g": -1.0},
                    {"components": json.dumps({"x" * 500: 1.0})}):
        row = dict(zip(columns, template), id=None, **changes)
        connection.execute(f"INSERT INTO cells ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                           list(row.values()))
    connection.commit()
    connection.close()
    samples = caught_up(GreenJupyterCollector(str(db)), 9)
    energy = {(dict(labels)["component"], dict(labels)["source"]): v for (name, labels), v in samples.items()
              if name == "greenjupyter_energy_joules_total"}
    assert len(energy) <= MAX_SERIES + 2  # at most one "other" per source beyond the cap
    assert ("other", "counter") in energy and not any(len(component) > 64 for component, _ in energy)
    # Rows 1 and 2 (1 J and 2 J), and the copy whose only fault is a negative CO2e (1 J); the
    # components that are not JSON, negative, absurd or text count for nothing.
    assert energy[("cpu:package-0", "counter")] == pytest.approx(4.0)
    assert energy[("dram:process", "estimate")] == pytest.approx(0.75)
    assert math.fsum(energy.values()) == pytest.approx(4.0 + 0.75 + 200 + 1.0)  # the 200 GPUs and the long name
    assert samples[("greenjupyter_cells_total", ())] == 9
    assert samples[("greenjupyter_co2e_grams_total", ())] == pytest.approx(0.003)
    assert samples[("greenjupyter_cell_energy_joules_count", ())] == 8  # the 1e300 J cell is not observed
    assert samples[("greenjupyter_cell_energy_joules_sum", ())] == pytest.approx(1.25 + 2.25 + 200 + 5 * 1.25)


def test_a_long_history_is_read_in_the_background_and_shown_only_whole(tmp_path, monkeypatch):
    db = tmp_path / "history.sqlite"
    write_history(db, make_cells(20_000))
    monkeypatch.setattr(collector_module, "SCRAPE_BUDGET_S", 0.0)  # a scrape reads one batch, whatever the machine
    collector = GreenJupyterCollector(str(db))
    seen = set()
    while True:
        samples = collect(collector)
        cells = samples.get(("greenjupyter_cells_total", ()))
        seen.add(cells)
        if cells == 20_000:
            break
        assert cells is None, "a history half read was shown"
        time.sleep(0.01)
    assert None in seen  # the scrapes before the background read was done showed no history
    assert_matches_history(samples, history(db))

    for suffix in ("", "-wal", "-shm"):  # another long history in its place: shown only whole, too
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    write_history(db, make_cells(15_000, start=7))
    seen = set()
    while (cells := collect(collector).get(("greenjupyter_cells_total", ()))) != 15_000:
        assert cells is None, "a history half read was shown"
        seen.add(cells)
        time.sleep(0.01)
    assert seen == {None}


# ------------------------------------------------------------------ the kernels' live files


def write_status(directory: Path, name: str, watts: dict, estimated=(), age_s: float = 0.0, interval_s=0.25):
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"version": 1, "time": time.time() - age_s, "interval_s": interval_s,
                                "watts": watts, "estimated": list(estimated)}))
    os.utime(path, (time.time() - age_s,) * 2)
    return path


def test_power_counts_a_device_once_and_adds_up_modelled_shares(tmp_path):
    live = tmp_path / "history.sqlite.live"
    write_status(live, "a", {"cpu:package-0": 50.0, "cpu:process": 3.0}, estimated=["cpu:process"])
    write_status(live, "b", {"cpu:package-0": 52.0, "cpu:process": 4.0}, estimated=["cpu:process"])
    stale = write_status(live, "killed", {"cpu:package-0": 500.0}, age_s=10)
    gone = write_status(live, "long-dead", {"cpu:package-0": 500.0}, age_s=120)
    slow = write_status(live, "slow-sampler", {"gpu:0": 80.0}, age_s=40, interval_s=20)  # 3 intervals: still fresh
    (live / "garbage.json").write_text("{not json")
    (live / "wrong.json").write_text(json.dumps({"interval_s": 1, "watts": {"gpu:1": -3, "gpu:2": "x", "gpu:3": 1e9}}))
    (live / ".a.json.123.tmp").write_text("{}")  # a write in progress
    watts, kernels = live_status.read_power(str(live))
    assert watts == {"cpu:package-0": 52.0, "cpu:process": 7.0, "gpu:0": 80.0}
    assert kernels == 4  # a, b, slow-sampler and wrong (whose readings are all refused)
    assert stale.exists() and not gone.exists() and slow.exists()
    assert live_status.read_power(str(tmp_path / "nowhere")) == ({}, 0)


def test_a_kernel_publishes_its_power_privately_and_deletes_it_on_unload(tmp_path, powercap, shell):
    live = Path(live_status.directory_for(str(tmp_path / "history.sqlite")))
    files = wait_for(lambda: list(live.glob("*.json")), "the kernel's live file")
    assert len(files) == 1
    assert stat.S_IMODE(live.stat().st_mode) == 0o700 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    status = json.loads(files[0].read_text())
    assert status["watts"]["cpu:package-0"] == pytest.approx(60.0, rel=0.2)  # the powercap fixture's package
    assert status["estimated"] == []  # RAPL packages and DRAM: everything read from counters
    first = files[0].stat().st_mtime_ns
    wait_for(lambda: files[0].stat().st_mtime_ns != first, "the next write", every=0.05)
    publisher = live_status._current
    shell.run_line_magic("unload_ext", "greenjupyter")
    assert not files[0].exists()
    # At a kernel's exit the sampler thread outlives atexit: a tick after the file was deleted writes nothing.
    publisher._written_at = -math.inf
    publisher(Sample(0.0, 1.0, ("cpu:package-0",), (60.0,), 60.0))
    assert not files[0].exists()


# ------------------------------------------------------------------ greenjupyter measure --pushgateway


class Gateway:
    """A local HTTP server that records each request; or answers each with a redirect to ``redirect_to``."""

    def __init__(self, redirect_to: str | None = None):
        self.requests = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gateway.requests.append((self.command, self.path, body.decode()))
                if redirect_to:
                    self.send_response(307)
                    self.send_header("Location", redirect_to + self.path)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_DELETE = do_PUT

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def measure_env(tmp_path, monkeypatch):
    """A kernelspec on this interpreter and the test kernel environment, here and for the kernel."""
    kernel_manager(tmp_path)
    environment = {**kernel_environment(tmp_path), "JUPYTER_PATH": str(tmp_path)}
    for name in ("GREENJUPYTER_POWERCAP_ROOT", "GREENJUPYTER_DB_PATH", "JUPYTER_PATH"):
        monkeypatch.setenv(name, environment[name])
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "greenjupyter-test", "display_name": "test", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code) for code in (BUSY, "x = 1", "print(x)")]
    path = tmp_path / "batch.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_measure_pushes_the_run_totals_to_a_pushgateway(measure_env, tmp_path, capsys):
    gateway = Gateway()
    try:
        assert cli.main(["measure", str(measure_env), "--region", "FR", "--pushgateway", gateway.url + "/"]) == 0
    finally:
        gateway.close()
    assert "pushed the run's totals" in capsys.readouterr().err
    [(method, path, body)] = gateway.requests
    assert (method, path) == ("PUT", "/metrics/job/greenjupyter")
    pushed = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(body) for s in family.samples}
    expected = history(tmp_path / "history.sqlite")
    assert expected["cells"] == 3
    assert pushed[("greenjupyter_run_cells", ())] == 3
    assert pushed[("greenjupyter_run_exit_code", ())] == 0
    assert pushed[("greenjupyter_run_co2e_grams", ())] == pytest.approx(expected["co2e"], rel=SUM_REL)
    energy = {(dict(labels)["component"], dict(labels)["source"]): v for (name, labels), v in pushed.items()
              if name == "greenjupyter_run_energy_joules"}
    assert energy.keys() == expected["energy"].keys()
    for key, joules in expected["energy"].items():
        assert energy[key] == pytest.approx(joules, rel=SUM_REL), key
    assert abs(pushed[("greenjupyter_run_finished_timestamp_seconds", ())] - time.time()) < 600


def test_a_redirecting_pushgateway_is_not_followed_and_the_exit_code_stays(measure_env, capsys):
    target, redirecting = Gateway(), None
    try:
        redirecting = Gateway(redirect_to=target.url)
        assert cli.main(["measure", str(measure_env), "--pushgateway", redirecting.url]) == 0
    finally:
        target.close()
        if redirecting:
            redirecting.close()
    err = capsys.readouterr().err
    assert f"could not push to the Pushgateway at {redirecting.url} (HTTP 307, a redirect to {target.url}" in err
    assert "exit code is the run's" in err
    assert len(redirecting.requests) == 1 and target.requests == []


def test_a_pushgateway_url_that_cannot_work_is_refused_before_the_run(measure_env, capsys):
    for url in ("ftp://gateway:9091", "gateway:9091", "http://:9091", "http://gateway:port", "http://g:9091/?a=1"):
        assert cli.main(["measure", str(measure_env), "--pushgateway", url]) == 2
        err = capsys.readouterr().err
        assert repr(url) in err and "accepted: an http:// or https:// URL" in err, err
    assert not (measure_env.parent / "history.sqlite").exists()  # no kernel ran


def test_a_pushgateway_down_or_silent_is_one_message(monkeypatch, capsys):
    monkeypatch.setattr(pushgateway, "TIMEOUT_S", 1.0)
    records = [c.record for c in make_cells(2)]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
        assert pushgateway.push_run(down, records, 0) is False
    with socket.socket() as silent:  # accepts the connection (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        assert pushgateway.push_run(f"http://127.0.0.1:{silent.getsockname()[1]}", records, 1) is False
        assert time.monotonic() - started < 30
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "refused" in lines[0].lower() and "timed out" in lines[1].lower(), lines


# ------------------------------------------------------------------ the Grafana dashboard


def test_the_grafana_dashboard_asks_only_for_metrics_the_server_serves(tmp_path):
    dashboard = json.loads((ROOT / "deploy/grafana/greenjupyter-dashboard.json").read_text())
    db = tmp_path / "history.sqlite"
    write_history(db, make_cells(3))
    write_status(Path(live_status.directory_for(str(db))), "k", {"cpu:package-0": 50.0})
    served = {name for name, _ in caught_up(GreenJupyterCollector(str(db)), 3)}
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(expressions) >= 6
    asked = {name for expr in expressions for name in re.findall(r"\bgreenjupyter_[a-z0-9_]+\b", expr)}
    assert asked and asked <= served, asked - served
    for metric in ("greenjupyter_energy_joules_total", "greenjupyter_co2e_grams_total",
                   "greenjupyter_power_watts", "greenjupyter_cell_energy_joules_bucket"):
        assert metric in asked
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for expr in (t["expr"] for t in panel["targets"]):
            assert set(re.findall(r"\$(\w+)", expr)) <= variables | {"__rate_interval", "__range"}, expr
            assert expr.count("(") == expr.count(")"), expr
