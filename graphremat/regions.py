"""One budget for a whole training step compiled as several regions (graph breaks).

Dynamo compiles a model with graph breaks into regions that run one after another: forwards in
order, then backwards in reverse. While region k runs, memory also holds what the other regions
keep: the parameters, buffers and gradients of the rest of the model, and the activations that
the regions before k saved for their backward (theirs runs after k's). graphremat plans region k
with those bytes as fixed residents, so each region's promise is a promise about the whole step:

    outside(k) = (model params + buffers + grads) - (region k's own params, buffers and grads)
                 + saved bytes of the regions compiled before k

Regions are keyed by Dynamo's frame id (under DistributedDataParallel, by frame id and the
gradient bucket at which Dynamo's DDPOptimizer split the frame's graph): they are compiled in
the order the first step reaches them, which is their forward order; a recompilation of a
region (a new input shape) keeps its place. Gradients are counted as if every parameter's
``.grad`` were alive throughout (the usual case once a step has run). This needs the model
(``graphremat.compile``); the string backend sees one region at a time and plans each under the
full budget, with a warning.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from . import _private as P


def local_part(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this process holds: a DTensor's (FSDP2's sharded parameters) local
    shard, else ``t``."""
    if isinstance(t, DTensor):
        with torch.no_grad():
            return t.to_local()
    return t


def model_resident_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's distinct parameter and buffer storages on this process (a sharded
    parameter's local shard), plus one gradient per parameter that requires grad, and, under
    DistributedDataParallel without ``gradient_as_bucket_view``, DDP's gradient buckets (one
    more copy of the gradients, kept for the communication)."""
    # DDP's buckets are views of the gradients with gradient_as_bucket_view, else a copy
    grad_copies = 1
    if isinstance(model, DistributedDataParallel) and not model.gradient_as_bucket_view:
        grad_copies = 2
    seen: set[int] = set()
    total = 0
    for t in (*model.parameters(), *model.buffers()):
        s = local_part(t).untyped_storage()
        if s.data_ptr() in seen and s.nbytes():
            continue
        seen.add(s.data_ptr())
        total += s.nbytes() * (1 + grad_copies * t.requires_grad)
    return total


class Regions:
    """The ledger of one compiled model's regions (see the module docstring)."""

    def __init__(self, model: object = None) -> None:
        self.model_bytes = (
            model_resident_bytes(model) if isinstance(model, torch.nn.Module) else None
        )
        self.saved: dict[object, int] = {}  # region key -> bytes its latest plan saves
        self.current: object = None  # key of the region being compiled

    def outside_bytes(self, own_bytes: int) -> int:
        """Bytes other regions keep alive while the current region runs."""
        if self.model_bytes is None:
            return 0
        earlier = 0
        for k, b in self.saved.items():
            if k == self.current:
                break
            earlier += b
        return max(0, self.model_bytes - own_bytes) + earlier

    def record(self, saved_bytes: int) -> None:
        self.saved[self.current] = saved_bytes


def current_region_key() -> object:
    """Dynamo's frame id of the graph being compiled (None outside a Dynamo compile); under
    DistributedDataParallel, ``(frame id, bucket)``: Dynamo's DDPOptimizer splits one frame's
    graph at gradient-bucket boundaries and compiles the pieces in forward order, each a region."""
    compile_id = P.CompileContext.current_compile_id()
    if compile_id is None:
        return None
    tracing = P.TracingContext.try_get()
    ddp = getattr(tracing, "ddp_optimizer_ctx", None)
    # curr_bucket counts the pieces compiled so far in this frame (-1 before the first)
    return compile_id.frame_id if ddp is None else (compile_id.frame_id, ddp.curr_bucket)
