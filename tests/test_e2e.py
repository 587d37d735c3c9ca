"""End to end: graphremat-compiled training steps vs eager, on the four model families.

For each family and budget in {unconstrained (1.0), 0.7, 0.5, the minimum feasible}: the
compiled step's loss, gradients and buffers (BatchNorm running stats: updated exactly once) equal
eager's (codegen="eager"; under Inductor, plain torch.compile's); the measured peak
(torch.profiler memory events) is within the budget; and with codegen="eager" the prediction is
within 3 % of the measurement. With codegen="eager" a budget below the model's minimum must
raise InfeasibleBudget carrying that minimum; under Inductor, whose code can stay below the
op-level model, it must either compile and fit or raise a typed error naming a larger budget.
Where the default class cannot reach 0.5, the step must compile with max_recomputes=2 (so every
family runs at every budget with both codegens).
"""

from __future__ import annotations

import pytest
import torch
from e2e import assert_matches, compiled_step, measured_peak, reference
from models import MODEL_FACTORIES

import graphremat

FAMILIES = ["mlp", "gpt", "resnet", "unet"]
FRACTIONS = [1.0, 0.7, 0.5, "min"]
#: below the op-level model's minimum, these must still compile under Inductor (whose code stays
#: below the model: see graphremat.backend), with max_recomputes=2 (tests/test_multi.py) where
#: the default once-class raises a typed error (the GPT: the plans made on the credit measured on
#: the smallest copy plan overshoot, and that plan's own compile is used)
INDUCTOR_BELOW_THE_MODEL = {("mlp", 0.5), ("gpt", 0.5), ("unet", 0.5)}
#: with codegen="eager", below the once-class's smallest plan: must compile with max_recomputes=2
EAGER_BELOW_THE_ONCE_CLASS = {("unet", 0.5)}
MULTI = {"max_recomputes": 2, "time_limit_s": 20}


@pytest.fixture(scope="module")
def setups():
    cache = {}

    def get(name, codegen):
        key = (name, codegen)
        if key not in cache:
            model, inputs = MODEL_FACTORIES[name]()
            plan = graphremat.plan(model, *inputs, budget=1.0, codegen=codegen, time_limit_s=10)
            ref = reference(model, inputs, inductor=codegen == "inductor")
            cache[key] = (model, inputs, ref, plan)
        return cache[key]

    return get


def _run(setups, name, frac, codegen):
    model, inputs, ref, plan0 = setups(name, codegen)
    budget = plan0.min_feasible_bytes if frac == "min" else frac
    budget_bytes = budget if frac == "min" else int(frac * plan0.unconstrained_peak_bytes)
    if budget_bytes < plan0.min_feasible_bytes and codegen == "inductor":
        return _below_the_op_level_minimum_under_inductor(
            ref, model, inputs, name, frac, budget_bytes
        )
    if budget_bytes < plan0.min_feasible_bytes:
        if not plan0.min_feasible_proven:
            # unproven minimum: CP-SAT may prove this budget infeasible (InfeasibleBudget) or
            # find nothing in time (SolverFailed); either error names the smallest peak found,
            # and an unproven InfeasibleBudget says what is proven
            with pytest.raises(
                (graphremat.SolverFailed, graphremat.InfeasibleBudget),
                match="the smallest (peak found|feasible budget|budget found to fit) is",
            ) as info:
                compiled_step(model, inputs, budget, codegen)
            if isinstance(info.value, graphremat.InfeasibleBudget):
                e = info.value
                assert budget_bytes < e.lower_bound_bytes <= e.min_feasible_bytes
                assert e.min_feasible_bytes == plan0.min_feasible_bytes
            if (name, frac) in EAGER_BELOW_THE_ONCE_CLASS:
                return _check(ref, model, inputs, budget, codegen, frac, **MULTI)
            pytest.skip(f"{name}: {frac} is below the smallest peak found (not proven)")
        with pytest.raises(graphremat.InfeasibleBudget) as info:
            compiled_step(model, inputs, budget, codegen)
        # the error names a budget that works, and it is no larger than the one plan() reported
        assert budget_bytes < info.value.min_feasible_bytes <= plan0.min_feasible_bytes
        assert str(info.value.min_feasible_bytes) in str(info.value)
        if (name, frac) in EAGER_BELOW_THE_ONCE_CLASS:
            return _check(ref, model, inputs, budget, codegen, frac, **MULTI)
        pytest.skip(
            f"{name}: {frac} of the peak is below the minimum feasible budget "
            f"({info.value.min_feasible_bytes / plan0.unconstrained_peak_bytes:.3f})"
        )
    return _check(ref, model, inputs, budget, codegen, frac)


def _below_the_op_level_minimum_under_inductor(ref, model, inputs, name, frac, budget_bytes):
    """Below the op-level model's minimum, Inductor's code may still fit (its fusion saves
    buffers the model counts: the backend plans on that credit, or uses the smallest plan's
    own compile, see graphremat.backend). So: either a compiled step that fits and matches, or
    a typed error naming a smallest budget above this one; the cases of INDUCTOR_BELOW_THE_MODEL
    must then compile with max_recomputes=2."""
    try:
        return _check(ref, model, inputs, frac, "inductor", frac)
    except (graphremat.InfeasibleBudget, graphremat.SolverFailed) as e:
        smallest = getattr(e, "min_feasible_bytes", None) or e.smallest_peak_bytes
        assert smallest is not None and smallest > budget_bytes, str(e)
        assert str(smallest) in str(e) or graphremat.format_bytes(smallest) in str(e)
    if (name, frac) in INDUCTOR_BELOW_THE_MODEL:
        return _check(ref, model, inputs, frac, "inductor", frac, **MULTI)
    pytest.skip(f"{name}: {frac} of the peak does not compile under Inductor (typed error)")


def _check(ref, model, inputs, budget, codegen, frac, **options):
    mine, cmodel, loss, plan = compiled_step(model, inputs, budget, codegen, **options)
    assert_matches(ref, mine, loss)
    assert plan.predicted_peak_bytes <= plan.budget_bytes
    peak = measured_peak(mine, cmodel, inputs)
    assert peak <= plan.budget_bytes, f"measured {peak} > budget {plan.budget_bytes}"
    if frac != 1.0:
        assert plan.recomputed, "a budget below the peak must recompute something"
    return plan, peak


@pytest.mark.parametrize("frac", FRACTIONS)
@pytest.mark.parametrize("name", FAMILIES)
def test_eager_codegen(setups, name, frac):
    plan, peak = _run(setups, name, frac, "eager")
    assert abs(peak - plan.predicted_peak_bytes) / peak <= 0.03, (peak, plan.predicted_peak_bytes)


@pytest.mark.slow
@pytest.mark.parametrize("frac", FRACTIONS)
@pytest.mark.parametrize("name", FAMILIES)
def test_inductor_codegen(setups, name, frac):
    """Gradients equal plain torch.compile's (Inductor with PyTorch's partitioner); measured peak
    within the budget."""
    with torch._inductor.config.patch(fallback_random=True):
        _run(setups, name, frac, "inductor")


@pytest.mark.parametrize("codegen", ["eager", "inductor"])
def test_dropout_at_the_tightest_budget(codegen):
    """Random ops are never recomputed: the masks match eager with the same seed."""
    with torch._inductor.config.patch(fallback_random=True):
        _dropout_at_the_tightest_budget(codegen)


def _dropout_at_the_tightest_budget(codegen):
    model, inputs = MODEL_FACTORIES["dropout_mlp"]()
    ref = reference(model, inputs, inductor=codegen == "inductor")
    p = graphremat.plan(model, *inputs, budget=1.0, codegen=codegen)
    mine, cmodel, loss, plan = compiled_step(model, inputs, p.min_feasible_bytes, codegen)
    assert plan.recomputed
    assert_matches(ref, mine, loss)
    assert measured_peak(mine, cmodel, inputs) <= plan.budget_bytes


def test_string_backend_and_plan_api():
    model, inputs = MODEL_FACTORIES["mlp"]()
    ref = reference(model, inputs)
    import copy

    from e2e import train_step

    from graphremat.backend import RECENT_PLANS

    mine = copy.deepcopy(model)
    cmodel = torch.compile(mine, backend="graphremat", options={"budget": 0.9, "codegen": "eager"})
    loss = train_step(cmodel, inputs)
    assert_matches(ref, mine, loss)
    plan = RECENT_PLANS[-1]
    assert plan.budget_bytes == int(0.9 * plan.unconstrained_peak_bytes)
    for attr in (
        "budget_bytes",
        "predicted_peak_bytes",
        "unconstrained_peak_bytes",
        "min_feasible_bytes",
        "recompute_flops",
        "saved",
        "recomputed",
        "status",
        "gap",
    ):
        assert hasattr(plan, attr)
    assert plan.min_feasible_bytes <= plan.predicted_peak_bytes <= plan.budget_bytes
    assert "budget" in plan.summary() and "<pre>" in plan._repr_html_()


def test_backend_is_registered_by_entry_point():
    from importlib.metadata import entry_points

    eps = entry_points(group="torch_dynamo_backends")
    assert any(ep.name == "graphremat" for ep in eps)
    assert "graphremat" in torch._dynamo.list_backends(exclude_tags=())


def test_plan_executes_nothing():
    model, inputs = MODEL_FACTORIES["resnet"]()
    before = {n: b.clone() for n, b in model.named_buffers()}
    plan = graphremat.plan(model, *inputs, budget=0.8, time_limit_s=5)
    assert plan.budget_bytes == int(0.8 * plan.unconstrained_peak_bytes)
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, before[n])  # BatchNorm never ran
    assert all(p.grad is None for p in model.parameters())
