"""Graph breaks: one budget covers the whole step (graphremat.regions)."""

import copy
import warnings

import pytest
import torch
from e2e import assert_matches, measured_peak, reference, train_step
from torch import nn

import graphremat
from graphremat.regions import model_resident_bytes


def _half() -> nn.Sequential:
    return nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(128, 128), nn.GELU())])


class Broken(nn.Module):
    """Two halves with a deliberate graph break between them: two compiled regions."""

    def __init__(self):
        super().__init__()
        self.first, self.second = _half(), _half()

    def forward(self, x):
        h = self.first(x)
        torch._dynamo.graph_break()
        return self.second(h).square().mean()


@pytest.fixture
def broken():
    torch.manual_seed(0)
    return Broken(), (torch.randn(512, 128),)


def test_regions_share_one_budget(broken):
    model, inputs = broken
    # the budget: between the second region's smallest peak and its peak without remat
    probe = graphremat.compile(copy.deepcopy(model), budget=10**9, codegen="eager")
    train_step(probe, inputs)
    first, second = probe.graphremat_plans
    budget = (second.min_feasible_bytes + second.unconstrained_peak_bytes) // 2

    mine = copy.deepcopy(model)
    cmodel = graphremat.compile(mine, budget=budget, codegen="eager")
    loss = train_step(cmodel, inputs)
    assert_matches(reference(model, inputs), mine, loss)
    first, second = cmodel.graphremat_plans
    assert second.recomputed  # the second region had to make room
    # while the second region runs, the first one's saved activations and the other half's
    # parameters and gradients are resident
    half = model_resident_bytes(model.first)  # a half's parameters and their gradients
    x_bytes = inputs[0].nbytes  # (the input of the second region, h, has x's size)
    # own parameters (own gradients are part of the region's own timeline) + the other half's
    # parameters and gradients + its input
    assert first.fixed_bytes == half // 2 + half + x_bytes
    assert second.fixed_bytes == half // 2 + half + x_bytes + first.saved_bytes
    peak = measured_peak(mine, cmodel, inputs)
    assert peak <= budget, (peak, budget)
    # the whole-step prediction is the second region's (eager: op-level exact)
    assert abs(peak - second.predicted_peak_bytes) / peak <= 0.03


def test_string_backend_warns_that_regions_do_not_share(broken):
    model, inputs = broken
    cmodel = torch.compile(
        copy.deepcopy(model), backend="graphremat", options={"budget": 0.9, "codegen": "eager"}
    )
    with pytest.warns(RuntimeWarning, match="ends at a graph break"):
        train_step(cmodel, inputs)


def test_a_recompiled_region_keeps_its_place(broken):
    """A new input shape re-plans each region; a region is never counted as its own
    predecessor, and no graph-break warning is given."""
    model, _ = broken
    cmodel = graphremat.compile(copy.deepcopy(model), budget=10**9, codegen="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for batch in (256, 512):
            train_step(cmodel, (torch.randn(batch, 128),))
    plans = cmodel.graphremat_plans
    assert len(plans) == 4
    half = model_resident_bytes(model.first)
    for p, batch in zip(plans[::2], (256, 512), strict=True):  # first regions: nothing earlier
        assert p.fixed_bytes == batch * 128 * 4 + half // 2 + half
    for prev, p, batch in zip(plans[::2], plans[1::2], (256, 512), strict=True):
        assert p.fixed_bytes == batch * 128 * 4 + half // 2 + half + prev.saved_bytes
