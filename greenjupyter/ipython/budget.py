"""``%carbon budget``: a notice when the session passes a CO2e or energy figure, optionally stopping cells."""

from __future__ import annotations

import ast
import math
import re
import sys

from ..errors import ConfigError, GreenJupyterError
from .. import format as fmt

# A number (anything float() may read, checked after) then a unit.
_AMOUNT = re.compile(r"^\s*(\S+?)\s*(mg|g|kg|t|j|kj|mj|wh|kwh|mwh)\s*$", re.IGNORECASE)
_ACCEPTED = "an amount of CO2e (mg, g, kg, t) or of energy (J, kJ, MJ, Wh, kWh, MWh) above 0, e.g. 50g or 2Wh"
# unit -> (what is limited, factor to grams or joules)
_UNITS = {
    "mg": ("co2e_g", 1e-3), "g": ("co2e_g", 1.0), "kg": ("co2e_g", 1e3), "t": ("co2e_g", 1e6),
    "j": ("energy_j", 1.0), "kj": ("energy_j", 1e3), "mj": ("energy_j", 1e6),
    "wh": ("energy_j", 3600.0), "kwh": ("energy_j", 3.6e6), "mwh": ("energy_j", 3.6e9),
}


class BudgetExceeded(GreenJupyterError):
    """Raised instead of running a cell once a budget set with --stop has been passed."""


def parse_amount(text: str) -> tuple[str, float]:
    """Return ('co2e_g', grams) or ('energy_j', joules) from text like '50g', '0.5 kg', '2Wh', '1.5kWh'."""
    match = _AMOUNT.match(text)
    try:
        number = float(match.group(1)) if match else None
    except ValueError:
        number = None
    if number is None:
        raise ConfigError(f"budget {text!r} is not understood; accepted: {_ACCEPTED}")
    what, factor = _UNITS[match.group(2).lower()]
    amount = number * factor
    if not math.isfinite(amount) or amount <= 0:  # NaN would never be passed; inf never reached
        reason = "not a finite number" if not math.isfinite(amount) else "not above 0"
        raise ConfigError(f"budget {text!r} is refused ({reason}; accepted: {_ACCEPTED})")
    return what, amount


class Budget:
    """Watch the session's totals against one limit; say so once when passed; stop cells if asked."""

    def __init__(self, shell, recorder):
        self.shell = shell
        self.recorder = recorder
        self.what = self.limit = None
        self.stop = self.passed = False
        self._guard = _StopCells(self)

    def set(self, amount: str, stop: bool) -> None:
        self.what, self.limit = parse_amount(amount)
        self.stop, self.passed = stop, False
        if self.check not in self.recorder.listeners:
            self.recorder.listeners.append(self.check)

    def clear(self) -> None:
        self.what = self.limit = None
        self.stop = self.passed = False
        if self.check in self.recorder.listeners:
            self.recorder.listeners.remove(self.check)
        if self._guard in self.shell.ast_transformers:
            self.shell.ast_transformers.remove(self._guard)

    def describe(self) -> str:
        if self.limit is None:
            return "greenjupyter budget: none set (e.g. %carbon budget 50g, or --stop 2Wh to stop cells past it)"
        used = self._used()
        state = "passed" if self.passed else "within"
        return (f"greenjupyter budget: {self._show(used)} of {self._show(self.limit)} used ({state})"
                + ("; cells stop once it is passed" if self.stop else ""))

    def check(self, record=None) -> None:
        """Called with each finished cell: say once when the limit is passed."""
        if self.limit is None or self.passed or self._used() < self.limit:
            return
        self.passed = True
        costly = sorted(self.recorder._records, key=lambda r: self._of(r), reverse=True)[:3]
        lines = [f"greenjupyter: this session passed its budget of {self._show(self.limit)} "
                 f"({self._show(self._used())} so far). Costliest cells:"]
        lines += [f"  [{r.execution_count}] {self._show(self._of(r))}  {fmt.printable(r.source_preview)}" for r in costly]
        if self.stop:
            lines.append("Further cells will not run: %carbon budget clear, or set a higher one, to go on.")
            if self._guard not in self.shell.ast_transformers:
                self.shell.ast_transformers.append(self._guard)
        print("\n".join(lines), file=sys.stderr)

    def _used(self) -> float:
        return getattr(self.recorder._totals, self.what)

    def _of(self, record) -> float:
        return getattr(record.measurement, self.what) or 0.0

    def _show(self, amount: float) -> str:
        return f"{fmt.co2e(amount)} CO2e" if self.what == "co2e_g" else fmt.energy(amount)


class _StopCells(ast.NodeTransformer):
    """Replace a cell's code with a BudgetExceeded error, except a %carbon magic (to clear the budget)."""

    def __init__(self, budget: Budget):
        self.budget = budget

    def visit_Module(self, node: ast.Module) -> ast.Module:
        if _only_carbon_magic(node):
            return node
        message = f"budget of {self.budget._show(self.budget.limit)} passed; %carbon budget clear to run cells again"
        raising = ast.parse(
            f"from greenjupyter.ipython.budget import BudgetExceeded\nraise BudgetExceeded({message!r})"
        )
        return ast.copy_location(raising, node)


def _only_carbon_magic(node: ast.Module) -> bool:
    """True for a cell that is just `%carbon ...` (IPython turns it into a run_line_magic call)."""
    if len(node.body) != 1 or not isinstance(node.body[0], ast.Expr):
        return False
    call = node.body[0].value
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "run_line_magic"
        and bool(call.args)
        and isinstance(call.args[0], ast.Constant)
        and call.args[0].value == "carbon"
    )
