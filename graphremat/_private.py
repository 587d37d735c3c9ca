"""Every private PyTorch API graphremat uses, in one place (pinned: torch >=2.13,<2.14).

tests/test_private_contract.py checks that each of these still exists and behaves as assumed.
"""

from __future__ import annotations

import contextlib

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.backends.debugging import boxed_nop
from torch._dynamo.resume_execution import ContinueExecutionCache
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
from torch._guards import CompileContext, TracingContext, detect_fake_mode
from torch._inductor.custom_graph_pass import CustomPartitionerFn
from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.flop_counter import flop_registry

__all__ = [
    "CompileContext",
    "ContinueExecutionCache",
    "TracingContext",
    "CustomPartitionerFn",
    "FakeTensor",
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
    "detect_fake_mode",
    "flop_registry",
    "is_not_collective",
    "min_cut_rematerialization_partition",
    "unset_fake_temporarily",
]


def inductor_graph():
    """The GraphLowering Inductor is compiling (inside its scheduler passes)."""
    from torch._inductor.virtualized import V

    return V.graph


def graph_input_bytes(graph, name: str) -> int:
    """Bytes of the Inductor graph input ``name`` (whether or not a kernel reads it)."""
    node = graph.graph_inputs[name]
    numel = graph.sizevars.optimization_hint(node.get_numel())
    return int(numel) * node.get_dtype().itemsize


@contextlib.contextmanager
def on_wrapper_memory_plan(callback):
    """While active, ``callback(wrapper)`` runs right after Inductor's wrapper code generator
    has planned its buffers (``memory_plan_reuse``: which freed buffer each allocation reuses,
    which ``del`` lines remain), for the top-level graph of each compile."""
    from torch._inductor.codegen.wrapper import PythonWrapperCodegen, SubgraphPythonWrapperCodegen

    original = PythonWrapperCodegen.memory_plan_reuse

    def planned(self) -> None:
        original(self)
        if not isinstance(self, SubgraphPythonWrapperCodegen):
            callback(self)

    PythonWrapperCodegen.memory_plan_reuse = planned
    try:
        yield
    finally:
        PythonWrapperCodegen.memory_plan_reuse = original


@contextlib.contextmanager
def no_distant_vertical_fusion():
    """While active, Inductor's scheduler does not fuse a producer with a consumer far from it
    in the graph's order (its own "long distant" rule, which it applies to horizontal fusion
    only). A fused kernel runs where its first member was, and the topological sort then pulls
    the consumer's other inputs ahead of it: computations graphremat placed late in the backward
    run early and their buffers stay alive across the peak (measured: the test U-Net at 0.55
    with max_recomputes=2, one plan: its code peaks at 18,303,216 bytes with such fusions and
    fits the budget of 14,511,085 without them)."""
    from torch._inductor.virtualized import V

    parent = type(V.choices)

    class NoDistantVerticalFusion(parent):
        @staticmethod
        def can_fuse_vertical(scheduler, node1, node2, shared_data_score) -> bool:
            if scheduler.are_long_distant_nodes(node1, node2):
                return False
            return parent.can_fuse_vertical(scheduler, node1, node2, shared_data_score)

    with V.set_choices_handler(NoDistantVerticalFusion()):
        yield


#: scratch memory an extern kernel may hold while it runs (oneDNN's scratchpad: 12,336-12,464
#: bytes measured for the test models' convolutions on CPU)
EXTERN_SCRATCH_BYTES = 16 * 1024


def wrapper_peak_memory(
    wrapper,
    freed_inputs: dict[str, tuple[object, int]],
    trace: list | None = None,
) -> tuple[int, dict[str, tuple[object, int]]]:
    """The peak bytes of the code Inductor generated, replayed line by line from its planned
    wrapper: an allocation adds its buffer, a reuse hands a buffer to another name (no bytes),
    a ``del`` frees it unless the buffer was reused, a fallback kernel allocates its outputs
    when it runs. ``freed_inputs`` (graph inputs the code may free: the backward's saved
    values: name -> (storage key, bytes of the storage), inputs sharing a storage freeing it
    together) are live from the start; other inputs are the caller's and not counted. Buffers
    still live at the end (the graph's outputs) stay counted. An extern kernel (mm, conv, a
    fallback op) also holds scratch memory while it runs, which the wrapper does not show: counted
    as :data:`EXTERN_SCRATCH_BYTES`, plus for a fallback with several outputs two copies of all but
    its largest (measured on CPU: ``convolution_backward`` makes its weight gradient in another
    layout and copies it, two temporaries of that size, beside a 12 KB scratchpad). Returns the
    peak and, per graph output the code allocated (by the FX output's name), its storage key and
    bytes."""
    from torch._inductor import ir
    from torch._inductor.codegen import wrapper as W
    from torch._inductor.virtualized import V

    graph = V.graph

    def nbytes(node) -> int:
        size = graph.sizevars.optimization_hint(graph.get_allocation_storage_size(node), fallback=0)
        return int(size) * node.get_dtype().itemsize

    owner: dict[str, set[int]] = {}  # name -> storages it holds (a fallback's tuple: several)
    refs: dict[int, set[str]] = {}  # storage -> names holding it
    size: dict[int, int] = {}
    element: dict[str, int] = {}  # a fallback's output buffer -> its storage in the tuple
    live = peak = 0

    def alloc(name: str, n: int) -> int:
        nonlocal live, peak
        sid = len(size)
        size[sid], refs[sid] = n, {name}
        owner.setdefault(name, set()).add(sid)
        live += n
        peak = max(peak, live)
        return sid

    def drop(name: str) -> None:
        nonlocal live
        for sid in owner.pop(name, ()):
            refs[sid].discard(name)
            if not refs[sid]:
                live -= size[sid]

    def share(new: str, sids: set[int]) -> None:
        for sid in sids:
            owner.setdefault(new, set()).add(sid)
            refs[sid].add(new)

    by_key: dict[object, int] = {}
    for name, (key, n) in freed_inputs.items():
        if key in by_key:
            share(name, {by_key[key]})
        else:
            by_key[key] = alloc(name, n)
    for line in wrapper.lines:
        if isinstance(line, W.AllocateLine):
            alloc(line.node.get_name(), nbytes(line.node))
        elif isinstance(line, W.ReuseLine):
            old, new = line.node.get_name(), line.reused_as.get_name()
            share(new, set(owner.get(old, ())))
            if line.delete_old:
                drop(old)
        elif isinstance(line, W.ReinterpretLine):  # a view of a buffer (e.g. a part of a cat)
            share(line.reused_as.get_name(), set(owner.get(line.node.get_name(), ())))
        elif isinstance(line, W.FreeIfNotReusedLine):
            if not line.is_reused:
                drop(line.node.get_name())
        elif isinstance(line, W.FreeLine):
            drop(line.node.get_name())
        elif isinstance(line, W.ExternKernelAllocLine):
            node = line.node
            if isinstance(node.layout, ir.MultiOutputLayout):  # a tuple, one storage per output
                for out in getattr(node, "outputs", ()):
                    if isinstance(out, ir.Buffer) and not out.get_inputs_that_alias_output():
                        element[out.get_name()] = alloc(node.get_name(), nbytes(out))
            elif (
                not isinstance(node.layout, ir.NoneLayout)
                and not node.get_inputs_that_alias_output()
            ):
                alloc(node.get_name(), nbytes(node))  # (else: returns nothing or a view)
        elif isinstance(line, W.MultiOutputLine):
            sid = element.get(line.result_name)
            share(line.result_name, {sid} if sid is not None else set(owner.get(line.arg_name, ())))
        if isinstance(line, (W.ExternKernelOutLine, W.ExternKernelAllocLine)):
            # its outputs allocated, the kernel runs with its scratch memory on top
            outs = sorted(
                nbytes(o) for o in getattr(line.node, "outputs", ()) if isinstance(o, ir.Buffer)
            )
            peak = max(peak, live + EXTERN_SCRATCH_BYTES + 2 * sum(outs[:-1]))
        if trace is not None:
            trace.append(
                (type(line).__name__, getattr(getattr(line, "node", None), "get_name", str)(), live)
            )
    outputs = {}
    fx_outputs = graph.module.graph.find_nodes(op="output")[0].args[0]
    for fx_node, node in zip(fx_outputs, graph.graph_outputs, strict=False):
        if not isinstance(fx_node, torch.fx.Node) or not isinstance(node, ir.IRNode):
            continue
        try:
            sids = owner.get(node.get_name())
        except NotImplementedError:  # not a buffer (None, a constant)
            continue
        if sids:
            outputs[fx_node.name] = (frozenset(sids), sum(size[s] for s in sids))
    return int(peak), outputs


def profiler_enabled() -> bool:
    """True while a torch profiler session runs in this process."""
    return bool(torch.autograd.profiler._is_profiler_enabled)


def graph_break_reason(gm) -> object:
    """Dynamo's ``GraphCompileReason`` when ``gm`` ends at a graph break, else None."""
    return getattr(gm, "compile_subgraph_reason", None)


@contextlib.contextmanager
def outside_python_dispatch():
    """Dispatch without the Python dispatcher and the Python keys that a compile has turned on
    (AOTAutograd's partitioner runs with them). A c10d collective called under them goes
    through a C++ fallback that takes the GIL back and holds it while the op enqueues its
    work; ProcessGroupGloo's worker thread frees the previous work under its queue's lock and
    needs the GIL to drop its tensors' Python objects: a deadlock (one rank waits in the
    broadcast, the other in ``enqueue``; gdb stacks and a 2-rank reproduction in
    tests/test_distributed.py). For real tensors only: Python modes are skipped too."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.Python) | torch._C.DispatchKeySet(
        torch._C.DispatchKey.PythonTLSSnapshot
    )
    with torch._C._DisablePythonDispatcher(), torch._C._ExcludeDispatchKeyGuard(keys):
        yield
