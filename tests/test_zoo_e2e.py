"""Every zoo architecture at its test size, compiled by graphremat with eager codegen: gradients
equal eager's, the measured peak is within the budget and within 1 % of the prediction, at 1.0,
halfway to the minimum and at the minimum, for a fresh plan and for the same plan from the plan
cache; and budget 1.0 keeps no more than stock torch.compile (aot_eager), measured."""

from __future__ import annotations

import pytest
import torch
from e2e import assert_matches, compiled_step, measured_peak, reference

from graphremat import zoo
from graphremat.pytorch_baseline import run_pytorch_knob

TIME_LIMIT_S = 10.0


def _check(model, inputs, ref, budget):
    torch._dynamo.reset()
    mine, cmodel, loss, plan = compiled_step(model, inputs, budget, "eager", TIME_LIMIT_S)
    assert_matches(ref, mine, loss)
    assert len(cmodel.graphremat_plans) == 1, "a zoo model is one compiled region"
    peak = measured_peak(mine, cmodel, inputs)
    assert peak <= plan.budget_bytes, (peak, plan.budget_bytes)
    assert abs(peak - plan.predicted_peak_bytes) <= 0.01 * peak, (peak, plan.predicted_peak_bytes)
    return plan, peak


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_eager_prediction_and_gradients(name):
    model, inputs = zoo.build(name, "test")
    ref = reference(model, inputs)
    top, top_peak = _check(model, inputs, ref, 1.0)
    assert top_peak <= run_pytorch_knob(model, inputs, 1.0).measured_peak_bytes
    low = top.min_feasible_bytes
    mid, _ = _check(model, inputs, ref, (low + top.budget_bytes) // 2)
    least, least_peak = _check(model, inputs, ref, low)
    assert not least.from_cache
    again, again_peak = _check(model, inputs, ref, low)
    assert again.from_cache and again.saved == least.saved and again_peak == least_peak
    assert least.predicted_peak_bytes <= mid.predicted_peak_bytes <= top.predicted_peak_bytes
