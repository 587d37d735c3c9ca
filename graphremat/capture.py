"""Capture + annotate: an AOTAutograd joint graph -> a :class:`RematProblem` for the solvers.

Input: the joint forward+backward ``fx.GraphModule`` handed to a partition function, and
``num_fwd_outputs``. Output: a :class:`Capture` holding the problem (a networkx DAG with plain
numbers, one node per *storage-owning* FX node) and the mapping back to FX node names.

Invariants:
  * bytes are counted per storage (FakeTensor storage identity): a view, ``detach`` or an
    aliasing ``getitem`` owns nothing and is folded into the node that owns its storage, so
    keeping a view alive keeps its base alive; views of inputs (parameters) cost nothing.
  * a multi-output op is a node that owns nothing but allocates all its outputs during its
    step (``transient_bytes``); its outputs are nodes ``tied_to`` it.
  * a forward node is never recomputed if it draws random numbers, mutates, is a collective,
    is effectful, or the user's checkpoint policy says MUST_SAVE; it is never saved if the
    policy says MUST_RECOMPUTE or PREFER_RECOMPUTE (what a plain ``torch.utils.checkpoint``
    region tags its ops with; PyTorch's own partitioner also treats it as a must), unless it
    cannot be recomputed (a random op inside a checkpoint region: its output is saved).
  * the graph is read, never modified.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import networkx as nx
import torch
import torch.fx as fx

from . import _private as P
from .calibrate import META_KEY as WORKSPACE_KEY
from .calibrate import TIME_KEY
from .errors import UnsupportedGraph
from .solvers.problem import RematProblem

log = logging.getLogger("graphremat")

# Roofline constants for the runtime estimate used as recompute cost (documented in README).
# cost unit: nanoseconds of estimated runtime.
ROOFLINE = {
    "cpu": {"flops_per_s": 2.0e11, "bytes_per_s": 2.0e10},
    "cuda": {"flops_per_s": 4.0e14, "bytes_per_s": 2.0e12},
}
#: A CPU thread's FLOP rate for the solver's costs under cost_model="roofline-v2": a small ``mm``
#: ran at 86-98 GFLOP/s on one thread of the README's 2-core CPU, 196 on two, where ROOFLINE's
#: fixed 2e11 (the reported costs' constant) is two threads' rate.
CPU_FLOPS_PER_THREAD = 1.0e11
_OP_OVERHEAD_NS = 1  # every real op costs at least this much, so needless recompute never pays
#: Per-op cost of running an op eagerly (codegen="eager"), whatever its size: dispatch, and on
#: CUDA the kernel launch. Measured on the 2-core CPU of the README (one thread, torch.profiler):
#: a 64x64 ``mul`` 3.2 us, a ``view`` 2.9 us (timed directly from Python, a 4096-element ``mul``
#: takes 1.7 us). CUDA: assumed (not measured here). Inductor fuses a recomputed op into a kernel
#: it launches anyway, so there it is not counted.
EAGER_DISPATCH_NS = {"cpu": 3_000, "cuda": 5_000}


def thread_roofline(threads: int | None = None) -> dict[str, dict[str, float]]:
    """ROOFLINE with the CPU's FLOP rate for ``threads`` intra-op threads (default: torch's
    count now) at :data:`CPU_FLOPS_PER_THREAD` each. Memory bandwidth is shared by the threads
    and stays ROOFLINE's."""
    threads = torch.get_num_threads() if threads is None else threads
    out = {k: dict(v) for k, v in ROOFLINE.items()}
    out["cpu"]["flops_per_s"] = CPU_FLOPS_PER_THREAD * max(1, threads)
    return out


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What graphremat knows about one storage-owning FX node (``node.meta['graphremat']``)."""

    name: str
    phase: str
    nbytes: int
    flops: int
    cost_ns: int  # roofline estimate; the problem's "cost" may add per-op dispatch (capture_joint)
    recomputable: bool
    reason: str  # why not recomputable, "" otherwise
    members: tuple[str, ...]  # FX nodes whose values live in this node's storage


@dataclass(slots=True)
class Capture:
    problem: RematProblem
    info: dict[str, NodeInfo]
    owner: dict[str, str | None]  # FX name -> problem node (None: aliases an input / no storage)
    num_fx_nodes: int
    primal_bytes: int
    fwd_required_fx: set[str] = field(default_factory=set)
    # FX nodes holding forward values (required, or in a forward storage): in the backward
    # module these are recomputations
    fwd_fx: set[str] = field(default_factory=set)
    sym_fwd_nodes: list[str] = field(default_factory=list)


def _tensor_vals(val) -> list[torch.Tensor | None]:
    if isinstance(val, torch.Tensor):
        return [val]
    if isinstance(val, (tuple, list)):
        return [v if isinstance(v, torch.Tensor) else None for v in val]
    return []


def _nbytes(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().nbytes())
    except (NotImplementedError, RuntimeError):
        return t.numel() * t.element_size()


def _storage(t: torch.Tensor):
    return P.StorageWeakRef(t.untyped_storage())


_BN_FUNCTIONAL = torch.ops.aten._native_batch_norm_legit_functional.default


def _fusible(node: fx.Node) -> bool:
    """A pointwise op or a view: Inductor fuses its recomputation into the consumer's kernel."""
    return torch.Tag.pointwise in getattr(node.target, "tags", ()) or getattr(
        node.target, "is_view", False
    )


def _never_recompute_reason(node: fx.Node) -> str:
    target = node.target
    if node.op != "call_function":
        return "not an op"
    if target is operator.getitem:
        src = node.args[0]
        if (
            isinstance(src, fx.Node)
            and src.target is _BN_FUNCTIONAL
            and src.args[5] is True
            and node.args[1] >= 3
        ):  # a recomputed batch norm runs without them (rewrite._recompute_without_side_outputs)
            return "is a running statistic updated by a batch norm (once, in the forward)"
        return ""
    tags = getattr(target, "tags", ())
    if torch.Tag.nondeterministic_seeded in tags:
        return "draws random numbers (recomputing it would change the values)"
    schema = getattr(target, "_schema", None)
    if schema is not None and schema.is_mutable:
        return "mutates its inputs"
    if not P.is_not_collective(node):
        return "is a collective (ranks would diverge)"
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"is the higher-order op {target}"
    if not isinstance(target, torch._ops.OpOverload):
        return f"is not an ATen op ({target})"
    rec = node.meta.get("recompute")
    if rec is not None and "MUST_SAVE" in str(rec):
        return "the user's checkpoint policy says MUST_SAVE"
    if P._must_be_in_forward(node):
        return "is tagged must_be_in_forward"
    return ""


def _policy_forbids_saving(node: fx.Node, reason: str, forward: set[fx.Node]) -> bool:
    """True if the user's checkpoint policy (``node.meta["recompute"]``) rules out saving
    ``node``. ``reason``: why it cannot be recomputed ("" if it can). ``forward``: the
    forward FX nodes. A value read by forward ops outside its checkpoint region (the region's
    output) may be saved, as in eager checkpointing and PyTorch's partitioner."""
    rec = str(node.meta.get("recompute", ""))
    if "MUST_RECOMPUTE" in rec and reason:
        raise UnsupportedGraph(
            f"the checkpoint policy says MUST_RECOMPUTE for {node.format_node()}, but it "
            f"{reason}. Return MUST_SAVE or PREFER_RECOMPUTE for this op in the policy function."
        )
    if reason or not ("MUST_RECOMPUTE" in rec or "PREFER_RECOMPUTE" in rec):
        return False
    return not _read_outside_region(node, node.meta.get("ac_graph_id"), forward)


def _read_outside_region(node: fx.Node, region: object, forward: set[fx.Node]) -> bool:
    """True if a forward op outside checkpoint ``region`` reads ``node`` (through its views)."""
    for user in node.users:
        if user not in forward:
            continue
        inside = user.meta.get("recompute") is not None and user.meta.get("ac_graph_id") == region
        if not inside:
            return True
        val, mine = user.meta.get("val"), node.meta.get("val")
        aliases = (
            isinstance(val, torch.Tensor)
            and isinstance(mine, torch.Tensor)
            and _storage(val) == _storage(mine)
        )
        if aliases and _read_outside_region(user, region, forward):
            return True
    return False


#: grouped matmuls (mixture-of-experts layers) that torch's FLOP counter does not know: every
#: row of the (tokens, in) input meets one expert's (in, out) matrix, 2 * numel(out) * in FLOPs
#: (transformers' opaque ``grouped_mm_fallback`` has no formula, and cost as a memory-bound op,
#: recomputing the experts' matmuls looked free: +8.5 % step time on the zoo's Mixtral)
GROUPED_MM_OPS = ("aten::_grouped_mm", "transformers::grouped_mm_fallback")


def _grouped_mm_flops(node: fx.Node) -> int | None:
    name = getattr(getattr(node.target, "_schema", None), "name", None)
    if name not in GROUPED_MM_OPS or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    a, out = node.args[0].meta.get("val"), node.meta.get("val")
    if not isinstance(a, torch.Tensor) or not isinstance(out, torch.Tensor):
        return None
    return 2 * out.numel() * a.shape[-1]


def _flops(node: fx.Node) -> int:
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    fn = P.flop_registry.get(packet)
    if fn is None:
        return _grouped_mm_flops(node) or 0
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: n.meta.get("val"))
    try:
        return int(fn(*args, out_val=node.meta.get("val"), **kwargs))
    except Exception as e:  # a formula that does not fit these args: fall back to bandwidth
        log.debug("flop formula for %s failed: %s", node.format_node(), str(e))
        return 0


def _roofline_ns(flops: int, moved: int, kind: Mapping[str, float]) -> int:
    seconds = max(flops / kind["flops_per_s"], moved / kind["bytes_per_s"])
    return max(_OP_OVERHEAD_NS, math.ceil(seconds * 1e9))


def _device_kind(vals: list[torch.Tensor | None]) -> str:
    for v in vals:
        if v is not None and v.device.type == "cuda":
            return "cuda"
    return "cpu"


def capture_joint(
    joint: fx.GraphModule,
    num_fwd_outputs: int,
    name: str = "joint",
    *,
    outside_bytes: int = 0,
    held_copies: int = 0,
    dispatch_ns: Mapping[str, int] | None = None,
    measured: bool = False,
    solver_roofline: Mapping[str, Mapping[str, float]] | None = None,
    fused_pointwise: bool = False,
) -> Capture:
    """Build the solver's problem from an AOTAutograd joint graph.

    ``outside_bytes``: bytes other compiled regions keep alive throughout this one (graph
    breaks), counted as fixed residents. ``held_copies``: see
    :class:`graphremat.solvers.problem.RematProblem`. ``dispatch_ns``: per device kind
    ("cpu", "cuda"), a cost added for every op a recomputation runs (its own op and the forward
    views of its storage), e.g. :data:`EAGER_DISPATCH_NS`: the solver's costs then count eager
    dispatch, while :attr:`NodeInfo.cost_ns` (and every reported cost) stays the roofline.
    ``measured``: a forward storage whose ops all carry a measured time
    (:func:`graphremat.calibrate.annotate_times`) costs the solver the sum of those times instead.
    ``solver_roofline``: the constants of the solver's roofline (e.g. :func:`thread_roofline`),
    where they are not ROOFLINE's (which every reported cost uses).
    ``fused_pointwise`` (Inductor codegen): a forward storage whose ops are all pointwise or
    views costs the solver nothing, since Inductor fuses its recomputation into the kernel that
    reads it (reading its inputs instead of it), as PyTorch's own partitioner assumes.
    """
    dispatch_ns = dispatch_ns or {}
    graph = joint.graph
    nodes = list(graph.nodes)
    output = nodes[-1]
    if output.op != "output":
        raise UnsupportedGraph("the joint graph has no output node at its end")
    outs = list(output.args[0])
    fwd_outs = [o for o in outs[:num_fwd_outputs] if isinstance(o, fx.Node)]
    bwd_outs = [o for o in outs[num_fwd_outputs:] if isinstance(o, fx.Node)]
    if not bwd_outs:
        devs = sorted(
            {str(v.device) for n in nodes for v in _tensor_vals(n.meta.get("val")) if v is not None}
        )
        raise UnsupportedGraph(
            "the captured training graph computes no gradients (every gradient output is None), "
            f"so there is nothing to plan (tensors on {', '.join(devs) or 'no device'}). Under "
            "torch.compile, parameters on the 'meta' device get no gradients: build the model on "
            "'cpu' or 'cuda' (planning executes nothing, so a CPU model costs only its parameters)."
        )

    # -- phases: required forward = ancestors of the forward outputs; backward = what depends on
    #    a tangent or is tagged backward; whatever else the backward needs is optional forward.
    placeholders = [n for n in nodes if n.op == "placeholder"]
    for p in placeholders:
        if P._is_fwd_seed_offset(p) or P._is_bwd_seed_offset(p):
            raise UnsupportedGraph(
                "functionalized RNG (torch._functorch.config.functionalize_rng_ops=True) is not "
                "supported yet; turn it off (graphremat saves random ops instead)"
            )
    required: set[fx.Node] = set()
    stack = list(fwd_outs)
    while stack:
        n = stack.pop()
        if n in required:
            continue
        required.add(n)
        stack.extend(n.all_input_nodes)
    for n in nodes:  # a multi-output op computes all its outputs: they are all forward values
        if n.target is operator.getitem and n.args and n.args[0] in required:
            required.add(n)
    bwd: set[fx.Node] = set()
    for n in nodes:
        if n.op == "call_function" and n not in required:
            tag_bwd = n.meta.get("partitioner_tag") == "is_backward" or P._must_be_in_backward(n)
            if tag_bwd or any(
                (a in bwd) or (a.op == "placeholder" and P._is_tangent(a))
                for a in n.all_input_nodes
            ):
                bwd.add(n)
    live_bwd: set[fx.Node] = set()  # backward nodes that reach a gradient (others are dead)
    stack = list(bwd_outs)
    while stack:
        n = stack.pop()
        if n in live_bwd or n.op == "placeholder":
            continue
        live_bwd.add(n)
        stack.extend(n.all_input_nodes)

    # -- storages: the first node holding a storage owns it
    owner_of_storage: dict[object, fx.Node] = {}
    owner: dict[fx.Node, fx.Node | None] = {}
    primal_bytes = 0
    for n in nodes:
        if n.op == "output":
            continue
        vals = _tensor_vals(n.meta.get("val"))
        if n.op == "placeholder":
            for v in vals:
                if v is not None and _storage(v) not in owner_of_storage:
                    owner_of_storage[_storage(v)] = n
                    if not P._is_tangent(n):
                        primal_bytes += _nbytes(v)
            owner[n] = n
            continue
        if isinstance(n.meta.get("val"), (tuple, list)):
            keys = [_storage(v) for v in vals if v is not None]
            earlier = [owner_of_storage[k] for k in keys if k in owner_of_storage]
            if keys and len(earlier) == len(keys):
                owner[n] = owner[earlier[0]]  # split/unbind/chunk: views of an input
                continue
            owner[n] = n  # a multi-output op: a node of its own, owning nothing
            for k in keys:
                owner_of_storage.setdefault(k, n)
            continue
        if not vals:
            owner[n] = None  # symbolic ints and other non-tensors cost nothing
            continue
        key = _storage(vals[0])
        parent = n.args[0] if n.target is operator.getitem and n.args else None
        if isinstance(parent, fx.Node) and owner_of_storage.get(key) is parent:
            owner_of_storage[key] = n  # a multi-output op's output: the getitem owns it
            owner[n] = n
            continue
        first = owner_of_storage.setdefault(key, n)
        owner[n] = n if first is n else owner[first]

    # resolve chains and inputs: a value aliasing a primal has no problem node
    def root(n: fx.Node) -> fx.Node | None:
        seen = 0
        while owner.get(n) is not None and owner[n] is not n:
            n = owner[n]
            seen += 1
            if seen > len(nodes):
                raise UnsupportedGraph(f"cyclic aliasing at {n.format_node()}")
        if owner.get(n) is None:
            return None
        if n.op == "placeholder" and not P._is_tangent(n):
            return None
        return n

    rooted = {n: root(n) for n in nodes if n.op != "output"}

    # -- problem nodes
    g = nx.DiGraph()
    fwd_order: list[str] = []
    bwd_order: list[str] = []
    info: dict[str, NodeInfo] = {}
    members: dict[fx.Node, list[str]] = {}
    for n, r in rooted.items():
        if r is not None:
            members.setdefault(r, []).append(n.name)

    def is_bwd_fx(n: fx.Node) -> bool:
        return n in bwd or (n.op == "placeholder" and P._is_tangent(n))

    tuple_nodes: set[str] = set()
    policy_recomputes: set[str] = set()  # the user's checkpoint policy forbids saving these
    fwd_fx = {n for n in nodes if n.op == "call_function" and not is_bwd_fx(n)}
    by_name = {n.name: n for n in nodes}
    tangents = [p for p in placeholders if P._is_tangent(p) and rooted.get(p) is p]
    for r in tangents:
        nb = sum(_nbytes(v) for v in _tensor_vals(r.meta["val"]) if v is not None)
        # the autograd engine holds the incoming gradient until the backward returns: pinned
        g.add_node(r.name, **_attrs("bwd", nb, 0, 0, False, False, False, True, None))
        bwd_order.append(r.name)
        info[r.name] = NodeInfo(r.name, "bwd", nb, 0, 0, False, "input", tuple(members[r]))
    for n in nodes:
        if n.op != "call_function" or rooted.get(n) is not n:
            continue
        phase = "bwd" if is_bwd_fx(n) else "fwd"
        if phase == "bwd" and n not in live_bwd:
            continue
        vals = _tensor_vals(n.meta.get("val"))
        is_tuple = isinstance(n.meta.get("val"), (tuple, list))
        if is_tuple:
            tuple_nodes.add(n.name)
        nbytes = 0 if is_tuple else _nbytes(vals[0])
        transient = 0
        if is_tuple:
            transient = sum(
                _nbytes(v)
                for v in vals
                if v is not None and owner_of_storage.get(_storage(v)) in (n, *n.users)
            )
        # members that are views of this storage must be recomputable too
        reason = _never_recompute_reason(n)
        if phase == "fwd" and _policy_forbids_saving(n, reason, fwd_fx):
            policy_recomputes.add(n.name)
        flops = _flops(n)
        moved = (
            nbytes
            + transient
            + sum(
                _nbytes(v)
                for a in n.all_input_nodes
                for v in _tensor_vals(a.meta.get("val"))
                if v is not None
            )
        )
        device = _device_kind(vals)
        real_op = n.target is not operator.getitem
        cost_ns = _roofline_ns(flops, moved, ROOFLINE[device]) if real_op else 0
        solve_cost = cost_ns
        if solver_roofline is not None and real_op:
            solve_cost = _roofline_ns(flops, moved, solver_roofline[device])
        if phase == "fwd":
            # the op itself and the forward views of its storage: what a recomputation runs
            ops = [
                m
                for m in (by_name[name] for name in members[n])
                if m in fwd_fx and m.target is not operator.getitem
            ]
            timed = [m.meta.get(TIME_KEY) for m in ops] if measured else [None]
            if ops and None not in timed:
                solve_cost = max(_OP_OVERHEAD_NS, sum(timed))
            elif fused_pointwise and ops and all(_fusible(m) for m in ops):
                solve_cost = 0
            else:  # each dispatched, at a fixed cost per op
                solve_cost += dispatch_ns.get(device, 0) * len(ops)
        is_req = n in required
        tied = None
        if n.target is operator.getitem and isinstance(n.args[0], fx.Node):
            parent = rooted.get(n.args[0])
            if parent is n.args[0]:
                tied = parent.name
        g.add_node(
            n.name,
            **_attrs(
                phase,
                nbytes,
                transient,
                solve_cost,
                phase == "fwd" and not reason,
                phase == "fwd" and is_req,
                phase == "fwd" and is_req and not is_tuple and n.name not in policy_recomputes,
                False,
                tied,
            ),
        )
        (fwd_order if phase == "fwd" else bwd_order).append(n.name)
        info[n.name] = NodeInfo(
            n.name, phase, nbytes + transient, flops, cost_ns, not reason, reason, tuple(members[n])
        )

    # -- edges: v reads u (through any alias of u's storage)
    for n in nodes:
        if n.op != "call_function":
            continue
        dst = rooted.get(n)
        if dst is None or dst.name not in g:
            continue
        for a in n.all_input_nodes:
            src = rooted.get(a)
            if src is None or src is dst or src.name not in g:
                continue
            g.add_edge(src.name, dst.name)

    # -- measured workspace (graphremat.calibrate) is transient memory of the storage's step
    for n in nodes:
        ws = n.meta.get(WORKSPACE_KEY, 0) if n.op == "call_function" else 0
        r = rooted.get(n)
        if ws and r is not None and r.name in g:
            g.nodes[r.name]["transient_bytes"] += int(ws)

    # -- an output of a multi-output op can be recomputed only if the op can; then it may be
    #    saved whatever a checkpoint policy says (a dropout's mask inside a checkpoint region)
    for v, a in g.nodes(data=True):
        parent = a["tied_to"]
        if parent is not None and not g.nodes[parent]["recomputable"] and a["recomputable"]:
            a["recomputable"] = False
            info[v] = replace(
                info[v],
                recomputable=False,
                reason=f"is an output of {parent}, which " + info[parent].reason,
            )
            policy_recomputes.discard(v)
            a["savable"] = a["required"] and v not in tuple_nodes

    # -- a forward node that cannot be recomputed must run in the forward: make it (and its
    #    ancestors) required
    stack = [v for v in fwd_order if not g.nodes[v]["recomputable"]]
    while stack:
        v = stack.pop()
        a = g.nodes[v]
        if a["phase"] != "fwd" or a["required"]:
            continue
        a["required"] = True
        a["savable"] = v not in tuple_nodes and v not in policy_recomputes
        stack.extend(g.pred[v])

    # -- outputs are pinned: forward outputs stay with the user, gradients with autograd
    for o in fwd_outs + bwd_outs:
        r = rooted.get(o)
        if r is not None and r.name in g:
            g.nodes[r.name]["pinned"] = True

    problem = RematProblem(
        g,
        tuple(fwd_order),
        tuple(bwd_order),
        primal_bytes + outside_bytes,
        name=name,
        held_copies=held_copies,
    )
    for n in nodes:  # the typed record, for anyone inspecting the graph later
        if n.name in info:
            n.meta["graphremat"] = info[n.name]
    sym_fwd = [
        n.name
        for n in nodes
        if n.op != "output"
        and not is_bwd_fx(n)
        and isinstance(n.meta.get("val"), (torch.SymInt, torch.SymFloat, torch.SymBool))
    ]
    return Capture(
        problem=problem,
        info=info,
        owner={n.name: (r.name if r is not None else None) for n, r in rooted.items()},
        num_fx_nodes=len(nodes),
        primal_bytes=primal_bytes,
        fwd_required_fx={n.name for n in required},
        fwd_fx={
            n.name
            for n, r in rooted.items()
            if n in required or (r is not None and r.name in info and info[r.name].phase == "fwd")
        },
        sym_fwd_nodes=sym_fwd,
    )


def _attrs(phase, mem, transient, cost, recomputable, required, savable, pinned, tied) -> dict:
    return dict(
        phase=phase,
        mem_bytes=int(mem),
        transient_bytes=int(transient),
        cost=int(cost),
        recomputable=bool(recomputable),
        required=bool(required),
        savable=bool(savable),
        pinned=bool(pinned),
        tied_to=tied,
    )
