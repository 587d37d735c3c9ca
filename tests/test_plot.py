"""Plots of real plans and sweeps (graphremat.plot): unit-carrying labels, the data they claim to
show (checked against the Plan / Sweep they came from), and the optional-dependency error."""

from __future__ import annotations

import dataclasses
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from torch import nn  # noqa: E402

import graphremat  # noqa: E402
from graphremat import plot  # noqa: E402
from graphremat.report import Plan  # noqa: E402
from graphremat.sweeps import Sweep, SweepPoint, sweep  # noqa: E402

MIB = 2**20
#: this model's smallest feasible budget is ~0.79 of its no-remat peak (0.7 is infeasible)
BUDGET = 0.85


class Tiny(nn.Module):
    """6 x (Linear 64->64, ReLU), a 10-way head, cross-entropy; batch 1024, so activations
    outweigh parameters and a budget below the no-remat peak forces recomputation."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(6))
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return F.cross_entropy(self.head(x), y)


def _model_and_inputs() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return Tiny(), torch.randn(1024, 64), torch.randint(0, 10, (1024,))


@pytest.fixture(scope="module")
def plan() -> Plan:
    model, x, y = _model_and_inputs()
    p = graphremat.plan(model, x, y, budget=BUDGET, time_limit_s=5, calibrate=False)
    assert p.recomputed and p.saved, "the budget must force some recomputation"
    return p


@pytest.fixture(scope="module")
def real_sweep() -> Sweep:
    model, x, y = _model_and_inputs()
    return sweep(
        model,
        x,
        y,
        budgets=(1.0, BUDGET, 0.7, "min"),
        pytorch_budgets=(0.5,),
        time_limit_s=5,
        calibrate=False,
    )


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png(ax: Axes, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path, dpi=80)
    assert path.stat().st_size > 5_000


def _legend(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _line(ax: Axes, prefix: str):
    found = [ln for ln in ax.lines if ln.get_label().startswith(prefix)]
    assert len(found) == 1, [ln.get_label() for ln in ax.lines]
    return found[0]


def _at(values, expected: float) -> bool:
    """Every value of an axhline's y data (or an axvline's x data) is ``expected``."""
    return len(values) > 0 and all(v == pytest.approx(expected) for v in values)


def _bwd_start(p: Plan) -> int:
    return [phase for phase, _, _ in p.timeline].index("bwd")


def _row_names(ax: Axes) -> list[str]:
    return [t.get_text().split(" (")[0] for t in ax.get_yticklabels()]


# ---------------------------------------------------------------------- timeline


def test_timeline_draws_the_plan_against_budget_and_resident_bytes(plan, tmp_path):
    ax = plot.plot_timeline(plan)
    assert "MiB" in ax.get_ylabel() and "op index" in ax.get_xlabel() and ax.get_title()
    live = _line(ax, "this plan")
    assert list(live.get_ydata()) == pytest.approx([b / MIB for _, _, b in plan.timeline])
    free = _line(ax, "no remat")
    assert len(free.get_ydata()) == len(plan.unconstrained_timeline)
    assert max(free.get_ydata()) == pytest.approx(plan.unconstrained_peak_bytes / MIB)
    budget = _line(ax, "budget")
    assert _at(budget.get_ydata(), plan.budget_bytes / MIB)
    assert f"{plan.budget_bytes / MIB:.2f} MiB" in budget.get_label()
    assert _at(_line(ax, "resident").get_ydata(), plan.fixed_bytes / MIB)
    # the marked peak is the plan's predicted peak, and it is the highest point of the timeline
    (peak_step,), (peak_mib,) = _line(ax, "predicted peak").get_data()
    assert peak_mib == pytest.approx(plan.predicted_peak_bytes / MIB)
    assert plan.timeline[int(peak_step)][2] == max(b for _, _, b in plan.timeline)
    # recompute ops are backward ops that produce a recomputed value
    for step in _line(ax, "recompute ops").get_xdata():
        phase, name, _ = plan.timeline[int(step)]
        assert phase == "bwd" and name in plan.recomputed
    labels = " | ".join(_legend(ax))
    for part in ("forward ops", "backward ops", "this plan", "no remat", "budget", "resident"):
        assert part in labels
    _png(ax, tmp_path, "timeline")


def test_timeline_on_a_given_axes_without_the_unconstrained_step(plan):
    _, given = plt.subplots()
    ax = plot.plot_timeline(plan, ax=given, compare_unconstrained=False)
    assert ax is given
    assert not [ln for ln in ax.lines if ln.get_label().startswith("no remat")]


def test_plan_without_a_timeline_is_refused_with_a_remedy(plan):
    with pytest.raises(ValueError, match="re-solve"):
        plot.plot_timeline(dataclasses.replace(plan, timeline=()))


# ---------------------------------------------------------------------- schedule


def test_value_storages_follow_the_decisions(plan):
    """Saved values live into the backward; recomputed ones die in the forward and come back
    as one copy in the backward. Covers the outputs of a multi-output op (nll_loss_forward)."""
    storages = plot.value_storages(plan)
    bwd = _bwd_start(plan)
    for name in plan.saved:
        ((first, last),) = storages[name]
        assert first < bwd <= last, name
    for name in plan.recomputed:
        (first, last), (copy_first, _) = storages[name]
        assert first <= last < bwd <= copy_first, name


def test_schedule_has_a_row_per_saved_or_recomputed_value(plan, tmp_path):
    ax = plot.plot_schedule(plan)
    assert sorted(_row_names(ax)) == sorted(plan.saved + plan.recomputed)
    assert "op index" in ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    # one recompute marker per recomputed value, in its row, at the backward op that makes it
    rows = _row_names(ax)
    xs, ys = _line(ax, "recompute op").get_data()
    assert sorted(rows[int(y)] for y in ys) == sorted(plan.recomputed)
    for x, y in zip(xs, ys, strict=True):
        assert plan.timeline[int(x)][:2] == ("bwd", rows[int(y)])
    labels = " | ".join(_legend(ax))
    assert "saved" in labels and "recomputed" in labels and "backward ops" in labels
    _png(ax, tmp_path, "schedule")


def test_schedule_keeps_the_largest_values(plan):
    ax = plot.plot_schedule(plan, max_values=3)
    shown = set(_row_names(ax))
    assert len(shown) == 3
    nbytes = {t.name: t.nbytes for t in plan.tensors}
    hidden = set(plan.saved + plan.recomputed) - shown
    assert min(nbytes[n] for n in shown) >= max(nbytes[n] for n in hidden)
    assert f"largest 3 of {len(plan.saved) + len(plan.recomputed)}" in ax.get_title()


# ---------------------------------------------------------------------- graph


def _nodes(ax: Axes):
    (nodes,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    return nodes.get_offsets()


def test_graph_draws_every_value_left_to_right(plan, tmp_path):
    ax = plot.plot_graph(plan)
    names = {n for e in plan.dag_edges for n in e} | {t.name for t in plan.tensors}
    assert len(_nodes(ax)) == len(names)
    pos = {t.get_text(): t.xy for t in ax.texts}  # names are written on small graphs
    assert set(pos) == names
    for u, v in plan.dag_edges:
        assert pos[u][0] < pos[v][0], (u, v)
    labels = _legend(ax)
    assert f"saved ({len(plan.saved)})" in labels
    assert f"recomputed ({len(plan.recomputed)})" in labels
    assert ax.get_xlabel() and ax.get_title()
    _png(ax, tmp_path, "graph")


def test_graph_greys_unrecorded_values_and_keeps_the_largest(plan):
    extra = dataclasses.replace(plan, dag_edges=plan.dag_edges + (("relu_5", "unrecorded"),))
    assert "other (1)" in _legend(plot.plot_graph(extra))
    ax = plot.plot_graph(plan, max_nodes=5)
    assert len(_nodes(ax)) == 5
    assert "largest 5 of" in ax.get_title()
    nbytes = {t.name: t.nbytes for t in plan.tensors}
    shown = {t.get_text() for t in ax.texts}
    assert min(nbytes[n] for n in shown) >= max(nbytes[n] for n in set(nbytes) - shown)


# ---------------------------------------------------------------------- sweep


def test_sweep_plots_peak_against_overhead(real_sweep, tmp_path):
    ax = plot.plot_sweep(real_sweep)
    assert "MiB" in ax.get_xlabel() and "%" in ax.get_ylabel() and ax.get_title()
    ours = sorted((p for p in real_sweep.of("graphremat") if p.ok), key=lambda p: p.peak_bytes)
    assert len(ours) >= 2
    line = _line(ax, "graphremat")
    assert list(line.get_xdata()) == pytest.approx([p.peak_bytes / MIB for p in ours])
    assert list(line.get_ydata()) == pytest.approx([100 * p.overhead for p in ours])
    theirs = [p for p in real_sweep.of("pytorch") if p.ok]
    if theirs:  # PyTorch's partitioner may fail on some knobs; then it is a skipped point
        xs = _line(ax, "PyTorch").get_xdata()
        assert list(xs) == pytest.approx([p.measured_peak_bytes / MIB for p in theirs])
        assert {t.get_text() for t in ax.texts} == {f"{p.knob:g}" for p in theirs}
    free = _line(ax, "no-remat peak").get_xdata()
    assert _at(free, real_sweep.unconstrained_peak_bytes / MIB)
    least = _line(ax, "min feasible budget").get_xdata()
    assert _at(least, real_sweep.min_feasible_bytes / MIB)
    assert len(_legend(ax)) >= 3
    _png(ax, tmp_path, "sweep")


def test_sweep_leaves_out_failed_points(real_sweep):
    failed = SweepPoint("graphremat", 0.1, 1, 0, 0, 0, 0, 0.0, "infeasible", "no plan fits")
    with_failed = dataclasses.replace(real_sweep, points=real_sweep.points + (failed,))
    ok = [p for p in real_sweep.of("graphremat") if p.ok]
    assert len(_line(plot.plot_sweep(with_failed), "graphremat").get_xdata()) == len(ok)


# ---------------------------------------------------------------------- API


def test_plan_and_sweep_methods_draw_the_same_plots(plan, real_sweep):
    for ax in (plan.plot_timeline(), plan.plot_schedule(), plan.plot_graph(), real_sweep.plot()):
        assert isinstance(ax, Axes) and ax.get_title()


def test_missing_matplotlib_names_the_extra(plan, real_sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for draw, data in [
        (plot.plot_timeline, plan),
        (plot.plot_schedule, plan),
        (plot.plot_graph, plan),
        (plot.plot_sweep, real_sweep),
    ]:
        with pytest.raises(ImportError, match=r"pip install 'graphremat\[plot\]'"):
            draw(data)
