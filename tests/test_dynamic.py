"""Dynamic shapes: a plan is only ever run for the input sizes it was solved for."""

import copy
import warnings

import pytest
import torch
from e2e import assert_matches, measured_peak, reference, train_step
from torch import nn

import graphremat
from graphremat.backend import RECENT_PLANS


class LossMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(32, 128), nn.Linear(128, 128), nn.Linear(128, 1)

    def forward(self, x):
        h = nn.functional.gelu(self.b(nn.functional.gelu(self.a(x))))
        return self.c(h).square().mean()


def _model():
    torch.manual_seed(0)
    return LossMLP()


def _step_matches(model, cmodel, mine, batch):
    x = torch.randn(batch, 32, generator=torch.Generator().manual_seed(batch))
    ref = reference(model, (x,))
    loss = train_step(cmodel, (x,))
    assert_matches(ref, mine, loss)
    return x


@pytest.mark.parametrize("dynamic", [None, True])
def test_string_backend_plans_each_new_shape(dynamic):
    """torch.compile's automatic dynamic shapes (dynamic=None, after a second size) and
    dynamic=True trace with symbolic sizes; graphremat plans each concrete size on first use and
    reuses that plan for the same size."""
    model = _model()
    mine = copy.deepcopy(model)
    cmodel = torch.compile(
        mine,
        backend="graphremat",
        options={"budget": 0.95, "codegen": "eager"},
        dynamic=dynamic,
    )
    RECENT_PLANS.clear()
    sizes = [256, 512, 1024, 512]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for b in sizes:
            _step_matches(model, cmodel, mine, b)
    plans = list(RECENT_PLANS)
    assert len(plans) == 3, [p.unconstrained_peak_bytes for p in plans]  # 512 is planned once
    peaks = [p.unconstrained_peak_bytes for p in plans]
    assert peaks == sorted(peaks) and len(set(peaks)) == 3  # each plan is for its own size
    for p in plans:
        assert p.predicted_peak_bytes <= p.budget_bytes == int(0.95 * p.unconstrained_peak_bytes)


def test_compile_replans_per_shape_and_keeps_each_budget():
    """graphremat.compile traces with static shapes: a new batch size is a new plan, and a byte
    budget holds for each size that fits it."""
    model = _model()
    small = graphremat.plan(model, torch.randn(256, 32), budget=1.0)
    mine = copy.deepcopy(model)
    budget = small.unconstrained_peak_bytes * 2
    cmodel = graphremat.compile(mine, budget=budget, codegen="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for b in (256, 512):
            x = _step_matches(model, cmodel, mine, b)
            peak = measured_peak(mine, cmodel, (x,))
            assert peak <= budget
    first, second = cmodel.graphremat_plans
    assert first.unconstrained_peak_bytes < second.unconstrained_peak_bytes
    assert first.budget_bytes == second.budget_bytes == budget


def test_inductor_dynamic_region_plans_each_shape():
    """The per-shape compile also works under Inductor (compile_fx at the first call of a size)."""
    model = _model()
    mine = copy.deepcopy(model)
    cmodel = torch.compile(mine, backend="graphremat", options={"budget": 0.95}, dynamic=True)
    RECENT_PLANS.clear()
    for b in (256, 512):
        x = torch.randn(b, 32, generator=torch.Generator().manual_seed(b))
        ref = reference(model, (x,), inductor=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            loss = train_step(cmodel, (x,))
        assert_matches(ref, mine, loss)
        assert measured_peak(mine, cmodel, (x,)) <= RECENT_PLANS[-1].budget_bytes
    assert len(RECENT_PLANS) == 2 and all(p.codegen == "inductor" for p in RECENT_PLANS)
