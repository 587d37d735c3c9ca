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
from .capture import _BN_FUNCTIONAL, Capture
from .errors import GraphRematError
from .passes import dropout_outputs_in_forward

#: meta key of a backward placeholder added by :func:`_pass_inputs`: the joint graph's name of
#: the value it receives
JOINT_NAME = "graphremat_joint_name"


def saved_fx_nodes(joint: fx.GraphModule, capture: Capture, saved: Iterable[str]) -> list[fx.Node]:
    """The FX values to save for the plan's saved problem nodes (storages).

    For each saved storage: its required forward members that the backward module may read,
    i.e. those read by a backward node or by a forward node outside the saved storages (one the
    backward recomputes: required forward nodes are recomputed too when the plan does not save
    them); the storage's own node if none is. Members the extracted backward does not read are
    dropped by the extraction; a member left out would be recomputed by it (with its storage's
    op and everything upstream that is not saved), which the plan's model does not count.
    """
    saved = set(saved)
    required = capture.fwd_required_fx
    by_owner: dict[str, list[fx.Node]] = {}
    for n in joint.graph.nodes:
        o = capture.owner.get(n.name)
        if o in saved and n.name in required and n.op == "call_function":
            by_owner.setdefault(o, []).append(n)

    def read_outside(m: fx.Node) -> bool:
        return any(
            u.name not in required or capture.owner.get(u.name) not in saved for u in m.users
        )

    out: list[fx.Node] = []
    for o in sorted(saved, key=capture.problem.fwd_pos.__getitem__):
        members = by_owner.get(o, [])
        outside = [m for m in members if read_outside(m)]
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


def _is_view(n: fx.Node, capture: Capture) -> bool:
    """``n`` aliases storage that another node owns: a view op, a getitem, or an op the capture's
    alias analysis found sharing its input's storage (``_unsafe_view``, which is no view op)."""
    owner = capture.owner.get(n.name)
    return (
        n.target is operator.getitem
        or bool(getattr(n.target, "is_view", False))
        or (owner is not None and owner != n.name)
    )


def _refake(node: fx.Node) -> None:
    """Give a recomputed copy its own fake value (a storage of its own; a view shares its
    copied base's), so that the check counts each copy's bytes."""
    vals = [a.meta.get("val") for a in node.all_input_nodes]
    mode = P.detect_fake_mode([v for v in vals if v is not None])
    if mode is None:
        return
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: a.meta.get("val"))
    with mode:
        node.meta["val"] = node.target(*args, **kwargs)


def emit_copies(
    bw: fx.GraphModule, joint: fx.GraphModule, capture: Capture, copies
) -> fx.GraphModule:
    """The backward of a :class:`graphremat.solvers.multi.CopyPlan`: each recomputation of a
    forward value is emitted (copied from the joint graph, with the views of it the backward
    reads) before the backward step where the plan starts it, and reads the inputs' newest
    copies; FX frees each copy after its last reader, no later than the plan's end."""
    problem = capture.problem
    f = problem.num_fwd
    fwd_names = capture.fwd_fx
    in_bw = {n.meta.get(JOINT_NAME, n.name) for n in bw.graph.nodes}
    members: dict[str, list[fx.Node]] = {}
    for n in joint.graph.nodes:
        v = capture.owner.get(n.name)
        if n.op == "call_function" and n.name in fwd_names and v is not None:
            if n.name in in_bw or n.name == v or _is_view(n, capture):
                members.setdefault(v, []).append(n)
    starts: dict[int, list[str]] = {}
    for v, cs in copies.copies.items():
        for s, _ in cs:
            starts.setdefault(s, []).append(v)
    joint_by_name = {n.name: n for n in joint.graph.nodes}

    old = bw.graph
    new = fx.Graph(owning_module=bw, tracer_cls=old._tracer_cls)
    new._codegen = old._codegen
    env: dict[str, fx.Node] = {}

    bw_by_name = {n.name: n for n in bw.graph.nodes}

    def lookup(a: fx.Node) -> fx.Node:
        if a.name not in env:
            src = bw_by_name.get(a.name) or joint_by_name.get(a.name, a)
            if src.op == "get_attr":  # a constant: read where needed (the backward's own read
                # of it may come later, or there may be none)
                if src.graph is not bw.graph:
                    _copy_constant(joint, bw, src.target)
                env[a.name] = new.node_copy(src, lookup)
                return env[a.name]
            # views (of an input, or of a live copy) cost nothing: made where they are needed
            view = capture.owner.get(a.name) is None or _is_view(src, capture)
            if src.op != "call_function" or not view:
                raise GraphRematError(
                    f"internal error: the copy plan reads {a.name!r} (of "
                    f"{capture.owner.get(a.name)!r}) where no copy of it is alive. Please report "
                    "this graph."
                )
            emit(src)
        return env[a.name]

    def emit(n: fx.Node, recompute: bool = False) -> None:
        out = new.node_copy(n, lookup)
        if n.name in fwd_names:
            _recompute_without_side_outputs(out)
            if recompute:
                _refake(out)
        env[n.name] = out

    done = f - 1  # copies of stages up to here are emitted
    for n in old.nodes:
        if n.op == "placeholder":
            env[n.meta.get(JOINT_NAME, n.name)] = new.node_copy(n, lookup)
    for n in old.nodes:
        if n.op == "placeholder" or n.name in fwd_names:
            continue
        root = capture.owner.get(n.name)
        stage = f + problem.bwd_pos[root] if root in problem.bwd_pos else done
        if n.op == "output":
            stage = problem.num_steps - 1
        while done < stage:
            done += 1
            for v in sorted(starts.get(done, ()), key=problem.fwd_pos.__getitem__):
                for m in members.get(v, ()):
                    emit(m, recompute=True)
        if n.op == "output":
            env[n.name] = new.node_copy(n, lookup)
        else:
            emit(n)
    new.lint()
    gm = fx.GraphModule(bw, new)
    gm.meta.update(getattr(bw, "meta", {}))
    return gm


def _copy_constant(src: torch.nn.Module, dst: torch.nn.Module, target: str) -> None:
    """``dst.<target> = src.<target>`` (a get_attr target, dotted), making the submodules on
    the way where ``dst`` lacks them."""
    *path, name = target.split(".")
    for part in path:
        src = getattr(src, part)
        if not hasattr(dst, part):
            setattr(dst, part, torch.nn.Module())
        dst = getattr(dst, part)
    setattr(dst, name, getattr(src, name))


def _pinned(problem) -> set[str]:
    """Forward values alive for the whole step whatever the plan (pinned and required)."""
    return {
        v for v in problem.candidates() if problem.attr(v, "pinned") and problem.attr(v, "required")
    }


def _read_by_copies(
    joint: fx.GraphModule, capture: Capture, copies, saved: set[str], saved_values: list[fx.Node]
) -> list[fx.Node]:
    """The model inputs (parameters, buffers, user inputs) and the saved values (of the storages
    ``saved``) that the plan's recomputations read, directly or through views of them."""
    owned = {v for v, cs in copies.copies.items() if cs}
    saved_by_owner: dict[str, list[fx.Node]] = {}
    for a in saved_values:
        saved_by_owner.setdefault(capture.owner.get(a.name), []).append(a)
    stack = [
        a
        for n in joint.graph.nodes
        if n.op == "call_function" and capture.owner.get(n.name) in owned
        for a in n.all_input_nodes
    ]
    seen: set[fx.Node] = set()
    found: dict[fx.Node, None] = {}
    while stack:
        a = stack.pop()
        if a in seen:
            continue
        seen.add(a)
        o = capture.owner.get(a.name)
        if a.op == "placeholder":
            if P._is_primal(a) and isinstance(a.meta.get("val"), torch.Tensor):
                found[a] = None
        elif o is not None and o in saved:
            found.update(dict.fromkeys(saved_by_owner.get(o, ())))
        elif a.op == "call_function" and o is None:
            stack.extend(a.all_input_nodes)
    order = {n: i for i, n in enumerate(joint.graph.nodes)}
    return sorted(found, key=order.__getitem__)


def _pass_inputs(
    fw: fx.GraphModule, bw: fx.GraphModule, inputs: list[fx.Node], num_fwd_outputs: int
) -> None:
    """Make the forward hand ``inputs`` (model inputs, resident anyway, or values the plan
    saves) to the backward when the backward module does not take them yet. PyTorch's
    extraction drops saved values the extracted backward's own nodes do not read; the
    recomputations a copy plan places may read them."""
    have = {n.name for n in bw.graph.find_nodes(op="placeholder")}
    missing = [a for a in inputs if a.name not in have]
    if not missing:
        return
    fw_nodes = {n.name: n for n in fw.graph.nodes}
    out = fw.graph.find_nodes(op="output")[0]
    outs = list(out.args[0])
    added = [fw_nodes[a.name] for a in missing]
    out.args = (tuple(outs[:num_fwd_outputs] + added + outs[num_fwd_outputs:]),)
    first = next(iter(bw.graph.find_nodes(op="placeholder")))
    for a in missing:
        with bw.graph.inserting_before(first):
            p = bw.graph.placeholder(a.name)
        p.meta.update(a.meta)
        # FX may name it otherwise (the extraction can leave a.name taken in bw's namespace by
        # a node it then removed): emit_copies reads it under the joint graph's name
        p.meta[JOINT_NAME] = a.name
    fw.recompile()
    bw.recompile()


def rewrite(
    joint: fx.GraphModule,
    capture: Capture,
    saved: Iterable[str],
    *,
    num_fwd_outputs: int,
    static_lifetime_input_nodes=None,
    copies=None,
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``copies``: a :class:`graphremat.solvers.multi.CopyPlan` (its saved set is ``saved``):
    emit its recomputations instead of the just-in-time ones."""
    saved = set(saved)
    if copies is not None:
        # a copy plan does not list pinned values (alive all step, e.g. a batch norm's updated
        # running statistics): the backward must still receive them, not recompute them
        saved |= _pinned(capture.problem)
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
    # (a copy: the extraction removes, in place, the saved values its backward does not read;
    # the copy plan's recomputations may read them, see _read_by_copies)
    fw, bw = P._extract_fwd_bwd_modules(
        joint,
        list(saved_values),
        list(sym),
        num_fwd_outputs=num_fwd_outputs,
        static_lifetime_input_nodes=static_lifetime_input_nodes,
    )
    dropout_outputs_in_forward(fw)
    if copies is None:
        bw = reorder_backward(bw, capture.fwd_fx)
    else:
        read = _read_by_copies(joint, capture, copies, saved, saved_values)
        _pass_inputs(fw, bw, read, num_fwd_outputs)
        bw = emit_copies(bw, joint, capture, copies)
    fw.graph.lint()
    return fw, bw
