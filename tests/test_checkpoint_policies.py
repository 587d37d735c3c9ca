"""The user's torch.utils.checkpoint regions and selective-checkpoint policies are honoured."""

import functools

import pytest
import torch
from e2e import assert_matches, compiled_step, measured_peak, reference
from torch import nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

import graphremat


class Blocks(nn.Module):
    """Three MLP blocks; ``mode`` wraps the middle one in a checkpoint (plain, or selective with
    ``policy``)."""

    def __init__(self, mode: str = "none", policy=None):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64)) for _ in range(3)
        )
        self.mode, self.policy = mode, policy

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            if i == 1 and self.mode == "plain":
                x = x + checkpoint(block, x, use_reentrant=False)
            elif i == 1 and self.mode == "selective":
                context = functools.partial(create_selective_checkpoint_contexts, self.policy)
                x = x + checkpoint(block, x, use_reentrant=False, context_fn=context)
            else:
                x = x + block(x)
        return x.square().mean()


def _model(mode="none", policy=None):
    torch.manual_seed(0)
    return Blocks(mode, policy), (torch.randn(256, 64),)


def test_a_plain_checkpoint_region_is_recomputed_even_with_room():
    model, inputs = _model("plain")
    mine, cmodel, loss, plan = compiled_step(model, inputs, 1.0, "eager")
    assert_matches(reference(model, inputs), mine, loss)
    free, _, _, free_plan = compiled_step(_model()[0], inputs, 1.0, "eager")
    assert not free_plan.recomputed  # without the checkpoint an ample budget recomputes nothing
    # with it, the middle block's inner values (the GELU's input and output) are recomputed
    assert len(plan.recomputed) >= 2, plan.recomputed
    assert not set(plan.saved) & set(plan.recomputed)
    assert measured_peak(mine, cmodel, inputs) <= plan.budget_bytes


def _save_matmuls(ctx, op, *args, **kwargs):
    if op in (torch.ops.aten.addmm.default, torch.ops.aten.mm.default):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def test_must_save_is_never_recomputed_at_the_tightest_budget():
    model, inputs = _model("selective", _save_matmuls)
    p = graphremat.plan(model, *inputs, budget=1.0)
    mine, cmodel, loss, plan = compiled_step(model, inputs, p.min_feasible_bytes, "eager")
    assert_matches(reference(model, inputs), mine, loss)
    assert plan.recomputed
    must_save = {
        t.name
        for t in plan.tensors
        if t.op in ("aten.addmm.default", "aten.mm.default") and "MUST_SAVE" in t.note
    }
    assert must_save, [(t.name, t.op, t.note) for t in plan.tensors]
    assert not must_save & set(plan.recomputed)
    assert measured_peak(mine, cmodel, inputs) <= plan.budget_bytes


def _recompute_dropout(ctx, op, *args, **kwargs):
    if op is torch.ops.aten.native_dropout.default:
        return CheckpointPolicy.MUST_RECOMPUTE
    return CheckpointPolicy.PREFER_SAVE


class DropBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.drop = nn.Linear(32, 32), nn.Dropout(0.5)

    def forward(self, x):
        context = functools.partial(create_selective_checkpoint_contexts, _recompute_dropout)
        f = lambda t: self.drop(self.lin(t))  # noqa: E731
        return checkpoint(f, x, use_reentrant=False, context_fn=context).square().mean()


def test_must_recompute_on_a_random_op_is_a_clear_error():
    with pytest.raises(graphremat.UnsupportedGraph, match="MUST_RECOMPUTE"):
        graphremat.plan(DropBlock(), torch.randn(8, 32), budget=1.0)


class CheckpointedDropout(nn.Module):
    """Linear -> Dropout -> Linear inside one plain checkpoint region: the dropout's output is
    an inner value (recomputed), its mask comes from a random op (saved)."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.drop = nn.Linear(64, 256), nn.Linear(256, 64), nn.Dropout(0.1)

    def forward(self, x):
        inner = lambda t: self.l2(self.drop(torch.relu(self.l1(t))))  # noqa: E731
        return checkpoint(inner, x, use_reentrant=False).square().mean()


@pytest.mark.parametrize("codegen", ["eager", "inductor"])
def test_a_dropout_inside_a_checkpoint_region_saves_its_mask(codegen):
    """The mask is an output of the random op (never recomputed) and may be saved although the
    region's values are never to be saved: with eager codegen (where the dropout is split into
    mask and multiply) the min-peak model had no plan at all (ModelMismatch)."""
    torch.manual_seed(0)
    model, inputs = CheckpointedDropout(), (torch.randn(128, 64),)
    with torch._inductor.config.patch(fallback_random=True):
        ref = reference(model, inputs, inductor=codegen == "inductor")
        mine, cmodel, loss, plan = compiled_step(model, inputs, 1.0, codegen)
    assert_matches(ref, mine, loss)
    assert plan.recomputed
    if codegen == "eager":
        decision = {t.name: t.decision for t in plan.tensors}
        masks = [t.name for t in plan.tensors if t.dtype == "bool"]
        assert masks and all(decision[m] == "saved" for m in masks), plan.tensors
    assert measured_peak(mine, cmodel, inputs) <= plan.budget_bytes
