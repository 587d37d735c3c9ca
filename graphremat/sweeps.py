"""Budget sweeps: graphremat's plans over a range of budgets, with PyTorch's
``activation_memory_budget`` knob on the same axes.

Input: a model whose ``forward(*inputs)`` returns the loss, and budgets. Output: a :class:`Sweep`
(plain data: one :class:`SweepPoint` per budget and method) that renders as a markdown table, as
HTML in Jupyter, as JSON, and as a budget-vs-overhead plot (:func:`graphremat.plot.plot_sweep`).

Recompute work is compared in one unit: the roofline estimate (``recompute_cost_ns``) of the
recomputed ops, counting FLOPs and bytes moved, so memory-bound recomputation (which PyTorch's
partitioner favours) is not free. ``overhead`` = recompute cost / estimated cost of the step.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .budget import format_bytes

METHODS = ("graphremat", "pytorch")


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One plan of a sweep.

    ``method``: "graphremat" or "pytorch". ``knob``: the requested budget as a fraction of the
    unconstrained peak (graphremat; ``math.nan`` for a byte budget) or PyTorch's
    ``activation_memory_budget``. ``peak_bytes``: predicted (graphremat) or measured
    (``measured_peak_bytes``, when the sweep measured) peak. ``status``: the solver status, or
    "infeasible" / "failed" with ``error`` saying why.
    """

    method: str
    knob: float
    budget_bytes: int
    predicted_peak_bytes: int
    measured_peak_bytes: int
    recompute_flops: int
    recompute_cost_ns: int
    overhead: float
    status: str
    error: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {METHODS}")

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def peak_bytes(self) -> int:
        """The measured peak where measured, else the predicted one (0 when none)."""
        return self.measured_peak_bytes or self.predicted_peak_bytes


@dataclass(frozen=True, slots=True)
class Sweep:
    """A budget sweep on one model (see the module docstring)."""

    points: tuple[SweepPoint, ...]
    unconstrained_peak_bytes: int
    min_feasible_bytes: int
    step_cost_ns: int
    model: str = ""
    plans: tuple = field(default=(), repr=False, compare=False)  # graphremat Plans, in order

    def of(self, method: str) -> tuple[SweepPoint, ...]:
        return tuple(p for p in self.points if p.method == method)

    def table(self) -> str:
        """Markdown table, one row per point."""
        head = (
            "| method | knob | budget | predicted peak | measured peak | recompute FLOPs "
            "| recompute est. | overhead | status |\n|---|---|---|---|---|---|---|---|---|"
        )
        rows = [head]
        for p in self.points:
            rows.append(
                f"| {p.method} | {_knob(p.knob)} | {_b(p.budget_bytes)} | "
                f"{_b(p.predicted_peak_bytes)} | {_b(p.measured_peak_bytes)} | "
                f"{p.recompute_flops:,} | {p.recompute_cost_ns / 1e6:.3f} ms | "
                f"{p.overhead:.1%} | {p.status}{': ' + p.error if p.error else ''} |"
            )
        return "\n".join(rows)

    def __str__(self) -> str:
        return (
            f"sweep of {self.model or 'model'}: unconstrained peak "
            f"{format_bytes(self.unconstrained_peak_bytes)}, minimum "
            f"{format_bytes(self.min_feasible_bytes)}\n" + self.table()
        )

    def _repr_html_(self) -> str:
        import html

        return "<pre>" + html.escape(str(self)) + "</pre>"

    def to_json(self, indent: int | None = 1) -> str:
        data = {
            "format": "graphremat.sweep",
            "version": 1,
            "model": self.model,
            "unconstrained_peak_bytes": self.unconstrained_peak_bytes,
            "min_feasible_bytes": self.min_feasible_bytes,
            "step_cost_ns": self.step_cost_ns,
            "points": [{k: _jsonable(v) for k, v in asdict(p).items()} for p in self.points],
        }
        return json.dumps(data, indent=indent, allow_nan=False)

    def plot(self, ax=None, **kwargs):
        """Budget vs recompute overhead (see :func:`graphremat.plot.plot_sweep`)."""
        from .plot import plot_sweep

        return plot_sweep(self, ax=ax, **kwargs)


def _jsonable(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _b(n: int) -> str:
    return format_bytes(n) if n else "-"


def _knob(k: float) -> str:
    return "bytes" if math.isnan(k) else f"{k:g}"


def sweep(
    model,
    *inputs,
    budgets: Sequence[float | int | str] = (1.0, 0.8, 0.6, 0.5, "min"),
    pytorch_budgets: Sequence[float] = (),
    measure: bool = False,
    progress: bool = False,
    name: str = "",
    **options,
) -> Sweep:
    """Plan ``model`` (``forward(*inputs)`` returns the loss) at each budget in ``budgets``
    (fractions, bytes, strings like "1.5GiB", or "min" for the smallest feasible budget) and,
    for each value in ``pytorch_budgets``, run PyTorch's min-cut partitioner with that
    ``torch._functorch.config.activation_memory_budget``.

    ``measure=True`` also runs one training step per point on a copy of the model and records
    the measured peak (:func:`graphremat.measure_peak_memory`); PyTorch points are always
    measured (PyTorch predicts nothing). ``options`` go to :func:`graphremat.plan` (solver,
    time_limit_s, codegen, ...). Infeasible budgets become points with status "infeasible".
    """
    from .api import plan as make_plan
    from .budget import parse_budget
    from .errors import BudgetError, GraphRematError, InfeasibleBudget

    options.setdefault("codegen", "eager")
    if isinstance(budgets, (str, bytes, int, float)) or isinstance(
        pytorch_budgets, (str, bytes, int, float)
    ):
        raise BudgetError(
            "budgets and pytorch_budgets are lists, e.g. budgets=[1.0, 0.7, 0.5, 'min'], "
            "pytorch_budgets=[0.9, 0.5, 0.1]"
        )
    for k in pytorch_budgets:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 <= k <= 1:
            raise BudgetError(
                f"pytorch_budgets item {k!r}: PyTorch's activation_memory_budget is a number "
                "in [0, 1]"
            )
    for b in budgets:  # a typo fails now, not after the first solves
        if b != "min":
            parse_budget(b)
    points: list[SweepPoint] = []
    plans = []
    bar = _progress(1 + len(budgets) + len(pytorch_budgets), progress)
    bar.set_description("graphremat unconstrained plan")
    base = make_plan(model, *inputs, budget=1.0, **options)
    bar.update()
    unconstrained = base.unconstrained_peak_bytes
    try:
        for b in budgets:
            bar.set_description(f"graphremat budget {b}")
            knob = _fraction(b, base)
            try:
                p = (
                    base
                    if isinstance(b, float) and b == 1.0
                    else make_plan(model, *inputs, budget=_budget(b, base), **options)
                )
            except GraphRematError as e:
                points.append(
                    SweepPoint(
                        "graphremat",
                        knob,
                        _bytes(b, base),
                        0,
                        0,
                        0,
                        0,
                        0.0,
                        "infeasible" if isinstance(e, InfeasibleBudget) else "failed",
                        f"{type(e).__name__}: {e}".splitlines()[0],
                    )
                )
                bar.update()
                continue
            measured = _measure_graphremat(model, inputs, p, options) if measure else 0
            plans.append(p)
            points.append(
                SweepPoint(
                    "graphremat",
                    knob,
                    p.budget_bytes,
                    p.predicted_peak_bytes,
                    measured,
                    p.recompute_flops,
                    p.recompute_cost_ns,
                    p.overhead,
                    p.status,
                )
            )
            bar.update()
        for k in pytorch_budgets:
            bar.set_description(f"pytorch activation_memory_budget {k}")
            points.append(pytorch_point(model, inputs, k, base.step_cost_ns))
            bar.update()
    finally:
        bar.close()
    return Sweep(
        points=tuple(points),
        unconstrained_peak_bytes=unconstrained,
        min_feasible_bytes=base.min_feasible_bytes,
        step_cost_ns=base.step_cost_ns,
        model=name or type(model).__name__,
        plans=tuple(plans),
    )


def _budget(b, base):
    return base.min_feasible_bytes if b == "min" else b


def _bytes(b, base) -> int:
    from .budget import parse_budget

    if b == "min":
        return base.min_feasible_bytes
    return parse_budget(b).resolve(base.unconstrained_peak_bytes)


def _fraction(b, base) -> float:
    if b == "min":
        return base.min_feasible_bytes / base.unconstrained_peak_bytes
    if isinstance(b, float) and 0 < b <= 1:
        return b
    return math.nan


def _measure_graphremat(model, inputs, plan, options) -> int:
    from .api import compile as gr_compile
    from .measure import measure_step_peak

    opts = {k: v for k, v in options.items() if k != "budget"}
    cmodel = gr_compile(copy.deepcopy(model), budget=plan.budget_bytes, **opts)
    cmodel(*inputs).backward()  # compile outside the measurement
    return measure_step_peak(cmodel, *inputs)


def pytorch_point(model, inputs, knob: float, step_cost_ns: int) -> SweepPoint:
    """PyTorch's min-cut partitioner with ``activation_memory_budget=knob`` (eager codegen, so
    op-level memory is exact): its measured peak and the roofline cost of what it recomputes."""
    from .pytorch_baseline import run_pytorch_knob

    try:
        r = run_pytorch_knob(model, inputs, knob)
    except Exception as e:  # PyTorch's partitioner fails on some knobs: a point, not a crash
        return SweepPoint("pytorch", knob, 0, 0, 0, 0, 0, 0.0, "failed", f"{type(e).__name__}: {e}")
    overhead = r.recompute_cost_ns / step_cost_ns if step_cost_ns else 0.0
    return SweepPoint(
        "pytorch",
        knob,
        0,
        0,
        r.measured_peak_bytes,
        r.recompute_flops,
        r.recompute_cost_ns,
        overhead,
        "heuristic",
    )


class _NoBar:
    def set_description(self, *_):
        pass

    def update(self, *_):
        pass

    def close(self):
        pass


def _progress(total: int, on: bool):
    if not on:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="plan")
