"""graphremat.max_batch_size: the largest batch whose step fits a byte budget."""

from __future__ import annotations

import pytest
import torch
from models import MLP

import graphremat


def mlp_at(batch: int):
    torch.manual_seed(0)
    model = MLP(width=128, depth=8)
    return model, (torch.randn(batch, 64), torch.randint(0, 16, (batch,)))


def test_largest_batch_fits_and_the_next_does_not():
    budget = 6 * 2**20
    r = graphremat.max_batch_size(mlp_at, budget, start=64, time_limit_s=5, cache=False)
    assert r.batch_size >= 64 and r.plan is not None
    assert r.plan.predicted_peak_bytes <= budget
    # checked independently: the plan at batch+1 has a minimum above the budget
    model, inputs = mlp_at(r.batch_size + 1)
    nxt = graphremat.plan(model, *inputs, budget=1.0, time_limit_s=5, cache=False)
    assert nxt.min_feasible_bytes > budget or not r.certain
    # rematerialization buys batch size over saving everything
    assert r.no_remat_batch_size < r.batch_size
    assert "largest batch within" in r.summary()


def test_budget_too_small_for_the_first_batch():
    r = graphremat.max_batch_size(mlp_at, "64KiB", start=8, time_limit_s=5, cache=False)
    assert r.batch_size == 0 and r.plan is None


def test_fraction_budgets_are_refused():
    with pytest.raises(graphremat.BudgetError, match="absolute budget"):
        graphremat.max_batch_size(mlp_at, 0.5)
    with pytest.raises(graphremat.BudgetError):  # "0.5" is refused by the budget parser itself
        graphremat.max_batch_size(mlp_at, "0.5")
