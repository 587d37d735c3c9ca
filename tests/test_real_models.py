"""End to end on real models: Hugging Face GPT-2, BERT and Llama, and hand-written models with
in-place ops, weight tying, tuple/dict outputs, non-tensor arguments and buffers.

Every compiled step's loss, gradients and buffers equal eager's (with ``codegen="eager"``; under
Inductor, plain ``torch.compile``'s), the measured peak (torch.profiler memory events) is within
the budget and, with ``codegen="eager"``, within 3 % of the prediction. Models are tiny and
solver time limits short so the file runs in about 80 s on 2 cores (the Inductor test,
``slow``, adds 20-100 s depending on Inductor's cache).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from e2e import (
    STEP_SEED,
    StepResult,
    assert_matches,
    compiled_step,
    measured_peak,
    reference,
    train_step,
)
from real_models import REAL_MODEL_FACTORIES, two_head_loss
from torch import nn

import graphremat
from graphremat.measure import measure_peak_memory
from graphremat.report import Plan

TIME_LIMIT_S = 1.0
TIGHT = 0.6  # of the no-remat peak: feasible for the three transformers (their minimum is ~0.4-0.5)

Step = Callable[[nn.Module, tuple], torch.Tensor]


def outside_loss_step(model: nn.Module, inputs: tuple) -> torch.Tensor:
    """:func:`e2e.train_step` for a model returning a tuple or dict: the loss is taken outside
    the (compiled) model by :func:`real_models.two_head_loss`."""
    x, targets = inputs
    model.zero_grad(set_to_none=True)
    torch.manual_seed(STEP_SEED)
    loss = two_head_loss(model(x), targets)
    loss.backward()
    return loss.detach()


def check_step(
    model: nn.Module, inputs: tuple, ref: StepResult, budget: int | float, step: Step
) -> Plan:
    """Compile a copy of ``model`` (eager codegen), run one ``step``; check it against ``ref``,
    the measured peak against the budget and the prediction. Returns the plan."""
    mine = copy.deepcopy(model)
    cmodel = graphremat.compile(mine, budget=budget, codegen="eager", time_limit_s=TIME_LIMIT_S)
    loss = step(cmodel, inputs)
    assert len(cmodel.graphremat_plans) == 1, "the step should be one compiled region"
    plan = cmodel.graphremat_plans[-1]
    assert_matches(ref, mine, loss)
    assert plan.predicted_peak_bytes <= plan.budget_bytes
    mine.zero_grad(set_to_none=True)
    peak = measure_peak_memory(lambda *_: step(cmodel, inputs), mine, *inputs)
    assert peak <= plan.budget_bytes, f"measured {peak} > budget {plan.budget_bytes}"
    assert abs(peak - plan.predicted_peak_bytes) / peak <= 0.03, (peak, plan.predicted_peak_bytes)
    return plan


def eager_reference(model: nn.Module, inputs: tuple, step: Step) -> StepResult:
    """:func:`e2e.reference` (eager) with any step function."""
    ref = copy.deepcopy(model)
    loss = step(ref, inputs)
    return StepResult(
        loss,
        {n: p.grad.clone() for n, p in ref.named_parameters()},
        {n: b.clone() for n, b in ref.named_buffers()},
    )


# --- Hugging Face transformers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_setups() -> Callable[[str], tuple[nn.Module, tuple, StepResult]]:
    cache: dict[str, tuple[nn.Module, tuple, StepResult]] = {}

    def get(name: str) -> tuple[nn.Module, tuple, StepResult]:
        if name not in cache:
            model, inputs = REAL_MODEL_FACTORIES[name]()
            cache[name] = (model, inputs, reference(model, inputs))
        return cache[name]

    return get


@pytest.mark.parametrize(
    ("name", "frac"),
    [
        ("hf_gpt2", 1.0),
        ("hf_gpt2", TIGHT),
        ("hf_bert", 1.0),
        ("hf_bert", TIGHT),
        ("hf_llama", 1.0),
        ("hf_llama", TIGHT),
    ],
)
def test_transformers_eager_codegen(hf_setups, name: str, frac: float) -> None:
    """GPT-2 (dropout, tied LM head), BERT (dropout, buffers), Llama (GQA, RoPE): one region,
    gradients equal eager's, measured peak within the budget and within 3 % of the prediction."""
    model, inputs, ref = hf_setups(name)
    plan = check_step(model, inputs, ref, frac, train_step)
    assert plan.budget_bytes == int(frac * plan.unconstrained_peak_bytes)
    if frac < 1.0:
        assert plan.recomputed, "a budget below the peak must recompute something"


@pytest.mark.slow
def test_gpt2_inductor_codegen() -> None:
    """GPT-2 at 0.7 under Inductor (random ops as in eager): gradients equal plain
    torch.compile's; the measured peak is within the budget."""
    model, inputs = REAL_MODEL_FACTORIES["hf_gpt2"]()
    with torch._inductor.config.patch(fallback_random=True):
        ref = reference(model, inputs, inductor=True)
        torch._dynamo.reset()
        mine, cmodel, loss, plan = compiled_step(
            model, inputs, 0.7, "inductor", time_limit_s=TIME_LIMIT_S
        )
        assert_matches(ref, mine, loss)
        assert plan.recomputed
        peak = measured_peak(mine, cmodel, inputs)
    assert peak <= plan.budget_bytes, (peak, plan.budget_bytes)


# --- hand-written models ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("inplace_mlp", train_step),
        ("tied_lm", train_step),
        ("two_head_tuple", outside_loss_step),
        ("two_head_dict", outside_loss_step),
        ("buffers", train_step),
    ],
)
def test_hand_written_at_one_and_the_minimum(name: str, step: Step) -> None:
    """Unconstrained, then at the smallest feasible budget the first plan reports."""
    model, inputs = REAL_MODEL_FACTORIES[name]()
    ref = eager_reference(model, inputs, step)
    plan = check_step(model, inputs, ref, 1.0, step)
    assert not plan.recomputed
    tight = check_step(model, inputs, ref, plan.min_feasible_bytes, step)
    assert tight.recomputed, "the minimum budget must recompute something"


def test_non_tensor_arguments() -> None:
    """A float and a bool argument: Dynamo specialises on them, so each value set is its own
    region with its own plan; each matches eager within its budget."""
    model, (x, targets, _, _) = REAL_MODEL_FACTORIES["non_tensor_args"]()
    mine = copy.deepcopy(model)
    cmodel = graphremat.compile(mine, budget=0.75, codegen="eager", time_limit_s=TIME_LIMIT_S)
    for i, args in enumerate([(x, targets, 0.5, True), (x, targets, 2.0, False)]):
        ref = reference(model, args)
        assert_matches(ref, mine, train_step(cmodel, args))
        assert len(cmodel.graphremat_plans) == i + 1
        plan = cmodel.graphremat_plans[-1]
        assert plan.recomputed
        peak = measured_peak(mine, cmodel, args)
        assert peak <= plan.budget_bytes, f"measured {peak} > budget {plan.budget_bytes}"


def test_unused_buffer_counts_toward_the_budget() -> None:
    """Module state the step never reads is live during it and counts (Llama's
    ``rotary_emb.original_inv_freq``; here a 1 MiB buffer): measured within the budget at 1.0,
    and the prediction within 3 %."""
    model, inputs = REAL_MODEL_FACTORIES["unused_buffer"]()
    mine, cmodel, _, plan = compiled_step(model, inputs, 1.0, "eager", TIME_LIMIT_S)
    peak = measured_peak(mine, cmodel, inputs)
    assert peak <= plan.budget_bytes, f"measured {peak} > budget {plan.budget_bytes}"
    assert abs(peak - plan.predicted_peak_bytes) / peak <= 0.03, (peak, plan.predicted_peak_bytes)
