"""Rewrite: a plan -> the forward and backward ``fx.GraphModule``s AOTAutograd runs.

Input: the joint graph, its :class:`Capture`, and the plan's saved problem nodes. Output:
``(fw_module, bw_module)``. The forward module computes the required forward nodes and returns
the forward outputs plus exactly the plan's saved values; the backward module recomputes every
other forward value it needs *just in time* -- immediately before the first backward op that
needs it, inputs first, a multi-output op's outputs right after the op -- and otherwise keeps the
joint graph's backward order. This is the schedule :func:`graphremat.solvers.problem.evaluate`
scores. PyTorch's ``_extract_fwd_bwd_modules`` does the mechanical extraction; the order is ours.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import torch
import torch.fx as fx

from . import _private as P
from .capture import Capture


def saved_fx_nodes(joint: fx.GraphModule, capture: Capture, saved: Iterable[str]) -> list[fx.Node]:
    """The FX values to save for the plan's saved problem nodes (storages).

    For each saved storage: its required forward members read by anything outside the required
    forward set (the backward or a recomputation); the storage's own node if none is.
    """
    saved = set(saved)
    required = capture.fwd_required_fx
    by_owner: dict[str, list[fx.Node]] = {}
    for n in joint.graph.nodes:
        o = capture.owner.get(n.name)
        if o in saved and n.name in required and n.op == "call_function":
            by_owner.setdefault(o, []).append(n)
    out: list[fx.Node] = []
    for o in sorted(saved, key=capture.problem.fwd_pos.__getitem__):
        members = by_owner.get(o, [])
        outside = [m for m in members if any(u.name not in required for u in m.users)]
        if not outside:
            outside = [m for m in members if m.name == o]
        out.extend(outside)
    return out


def _primals_read_by_backward(
    joint: fx.GraphModule, saved_values: list[fx.Node], num_fwd_outputs: int
) -> list[fx.Node]:
    """Inputs (parameters, buffers, user inputs) that the backward module reads: they are
    resident anyway, so passing them to the backward costs no memory."""
    outputs = list(joint.graph.find_nodes(op="output")[0].args[0])[num_fwd_outputs:]
    stop = set(saved_values)
    seen: set[fx.Node] = set()
    found: list[fx.Node] = []
    stack = [o for o in outputs if isinstance(o, fx.Node)]
    while stack:
        n = stack.pop()
        if n in seen or n in stop:
            continue
        seen.add(n)
        if n.op == "placeholder":
            if P._is_primal(n) and isinstance(n.meta.get("val"), torch.Tensor):
                found.append(n)
            continue
        stack.extend(n.all_input_nodes)
    order = {n: i for i, n in enumerate(joint.graph.nodes)}
    return sorted(found, key=order.__getitem__)


def saved_sym_nodes(joint: fx.GraphModule, capture: Capture) -> list[fx.Node]:
    required = capture.fwd_required_fx
    names = set(capture.sym_fwd_nodes)
    return [
        n
        for n in joint.graph.nodes
        if n.name in names and n.name in required and any(u.name not in required for u in n.users)
    ]


_BN_FUNCTIONAL = torch.ops.aten._native_batch_norm_legit_functional.default
_BN_NO_STATS = torch.ops.aten._native_batch_norm_legit.no_stats


def _recompute_without_side_outputs(node: fx.Node) -> None:
    """A recomputed training-mode batch norm must not touch the running statistics: they were
    updated once, in the forward (and mutated in place since, which would also trip autograd's
    saved-tensor version check). Its no-stats variant computes the same output, mean and rstd."""
    if node.target is _BN_FUNCTIONAL and node.args[5] is True:
        x, weight, bias, _, _, training, momentum, eps = node.args
        node.target = _BN_NO_STATS
        node.args = (x, weight, bias, training, momentum, eps)
        val = node.meta.get("val")
        if isinstance(val, (tuple, list)):
            node.meta["val"] = tuple(val[:3])


def reorder_backward(bw: fx.GraphModule, fwd_names: set[str]) -> fx.GraphModule:
    """Place each recomputed forward node just before its first consumer (inputs first)."""
    old = bw.graph
    new = fx.Graph(owning_module=bw, tracer_cls=old._tracer_cls)
    new._codegen = old._codegen
    env: dict[fx.Node, fx.Node] = {}

    def copy(n: fx.Node) -> None:
        env[n] = new.node_copy(n, lambda a: env[a])
        if n.name in fwd_names:
            _recompute_without_side_outputs(env[n])

    def emit(target: fx.Node) -> None:
        # iterative post-order DFS over not-yet-emitted inputs
        stack: list[tuple[fx.Node, bool]] = [(target, False)]
        while stack:
            n, expanded = stack.pop()
            if n in env:
                continue
            if expanded:
                copy(n)
                if n.name in fwd_names:  # a recomputed multi-output op: its outputs now
                    for u in n.users:
                        if u.target is operator.getitem and u not in env and u.op != "output":
                            copy(u)
                continue
            stack.append((n, True))
            for a in reversed(n.all_input_nodes):
                if a not in env:
                    stack.append((a, False))

    nodes = list(old.nodes)
    for n in nodes:
        if n.op == "placeholder":
            copy(n)
    for n in nodes:
        if n.op in ("placeholder", "output") or n.name in fwd_names:
            continue
        emit(n)
    for n in nodes:
        if n.op == "output":
            emit_inputs = [a for a in n.all_input_nodes if a not in env]
            for a in emit_inputs:
                emit(a)
            copy(n)
    new.lint()
    gm = fx.GraphModule(bw, new)
    gm.meta.update(getattr(bw, "meta", {}))
    return gm


def rewrite(
    joint: fx.GraphModule,
    capture: Capture,
    saved: Iterable[str],
    *,
    num_fwd_outputs: int,
    static_lifetime_input_nodes=None,
) -> tuple[fx.GraphModule, fx.GraphModule]:
    saved_values = saved_fx_nodes(joint, capture, saved)
    saved_values = _primals_read_by_backward(joint, saved_values, num_fwd_outputs) + saved_values
    sym = saved_sym_nodes(joint, capture)
    # A recomputed batch norm reads the running statistics only to be rewritten into its no-stats
    # variant (see _recompute_without_side_outputs); the buffers, mutated in place after the
    # forward, must not trip the saved-tensor version check on the way.
    stats = {
        a
        for n in joint.graph.find_nodes(op="call_function", target=_BN_FUNCTIONAL)
        for a in n.args[3:5]
        if isinstance(a, fx.Node) and a.op == "placeholder"
    }
    for a in stats:  # left set: the forward module's placeholders share this meta dict
        a.meta["saved_tensor_with_no_vc_check"] = True
    fw, bw = P._extract_fwd_bwd_modules(
        joint,
        saved_values,
        sym,
        num_fwd_outputs=num_fwd_outputs,
        static_lifetime_input_nodes=static_lifetime_input_nodes,
    )
    bw = reorder_backward(bw, capture.fwd_fx)
    fw.graph.lint()
    return fw, bw
