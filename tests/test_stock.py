"""Never worse than stock torch.compile: PyTorch's own partition as a plan (graphremat.stock), and
the planner's ceiling at its peak (Options.stock_cap)."""

from __future__ import annotations

import pytest
import torch
from e2e import assert_matches, compiled_step, measured_peak, reference
from joint import joint_graph
from real_models import REAL_MODEL_FACTORIES

import graphremat
from graphremat import _private as P
from graphremat import stock
from graphremat.pytorch_baseline import run_pytorch_knob

TIME_LIMIT_S = 10.0


def test_stock_saved_values_are_forward_ops_and_are_partitioned_once(monkeypatch):
    """The saved names are forward ops of the joint graph, the joint graph itself is left as it
    was, and asking again reads the answer kept on the graph instead of partitioning again."""
    model, inputs = REAL_MODEL_FACTORIES["hf_gpt2"]()
    joint, nfo = joint_graph(model, *inputs)
    before = [(n.name, n.target, n.args) for n in joint.graph.nodes]
    saved = stock.stock_saved_values(joint, nfo, [])
    assert saved, "PyTorch's partition saves activations of this model"
    backward: set[str] = set()  # what a tangent reaches
    for n in joint.graph.nodes:
        if (n.op == "placeholder" and n.name.startswith("tangents")) or any(
            a.name in backward for a in n.all_input_nodes
        ):
            backward.add(n.name)
    ops = {n.name for n in joint.graph.nodes if n.op == "call_function"}
    assert saved <= ops - backward
    assert [(n.name, n.target, n.args) for n in joint.graph.nodes] == before

    def fail(*args, **kwargs):
        raise AssertionError("partitioned twice")

    monkeypatch.setattr(P, "min_cut_rematerialization_partition", fail)
    assert stock.stock_saved_values(joint, nfo, []) is saved


def test_a_partition_pytorch_refuses_leaves_no_stock_plan(monkeypatch):
    model, inputs = REAL_MODEL_FACTORIES["hf_gpt2"]()
    joint, nfo = joint_graph(model, *inputs)

    def refuse(*args, **kwargs):
        raise RuntimeError("not this graph")

    monkeypatch.setattr(P, "min_cut_rematerialization_partition", refuse)
    assert stock.stock_saved_values(joint, nfo, []) is None


@pytest.mark.parametrize("name", ["hf_gpt2", "hf_llama"])
def test_budget_one_keeps_no_more_than_stock_torch_compile(name):
    """At budget 1.0 (eager codegen, exact memory) graphremat's measured peak is at most stock
    ``aot_eager``'s, measured the same way; gradients equal eager's. Without the cap it keeps
    everything and peaks higher than stock: the cap is what makes the difference."""
    model, inputs = REAL_MODEL_FACTORIES[name]()
    ref = reference(model, inputs)
    stock_peak = run_pytorch_knob(model, inputs, 1.0).measured_peak_bytes
    mine, cmodel, loss, plan = compiled_step(model, inputs, 1.0, "eager", TIME_LIMIT_S)
    assert_matches(ref, mine, loss)
    peak = measured_peak(mine, cmodel, inputs)
    assert peak <= stock_peak, (peak, stock_peak)
    assert peak == plan.predicted_peak_bytes
    assert 0 < plan.predicted_peak_bytes <= plan.stock_peak_bytes < plan.unconstrained_peak_bytes
    # stock's own program, replayed: its measured peak (PyTorch places recomputations by its own
    # order, which can peak above graphremat's schedule of the same saved set)
    assert plan.stock_peak_bytes == stock_peak
    assert plan.recomputed
    assert "stock torch.compile" in plan.summary()

    torch._dynamo.reset()
    free, cfree, _, uncapped = compiled_step(
        model, inputs, 1.0, "eager", TIME_LIMIT_S, stock_cap=False
    )
    assert uncapped.recomputed == () and uncapped.stock_peak_bytes == 0
    assert measured_peak(free, cfree, inputs) > stock_peak


def test_a_budget_below_stock_is_unaffected():
    """Where the budget is below stock's peak the cap does not bind: the same plan either way."""
    model, inputs = REAL_MODEL_FACTORIES["hf_gpt2"]()
    capped = graphremat.plan(model, *inputs, budget=0.6, codegen="eager")
    uncapped = graphremat.plan(model, *inputs, budget=0.6, codegen="eager", stock_cap=False)
    assert capped.stock_peak_bytes > capped.budget_bytes
    assert capped.saved == uncapped.saved


def test_stock_cap_must_be_a_bool():
    model, inputs = REAL_MODEL_FACTORIES["hf_gpt2"]()
    with pytest.raises(graphremat.ConfigError, match="stock_cap"):
        graphremat.plan(model, *inputs, budget=1.0, stock_cap="yes")
