"""``%carbon`` and ``%%carbon``."""

from __future__ import annotations

import ast
import builtins
import keyword
import os
import unicodedata

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from IPython.utils.process import arg_split

from .. import format as fmt
from .. import idle, runtime
from ..carbon import regions, sci
from ..errors import ConfigError, GreenJupyterError
from ..history import sessions
from ..notices import notice
from ..settings import NEEDS_RELOAD
from .extension import current_recorder

ACTIONS = ("totals", "sources", "cells", "config", "history", "report", "export", "budget", "monitor", "help",
           "whatif", "forecast", "compare")
# %carbon help: every form, one line each.
HELP = (
    ("%load_ext greenjupyter", "measure every cell from now on, silently"),
    ("%%carbon [-q] [-o NAME]", "measure this cell and show the result under it (-o: keep it in NAME)"),
    ("%%carbon --region REGION", "this cell's CO2e on another grid (FR, US-CA, us-central1)"),
    ("%%carbon --per N [UNIT]", "this cell's carbon per functional unit (SCI), e.g. --per 1000 predictions"),
    ("%carbon", "totals for this kernel session: energy, CO2e, grid, equivalents"),
    ("%carbon sources", "what is measured, what is estimated, what is missing and how to fix it"),
    ("%carbon cells [-n N]", "the last N cells (default 20): #, duration, energy, avg/peak W, kind"),
    ("%carbon config [NAME=VALUE ...]", "the settings in force and where each came from, or change some"),
    ("%carbon history", "this notebook's past sessions, newest first"),
    ("%carbon report [--format F]", "a summary for a paper, and figures; F: markdown, latex, html, text; "
                                    "r = %carbon report keeps r.text, r.markdown, r.latex, r.html"),
    ("%carbon export FILE", "this session's cells as CSV (CodeCarbon's columns) or JSON"),
    ("%carbon budget AMOUNT [--stop]", "a notice when the session passes 50g CO2e or 2Wh; --stop stops cells; clear"),
    ("%carbon monitor", "live power as a widget, where the JupyterLab sidebar is not available"),
    ("%carbon whatif [--regions R,R]", "the session's CO2e on your grid, the cleanest cloud regions, low- and "
                                       "high-carbon grids and R; --notebook [PATH] or --since SPAN: stored cells"),
    ("%carbon forecast [--hours H]", "the lowest-carbon start in the next 48 h for an H-hour job (default 1), "
                                     "from the live provider's forecast"),
    ("%carbon compare [--metric M]", "tagged runs: energy, CO2e, time, metrics; energy against M with the Pareto "
                                     "front; --all or --notebook PATH: other notebooks' runs"),
    ("%carbon help", "this list; %carbon? for the details"),
)
# What each action takes after it; the others take nothing.
TAKES = {"config": "NAME=VALUE pairs", "export": "a file name (.csv or .json)", "budget": "an amount, or clear"}
# Options that only one action takes (line magic), with the action; and the cell magic's own.
ACTION_OPTIONS = {"stop": ("--stop", "budget"), "format": ("--format", "report"), "last": ("-n", "cells"),
                  "regions": ("--regions", "whatif"), "notebook": ("--notebook", "whatif or compare"),
                  "since": ("--since", "whatif"), "hours": ("--hours", "forecast"),
                  "metric": ("--metric", "compare"), "all": ("--all", "compare"),
                  "lower_is_better": ("--lower-is-better", "compare"), "higher_is_better": ("--higher-is-better", "compare")}
CELL_OPTIONS = {"quiet": "-q", "output": "-o", "region": "--region", "per": "--per"}
# Names IPython itself needs in the user's namespace (besides those starting with _ and builtins).
IPYTHON_NAMES = ("In", "Out", "get_ipython", "exit", "quit")


@magics_class
class CarbonMagics(Magics):
    @magic_arguments()
    @argument(
        "action",
        nargs="?",
        default="totals",
        help="line magic only: help (every form, one line each), totals (default) for this session, sources (what is measured, "
        "estimated or missing, and how to fix it), cells (a table of recent cells), config (settings), "
        "history (this notebook's past sessions), report (summary and figures), export FILE, budget AMOUNT, "
        "monitor (live power as a widget), whatif (CO2e on other grids), forecast (the cleanest start)",
    )
    @argument("words", nargs="*", metavar="ARG", help="config: NAME=VALUE ...; export: FILE; budget: 50g, 2Wh or clear")
    @argument("--format", help="with report: markdown (default), latex, html or text")
    @argument("--stop", action="store_true", help="with budget: stop running cells once it is passed")
    @argument("-q", "--quiet", action="store_true", help="cell magic: measure without showing the result")
    @argument("-o", "--output", metavar="NAME", help="cell magic: store the Measurement in the variable NAME "
              "(not one starting with _, a builtin, or In, Out, get_ipython, exit, quit)")
    @argument("-n", "--last", type=int, metavar="N", help="with cells: show the last N cells (default 20)")
    @argument("--region", metavar="REGION", help="cell magic: work out CO2e for this region instead (FR, US-CA, us-central1)")
    @argument("--regions", metavar="R,R", help="with whatif: more regions to compare, e.g. FR,us-central1,aws:eu-north-1")
    @argument("--notebook", nargs="?", const="", metavar="PATH",
              help="with whatif or compare: the stored cells of the notebook PATH (alone: of this notebook)")
    @argument("--since", metavar="SPAN", help="with whatif: the stored cells of the last SPAN (30m, 12h, 7d, 2w)")
    @argument("--hours", metavar="H", help="with forecast: the job's length in hours, above 0 up to 48 (default 1)")
    @argument("--per", nargs="+", metavar="N [UNIT]", help="cell magic: carbon per functional unit (SCI) for N "
              "units, e.g. --per 1000 predictions (or \"1e3 rows\")")
    @argument("--metric", metavar="NAME", help="with compare: the metric plotted against energy (default: the first logged)")
    @argument("--all", action="store_true", help="with compare: the runs of every notebook in the history")
    @argument("--lower-is-better", action="store_true", help="with compare: the metric is better when lower "
              "(default: when its name contains loss, error, rmse, mse, mae or perplexity)")
    @argument("--higher-is-better", action="store_true", help="with compare: the metric is better when higher")
    @line_cell_magic
    def carbon(self, line: str, cell: str | None = None):
        """Energy of this notebook's cells.

        %%carbon [-q] [-o NAME]   measure this cell and show the result under it
        %carbon                   totals for this kernel session
        %carbon sources           what is measured, what is estimated, what is missing
        %carbon cells [-n N]      the recent cells: #, duration, energy, avg/peak W, kind
        %carbon config [NAME=VALUE ...]   every setting and where it came from, or change some
        %carbon history           this notebook's past sessions, newest first
        %carbon report [--format markdown|latex|html|text]   a summary for a paper, and figures;
                                  r = %carbon report keeps it: r.text, r.markdown, r.latex, r.html
        %carbon export FILE       this session's cells as CSV (CodeCarbon's columns) or JSON
        %carbon budget 50g [--stop]   a notice when the session passes 50 g CO2e (or 2Wh ...);
                                  --stop also stops further cells; %carbon budget clear removes it
        %carbon monitor           live power and totals as a widget (VS Code, Colab, no sidebar)
        %carbon help              every form of %carbon and %%carbon, one line each
        %carbon whatif [--regions FR,us-central1] [--notebook [PATH]] [--since 7d]
                                  this session's (or the stored cells') CO2e on other grids
        %carbon forecast [--hours 4]   the lowest-carbon start in the next 48 h for a 4-hour job,
                                  from the live provider's forecast (live_intensity)
        %%carbon --region REGION  this cell's CO2e on another grid (a country, US state, cloud region);
                                  the cell's record keeps the session's grid
        %%carbon --per 1000 predictions   this cell's SCI: gCO2e per unit = (E·I + M) / R
        %carbon compare [--metric accuracy] [--all | --notebook PATH] [--lower-is-better | --higher-is-better]
                                  runs named with greenjupyter.tag(): energy, CO2e, time and the metrics
                                  given to greenjupyter.log(), and energy against one metric, Pareto front marked

        Every cell is measured once the extension is loaded; %%carbon adds a result under the cell.
        Quote a value with spaces: %carbon export "my cells.csv". An option given where it does
        nothing (-q, -o, --region on a line; --stop, --format, -n with another action) is refused.
        """
        args = self._parse(line)
        recorder = current_recorder()
        if recorder is None:
            raise UsageError("greenjupyter is not loaded: run %load_ext greenjupyter")
        if cell is not None:
            if args.action != "totals":
                raise UsageError(f"%%carbon takes options only, not {fmt.short_repr(args.action)}; use it on its own line")
            self._refuse_action_options(args, "%%carbon")
            if args.output is not None:
                args.output = self._check_name(args.output)
            if args.region is not None:
                self._check_region(args.region)
            if args.per is not None:
                args.per = self._check_per(args.per)
            return self._measure_cell(cell, recorder, args)
        self._check_line_args(args)
        if args.action == "config":
            self._config(args.words)
        elif args.action == "report":
            return self._report(recorder, args.format or "markdown")
        elif args.action == "help":
            display(fmt.Text(help_text()))
        elif args.action == "export":
            self._export(recorder, args.words)
        elif args.action == "budget":
            self._budget(recorder, args.words, args.stop)
        elif args.action == "monitor":
            self._monitor(recorder)
        elif args.action == "history":
            self._history(recorder)
        elif args.action == "whatif":
            self._whatif(recorder, args)
        elif args.action == "forecast":
            self._forecast(args.hours)
        elif args.action == "compare":
            return self._compare(recorder, args)
        elif args.action == "sources":
            recorder.meter.wait_ready()
            display(fmt.Text(str(recorder.meter.detection)))
        elif args.action == "cells":
            display(fmt.Text(fmt.cells_text(list(recorder.records)[-(args.last or 20):])))
        else:
            totals = idle.session_totals(recorder)  # between cells up to this cell's start
            display(fmt.Text(fmt.totals_text(totals, runtime.current_grid(), runtime.get_settings().units)))

    def _parse(self, line: str):
        """Return the parsed arguments; a quote without its pair is a UsageError, as any bad argument."""
        try:
            # Quotes are taken off as a POSIX shell does: export "my cells.csv" is one name.
            words = arg_split(line, posix=os.name == "posix")
        except ValueError as error:  # shlex: "No closing quotation", "No escaped character"
            raise UsageError(f"cannot read the arguments {fmt.short_repr(line)}: {error}; "
                             "quote a value with spaces in a matching pair of ' or \"") from None
        # Intermixed, so that options may come before or after the words: budget --stop 50g.
        return self.carbon.parser.parse_intermixed_args(words)

    def _check_line_args(self, args) -> None:
        """Refuse what %carbon ACTION would otherwise ignore, naming where it applies."""
        if args.action not in ACTIONS:
            raise UsageError(f"unknown action {fmt.short_repr(args.action)}; accepted: {', '.join(ACTIONS)}")
        for name, option in CELL_OPTIONS.items():
            if getattr(args, name) not in (None, False):
                raise UsageError(f"{option} applies only to the cell magic (%%carbon {option} ... on a cell's "
                                 f"first line), not to %carbon {args.action}")
        self._refuse_action_options(args, f"%carbon {args.action}", args.action)
        if args.last is not None and args.last < 1:
            raise UsageError(f"-n {args.last} must be a positive number of cells")
        if args.words and args.action not in TAKES:
            raise UsageError(f"unexpected {fmt.short_repr(' '.join(args.words))}: %carbon {args.action} takes nothing more")
        if args.stop and not args.words:
            raise UsageError("--stop needs an amount: %carbon budget 50g --stop")
        if args.stop and args.words == ["clear"]:
            raise UsageError("--stop goes with an amount, not with clear: %carbon budget 50g --stop")

    def _refuse_action_options(self, args, where: str, action: str | None = None) -> None:
        for name, (option, wanted) in ACTION_OPTIONS.items():
            if getattr(args, name) not in (None, False) and action not in wanted.split(" or "):
                raise UsageError(f"{option} applies only to %carbon {wanted}, not to {where}")

    def _check_name(self, name: str) -> str:
        """Return the variable name -o may set, or raise UsageError if it would break the shell."""
        given, name = name, unicodedata.normalize("NFKC", name)  # as Python reads it: ｐｒｉｎｔ is print
        shown = fmt.short_repr(given) + (f" (read by Python as {name!r})" if name != given else "")
        if not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"-o {shown} is not a valid variable name")
        if (name.startswith("_") or name in IPYTHON_NAMES or hasattr(builtins, name)
                or name in self.shell.user_ns_hidden):
            raise UsageError(
                f"-o {shown} would hide a name that Python or IPython needs; accepted: a variable name that "
                f"does not start with _ and is not a builtin or one of {', '.join(IPYTHON_NAMES)}, e.g. -o m"
            )
        return name

    def _report(self, recorder, form: str):
        """Show the summary in ``form`` and the figures; return the Report unless IPython would show it again."""
        from .. import report

        records = list(recorder.records)
        recorder.meter.wait_ready()
        args = (records, recorder.meter.detection, runtime.current_grid(), runtime.get_settings())
        try:
            # The form asked for first: an unknown one is refused with what is accepted.
            forms = {f: report.summary(*args, f) for f in dict.fromkeys((form, *REPORT_FORMS))}
        except ConfigError as error:
            raise UsageError(str(error)) from None
        if form == "html":  # the report page, both figures embedded, as greenjupyter report writes it
            forms["html"] = report.page(records, list(recorder.meter.sampler.samples), None, *args[1:], standalone=False)
        result = Report(form=form, **forms)
        display(result)
        if records and form != "html":
            self._figures(recorder, records)
        # As the cell's last expression IPython would display the returned Report a second time.
        return None if self._is_last_expression(recorder) else result

    def _figures(self, recorder, records) -> None:
        from .. import report

        if "image/png" not in self.shell.display_formatter.active_types:  # terminal IPython shows text only
            print("greenjupyter: the energy and power figures need a frontend that shows images (JupyterLab, Notebook)")
            return
        try:
            display(report.energy_figure(records))
            display(report.power_figure(list(recorder.meter.sampler.samples), records))
        except GreenJupyterError as error:  # matplotlib is optional
            print(f"greenjupyter: no figures ({error})")

    def _is_last_expression(self, recorder) -> bool:
        """Return True when the running cell ends with a %carbon line magic as an expression."""
        running = getattr(recorder, "_open", None)  # the extension's [window, ExecutionInfo, ...] per running cell
        raw = getattr(running[-1][1], "raw_cell", None) if running else None
        try:
            body = ast.parse(self.shell.transform_cell(raw)).body if raw else []
        except SyntaxError:
            return False
        last = body[-1].value if body and isinstance(body[-1], ast.Expr) else None
        return (isinstance(last, ast.Call) and isinstance(last.func, ast.Attribute)
                and last.func.attr == "run_line_magic" and bool(last.args)
                and isinstance(last.args[0], ast.Constant) and last.args[0].value == "carbon")

    def _export(self, recorder, words: list[str]) -> None:
        from .. import export

        if len(words) != 1:
            raise UsageError("%carbon export takes one file name, e.g. %carbon export emissions.csv (or .json); "
                             "quote a name with spaces")
        try:
            export.export(list(recorder.records), words[0])
        except (ConfigError, OSError) as error:
            raise UsageError(str(error)) from None
        print(f"greenjupyter: {len(recorder.records)} cells written to {words[0]}")

    def _budget(self, recorder, words: list[str], stop: bool) -> None:
        budget = recorder.budget
        if words == ["clear"]:
            budget.clear()
        elif words:
            try:
                budget.set(" ".join(words), stop)
            except ConfigError as error:
                raise UsageError(str(error)) from None
            budget.check()
        display(fmt.Text(budget.describe()))

    def _monitor(self, recorder) -> None:
        from .monitor import Monitor

        if recorder.monitor is None:
            try:
                recorder.monitor = Monitor(recorder)
            except GreenJupyterError as error:
                raise UsageError(str(error)) from None
            recorder.monitor.start()
        display(recorder.monitor.widget)

    def _history(self, recorder) -> None:
        if recorder.store is None:
            raise UsageError("no history database in use: db_path is 'off' or could not be opened (see above)")
        recorder.finish()
        try:
            cells = recorder.store.cells(notebook=recorder.notebook)
        except GreenJupyterError as error:  # the file was replaced by one that cannot be read
            raise UsageError(str(error)) from None
        display(fmt.Text(fmt.sessions_text(idle.add_to_sessions(sessions(cells), cells), recorder.notebook)))

    def _whatif(self, recorder, args) -> None:
        from ..carbon.whatif import whatif

        notebook = args.notebook
        if notebook == "":  # --notebook alone: this notebook's stored cells
            if recorder.notebook is None:
                raise UsageError("--notebook alone means this notebook's cells, and this kernel runs outside a "
                                 "notebook (JPY_SESSION_NAME is not set); give --notebook PATH")
            notebook = recorder.notebook
        try:
            display(whatif(regions=args.regions, notebook=notebook, since=args.since))
        except GreenJupyterError as error:
            raise UsageError(str(error)) from None

    def _forecast(self, hours) -> None:
        """Show the cleanest start; when there is none (offline, failed, still fetching) say why, and the cell goes on."""
        from ..carbon import forecast

        try:
            hours = forecast.parse_hours("1" if hours is None else hours)
        except ConfigError as error:
            raise UsageError(str(error)) from None
        try:
            best = forecast.best_start(hours, runtime.get_settings(), runtime.current_grid())
        except forecast.NoForecast as why:
            display(fmt.Text(f"greenjupyter forecast: {why}"))
            return
        display(fmt.Text(best.text()))

    def _check_region(self, region: str) -> None:
        try:
            regions.lookup(region)
        except ConfigError as error:
            raise UsageError(str(error)) from None

    def _check_per(self, words: list[str]) -> tuple[float, str | None]:
        """Return (units, what one unit is) from --per's words (1000 predictions, "1e3 rows"), or raise UsageError."""
        try:
            return sci.parse_units(" ".join(words), "--per")
        except ConfigError as error:
            raise UsageError(str(error)) from None

    def _compare(self, recorder, args):
        """Show the tagged runs of this notebook (or --notebook's, or --all) as a table and a scatter."""
        from .. import compare
        from ..store import ANY

        if args.all and args.notebook is not None:
            raise UsageError("--all and --notebook cannot go together: --all already compares every notebook's runs")
        if args.lower_is_better and args.higher_is_better:
            raise UsageError("--lower-is-better and --higher-is-better cannot go together; give one, or neither "
                             "to follow the metric's name")
        notebook = args.notebook or recorder.notebook  # --notebook alone: this notebook
        where = "every notebook" if args.all else f"notebook {notebook}" if notebook else "cells run outside a notebook"
        if recorder.store is None:
            records, where = list(recorder.records), "this session (no history database)"
        else:
            try:
                records = [c.record for c in recorder.store.cells(notebook=ANY if args.all else notebook)]
            except GreenJupyterError as error:  # the file was replaced by one that cannot be read
                raise UsageError(str(error)) from None
        lower = True if args.lower_is_better else False if args.higher_is_better else None
        try:
            result = compare.compare(records, args.metric, lower, where)
        except ConfigError as error:
            raise UsageError(str(error)) from None
        display(result)
        if result.front:  # a metric was logged: the scatter
            if "image/png" not in self.shell.display_formatter.active_types:
                print("greenjupyter: the scatter needs a frontend that shows images (JupyterLab, Notebook); "
                      "r = %carbon compare, then r.figure().savefig('runs.png')")
            else:
                try:
                    display(result.figure())
                except GreenJupyterError as error:  # matplotlib is optional
                    print(f"greenjupyter: no figure ({error})")
        return None if self._is_last_expression(recorder) else result

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
        store = current_recorder().store
        db_path = os.path.realpath(store.path) if store is not None else None
        display(fmt.Text(fmt.config_text(described, runtime.current_grid(), db_path)))

    def _measure_cell(self, cell: str, recorder, args):
        """Run ``cell`` like a cell (its last expression becomes the output), measured.

        The cell's record (badge, sidebar, history, totals) takes this very Measurement, so the
        output and the record show one figure. With ``--region`` only the CO2e shown under the
        cell (and stored by ``-o``) is on that grid; the record keeps the session's grid, so
        the session's totals stay on one grid.
        """
        shell, meter = self.shell, recorder.meter
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
            self._show(meter, window, recorder, args)

    def _show(self, meter, window, recorder, args) -> None:
        if recorder.pid != os.getpid():  # a forked child: the meter is the parent's, maybe locked
            return
        try:
            stop = meter.snapshot()
            energy = meter.measurement(window, stop)
            measurement = runtime.with_carbon(energy)
            if recorder.use_for_this_cell(measurement, window, stop) and args.per is not None:
                recorder.attach(units=args.per[0], unit_name=args.per[1])
            if args.region is not None:
                measurement = runtime.with_carbon(energy, args.region)
            per_unit = None if args.per is None or measurement.co2e_g is None else sci.for_units(measurement, *args.per)
        except Exception as error:  # the cell has run; its result or error must come through
            notice("carbon-cell", f"could not finish measuring a %%carbon cell ({error!r}); cells are not affected")
            return
        if args.output:
            self.shell.user_ns[args.output] = measurement
        if args.quiet:
            return
        if per_unit is None:
            display(measurement)
        else:  # the Measurement with its SCI line under it
            display({"text/plain": fmt.measurement_text(measurement, per_unit),
                     "text/html": fmt.measurement_html(measurement, per_unit)}, raw=True)


REPORT_FORMS = ("text", "markdown", "latex", "html")
_MIME = {"markdown": "text/markdown", "latex": "text/latex", "html": "text/html"}


class Report:
    """The summary ``%carbon report`` shows, in every form: ``.text``, ``.markdown``, ``.latex``, ``.html``.

    Shown in the form asked for (``--format``), with the text beside it for frontends that show
    only text (terminal IPython); ``str(report)`` is the text.
    """

    def __init__(self, text: str, markdown: str, latex: str, html: str, form: str = "markdown"):
        self.text, self.markdown, self.latex, self.html, self.form = text, markdown, latex, html, form

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        bundle = {"text/plain": self.text}
        if self.form in _MIME:
            bundle[_MIME[self.form]] = getattr(self, self.form)
        return bundle

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<greenjupyter Report ({self.form}); .text .markdown .latex .html>"


def help_text() -> str:
    """Return every form of %carbon and %%carbon with one line each."""
    width = max(len(usage) for usage, _ in HELP)
    return "greenjupyter magics\n" + "\n".join(f"  {usage:<{width}}  {what}" for usage, what in HELP)
