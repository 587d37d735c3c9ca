"""Per-tensor records for the plan report: what each forward value is, where the user's code
made it, and what the plan does with it.

Input: the joint graph, its :class:`~graphremat.capture.Capture` and the plan's saved and
recomputed sets. Output: :class:`~graphremat.report.TensorRecord` tuples in forward order. Reads
only; never mutates the graph.
"""

from __future__ import annotations

import re
from collections.abc import Set

import torch
from torch import fx

from .capture import Capture
from .report import TensorRecord

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def source_line(node: fx.Node) -> str:
    """The innermost frame of ``node.meta["stack_trace"]`` as ``file.py:12 in fn: code``."""
    trace = node.meta.get("stack_trace") or ""
    frames = _FRAME.findall(trace)
    if not frames:
        return ""
    path, line, fn, code = frames[-1]
    return f"{path.rsplit('/', 1)[-1]}:{line} in {fn}: {code.strip()}"


def _describe(node: fx.Node) -> tuple[str, tuple[int, ...], str]:
    val = node.meta.get("val")
    op = str(node.target) if node.op == "call_function" else node.op
    if isinstance(val, torch.Tensor):
        shape = tuple(int(d) if isinstance(d, int) else -1 for d in val.shape)
        return op, shape, str(val.dtype).removeprefix("torch.")
    return op, (), type(val).__name__


def tensor_records(
    joint: fx.GraphModule, cap: Capture, saved: Set[str], recomputed: Set[str]
) -> tuple[TensorRecord, ...]:
    """One record per forward storage of the problem, in forward order."""
    fx_nodes = {n.name: n for n in joint.graph.nodes}
    problem = cap.problem
    records = []
    for v in problem.fwd_order:
        node = fx_nodes.get(v)
        info = cap.info.get(v)
        if node is None or info is None:
            continue
        if v in saved:
            decision = "saved"
        elif v in recomputed:
            decision = "recomputed"
        else:
            decision = "forward-only"
        note = ""
        if decision == "saved" and not info.recomputable:
            note = f"not recomputable: {info.reason}"
        outputs = [u for u in problem.graph.successors(v) if problem.attr(u, "tied_to") == v]
        if outputs:
            note = f"multi-output op, outputs {', '.join(outputs)}" + (f"; {note}" if note else "")
        op, shape, dtype = _describe(node)
        records.append(
            TensorRecord(
                name=v,
                decision=decision,
                op=op,
                shape=shape,
                dtype=dtype,
                nbytes=int(problem.attr(v, "mem_bytes")),  # a multi-output op: 0
                flops=info.flops,
                cost_ns=info.cost_ns,
                source=source_line(node),
                note=note,
            )
        )
    return tuple(records)
