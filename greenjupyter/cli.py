"""The ``greenjupyter`` command: measure a notebook headless, and read the history database.

    greenjupyter measure analysis.ipynb --region FR --report out.html
    greenjupyter history --since 7d
    greenjupyter report --since 7d --format latex --output compute.tex
    greenjupyter export cells.csv --notebook analysis.ipynb
    greenjupyter whatif --since 7d --regions FR,us-central1
    greenjupyter sources

``measure`` runs the notebook through nbclient in a fresh kernel with its own greenjupyter
session. The extension is loaded by a *silent* execute request sent after the kernel is ready
and before the first cell, and the kernel's queued rows are flushed by another after the last.
Silent requests run no ``pre/post_run_cell`` hooks (so they are not measured), do not advance
the execution count, are not part of any cell and leave nothing in the saved notebook: its
cells keep the counts 1, 2, ... they would have had. The reply's ``user_expressions`` bring
back the recorder's session id, and this run's cells are read from the history database by it.

Exit codes: 0 ok; 1 the notebook raised (or a cell ran past ``--timeout``); 2 usage errors
(arguments, missing or unreadable files, unknown kernel or region, greenjupyter not loadable in
the kernel); 3 the kernel died or could not start; 130 / 143 stopped by SIGINT / SIGTERM (the
kernel is shut down first, and what ran is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sqlite3
import sys
import tempfile
import time
import warnings
from queue import Empty

from . import format as fmt
from .errors import GreenJupyterError
from .totals import Totals

OK, FAILED, USAGE, DIED, INTERRUPTED = 0, 1, 2, 3, 130
REPORT_FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown", ".tex": "latex", ".txt": "text"}
SESSION_SHOWN = 12  # characters of a session id shown in tables; --session takes any unique prefix

# Evaluated in the kernel as user_expressions, which leave no name behind in the user's namespace.
_RECORDER = "__import__('greenjupyter.ipython.extension', fromlist=['current_recorder']).current_recorder()"
SESSION_EXPRESSION = f"(lambda r: r and [r.session, r.store and r.store.path, r.store and r.store.failed])({_RECORDER})"
FLUSH_EXPRESSION = f"(lambda r: r and [r.finish(), r.store and r.store.retry(), r.session][-1])({_RECORDER})"
# Loaded past IPython's extension manager, which would otherwise answer the notebook's own
# `%load_ext greenjupyter` with "already loaded" in its output; greenjupyter ignores a second load.
LOAD_CODE = "__import__('greenjupyter').load_ipython_extension(get_ipython())"


class UsageError(Exception):
    """A bad argument or input file: said in one line, exit code 2, no traceback."""


# --- measure ---------------------------------------------------------------------------------


def cmd_measure(args) -> int:
    try:
        import nbclient  # noqa: F401  (with nbformat and jupyter_client)
    except ImportError:
        raise UsageError("measure needs nbclient, nbformat and ipykernel: pip install nbclient nbformat ipykernel") from None

    path = os.path.abspath(args.notebook)
    nb = read_notebook(args.notebook)
    settings = _settings(region=args.region, pue=args.pue)
    report_format = _report_format(args.report) if args.report else None
    for option, target in (("--report", args.report), ("--output", args.output)):
        if target:
            _check_writable(target, option)
    kernel = args.kernel or (nb.metadata.get("kernelspec") or {}).get("name") or "python3"
    _check_kernel(kernel, "--kernel" if args.kernel else "the notebook's kernelspec")
    if args.pushgateway:
        from .server.pushgateway import checked_url

        args.pushgateway = checked_url(args.pushgateway)

    with _run_database(args.db, settings) as db_path, tempfile.TemporaryFile() as kernel_log:
        env = {**os.environ, "GREENJUPYTER_DB_PATH": db_path, "JPY_SESSION_NAME": path}
        if args.region:
            env["GREENJUPYTER_REGION"] = args.region
        if args.pue:
            env["GREENJUPYTER_PUE"] = args.pue
        run = NotebookRun(nb, path, kernel, timeout=args.timeout, allow_errors=args.allow_errors, kernel_log=kernel_log)
        code, problem = _execute(run, env, args.timeout)
        records = _show_run(run, db_path, settings, args.notebook, allowed_errors=code == OK)
        if args.report:
            detection = _detection(settings)  # the kernel's environment is ours: the same sources
            try:
                write_report(args.report, report_format, records, _grid(settings), settings, detection, title=args.notebook)
            finally:
                for source in detection.sources:
                    source.close()
            print(f"greenjupyter: report written to {args.report}", file=sys.stderr)
        if args.output:
            run.clear_cells_not_run()
            _write_notebook(nb, args.output)
            print(f"greenjupyter: executed notebook written to {args.output}", file=sys.stderr)
        if args.pushgateway:  # a failed push is said and leaves the exit code as it is
            from .server.pushgateway import push_run

            push_run(args.pushgateway, records, code)
    if problem:
        _error(problem)
    return code


def _execute(run: NotebookRun, env: dict, timeout) -> tuple[int, str | None]:
    """Run the notebook; return (exit code, what went wrong or None). greenjupyter not loading is a UsageError."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    try:
        run.execute(env)
    except CellTimeoutError:
        run.end_line("timed out")
        return FAILED, f"{run.where()} ran past --timeout {timeout} s and was stopped"
    except CellExecutionError as error:
        return FAILED, f"{run.where()} raised {error.ename}: {error.evalue}".rstrip(": ")
    except Interrupted as stop:
        run.end_line("interrupted")
        when = f"during {run.where()}" if run.current else "while the kernel was starting"
        return 128 + stop.signum, (f"{signal.Signals(stop.signum).name} received {when}; the kernel was shut down"
                                   + ("; the cells that ran are shown above and kept in the history" if run.current else ""))
    except DeadKernelError:
        run.end_line("kernel died")
        return DIED, (
            f"the kernel died while running {run.where()} (its process ended: os._exit, a crash, or the system "
            "ran out of memory); what it recorded before is shown above" + run.last_words()
        )
    except KernelStartError as error:
        return DIED, str(error) + run.last_words()
    except TimeoutError as error:  # our own silent requests got no reply
        return DIED, f"the kernel stopped answering ({error})" + run.last_words()
    except LoadError as error:
        raise UsageError(str(error)) from None
    return OK, None


def _show_run(run: NotebookRun, db_path: str, settings, name: str, allowed_errors: bool) -> list:
    """Print the run's cells from the history database and their totals; return their CellRecords."""
    stored = _cells_of_run(db_path, run.sessions)
    records = [s.record for s in stored]
    if run.sessions:
        print(f"greenjupyter: {name} in kernel {run.kernel}, session {run.sessions[0][:SESSION_SHOWN]}")
        print(run_table(stored, run.place))
        print(totals_text(records, settings, _grid(settings)))
    if run.errors and allowed_errors:
        listed = ", ".join(f"In [{count}] ({ename})" for _, count, ename, _ in run.errors)
        print(f"greenjupyter: {len(run.errors)} cell(s) raised, allowed by --allow-errors or the raises-exception "
              f"tag: {listed}", file=sys.stderr)
    return records


def read_notebook(path: str):
    """Return the notebook at ``path`` (nbformat 4), or raise UsageError saying why it cannot be run.

    As nbclient and nbconvert do, a notebook that breaks its format's schema in a way that does not
    stop it running (e.g. cell ids in format 4.0) is run, with one warning on stderr.
    """
    import nbformat

    if not os.path.exists(path):
        raise UsageError(f"no such notebook: {path}")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory; accepted: a Jupyter notebook file (.ipynb)")
    try:
        with warnings.catch_warnings():  # nbformat warns about what it repairs; the schema says it once, below
            warnings.simplefilter("ignore")
            nb = nbformat.read(path, as_version=4)
        _check_runnable(nb)
    except OSError as error:
        raise UsageError(f"cannot read {path} ({error.strerror or error})") from None
    except Exception as error:  # nbformat raises many kinds (NotJSONError, KeyError, ...)
        raise UsageError(f"{path} is not a Jupyter notebook ({_first_line(error)}); "
                         "accepted: an .ipynb file in nbformat 4") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nbformat.validate(nb)
    except nbformat.ValidationError as error:
        where = "/".join(str(part) for part in getattr(error, "absolute_path", ()))
        print(f"greenjupyter: warning: {path} does not follow the notebook format "
              f"{nb.nbformat}.{nb.get('nbformat_minor', 0)} ({_first_line(error)}{f' at {where}' if where else ''}); "
              "running it anyway, as nbconvert does", file=sys.stderr)
    return nb


def _check_runnable(nb) -> None:
    """Raise TypeError unless every cell has what nbclient needs: a known type, text and metadata."""
    import nbformat

    if not isinstance(nb.get("cells"), list):
        raise TypeError("it has no list of cells")
    for number, cell in enumerate(nb.cells, 1):
        if not isinstance(cell, dict):
            raise TypeError(f"cell {number} is not a cell")
        if cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise TypeError(f"cell {number} is of unknown type {cell.get('cell_type')!r}")
        if not isinstance(cell.get("source"), str):
            raise TypeError(f"cell {number} has no source")
        if not isinstance(cell.setdefault("metadata", nbformat.NotebookNode()), dict):
            raise TypeError(f"cell {number} has metadata that is not a mapping")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    return reason if len(reason) <= 160 else reason[:159] + "…"


class KernelStartError(Exception):
    """The kernel could not be started (exit code 3)."""


class LoadError(Exception):
    """greenjupyter could not be loaded in the kernel (exit code 2)."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run; the kernel has been shut down (exit code 128 + the signal)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class NotebookRun:
    """Execute one notebook through nbclient with greenjupyter loaded, telling progress on stderr."""

    def __init__(self, nb, path: str, kernel: str, timeout: int | None = None, allow_errors: bool = False,
                 out=None, kernel_log=None):
        from nbclient import NotebookClient

        self.nb = nb
        self.kernel = kernel
        self.out = out if out is not None else sys.stderr
        self.client = NotebookClient(
            nb,
            kernel_name=kernel,
            timeout=timeout,
            startup_timeout=60,
            allow_errors=allow_errors,
            resources={"metadata": {"path": os.path.dirname(path)}},  # the kernel runs in the notebook's folder
            on_cell_execute=self._cell_started,
            on_cell_executed=self._cell_finished,
            log=_quiet_logger(),  # failures are said once, by us, in words
        )
        skip = self.client.skip_cells_with_tag
        todo = [
            i for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and cell.source.strip() and skip not in cell.metadata.get("tags", [])
        ]
        self.position = {index: n for n, index in enumerate(todo, 1)}  # cell index -> its place in this run
        self.sessions: list[str] = []  # greenjupyter sessions seen in the kernel (one unless it reloads)
        self.cell_of_count: dict[int, int] = {}  # execution count -> cell number (1-based)
        self.errors: list[tuple] = []  # (cell number, execution count, ename, evalue) of cells that raised
        self.current: tuple[int, int] | None = None  # (cell number, execution count) running or last run
        self.reached = -1  # index of the last cell sent to the kernel
        self.spans: list[list] = []  # [wall start, wall end, cell number, execution count] of each cell sent
        self.started = False
        self.signal: int | None = None  # SIGINT or SIGTERM, once one has stopped the run
        self._closing = False
        self.kernel_log = kernel_log  # a binary file for the kernel process's own stderr, or None to share ours
        self._log_mark = 0  # where that log stood when the kernel was ready
        self._t0 = 0.0
        self._line_open = False

    def where(self) -> str:
        if self.current is None:
            return "the notebook"
        number, count = self.current
        return f"In [{count}]"

    def execute(self, env: dict) -> None:
        """Run the notebook; raise Interrupted, KernelStartError, LoadError or nbclient's errors."""
        from jupyter_core.utils import run_sync

        try:
            run_sync(self._run)(env)
        except (RuntimeError, TimeoutError, OSError) as error:
            if self.started or self.signal is not None:  # DeadKernelError and CellTimeoutError are among these
                raise
            raise KernelStartError(f"kernel {self.kernel!r} could not start ({error})") from None

    async def _run(self, env: dict) -> None:
        import asyncio

        from nbclient.util import ensure_async

        # The kernel's lifetime is ours rather than nbclient's async_setup_kernel: its SIGINT/SIGTERM
        # handler shuts the kernel down under the running cell and then fails on its own cleanup.
        client = self.client
        client.reset_execution_trackers()
        client.km = client.create_kernel_manager()
        self._catch_signals(asyncio.current_task())
        try:
            await self._session(env)
        except (asyncio.CancelledError, Exception):
            if self.signal is None:
                raise
            # Whatever the cancel became (nbclient turns a cancelled cell into DeadKernelError), the run stops here.
            if hasattr(asyncio.Task, "uncancel"):
                asyncio.current_task().uncancel()
            if self.running:  # stop the cell, so that it ends as a recorded cell
                with contextlib.suppress(Exception):
                    await ensure_async(client.km.interrupt_kernel())
            if self.started:
                await self._flush(wait=5)
        finally:
            self._closing = True
            try:
                await self._shut_down()
            finally:
                self._release_signals()
                left = asyncio.all_tasks() - {asyncio.current_task()}  # nbclient's pollers of a stopped cell
                for task in left:
                    task.cancel()
                if left:
                    await asyncio.wait(left, timeout=2)
        if self.signal is not None:
            raise Interrupted(self.signal)

    async def _session(self, env: dict) -> None:
        from nbclient.exceptions import CellExecutionError

        client = self.client
        # The kernel's own stderr (not its cells': those go to the notebook) is kept aside and shown
        # only if it dies, from where it stood once the kernel was ready (past its start-up banners).
        options = {"env": env} if self.kernel_log is None else {"env": env, "stderr": self.kernel_log}
        await client.async_start_new_kernel(**options)
        await client.async_start_new_kernel_client()
        self.started = True
        if self.kernel_log is not None:
            self._log_mark = os.lseek(self.kernel_log.fileno(), 0, os.SEEK_END)
        reply, _ = await self._quiet("", kernel_info=True)
        if "language_info" in reply:
            self.nb.metadata["language_info"] = reply["language_info"]
        await self._load()
        try:
            for index, cell in enumerate(self.nb.cells):
                await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        except CellExecutionError:
            await self._flush()
            raise
        client.set_widgets_metadata()
        await self._flush()

    async def _shut_down(self) -> None:
        client = self.client
        if client.km is None:  # nbclient already cleaned up after a failed start
            return
        if not self.started:  # nothing to save in a kernel that never answered
            client.shutdown_kernel = "immediate"
        await client._async_cleanup_kernel()

    def _catch_signals(self, task) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):  # not the main thread
                loop.add_signal_handler(signum, self._on_signal, signum, task)

    def _release_signals(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int, task) -> None:
        if self.signal is None:
            self.signal = signum
            if not self._closing:  # once shutting down, let the shutdown finish
                task.cancel()

    async def _load(self) -> None:
        reply, printed = await self._quiet(LOAD_CODE, {"recorder": SESSION_EXPRESSION})
        hint = "greenjupyter measures IPython kernels that have it installed; choose one with --kernel NAME"
        if reply.get("status") != "ok":
            raise LoadError(
                f"could not load greenjupyter in kernel {self.kernel!r} "
                f"({reply.get('ename', 'error')}: {reply.get('evalue', '')}); {hint}"
            )
        recorder = _expression_value(reply, "recorder")
        said = " ".join(printed.split())
        if not recorder:
            raise LoadError(f"greenjupyter did not load in kernel {self.kernel!r} ({said or 'no reason given'}); {hint}")
        session, store_path, failed = recorder
        if not store_path or failed:
            raise LoadError(
                f"the kernel cannot write the history database ({said or failed or 'no database'}); "
                "accepted: --db PATH of a writable file"
            )
        self.sessions.append(session)
        if said:
            print(said, file=self.out)

    async def _flush(self, wait: float = 10) -> None:
        """Have the kernel write any row still queued (another writer held the database); best effort."""
        from nbclient.exceptions import DeadKernelError

        try:
            reply, _ = await self._quiet("", {"session": FLUSH_EXPRESSION}, wait=wait)
        except (DeadKernelError, TimeoutError, RuntimeError):
            return
        session = _expression_value(reply, "session")
        if session and session not in self.sessions:  # the notebook reloaded the extension
            self.sessions.append(session)

    async def _quiet(self, code: str, expressions: dict | None = None, wait: float = 60, kernel_info: bool = False):
        """Send a silent request (not measured, not counted, no output kept); return (reply content, text printed)."""
        from nbclient.exceptions import DeadKernelError
        from nbclient.util import ensure_async

        kc = self.client.kc
        if kernel_info:
            msg_id = await ensure_async(kc.kernel_info())
        else:
            msg_id = await ensure_async(
                kc.execute(code, silent=True, store_history=False, user_expressions=expressions or {},
                           allow_stdin=False, stop_on_error=False)
            )
        deadline = time.monotonic() + wait
        while True:
            try:
                msg = await ensure_async(kc.shell_channel.get_msg(timeout=1))
            except Empty:
                if not await ensure_async(kc.is_alive()):
                    raise DeadKernelError("Kernel died") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no reply from the kernel in {wait:g} s") from None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        printed = []
        while not kernel_info:  # what it printed (notices), until the kernel is idle again
            try:
                out = await ensure_async(kc.iopub_channel.get_msg(timeout=2))
            except Empty:
                break
            if out["parent_header"].get("msg_id") != msg_id:
                continue
            if out["msg_type"] == "stream":
                printed.append(out["content"]["text"])
            elif out["msg_type"] == "status" and out["content"]["execution_state"] == "idle":
                break
        return msg["content"], "".join(printed)

    def _cell_started(self, cell, cell_index) -> None:
        count = self.client.code_cells_executed + 1  # what nbclient will give this cell
        self.current = (cell_index + 1, count)
        self.cell_of_count[count] = cell_index + 1
        self.reached = cell_index
        cell.execution_count = count  # not the file's old one, even if the run stops before the kernel says it
        self.spans.append([time.time(), None, cell_index + 1, count])
        print(f"[{self.position.get(cell_index, '?')}/{len(self.position)}] In [{count}] ... ",
              end="", file=self.out, flush=True)
        self._line_open = True
        self._t0 = time.perf_counter()

    def _cell_finished(self, cell, cell_index, execute_reply) -> None:
        self.spans[-1][1] = time.time()
        took = fmt.duration(time.perf_counter() - self._t0)
        content = (execute_reply or {}).get("content", {})
        if content.get("status") == "error":
            self.errors.append((cell_index + 1, cell.get("execution_count"), content.get("ename"), content.get("evalue")))
            self.end_line(f"{took}, raised {content.get('ename')}")
        else:
            self.end_line(took)

    @property
    def running(self) -> bool:
        """True while a cell sent to the kernel has not replied."""
        return bool(self.spans) and self.spans[-1][1] is None

    def place(self, record) -> tuple:
        """Return (cell number, execution count) of one of this run's records, or blanks.

        IPython gives post_run_cell a result without a count when showing the cell's traceback itself
        raised (under %pdb on with no stdin, the debugger's StdinNotImplementedError), so such a record
        is placed by when it started: inside the span from its cell's request to its reply.
        """
        count = record.execution_count
        if count is not None:
            return self.cell_of_count.get(count, ""), count
        started = record.measurement.started_at.timestamp()
        for sent, replied, number, count in self.spans:
            if sent <= started and (replied is None or started <= replied):
                return number, count
        return "", ""

    def clear_cells_not_run(self) -> None:
        """Empty the outputs and counts that the cells this run did not reach keep from an older run."""
        for index in self.position:
            if index > self.reached:
                cell = self.nb.cells[index]
                cell.outputs = []
                cell.execution_count = None
                cell.metadata.pop("execution", None)  # nbclient's timings

    def last_words(self, lines: int = 8) -> str:
        """Return the end of what the kernel process wrote to its stderr, as a suffix for a message."""
        if self.kernel_log is None:
            return ""
        size = os.lseek(self.kernel_log.fileno(), 0, os.SEEK_END)
        start = self._log_mark if self.started else 0
        text = os.pread(self.kernel_log.fileno(), min(size - start, 65536), max(start, size - 65536))
        tail = [line for line in text.decode("utf-8", "replace").splitlines() if line.strip()][-lines:]
        return "\nthe kernel's last words on stderr:\n  " + "\n  ".join(tail) if tail else ""

    def end_line(self, text: str) -> None:
        if self._line_open:
            print(text, file=self.out, flush=True)
            self._line_open = False


def _expression_value(reply: dict, name: str):
    import ast

    result = reply.get("user_expressions", {}).get(name, {})
    if result.get("status") != "ok":
        return None
    try:
        return ast.literal_eval(result.get("data", {}).get("text/plain", "None"))
    except (ValueError, SyntaxError):
        return None


def _quiet_logger() -> logging.Logger:
    log = logging.getLogger("greenjupyter.cli.nbclient")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


def _check_kernel(name: str, origin: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    specs = KernelSpecManager()
    try:
        specs.get_kernel_spec(name)
    except NoSuchKernel:
        installed = ", ".join(sorted(specs.find_kernel_specs())) or "none"
        raise UsageError(f"no such kernel: {name!r} (from {origin}); installed kernels: {installed}; "
                         "choose one with --kernel NAME") from None


@contextlib.contextmanager
def _run_database(db: str | None, settings):
    """Yield the database path the kernel writes to: --db, else db_path, else the default; a temporary one when off."""
    from .store import default_path

    path = db or settings.db_path
    if path.strip().lower() != "off":
        yield os.path.abspath(path or default_path())
        return
    print("greenjupyter: history is off (db_path is 'off'); this run is measured in a temporary database "
          "and not kept", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="greenjupyter-") as directory:
        yield os.path.join(directory, "history.sqlite")


def _cells_of_run(db_path: str, sessions: list[str]) -> list:
    if not sessions or not os.path.exists(db_path):
        return []
    from . import journal, runtime

    store = _open_store(db_path, read_only=False)
    try:
        # A kernel that died left its last cells in its journal: they are this run's too.
        journal.recover(journal.directory_for(db_path), store, runtime.with_carbon)
        cells = [c for session in sessions for c in store.cells(session=session)]
    finally:
        store.close()
    return sorted(cells, key=lambda c: c.record.measurement.started_at)


def _write_notebook(nb, path: str) -> None:
    import nbformat

    try:
        nbformat.write(nb, path)
    except OSError as error:
        raise UsageError(f"cannot write {path} ({error.strerror or error})") from None


# --- tables and totals -----------------------------------------------------------------------


def run_table(stored, place) -> str:
    """Return one line per measured cell of a run: execution count, figures, source.

    Cells are numbered as everywhere in greenjupyter, by execution count: ``In [n]`` in Jupyter,
    ``[n]`` in the sidebar. ``place(record)`` gives the record's (cell number, execution count).
    """
    if not stored:
        return "  (no cell was measured)"
    lines = [f"{'#':>4}  {fmt.CELL_COLUMNS}"]
    for s in stored:
        _, count = place(s.record)
        lines.append(f"{count:>4}  {fmt.cell_columns(s.record)}")
    lines.append(RUN_TABLE_NOTE)
    return "\n".join(lines)


RUN_TABLE_NOTE = "#: the execution count, In [#] in Jupyter: code cells only, 1, 2, ... in order (--output saves the executed notebook)"


def totals_text(records, settings, grid=None) -> str:
    """Return the totals of ``records``: cells, time, energy, CO2e and the grid it was counted on."""
    records = list(records)
    if not records:
        return "total: no cells measured"
    t = Totals.of(records)
    estimated = t.estimated_components
    kind = "measured" if not estimated else "estimated" if estimated >= set(t.components) else "partly estimated"
    head = (f"total: {t.cells} cell{'s' if t.cells != 1 else ''} in {fmt.duration(t.duration_s)}, "
            f"{fmt.energy(t.energy_j)} ({kind})" + (f", {t.failed_cells} raised" if t.failed_cells else ""))
    if not t.co2e_cells:
        return head + "\n  CO2e: not worked out for these cells"
    recorded = recorded_grid(records, grid)
    if recorded is None:
        regions = sorted({region for region, _, _ in t.grids if region})
        return head + f"\n  {fmt.co2e(t.co2e_g)} CO2e, counted on several grids ({', '.join(regions)})"
    from .carbon.equivalents import units_for

    units = units_for(recorded.country, settings.units)
    line = fmt.carbon_line(t.co2e_g, recorded.region, recorded.g_per_kwh, recorded.pue, units)
    return "\n".join([head, f"  {line}", *fmt.grid_lines(recorded)])


def recorded_grid(records, grid=None):
    """Return the Grid every record's CO2e was counted on: ``grid`` when it is that one, else one rebuilt
    from the records (its source from the tables when the intensity is the table's); None when they differ."""
    import math

    from .carbon.context import Grid
    from .carbon.regions import UnknownRegion, lookup

    used = {(r.measurement.region, r.measurement.intensity_g_per_kwh, r.measurement.pue)
            for r in records if r.measurement.co2e_g is not None}
    if len(used) != 1:
        return None
    region, intensity, pue = used.pop()
    if grid is not None and (grid.region, grid.pue) == (region, pue) and math.isclose(grid.g_per_kwh, intensity):
        return grid
    try:
        found = lookup(region)
    except UnknownRegion:
        return None
    if math.isclose(found.g_per_kwh, intensity):
        source = f"{found.source}, {found.basis}, annual average, location-based"
    else:
        source = "as recorded with the cells (its source is not kept)"
    return Grid(found.region, found.name, intensity, pue, source, "recorded with the cells", "recorded with the cells",
                found.country)


# --- reports ---------------------------------------------------------------------------------


def write_report(path: str, format: str, records, grid, settings, detection=None, title: str = "") -> None:
    text = report_text(format, records, recorded_grid(records, grid), settings, detection, title)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as error:
        raise UsageError(f"cannot write {path} ({error.strerror or error})") from None


def report_text(format: str, records, grid, settings, detection=None, title: str = "") -> str:
    """Return the summary in ``format``; html is the whole page, with both figures. The history keeps
    no power samples, so its power figure shows each cell's average power."""
    from . import report

    if format == "html":
        return report.page(records, None, None, detection, grid, settings, title)
    return report.summary(records, detection, grid, settings, format)


def write_figures(directory: str, records) -> list[str]:
    """Write the energy and power figures into ``directory`` as PDF (for LaTeX) and PNG; return the paths."""
    from . import report

    figures = {"energy-per-cell": report.energy_figure(records), "power-over-time": report.power_figure([], records)}
    paths = []
    try:
        os.makedirs(directory, exist_ok=True)
        for name, fig in figures.items():
            for extension in ("pdf", "png"):
                paths.append(os.path.join(directory, f"{name}.{extension}"))
                report.save(fig, paths[-1])
    except OSError as error:
        raise UsageError(f"cannot write the figures into {directory} ({error.strerror or error})") from None
    return paths


def _report_format(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    if extension not in REPORT_FORMATS:
        shown = f"extension {extension!r}" if extension else "no extension"
        raise UsageError(f"cannot write a report to {path}: {shown} is not known; accepted: "
                         f"{', '.join(REPORT_FORMATS)}")
    return REPORT_FORMATS[extension]


def _detection(settings):
    from .sources import detect

    return detect(settings.powercap_root)


# --- history, report, export, sources over the store -----------------------------------------


def cmd_history(args) -> int:
    cells = _selected(args)
    if args.cells:
        print(history_cells_table(cells, _scope(args)))
    else:
        from .history import sessions
        from .idle import add_to_sessions

        print(sessions_table(add_to_sessions(sessions(cells), cells), _scope(args)))
    return OK


def cmd_report(args) -> int:
    cells = _selected(args)
    format = args.format or (_report_format(args.output) if args.output else "text")
    records = [c.record for c in cells]
    settings = _settings()
    if args.output:
        write_report(args.output, format, records, None, settings, title=args.notebook or "")
        print(f"greenjupyter: report on {len(records)} cells written to {args.output}", file=sys.stderr)
    else:
        print(report_text(format, records, recorded_grid(records), settings, title=args.notebook or "").rstrip("\n"))
    if args.figures and records:
        paths = write_figures(args.figures, records)
        print(f"greenjupyter: figures written: {', '.join(paths)}", file=sys.stderr)
    elif args.figures:
        print("greenjupyter: no cells, so no figures", file=sys.stderr)
    return OK


def cmd_export(args) -> int:
    from .export import export

    cells = _selected(args)
    try:
        export([c.record for c in cells], args.file)
    except OSError as error:
        raise UsageError(f"cannot write {args.file} ({error.strerror or error})") from None
    print(f"greenjupyter: {len(cells)} cells written to {args.file}", file=sys.stderr)
    return OK


def cmd_whatif(args) -> int:
    from .carbon.whatif import compare

    cells = _selected(args)
    settings = _settings()
    grid = _grid(settings)
    if grid is None:
        raise UsageError("the grid in force cannot be worked out; set GREENJUPYTER_REGION, e.g. to FR")
    scope = f"{len(cells)} stored cell{'' if len(cells) == 1 else 's'}{_scope(args)}"
    energy_j = sum(c.record.measurement.energy_j for c in cells)
    print(compare(energy_j, grid, settings, args.regions or (), scope).text())
    return OK


def cmd_sources(args) -> int:
    # The same detection greenjupyter.sources() reports, without starting the shared meter.
    detection = _detection(_settings())
    try:
        print(fmt.sources_text(detection))
    finally:
        for source in detection.sources:
            source.close()
    return OK


def _selected(args) -> list:
    """Return the stored cells that --notebook, --since and --session select, oldest first."""
    from .history import parse_since

    try:
        since = parse_since(args.since)
    except GreenJupyterError as error:
        raise UsageError(f"--since: {error}") from None
    path = _history_path(args.db)
    store = _open_store(path)
    try:
        cells = store.cells(since=since)
    finally:
        store.close()
    cells = sorted(cells + _journal_cells(path, cells, since), key=lambda c: c.record.measurement.started_at)
    if args.notebook:
        wanted = {args.notebook, os.path.abspath(args.notebook), os.path.realpath(args.notebook)}
        cells = [c for c in cells if c.record.notebook in wanted]
    session = getattr(args, "session", None)
    if session:
        matches = sorted({c.session for c in cells if c.session.startswith(session)})
        if not matches:
            raise UsageError(f"--session {session}: no session with that id{_scope(args, ' among cells')}; "
                             "accepted: a session id or its first characters, as `greenjupyter history` shows them")
        if len(matches) > 1:
            raise UsageError(f"--session {session} matches {len(matches)} sessions "
                             f"({', '.join(m[:SESSION_SHOWN] for m in matches)}); give more characters")
        cells = [c for c in cells if c.session == matches[0]]
    return cells


def _scope(args, prefix: str = "") -> str:
    parts = []
    if args.notebook:
        parts.append(f"of {fmt.printable(args.notebook)}")
    if args.since:
        parts.append(f"in the last {fmt.printable(args.since)}")
    return f"{prefix} {' '.join(parts)}" if parts else ""


def _history_path(db: str | None) -> str:
    from .store import default_path

    settings = _settings()
    path = db or settings.db_path
    if path.strip().lower() == "off":
        raise UsageError(f"history is off (db_path is 'off', from {settings.origin['db_path']}); "
                         "accepted: --db PATH of a greenjupyter history file")
    path = path or default_path()
    if not os.path.exists(path):
        raise UsageError(f"no history database at {path} (nothing measured there yet); "
                         "accepted: --db PATH of an existing greenjupyter history file")
    return path


def _open_store(path: str, read_only: bool = True):
    """Open the history: read-only (``mode=ro``, not a byte changed) unless ``read_only`` is False."""
    from .store import NotAHistory, Store

    try:
        return Store(path, read_only=read_only)
    except NotAHistory as error:
        raise UsageError(str(error)) from None
    except sqlite3.DatabaseError as error:
        raise UsageError(f"{path} is not a greenjupyter history database ({error})") from None
    except OSError as error:
        raise UsageError(f"cannot open {path} ({error.strerror or error})") from None


def _journal_cells(db_path: str, stored: list, since) -> list:
    """Return the cells of dead kernels' journals not yet in the database, without writing anything.

    The next kernel on this database turns them into rows; until then they are shown from the journal.
    """
    from . import journal, runtime
    from .store import StoredCell

    present = {(c.session, c.entry) for c in stored if c.entry is not None}
    carbon, cells = None, []
    for path, fd in journal.dead_journals(journal.directory_for(db_path), exclusive=False):
        try:
            header, entries = journal.read(path)
            if header is None:
                continue
            carbon = carbon or runtime.carbon_adder()
            session = header["session"]
            for previous, e in zip([None] + entries, entries):
                if (session, e.seq) in present:
                    continue
                record = e.record(header, carbon, previous)
                if since is None or record.measurement.started_at >= since:
                    cells.append(StoredCell(record, session, header.get("kernel_id"), header.get("hardware"), e.seq))
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(f"greenjupyter: cannot read the cell journal {fmt.printable(path)} ({error}); its cells are "
                  "left out", file=sys.stderr)
        finally:
            os.close(fd)
    return cells


def sessions_table(groups, scope: str = "") -> str:
    """Return the sessions (greenjupyter.history.sessions) as a table; the energy between cells where a
    group has ``idle_j`` (idle.add_to_sessions), else n/a (rows written before it was kept)."""
    if not groups:
        return f"greenjupyter history: no sessions{scope}"
    lines = [
        f"greenjupyter history: {len(groups)} session{'s' if len(groups) != 1 else ''}{scope}, newest first",
        (f"  {'started (UTC)':<16}  {'session':<{SESSION_SHOWN}}  {'cells':>5}  {'duration':>9}  {'energy':>9}  "
         f"{'between cells':>13}  {'CO2e':>9}  {'kind':<9}  notebook"),
    ]
    for g in groups:
        between = fmt.energy(g["idle_j"]) if "idle_j" in g else "n/a"
        lines.append(
            f"  {_utc(g['started_at'])}  {g['session'][:SESSION_SHOWN]:<{SESSION_SHOWN}}  {g['cells']:>5}  "
            f"{fmt.duration(g['duration_s']):>9}  {fmt.energy(g['energy_j']):>9}  {between:>13}  {fmt.co2e(g['co2e_g']):>9}  "
            f"{'estimated' if g['estimated'] else 'measured':<9}  {fmt.printable(g['notebook']) or '(outside a notebook)'}"
        )
    return "\n".join(lines)


def history_cells_table(cells, scope: str = "") -> str:
    if not cells:
        return f"greenjupyter history: no cells{scope}"
    lines = [
        f"greenjupyter history: {len(cells)} cell{'s' if len(cells) != 1 else ''}{scope}, oldest first",
        f"  {'started (UTC)':<16}  {'session':<{SESSION_SHOWN}}  {'#':>4}  {fmt.CELL_COLUMNS}",
    ]
    for c in cells:
        r = c.record
        count = "" if r.execution_count is None else r.execution_count
        lines.append(
            f"  {_utc(r.measurement.started_at)}  {c.session[:SESSION_SHOWN]:<{SESSION_SHOWN}}  {count:>4}  "
            f"{fmt.cell_columns(r)}"
        )
    return "\n".join(lines)


def _utc(moment) -> str:
    from datetime import timezone

    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return f"{moment:%Y-%m-%d %H:%M}"


# --- settings, paths, the parser -------------------------------------------------------------


def _settings(region: str | None = None, pue: str | None = None):
    """Return settings from the environment, with --region and --pue applied (refused with what is accepted)."""
    from .settings import load

    settings = load()
    for option, name, value in (("--region", "region", region), ("--pue", "pue", pue)):
        if value is not None:
            try:
                settings.set(name, value, f"command line {option}")
            except GreenJupyterError as error:
                raise UsageError(f"{option}: {error}") from None
    return settings


def _grid(settings):
    from .carbon import context

    try:
        grid = context.grid_for(settings)
    except GreenJupyterError:
        return None
    if grid.hint:  # the library's hint names %carbon config; here the option is the way
        grid = dataclasses.replace(grid, hint="pass --region R (a country such as FR, a US state such as US-CA, "
                                              "or a cloud region) or set GREENJUPYTER_REGION")
    return grid


def _check_writable(path: str, option: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{option} {path}: no such directory {directory}; accepted: a file in an existing directory")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path} is a directory; accepted: a file name")


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted; accepted: a whole number of seconds, 1 or more")
    return value


def _error(message: str) -> None:
    print(f"greenjupyter: error: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greenjupyter",
        description="Energy and CO2e of Jupyter notebooks: measure one headless, or read the history database.",
        epilog="Exit codes: 0 ok, 1 the notebook raised, 2 usage error, 3 the kernel died, "
               "130 / 143 stopped by SIGINT / SIGTERM.",
    )
    parser.add_argument("--db", metavar="PATH", default=None,
                        help="history database (default: the db_path setting, else greenjupyter/history.sqlite "
                             "in the Jupyter data directory)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                        help="history database (default: the db_path setting, else the default file)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("measure", parents=[common], help="run a notebook headless and measure every cell",
                            description="Run NOTEBOOK in a fresh kernel with greenjupyter loaded; print each "
                                        "cell's energy and CO2e and the totals.")
    p.add_argument("notebook", metavar="NOTEBOOK", help="the .ipynb file to run")
    p.add_argument("--region", metavar="R", help="grid region for CO2e: FR, US-CA, us-central1, aws:eu-west-3, ...")
    p.add_argument("--pue", metavar="X", help="facility PUE, 1.0 to 3.0")
    p.add_argument("--report", metavar="FILE", help="write a report: .html (a page with both figures), .md, .tex or .txt")
    p.add_argument("--output", metavar="FILE",
                   help="save the executed notebook, outputs included; written also when the run stops early "
                        "(a cell raised, timed out, the kernel died, a signal), with the outputs and counts of "
                        "the cells it did not reach cleared")
    p.add_argument("--kernel", metavar="NAME", help="kernel to run it in (default: the notebook's, else python3)")
    p.add_argument("--timeout", metavar="S", type=_seconds, help="stop a cell that runs longer than S seconds")
    p.add_argument("--allow-errors", action="store_true", help="run on past cells that raise, and exit 0")
    p.add_argument("--pushgateway", metavar="URL",
                   help="push the run's totals to this Prometheus Pushgateway (job=greenjupyter), e.g. "
                        "http://pushgateway:9091; a failed push is said and leaves the exit code as it is")
    p.set_defaults(handler=cmd_measure)

    def selection(p, session: bool = True):
        p.add_argument("--notebook", metavar="PATH", help="only this notebook's cells")
        p.add_argument("--since", metavar="SPAN", help="only cells from the last SPAN: 30m, 12h, 7d, 2w")
        if session:
            p.add_argument("--session", metavar="ID", help="only this kernel session (an id or its first characters)")

    p = commands.add_parser("history", parents=[common], help="past kernel sessions, newest first",
                            description="List past kernel sessions from the history database, newest first.")
    selection(p, session=False)
    p.add_argument("--cells", action="store_true", help="list the cells instead, oldest first")
    p.set_defaults(handler=cmd_history)

    p = commands.add_parser("report", parents=[common], help="a compute-and-emissions summary of stored cells",
                            description="Summarise stored cells for a paper: energy, CO2e, grid, method.")
    selection(p)
    p.add_argument("--format", choices=("markdown", "latex", "html", "text"),
                   help="default: from --output's extension, else text")
    p.add_argument("--output", metavar="FILE", help="write it to FILE instead of printing it (.html: a page with "
                                                    "both figures)")
    p.add_argument("--figures", metavar="DIR", help="also write the energy and power figures into DIR, as PDF and PNG")
    p.set_defaults(handler=cmd_report)

    p = commands.add_parser("export", parents=[common], help="stored cells to CSV (CodeCarbon's columns) or JSON",
                            description="Write stored cells to FILE: .csv (CodeCarbon's emissions.csv columns "
                                        "first) or .json (every field).")
    p.add_argument("file", metavar="FILE", help="a .csv or .json file to write")
    selection(p)
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("whatif", parents=[common], help="the stored cells' CO2e on other grids",
                            description="The energy of stored cells and its CO2e on the grid in force, the cleanest "
                                        "cloud regions, low- and high-carbon grids and the regions named "
                                        "(embedded annual averages).")
    selection(p)
    p.add_argument("--regions", metavar="R,R", help="more regions to compare, e.g. FR,us-central1,aws:eu-north-1")
    p.set_defaults(handler=cmd_whatif)

    p = commands.add_parser("sources", parents=[common], help="what is measured, what is estimated, and why",
                            description="Say what this machine measures and estimates, and how to fix what is missing.")
    p.set_defaults(handler=cmd_sources)
    return parser


def main(argv=None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, or argparse's own usage error (code 2)
        return exit.code if isinstance(exit.code, int) else USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        return args.handler(args)
    except (UsageError, GreenJupyterError) as error:
        _error(str(error))
        return USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return INTERRUPTED
    except BrokenPipeError:  # e.g. piped into head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK
