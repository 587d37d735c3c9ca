"""The Inductor check: a plan is held against Inductor's own memory timeline of its code."""

import copy

import pytest
import torch
from e2e import assert_matches, measured_peak, reference, train_step
from models import MODEL_FACTORIES

import graphremat
from graphremat import _private as P
from graphremat import backend
from graphremat.inductor_check import InductorMemory


def _compile(model, budget):
    mine = copy.deepcopy(model)
    cmodel = graphremat.compile(mine, budget=budget, time_limit_s=5)
    return mine, cmodel


@pytest.mark.parametrize("name", ["mlp", "gpt"])
def test_inductor_timeline_matches_the_measured_peak(name):
    """The replay of the generated code is the measured peak, to the byte, plus at most the
    scratch memory it allows an extern kernel. (On the GPT the backward's wrapper holds a freed
    buffer for a later same-size allocation across the peak: a replay of Inductor's scheduler
    alone came out 0.5-2.1 MB low there.)"""
    model, inputs = MODEL_FACTORIES[name]()
    seen = []
    step_peak = InductorMemory.step_peak

    def spy(self, fixed, user):
        seen.append(step_peak(self, fixed, user))
        return seen[-1]

    try:
        InductorMemory.step_peak = spy
        with torch._inductor.config.patch(fallback_random=True):  # dropout draws as eager
            mine, cmodel = _compile(model, 0.7)
            loss = train_step(cmodel, inputs)
            ref = reference(model, inputs, inductor=True)
    finally:
        InductorMemory.step_peak = step_peak
    assert_matches(ref, mine, loss)
    peak = measured_peak(mine, cmodel, inputs)
    assert seen and seen[-1] is not None
    assert peak <= cmodel.graphremat_plans[-1].budget_bytes
    assert peak <= seen[-1] <= peak + P.EXTERN_SCRATCH_BYTES


def test_an_overshoot_is_held_back_and_the_region_planned_again(monkeypatch):
    model, inputs = MODEL_FACTORIES["mlp"]()
    calls = []
    step_peak = InductorMemory.step_peak

    def overshoot_once(self, fixed, user):
        real = step_peak(self, fixed, user)
        calls.append(real)
        # the first compile "peaks" 1 MiB over its budget, and again without Inductor's buffer
        # reuse (the first retry): the region must be planned again
        return budget_of_first[0] + (1 << 20) if len(calls) <= 2 else real

    budget_of_first = []
    monkeypatch.setattr(InductorMemory, "step_peak", overshoot_once)
    plan0 = graphremat.plan(model, *inputs, budget=0.8, codegen="inductor")
    budget_of_first.append(plan0.budget_bytes)
    mine, cmodel = _compile(model, 0.8)
    loss = train_step(cmodel, inputs)
    assert_matches(reference(model, inputs, inductor=True), mine, loss)
    (plan,) = cmodel.graphremat_plans  # the over-budget first plans were dropped
    assert len(calls) == 3
    assert plan.budget_bytes == plan0.budget_bytes  # a fraction stays a fraction of the same peak
    assert plan.fixed_bytes == plan0.fixed_bytes + (1 << 20)  # the overshoot is held back
    assert plan.predicted_peak_bytes <= plan.budget_bytes
    assert len(plan.recomputed) >= len(plan0.recomputed)


def test_an_overshoot_that_cannot_be_absorbed_is_a_typed_error(monkeypatch):
    """Held back, an overshoot larger than any plan can absorb makes the budget infeasible:
    InfeasibleBudget, saying why; and a schedule that keeps overshooting stops after
    INDUCTOR_REPLANS attempts."""
    model, inputs = MODEL_FACTORIES["mlp"]()
    monkeypatch.setattr(InductorMemory, "step_peak", lambda self, fixed, user: 1 << 40)
    with pytest.raises(graphremat.InfeasibleBudget, match="Inductor's code"):
        train_step(_compile(model, 1.0)[1], inputs)
    torch._dynamo.reset()
    monkeypatch.setattr(backend, "INDUCTOR_REPLANS", 0)
    with pytest.raises(graphremat.GraphRematError, match="Inductor generates"):
        train_step(_compile(model, 1.0)[1], inputs)


def test_a_budget_below_the_op_level_minimum_is_met_on_credit():
    """Op by op, every decomposed intermediate owns a buffer, so under Inductor the model is
    conservative. A budget below its minimum: the model's smallest plan is compiled once, what
    Inductor's code saved on it becomes credit, and the region is planned again with it; the
    code's peak is checked as always, and measured within the budget."""
    model, inputs = MODEL_FACTORIES["mlp"]()
    plan0 = graphremat.plan(model, *inputs, budget=1.0, codegen="inductor", time_limit_s=10)
    frac = 0.53
    assert frac * plan0.unconstrained_peak_bytes < plan0.min_feasible_bytes  # op level: no plan
    mine, cmodel = _compile(model, frac)
    loss = train_step(cmodel, inputs)
    assert_matches(reference(model, inputs, inductor=True), mine, loss)
    (plan,) = cmodel.graphremat_plans  # the smallest-peak plan compiled for credit is not kept
    assert plan.budget_bytes == int(frac * plan0.unconstrained_peak_bytes)
    assert plan.model_peak_bytes > plan.budget_bytes  # planned on credit
    assert not plan.min_feasible_proven  # the model's minimum less a measured saving
    assert measured_peak(mine, cmodel, inputs) <= plan.budget_bytes


def test_when_plans_on_credit_overshoot_the_smallest_plans_compile_is_used(monkeypatch):
    """Credit is measured on the smallest plan and does not carry exactly to the plans made
    with it. If every one of those overshoots but the smallest plan's own code fits the budget,
    that compile is returned, its plan relabelled with the budget and its code's peak."""
    model, inputs = MODEL_FACTORIES["mlp"]()
    plan0 = graphremat.plan(model, *inputs, budget=1.0, codegen="inductor", time_limit_s=10)
    frac = 0.53
    step_peak = InductorMemory.step_peak
    peaks = []

    def only_the_first_fits(self, fixed, user):
        # the first compile is the smallest plan's (for credit); every later one overshoots
        peaks.append(step_peak(self, fixed, user))
        return peaks[-1] if len(peaks) == 1 else 1 << 40

    monkeypatch.setattr(InductorMemory, "step_peak", only_the_first_fits)
    mine, cmodel = _compile(model, frac)
    loss = train_step(cmodel, inputs)
    monkeypatch.undo()
    assert_matches(reference(model, inputs, inductor=True), mine, loss)
    assert len(peaks) >= 2  # the smallest plan, then at least one plan on credit
    (plan,) = cmodel.graphremat_plans
    assert plan.budget_bytes == int(frac * plan0.unconstrained_peak_bytes)
    assert plan.predicted_peak_bytes == peaks[0] <= plan.budget_bytes
    assert plan.model_peak_bytes == plan0.min_feasible_bytes  # the op-level smallest plan
    assert "smallest-peak plan" in plan.solver  # the report says why it recomputes that much
    assert plan.min_feasible_bytes <= plan.predicted_peak_bytes
    assert not plan.min_feasible_proven
    assert measured_peak(mine, cmodel, inputs) <= plan.budget_bytes
