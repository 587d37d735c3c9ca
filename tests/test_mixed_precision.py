"""Half precision: training under ``torch.autocast`` and with half-precision weights.

A recomputed dropout output must be bit for bit what the forward's dropout produced. In half
precision the CPU kernel scales by ``1 / (1 - p)`` rounded to the dtype, so multiplying by the
exact scale (what graphremat did) gave other values: under bf16 autocast the test GPT's
gradients differed from eager's by 1.5e-5 (0.4 % of the gradient) once a dropout output was
recomputed.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from e2e import measured_peak
from torch import nn
from torch.utils.checkpoint import checkpoint

import graphremat
from graphremat.passes import SPLIT_DROPOUT_KEY, dropout_scale, split_dropout

DROPOUT = torch.ops.aten.native_dropout.default


class DropMLP(nn.Module):
    """Linear -> GELU -> Dropout(0.1) twice, the first block in a ``torch.utils.checkpoint``
    region, so its dropout output is recomputed (a region's inner values are). p = 0.1, whose
    scale 1/0.9 is not a half-precision number (p = 0.5's scale 2 is, and hides the rounding)."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.l1 = nn.Linear(64, width)
        self.l2 = nn.Linear(width, width)
        self.l3 = nn.Linear(width, 10)
        self.drop = nn.Dropout(0.1)

    def block(self, x, layer):
        return self.drop(F.gelu(layer(x)))

    def forward(self, x, y):
        h = checkpoint(lambda t: self.l2(self.block(t, self.l1)), x, use_reentrant=False)
        h = self.drop(F.gelu(h))
        return F.cross_entropy(self.l3(h).float(), y)


def _step(model, inputs, dtype, autocast: bool):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=dtype, enabled=autocast):
        loss = model(*inputs)
    loss.backward()
    return loss.detach()


CASES = [
    ("autocast", torch.bfloat16),
    ("autocast", torch.float16),
    ("weights", torch.bfloat16),
]


@pytest.mark.parametrize(("how", "dtype"), CASES, ids=[f"{h}-{str(d)[6:]}" for h, d in CASES])
def test_recomputed_dropout_outputs_match_eager_in_half_precision(how, dtype):
    """The checkpointed dropout output is recomputed; loss and every gradient equal those of
    ``torch.compile(backend="aot_eager")`` exactly, and the measured peak is within the
    budget."""
    torch.manual_seed(0)
    model = DropMLP()
    x, y = torch.randn(512, 64), torch.randint(0, 10, (512,))
    autocast = how == "autocast"
    if not autocast:
        model, x = model.to(dtype), x.to(dtype)
    inputs = (x, y)
    ref = copy.deepcopy(model)
    # the same graph and kernels with PyTorch's partitioner (eager itself differs from any
    # AOTAutograd graph in half precision: its decompositions round elsewhere)
    ref_loss = _step(torch.compile(ref, backend="aot_eager"), inputs, dtype, autocast)
    mine = copy.deepcopy(model)
    cmodel = graphremat.compile(mine, budget=1.0, codegen="eager")
    loss = _step(cmodel, inputs, dtype, autocast)
    plan = cmodel.graphremat_plans[-1]
    dropped = [
        t for t in plan.tensors if t.decision == "recomputed" and t.op == "aten.mul.Tensor"
    ]  # (x * mask * scale: the model has no other multiply)
    assert dropped, [(t.name, t.op, t.decision) for t in plan.tensors]
    assert torch.equal(loss, ref_loss)
    for (name, p), q in zip(ref.named_parameters(), mine.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), f"{name}: {(p.grad - q.grad).abs().max()}"

    mine.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype, enabled=autocast):
        assert measured_peak(mine, cmodel, inputs) <= plan.budget_bytes


def test_inductor_under_autocast_matches_plain_torch_compile():
    """Under Inductor (dropout not split; the checkpointed values recomputed) with bf16
    autocast: loss and gradients equal plain ``torch.compile``'s exactly on this model. (On
    larger ones Inductor's fusion rounds half-precision intermediates differently for different
    partitions: PyTorch's own activation_memory_budget=0.5 moves HF BERT's gradients by 3e-3;
    see README, Mixed precision.)"""
    torch.manual_seed(0)
    model = DropMLP()
    inputs = (torch.randn(512, 64), torch.randint(0, 10, (512,)))
    ref, mine = copy.deepcopy(model), copy.deepcopy(model)
    with torch._inductor.config.patch(fallback_random=True):
        ref_loss = _step(torch.compile(ref, backend="inductor"), inputs, torch.bfloat16, True)
        cmodel = graphremat.compile(mine, budget=1.0)
        loss = _step(cmodel, inputs, torch.bfloat16, True)
    assert cmodel.graphremat_plans[-1].recomputed
    assert torch.equal(loss, ref_loss)
    for (name, p), q in zip(ref.named_parameters(), mine.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), f"{name}: {(p.grad - q.grad).abs().max()}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_the_dropout_scale_reproduces_the_kernel(dtype, p):
    """``x * mask * dropout_scale(...)`` is the CPU kernel's output bit for bit, and finding the
    scale leaves the random number generator as it was."""
    state = torch.get_rng_state()
    dropout_scale.cache_clear()
    scale = dropout_scale(torch.device("cpu"), dtype, p)
    assert torch.equal(torch.get_rng_state(), state)
    x = torch.randn(10_000).to(dtype)
    out, mask = DROPOUT(x, p, True)
    assert torch.equal(x * mask * scale, out)


def test_a_dropout_without_a_reproducing_scale_is_saved(monkeypatch):
    """Where no scale reproduces the kernel, the dropout is not split: its output stays the
    random op's, which is never recomputed."""
    from joint import joint_graph

    joint, _ = joint_graph(DropMLP(), torch.randn(32, 64), torch.randint(0, 10, (32,)))
    monkeypatch.setattr(graphremat.passes, "dropout_scale", lambda *a: None)
    assert split_dropout(joint) == 0
    assert not any(n.meta.get(SPLIT_DROPOUT_KEY) for n in joint.graph.nodes)
    monkeypatch.undo()
    assert split_dropout(joint) == 2
