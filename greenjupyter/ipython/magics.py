"""``%carbon`` and ``%%carbon``."""

from __future__ import annotations

import ast

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from .. import format as fmt
from .. import runtime
from ..carbon import regions
from ..errors import ConfigError
from ..history import sessions
from ..settings import NEEDS_RELOAD
from .extension import current_recorder

ACTIONS = ("totals", "sources", "cells", "config", "history")


@magics_class
class CarbonMagics(Magics):
    @magic_arguments()
    @argument(
        "action",
        nargs="?",
        default="totals",
        help="line magic only: totals (default) for this session, sources (what is measured, "
        "estimated or missing, and how to fix it), cells (a table of recent cells), config (settings), "
        "history (this notebook's past sessions)",
    )
    @argument("assignments", nargs="*", metavar="NAME=VALUE", help="with config: settings to change")
    @argument("-q", "--quiet", action="store_true", help="cell magic: measure without showing the result")
    @argument("-o", "--output", metavar="NAME", help="cell magic: store the Measurement in the variable NAME")
    @argument("-n", "--last", type=int, default=20, metavar="N", help="with cells: show the last N cells (default 20)")
    @argument("--region", metavar="REGION", help="cell magic: work out CO2e for this region instead (FR, US-CA, us-central1)")
    @line_cell_magic
    def carbon(self, line: str, cell: str | None = None):
        """Energy of this notebook's cells.

        %%carbon [-q] [-o NAME]   measure this cell and show the result under it
        %carbon                   totals for this kernel session
        %carbon sources           what is measured, what is estimated, what is missing
        %carbon cells [-n N]      the recent cells: #, duration, energy, avg/peak W, kind
        %carbon config [NAME=VALUE ...]   every setting and where it came from, or change some
        %carbon history           this notebook's past sessions, newest first
        %%carbon --region REGION  this cell's CO2e on another grid (a country, US state, cloud region)

        Every cell is measured once the extension is loaded; %%carbon adds a result under the cell.
        """
        args = parse_argstring(self.carbon, line)
        recorder = current_recorder()
        if recorder is None:
            raise UsageError("greenjupyter is not loaded: run %load_ext greenjupyter")
        if cell is not None:
            if args.action != "totals":
                raise UsageError(f"%%carbon takes options only, not {args.action!r}; use it on its own line")
            if args.output is not None and not args.output.isidentifier():
                raise UsageError(f"-o {args.output!r} is not a valid variable name")
            if args.region is not None:
                self._check_region(args.region)
            return self._measure_cell(cell, recorder.meter, args)
        if args.action not in ACTIONS:
            raise UsageError(f"unknown action {args.action!r}; accepted: {', '.join(ACTIONS)}")
        if args.last < 1:
            raise UsageError(f"-n {args.last} must be a positive number of cells")
        if args.action != "config" and args.assignments:
            raise UsageError(f"unexpected {' '.join(args.assignments)!r}; only %carbon config takes NAME=VALUE")
        if args.action == "config":
            self._config(args.assignments)
        elif args.action == "history":
            self._history(recorder)
        elif args.action == "sources":
            recorder.meter.wait_ready()
            display(fmt.Text(str(recorder.meter.detection)))
        elif args.action == "cells":
            display(fmt.Text(fmt.cells_text(list(recorder.records)[-args.last:])))
        else:
            display(fmt.Text(fmt.totals_text(recorder.totals, runtime.current_grid(), runtime.get_settings().units)))

    def _history(self, recorder) -> None:
        if recorder.store is None:
            raise UsageError("no history database in use: db_path is 'off' or could not be opened (see above)")
        recorder.finish()
        cells = recorder.store.cells(notebook=recorder.notebook)
        display(fmt.Text(fmt.sessions_text(sessions(cells), recorder.notebook)))

    def _check_region(self, region: str) -> None:
        try:
            regions.lookup(region)
        except ConfigError as error:
            raise UsageError(str(error)) from None

    def _config(self, assignments: list[str]) -> None:
        """Show every setting with its origin, or apply NAME=VALUE pairs (a bad one changes nothing after it)."""
        settings = runtime.get_settings()
        for assignment in assignments:
            name, sep, value = assignment.partition("=")
            if not sep:
                raise UsageError(f"{assignment!r} is not NAME=VALUE, e.g. %carbon config region=FR pue=1.1")
            try:
                settings.set(name.strip(), value, "%carbon config")
            except ConfigError as error:
                raise UsageError(str(error)) from None
            if name.strip() == "sample_interval_s":
                current_recorder().meter.sampler.interval_s = settings.sample_interval_s
            elif name.strip() in NEEDS_RELOAD:
                print(f"{name.strip()} applies from the next %reload_ext greenjupyter")
        changed = {a.partition("=")[0].strip() for a in assignments}
        described = [row for row in settings.describe() if not changed or row[0] in changed]
        display(fmt.Text(fmt.config_text(described, runtime.current_grid())))

    def _measure_cell(self, cell: str, meter, args):
        """Run ``cell`` like a cell (its last expression becomes the output), measured."""
        shell = self.shell
        source = shell.transform_cell(cell)
        tree = shell.transform_ast(shell.compile.ast_parse(source))
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        filename = shell.compile.cache(source)
        body = shell.compile(tree, filename, "exec")
        tail = shell.compile(last, filename, "eval") if last is not None else None
        window = meter.begin()
        try:
            exec(body, shell.user_global_ns, shell.user_ns)
            return eval(tail, shell.user_global_ns, shell.user_ns) if tail is not None else None
        finally:
            measurement = runtime.with_carbon(meter.end(window), args.region)
            if args.output:
                shell.user_ns[args.output] = measurement
            if not args.quiet:
                display(measurement)
