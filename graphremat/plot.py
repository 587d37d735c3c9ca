"""Plots of a solved :class:`~graphremat.report.Plan` and of a :class:`~graphremat.sweeps.Sweep`.

Input: a Plan (``timeline``, ``unconstrained_timeline``, ``lifetimes``, ``tensors``,
``dag_edges`` and its byte counts) or a Sweep. Output: the matplotlib ``Axes`` drawn on, a new
figure's when ``ax`` is None; nothing is shown or saved. Memory is in MiB (2**20 bytes); the x axis
of the plan plots is the op index ("step") into ``Plan.timeline``. Every plot has a title,
labelled axes and, where it has several series, a legend (outside the axes, so it hides no data).

matplotlib is an optional extra (``pip install 'graphremat[plot]'``), imported when a function
is called; networkx (a core dependency) lays out the graph.
"""

from __future__ import annotations

from collections import defaultdict
from types import ModuleType
from typing import TYPE_CHECKING

from .budget import format_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .report import Plan
    from .sweeps import Sweep, SweepPoint

MIB = 2**20
#: one colour per decision of a forward value, plus "other" for DAG nodes without a record
COLOURS = {
    "saved": "#1f77b4",
    "recomputed": "#ff7f0e",
    "forward-only": "#2ca02c",
    "other": "#b0b0b0",
}
_FWD_SHADE, _BWD_SHADE = "#e3ecf7", "#f7eddc"
_LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "borderaxespad": 0}


def _pyplot() -> ModuleType:
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(
            "graphremat's plots need matplotlib: pip install 'graphremat[plot]'"
        ) from e
    return plt


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots(figsize=figsize, layout="constrained")
    return ax


def _mib(nbytes: float) -> float:
    return nbytes / MIB


def _bwd_start(timeline: tuple[tuple[str, str, int], ...]) -> int:
    """Index of the first backward op (``len(timeline)`` when there is none)."""
    return next((i for i, (phase, _, _) in enumerate(timeline) if phase == "bwd"), len(timeline))


def _shade_phases(ax: Axes, timeline: tuple[tuple[str, str, int], ...]) -> None:
    """Shade the forward ops and the backward ops of ``timeline`` (steps on the x axis)."""
    b, n = _bwd_start(timeline), len(timeline)
    for lo, hi, colour, phase in ((0, b, _FWD_SHADE, "forward"), (b, n, _BWD_SHADE, "backward")):
        if hi > lo:
            label = f"{phase} ops ({lo}-{hi - 1})"
            ax.axvspan(lo - 0.5, hi - 0.5, color=colour, lw=0, zorder=0, label=label)
    ax.set_xlim(-0.5, max(n, 1) - 0.5)


def _require(plan: Plan, what: str) -> None:
    if not getattr(plan, what):
        raise ValueError(
            f"this plan carries no {what} (loaded from an older plan file?); re-solve it with "
            f"graphremat.plan() to plot it"
        )


# ---------------------------------------------------------------------- memory timeline


def plot_timeline(plan: Plan, ax: Axes | None = None, compare_unconstrained: bool = True) -> Axes:
    """Live memory (MiB) at each op of the plan's step, forward and backward shaded, with the
    budget, the resident bytes (params, inputs) and the predicted peak; ``compare_unconstrained``
    adds the step without rematerialization, on its own op indices (it has no recompute ops)."""
    _pyplot()
    _require(plan, "timeline")
    ax = _axes(ax, (11, 4.5))
    live = [_mib(b) for _, _, b in plan.timeline]
    _shade_phases(ax, plan.timeline)
    top = max(live + [_mib(plan.budget_bytes)])
    if compare_unconstrained and plan.unconstrained_timeline:
        free = [_mib(b) for _, _, b in plan.unconstrained_timeline]
        top = max(top, *free)
        ax.plot(
            free,
            color="0.55",
            lw=1.2,
            alpha=0.8,
            label=f"no remat, peak {max(free):.2f} MiB\n(on its own op index: {len(free)} ops)",
        )
    ax.plot(live, color=COLOURS["saved"], lw=1.8, label=f"this plan ({len(live)} ops)")
    recomputed = set(plan.recomputed)
    marks = [
        i for i, (ph, name, _) in enumerate(plan.timeline) if ph == "bwd" and name in recomputed
    ]
    if marks:
        ax.plot(
            marks,
            [live[i] for i in marks],
            ls="none",
            marker="|",
            ms=10,
            mew=1.5,
            color=COLOURS["recomputed"],
            label=f"recompute ops ({len(marks)})",
        )
    budget, resident = _mib(plan.budget_bytes), _mib(plan.fixed_bytes)
    ax.axhline(budget, color="#d62728", ls="--", lw=1.3, label=f"budget {budget:.2f} MiB")
    ax.axhline(
        resident,
        color="0.25",
        ls=":",
        lw=1.3,
        label=f"resident (params, inputs) {resident:.2f} MiB",
    )
    at = max(range(len(live)), key=live.__getitem__)
    peak = _mib(plan.predicted_peak_bytes)
    ax.plot(
        [at],
        [live[at]],
        ls="none",
        marker="*",
        ms=13,
        color="#d62728",
        mec="k",
        mew=0.6,
        zorder=5,
        label=f"predicted peak {peak:.2f} MiB (step {at})",
    )
    ax.set_ylim(0, top * 1.08)
    ax.set_xlabel("step (op index)")
    ax.set_ylabel("live memory (MiB)")
    frac = plan.predicted_peak_bytes / max(plan.unconstrained_peak_bytes, 1)
    ax.set_title(
        f"Memory over the training step: peak {peak:.2f} MiB of budget {budget:.2f} MiB "
        f"({frac:.0%} of no-remat)"
    )
    ax.legend(**_LEGEND)
    return ax


# ---------------------------------------------------------------------- schedule


def value_storages(plan: Plan) -> dict[str, list[tuple[int, int]]]:
    """``(first, last)`` steps of each forward value's storages: its forward lifetime first,
    then the recomputed copies. ``lifetimes`` are named after the FX node that made the storage
    (a multi-output op's outputs after their ``getitem``)."""
    found: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for name, _, first, last in plan.lifetimes:
        found[name].append((first, last))
    return {name: sorted(spans) for name, spans in found.items()}


def plot_schedule(plan: Plan, ax: Axes | None = None, max_values: int = 60) -> Axes:
    """Checkmate-style schedule: one row per saved or recomputed forward value (the
    ``max_values`` largest, ordered by first step), one bar per storage lifetime over the steps,
    the recompute op of each backward copy marked. A multi-output op is drawn as its outputs."""
    _pyplot()
    from matplotlib.patches import Patch

    _require(plan, "lifetimes")
    storages = value_storages(plan)
    rows = [t for t in plan.tensors if t.decision != "forward-only" and t.name in storages]
    shown = sorted(rows, key=lambda t: (-t.nbytes, storages[t.name][0][0]))[:max_values]
    shown.sort(key=lambda t: storages[t.name][0][0])
    ax = _axes(ax, (11, min(2.0 + 0.2 * len(shown), 14.0)))
    _shade_phases(ax, plan.timeline)
    marks: list[tuple[int, int]] = []
    for y, t in enumerate(shown):
        (first, last), *copies = storages[t.name]
        colour = COLOURS[t.decision]
        alpha = 1.0 if t.decision == "saved" else 0.4
        ax.broken_barh(
            [(first - 0.5, last - first + 1)], (y - 0.35, 0.7), color=colour, alpha=alpha
        )
        if copies:
            ax.broken_barh([(a - 0.5, b - a + 1) for a, b in copies], (y - 0.35, 0.7), color=colour)
            marks += [(f, y) for f, _ in copies]
    if marks:
        xs, ys = zip(*marks, strict=True)
        ax.plot(xs, ys, ls="none", marker=">", ms=5, color="k", label="recompute op")
    ax.set_yticks(range(len(shown)), [f"{t.name} ({format_bytes(t.nbytes)})" for t in shown])
    ax.tick_params(axis="y", labelsize=7 if len(shown) > 25 else 8)
    ax.set_ylim(len(shown) - 0.5, -0.5)  # first value on top
    ax.set_xlabel("step (op index)")
    ax.set_ylabel("forward value (bytes)")
    saved = sum(t.decision == "saved" for t in rows)
    title = f"Schedule: {saved} saved, {len(rows) - saved} recomputed values"
    if len(shown) < len(rows):
        title += f" (largest {len(shown)} of {len(rows)} shown)"
    folded = len(plan.saved) + len(plan.recomputed) - len(rows)
    if folded:
        title += f"\n{folded} multi-output ops drawn as their outputs"
    ax.set_title(title)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Patch(color=COLOURS["saved"], label="saved: kept for the backward"),
        Patch(color=COLOURS["recomputed"], alpha=0.4, label="recomputed: forward lifetime"),
        Patch(color=COLOURS["recomputed"], label="recomputed: backward copy"),
    ]
    ax.legend(handles=handles, **_LEGEND)
    return ax


# ---------------------------------------------------------------------- graph


def plot_graph(plan: Plan, ax: Axes | None = None, max_nodes: int = 400) -> Axes:
    """The solved forward DAG, left to right by topological generation, nodes coloured by
    decision (grey: "other", a value without a record) with area ~ bytes. Names are written
    when fewer than 40 nodes are drawn; above ``max_nodes`` only the largest values are kept."""
    _pyplot()
    import networkx as nx
    from matplotlib.lines import Line2D

    records = {t.name: t for t in plan.tensors}
    graph = nx.DiGraph(plan.dag_edges)
    graph.add_nodes_from(records)
    if graph.number_of_nodes() == 0:
        _require(plan, "dag_edges")
    total = graph.number_of_nodes()
    nbytes = {n: records[n].nbytes if n in records else 0 for n in graph}
    if total > max_nodes:
        keep = sorted(graph, key=lambda n: (-nbytes[n], n))[:max_nodes]
        graph = graph.subgraph(keep).copy()
    # layout: x = topological generation, the values of one generation spread over y
    pos: dict[str, tuple[float, float]] = {}
    for x, layer in enumerate(nx.topological_generations(graph)):
        for i, n in enumerate(sorted(layer)):
            pos[n] = (float(x), i - (len(layer) - 1) / 2)
    depth = max((x for x, _ in pos.values()), default=0.0) + 1
    rows = 2 * max((abs(y) for _, y in pos.values()), default=0.0) + 1
    ax = _axes(ax, (min(4 + 0.25 * depth, 16), min(2.5 + 0.4 * rows, 10)))
    nodes = list(graph)
    kind = {n: records[n].decision if n in records else "other" for n in nodes}
    # marker area ~ bytes; the largest marker fits the spacing of the layout (in points)
    box = ax.get_position()
    width_pt, height_pt = ax.figure.get_size_inches() * 72 * (box.width, box.height)
    diameter = min(22.0, 0.75 * width_pt / (depth + 1), 0.75 * height_pt / (rows + 1))
    largest = max([nbytes[n] for n in nodes] + [1])
    sizes = [9 + (diameter**2 - 9) * nbytes[n] / largest for n in nodes]
    edges = {"ax": ax, "nodelist": nodes, "node_size": sizes, "edge_color": "0.55", "width": 0.8}
    edges |= {"arrowsize": 7, "alpha": 0.7}
    skips = [(u, v) for u, v in graph.edges if pos[v][0] - pos[u][0] > 1]
    nx.draw_networkx_edges(graph, pos, edgelist=[e for e in graph.edges if e not in skips], **edges)
    if skips:  # edges that skip generations arc around the values in between
        nx.draw_networkx_edges(graph, pos, edgelist=skips, connectionstyle="arc3,rad=0.3", **edges)
    nx.draw_networkx_nodes(
        graph,
        pos,
        ax=ax,
        nodelist=nodes,
        node_size=sizes,
        node_color=[COLOURS[kind[n]] for n in nodes],
        edgecolors="k",
        linewidths=0.5,
    )
    if len(nodes) < 40:
        for n in nodes:
            ax.annotate(
                n,
                pos[n],
                xytext=(3, 3 + diameter / 2),
                textcoords="offset points",
                fontsize=7,
                rotation=45,
                rotation_mode="anchor",
            )
    counts = {k: sum(v == k for v in kind.values()) for k in COLOURS}
    handles = [
        Line2D(
            [],
            [],
            ls="none",
            marker="o",
            ms=8,
            mec="k",
            mew=0.5,
            color=COLOURS[k],
            label=f"{k} ({c})",
        )
        for k, c in counts.items()
        if c
    ]
    handles.append(
        Line2D([], [], ls="none", marker="o", ms=4, color="w", label="marker area ~ bytes")
    )
    ax.legend(handles=handles, **_LEGEND)
    ax.tick_params(left=False, labelleft=False, bottom=True, labelbottom=True)
    ax.set_xlabel("topological generation (forward order, left to right)")
    ax.set_ylabel("values of one generation")
    ax.margins(x=0.03, y=0.3 if len(nodes) < 40 else 0.15)
    title = f"Solved forward graph: {len(nodes)} values, {graph.number_of_edges()} edges"
    if len(nodes) < total:
        title += f" (largest {len(nodes)} of {total} values by bytes)"
    ax.set_title(title)
    return ax


# ---------------------------------------------------------------------- sweep


def plot_sweep(sweep: Sweep, ax: Axes | None = None) -> Axes:
    """Budget vs recompute overhead: peak memory (MiB; measured if available, else predicted)
    against recompute overhead (% of the step) for graphremat's plans and PyTorch's
    ``activation_memory_budget`` knob (each point labelled with its knob), with the no-remat peak
    and the minimum feasible budget. Failed or infeasible points are left out."""
    _pyplot()
    ax = _axes(ax, (9, 5))
    ours = sorted((p for p in sweep.of("graphremat") if p.ok and p.peak_bytes), key=_peak)
    theirs = [p for p in sweep.of("pytorch") if p.ok and p.peak_bytes]
    if ours:
        ax.plot(
            [_mib(p.peak_bytes) for p in ours],
            [100 * p.overhead for p in ours],
            "-o",
            color=COLOURS["saved"],
            label=f"graphremat ({len(ours)} plans, {_measured(ours)} peaks)",
        )
    if theirs:
        ax.plot(
            [_mib(p.peak_bytes) for p in theirs],
            [100 * p.overhead for p in theirs],
            ls="none",
            marker="s",
            color=COLOURS["recomputed"],
            label=f"PyTorch activation_memory_budget\n({len(theirs)} knobs, "
            f"{_measured(theirs)} peaks)",
        )
        for p in theirs:
            ax.annotate(
                f"{p.knob:g}",
                (_mib(p.peak_bytes), 100 * p.overhead),
                xytext=(5, 5),
                textcoords="offset points",
                fontsize=8,
                color=COLOURS["recomputed"],
            )
    free, least = _mib(sweep.unconstrained_peak_bytes), _mib(sweep.min_feasible_bytes)
    ax.axvline(free, color="0.3", ls="--", lw=1.2, label=f"no-remat peak {free:.2f} MiB")
    if sweep.min_feasible_bytes:
        ax.axvline(
            least, color="#d62728", ls=":", lw=1.3, label=f"min feasible budget {least:.2f} MiB"
        )
    top = max([100 * p.overhead for p in ours + theirs] + [1.0])
    ax.set_ylim(-0.05 * top, 1.15 * top)
    ax.set_xlabel("peak memory (MiB; measured if available, else predicted)")
    ax.set_ylabel("recompute overhead (% of step, estimated)")
    ax.set_title(f"Memory vs recompute overhead: {sweep.model or 'model'}")
    ax.legend(**_LEGEND)
    return ax


def _peak(p: SweepPoint) -> int:
    return p.peak_bytes


def _measured(points: list[SweepPoint]) -> str:
    measured = sum(bool(p.measured_peak_bytes) for p in points)
    return "measured" if measured == len(points) else "predicted" if not measured else "mixed"
