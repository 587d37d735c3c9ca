"""PyTorch's own answer, measured the same way: the min-cut partitioner under
``torch._functorch.config.activation_memory_budget``.

Input: a model whose ``forward(*inputs)`` returns the loss, and a knob value in [0, 1]. Output:
the measured peak of one training step (eager codegen, so op-level memory is exact) and what
PyTorch's partitioner recomputed, costed with graphremat's own annotations (FLOPs and the
roofline estimate that also charges bytes moved). The model is copied; the caller's is untouched.
:func:`aot_eager_backend` and :func:`knob_config` are that configuration, for running (timing) a
model the same way.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import fx

from . import _private as P
from .capture import capture_joint
from .measure import measure_step_peak


@dataclass(frozen=True, slots=True)
class KnobResult:
    knob: float
    measured_peak_bytes: int
    recompute_flops: int
    recompute_cost_ns: int
    recomputed: tuple[str, ...]  # forward values (storage owners) the backward recomputes


def recomputed_by(joint: fx.GraphModule, bw: fx.GraphModule, num_fwd_outputs: int):
    """Forward storages that ``bw`` computes again, and their summed FLOPs and cost (ns)."""
    cap = capture_joint(joint, num_fwd_outputs, name="pytorch")
    owners = []
    for n in bw.graph.nodes:
        if n.op == "call_function" and n.name in cap.fwd_fx:
            owner = cap.owner.get(n.name)
            if owner is not None and owner in cap.info and owner not in owners:
                owners.append(owner)
    flops = sum(cap.info[o].flops for o in owners)
    cost = sum(cap.info[o].cost_ns for o in owners)
    return tuple(owners), flops, cost


def aot_eager_backend(partition_fn=P.min_cut_rematerialization_partition):
    """PyTorch's own ``aot_eager`` configuration (torch/_dynamo/backends/debugging.py): eager
    forward and backward, split by ``partition_fn`` (the min-cut partitioner, which reads
    ``activation_memory_budget``). Without keep_inference_input_mutations its knob < 1 partitions
    of BatchNorm models fail autograd's version check (running stats saved, then updated)."""
    return P.aot_autograd(
        fw_compiler=P.boxed_nop,
        bw_compiler=P.boxed_nop,
        partition_fn=partition_fn,
        keep_inference_input_mutations=True,
    )


@contextlib.contextmanager
def knob_config(knob: float, solver: str = "dp") -> Iterator[None]:
    """PyTorch's knob and its solver, set while a model compiled with :func:`aot_eager_backend`
    compiles (its first call); Dynamo's recompile limit lifted, since every copy of one model
    class compiles the same code objects again."""
    with (
        torch._functorch.config.patch(
            activation_memory_budget=knob, activation_memory_budget_solver=solver
        ),
        torch._dynamo.config.patch(recompile_limit=10**6),
    ):
        yield


def run_pytorch_knob(model, inputs, knob: float, solver: str = "dp") -> KnobResult:
    """One training step of ``model`` compiled with PyTorch's partitioner at ``knob``."""
    found: dict = {}

    def partition(joint, joint_inputs, **kwargs):
        fw, bw = P.min_cut_rematerialization_partition(joint, joint_inputs, **kwargs)
        found["recomputed"] = recomputed_by(joint, bw, kwargs["num_fwd_outputs"])
        return fw, bw

    backend = aot_eager_backend(partition)  # the partition observed
    compiled = torch.compile(copy.deepcopy(model), backend=backend, dynamic=False, fullgraph=True)
    with knob_config(knob, solver):
        compiled(*inputs).backward()  # compiles outside the measurement
        peak = measure_step_peak(compiled, *inputs)
    recomputed, flops, cost = found.get("recomputed", ((), 0, 0))
    return KnobResult(knob, peak, flops, int(cost), recomputed)
