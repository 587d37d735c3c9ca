"""Shared end-to-end harness: eager reference vs graphremat-compiled training step."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

import graphremat
from graphremat.measure import measure_peak_memory

STEP_SEED = 1234


def train_step(model, inputs) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(STEP_SEED)
    loss = model(*inputs)
    loss.backward()
    return loss.detach()


@dataclass
class StepResult:
    loss: torch.Tensor
    grads: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]


def reference(model, inputs, inductor: bool = False) -> StepResult:
    """One step of eager, or (``inductor=True``) of plain ``torch.compile`` with PyTorch's own
    partitioner: Inductor's fused kernels differ from eager by rounding (e.g. ~3e-5 on the
    ResNet's first conv gradient), so Inductor runs are compared with Inductor."""
    ref = copy.deepcopy(model)
    runner = torch.compile(ref, backend="inductor") if inductor else ref
    loss = train_step(runner, inputs)
    return StepResult(
        loss,
        {n: p.grad.clone() for n, p in ref.named_parameters()},
        {n: b.clone() for n, b in ref.named_buffers()},
    )


def assert_matches(ref: StepResult, model, loss) -> None:
    torch.testing.assert_close(loss, ref.loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        torch.testing.assert_close(
            p.grad, ref.grads[name], msg=lambda m, name=name: f"grad {name}: {m}"
        )
    for name, b in model.named_buffers():
        torch.testing.assert_close(
            b, ref.buffers[name], msg=lambda m, name=name: f"buffer {name}: {m}"
        )


def compiled_step(model, inputs, budget, codegen, time_limit_s: float = 5.0, **options):
    """Compile a copy of ``model``; run one step; return (model copy, compiled, loss, plan)."""
    mine = copy.deepcopy(model)
    cmodel = graphremat.compile(
        mine, budget=budget, codegen=codegen, time_limit_s=time_limit_s, **options
    )
    loss = train_step(cmodel, inputs)
    return mine, cmodel, loss, cmodel.graphremat_plans[-1]


def measured_peak(model, cmodel, inputs) -> int:
    model.zero_grad(set_to_none=True)
    return measure_peak_memory(lambda *_: train_step(cmodel, inputs), model, *inputs)
