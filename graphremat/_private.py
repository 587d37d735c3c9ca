"""Every private PyTorch API graphremat uses, in one place (pinned: torch >=2.13,<2.14).

tests/test_private_contract.py checks that each of these still exists and behaves as assumed.
"""

from __future__ import annotations

from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.backends.debugging import boxed_nop
from torch._functorch.partitioners import (
    _extract_fwd_bwd_modules,
    _extract_fwd_bwd_outputs,
    _is_bwd_seed_offset,
    _is_fwd_seed_offset,
    _is_primal,
    _is_tangent,
    _must_be_in_backward,
    _must_be_in_forward,
    default_partition,
    is_not_collective,
    min_cut_rematerialization_partition,
)
from torch._guards import CompileContext, TracingContext
from torch._inductor.custom_graph_pass import CustomPartitionerFn
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.flop_counter import flop_registry

__all__ = [
    "CompileContext",
    "TracingContext",
    "CustomPartitionerFn",
    "StorageWeakRef",
    "_extract_fwd_bwd_modules",
    "_extract_fwd_bwd_outputs",
    "_is_bwd_seed_offset",
    "_is_fwd_seed_offset",
    "_is_primal",
    "_is_tangent",
    "_must_be_in_backward",
    "_must_be_in_forward",
    "aot_autograd",
    "boxed_nop",
    "default_partition",
    "flop_registry",
    "is_not_collective",
    "min_cut_rematerialization_partition",
    "unset_fake_temporarily",
]


def inductor_graph():
    """The GraphLowering Inductor is compiling (inside its scheduler passes)."""
    from torch._inductor.virtualized import V

    return V.graph


def freeable_input_buffers(nodes: list, graph_inputs: list[str]) -> dict:
    """Inductor's FreeableInputBuffer per graph input the scheduled ``nodes`` read."""
    from torch._inductor import memory
    from torch.utils._ordered_set import OrderedSet

    return memory.get_freeable_input_buf(nodes, OrderedSet(graph_inputs))


def graph_input_bytes(graph, name: str) -> int:
    """Bytes of the Inductor graph input ``name`` (whether or not a kernel reads it)."""
    node = graph.graph_inputs[name]
    numel = graph.sizevars.optimization_hint(node.get_numel())
    return int(numel) * node.get_dtype().itemsize


def inductor_peak_memory(nodes: list, freed_inputs: dict, outputs) -> int:
    """Inductor's own replay of its scheduled ``nodes``: the peak bytes of its buffers, plus the
    ``freed_inputs`` (FreeableInputBuffers, freed after their last use); outputs live on.

    Two refinements to Inductor's estimate, both what its code generation does: a buffer that
    only its own (fused) kernel reads becomes kernel-local and is never allocated; and a kernel
    writes an output into an input of the same size that dies in it ("# reuse" in the generated
    code), so that input is freed before the output is allocated -- a generated kernel only:
    an extern kernel (mm, bmm, conv, fallback ops) never writes over its own input."""
    from torch._inductor import memory
    from torch._inductor.scheduler import ExternKernelSchedulerNode
    from torch.utils._ordered_set import OrderedSet

    sched = nodes[0].scheduler
    memory.assign_memory_planning_info_for_scheduler_buffers(nodes, sched.name_to_buf)
    memory.assign_memory_planning_info_for_scheduler_nodes(
        nodes, sched.name_to_fused_node, sched.name_to_buf, freed_inputs
    )
    timeline, _, _ = memory.compute_memory_timeline(nodes, freed_inputs, OrderedSet(outputs))
    allocated = [
        b
        for b in timeline
        if not (
            not isinstance(b.buffer, memory.FreeableInputBuffer)
            and b.end_step != -1
            and not b.buffer.mpi_buffer.succ_nodes
        )
    ]
    delta = [0] * (len(nodes) + 2)
    dying: dict[tuple[int, int], int] = {}  # (step, bytes) -> buffers of that size dying then
    for b in allocated:
        if b.end_step != -1:
            delta[b.end_step + 1] -= b.size_free
            dying[b.end_step, b.size_free] = dying.get((b.end_step, b.size_free), 0) + 1
    for b in allocated:
        delta[b.start_step] += b.size_alloc
        key = (b.start_step, b.size_alloc)
        in_place = not isinstance(b.buffer, memory.FreeableInputBuffer) and not isinstance(
            nodes[b.start_step], ExternKernelSchedulerNode
        )
        if in_place and dying.get(key, 0) > 0:
            dying[key] -= 1  # written in place of a same-size buffer dying at this step
            delta[b.start_step] -= b.size_alloc
            delta[b.start_step + 1] += b.size_alloc
    peak = live = 0
    for d in delta:
        live += d
        peak = max(peak, live)
    return int(peak)


def graph_break_reason(gm) -> object:
    """Dynamo's ``GraphCompileReason`` when ``gm`` ends at a graph break, else None."""
    return getattr(gm, "compile_subgraph_reason", None)
