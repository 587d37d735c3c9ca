"""Plots of the benchmark command (graphremat.bench): its JSON rows in, a matplotlib Figure out.

``plot_scale``: per budget, time to the first plan and to the end of the solve, and the cost of the
first plan, the final plan and the proven bound. ``plot_literature``: per literature graph and
budget, graphremat's times against the published formulations' (log scale), marking proven optima.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .bench import REFERENCE, _scale_head, _scale_status
from .plot import _LEGEND, COLOURS, _pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: times below this are drawn at it (a log axis has no zero)
_MIN_S = 1e-3


def plot_scale(doc: dict) -> Figure:
    """Left: per budget, seconds to the first feasible plan and to the end of the solve (proof
    or time limit), labelled with the final gap. Right: recompute overhead (% of the step) of the
    first plan, the final plan and the proven bound. ``solve_cpsat`` reports only its final
    objective and bound, so no curve over time is drawn: nothing in between is known."""
    plt = _pyplot()
    rows = doc["rows"]
    fig, (tax, cax) = plt.subplots(
        1, 2, figsize=(13, 1.6 + 0.9 * len(rows)), layout="constrained", width_ratios=(1.1, 1)
    )
    ys = range(len(rows))
    labels = [f"budget {r['budget_frac']:g}" for r in rows]
    step = doc["step_cost"] or 1.0
    blue, orange = COLOURS["saved"], COLOURS["recomputed"]
    for y, r in zip(ys, rows, strict=True):
        first = r["first_feasible_s"] or 0.0
        tax.barh(y, first, height=0.5, color=blue)
        tax.barh(y, max(r["wall_s"] - first, 0.0), left=first, height=0.5, color=blue, alpha=0.3)
        note = _scale_status(r) if r["gap_pct"] is None else f"gap {r['gap_pct']:.2f} %"
        if r["status"] == "optimal":
            note += " (optimal)"
        note = f"{note} at {r['wall_s']:.2f} s"
        if r["first_feasible_s"] is not None:
            note = f"first plan {first:.2f} s; {note}"
        tax.annotate(
            note,
            (max(r["wall_s"], first), y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    tax.axvline(doc["time_limit_s"], color="#d62728", ls="--", lw=1.2)
    tax.set_xlim(0, 1.3 * max([doc["time_limit_s"]] + [r["wall_s"] for r in rows]))
    tax.set_yticks(list(ys), labels)
    tax.set_ylim(len(rows) - 0.5, -0.5)
    tax.set_xlabel("seconds from the start of the solve")
    tax.set_title("Time to the first feasible plan, and to the final gap")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    tax.legend(
        handles=[
            Patch(color=blue, label="first feasible plan (greedy)"),
            Patch(color=blue, alpha=0.3, label="CP-SAT: bound, better plans, proof"),
            Line2D([], [], color="#d62728", ls="--", label="time limit"),
        ],
        loc="lower right",
        fontsize=8,
    )
    series = (
        ("first plan", "first_cost", blue, 0.4),
        ("final plan", "objective", blue, 1.0),
        ("proven bound", "bound", orange, 1.0),
    )
    for k, (name, key, colour, alpha) in enumerate(series):
        vals = [100 * r[key] / step if r[key] is not None else 0.0 for r in rows]
        offs = [y + (k - 1) * 0.25 for y in ys]
        cax.barh(offs, vals, height=0.25, color=colour, alpha=alpha, label=name)
        for y, v, r in zip(offs, vals, rows, strict=True):
            if r[key] is not None:
                cax.annotate(
                    f"{v:.2f} %", (v, y), xytext=(3, 0), textcoords="offset points", va="center"
                )
    for y, r in zip(ys, rows, strict=True):
        if r["objective"] is None:
            cax.annotate(_scale_status(r), (0, y), xytext=(3, 0), textcoords="offset points")
    cax.set_yticks(list(ys), labels)
    cax.set_ylim(len(rows) - 0.5, -0.5)
    costs = [r[key] or 0.0 for r in rows for _, key, _, _ in series]
    cax.set_xlim(0, 1.25 * 100 * max(costs + [1e-9 * step]) / step)
    cax.set_xlabel("recompute overhead (% of the step's estimated cost)")
    cax.set_title("Cost: first plan, final plan, proven lower bound")
    cax.legend(**_LEGEND)
    fig.suptitle(_scale_head(doc).split(":")[0] + f": {doc['decisions']} decisions")
    return fig


def plot_literature(rows: list[dict]) -> Figure:
    """One row per (graph, budget), seconds on a log axis: graphremat's first plan and total
    (proof or time limit) against the published exact MILP and CP-SAT times; an arrow marker is
    a published run that had no result by then. Right: how the result compares with the best
    known, proven optima matched in green."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 1.4 + 0.5 * len(rows)), layout="constrained")
    blue, orange, green = COLOURS["saved"], COLOURS["recomputed"], COLOURS["forward-only"]
    seen: set[str] = set()

    def mark(x: float | None, y: int, label: str, **style) -> None:
        if x is None:
            return
        ax.plot([max(x, _MIN_S)], [y], ls="none", label=None if label in seen else label, **style)
        seen.add(label)

    for y, r in enumerate(rows):
        ref = REFERENCE.get((r["graph"], r["budget"]))
        ours = max(r["total_s"], _MIN_S)
        span = [ours] + ([t for t in (ref.milp_s, ref.cpsat_s) if t is not None] if ref else [])
        ax.plot([min(span), max(span)], [y, y], color="0.8", lw=1, zorder=0)  # the speed-up
        mark(r.get("first_s"), y, "graphremat: first plan", marker="o", mfc="w", mec=blue, ms=7)
        mark(ours, y, "graphremat: total (proof or limit)", marker="o", color=blue, ms=8)
        if ref:
            for t, done, name, colour, shape in (
                (ref.milp_s, ref.milp_done, "Checkmate MILP", green, "^"),
                (ref.cpsat_s, ref.cpsat_done, "Moccasin-style CP-SAT", orange, "s"),
            ):
                if done:
                    mark(t, y, f"published {name}", marker=shape, color=colour, ms=7)
                else:
                    mark(
                        t,
                        y,
                        f"published {name}: no result by then",
                        marker=">",
                        color=colour,
                        mfc="w",
                        ms=8,
                    )
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), [f"{r['graph']} {r['budget']:.0%}" for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", which="major", color="0.9")
    ax.set_xlabel(f"seconds (log; below {_MIN_S * 1e3:g} ms drawn at {_MIN_S * 1e3:g} ms)")
    ax.set_title(
        "Literature graphs: graphremat vs the published exact formulations\n(right: our result "
        "vs the best known; green: as good or better; bold: optimal for any schedule)"
    )
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(range(len(rows)), [_verdict(r) for r in rows])
    for tick, r in zip(right.get_yticklabels(), rows, strict=True):
        good = r["vs_best"].startswith(("matched", "below", "a plan"))
        tick.set_color(green if good else "0.2")
        tick.set_fontweight("bold" if _proven_any(r) else "normal")
    right.set_ylabel("vs best known")
    fig.legend(loc="outside lower center", ncol=3, fontsize=8)
    return fig


def _verdict(r: dict) -> str:
    ours = f"{r['overhead_pct']:.3f} %" if "overhead_pct" in r else r["status"].split(" (")[0]
    if r["status"].startswith("feasible"):
        ours += f" (gap {r['status'].split('gap ')[1].split(' (')[0]})"
    return f"{ours}: {r['vs_best']}" if r["vs_best"] else ours


def _proven_any(r: dict) -> bool:
    """Optimal (or infeasible) for any schedule: by our bound, or as published."""
    ours = r["status"] in ("optimal (any schedule)", "infeasible (any schedule)")
    return ours or r["vs_best"] in ("matched proven optimum", "matched proven infeasibility")
