"""Check: replay the emitted forward and backward modules and compute the step's peak memory.

Independent of the solver's model: it reads only the two ``fx.GraphModule``s, in their real
execution order, with FX codegen's semantics (a value dies after its last use; a value nobody
uses dies right after it is made; returned values live on) and per-storage accounting (FakeTensor
storage identity: a view keeps its base's storage alive and adds no bytes).

Timeline: parameters, buffers and inputs are resident throughout (``fixed_bytes``); the forward
runs; its outputs stay with the user to the end of the step, its saved values until their last
use in the backward; tangents appear at the start of the backward and, held by the autograd
engine, live to its end; gradients live to the end.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx

from . import _private as P
from .calibrate import META_KEY as WORKSPACE_KEY

#: the timeline entry for room kept between the forward and the backward (see simulate)
ROOM_ENTRY = "(later regions)"


@dataclass(frozen=True, slots=True)
class Simulation:
    peak_bytes: int
    fixed_bytes: int
    peak_node: str
    timeline: tuple[tuple[str, str, int], ...]  # (phase, node name, live bytes after allocation)
    # (FX node that allocated the storage, nbytes, first step, last step): indices into timeline;
    # a storage allocated and freed in the same op has first == last
    lifetimes: tuple[tuple[str, int, int, int], ...] = ()

    @property
    def fwd_peak_bytes(self) -> int:
        return max((b for ph, _, b in self.timeline if ph == "fwd"), default=self.fixed_bytes)

    @property
    def bwd_peak_bytes(self) -> int:
        return max((b for ph, _, b in self.timeline if ph == "bwd"), default=self.fixed_bytes)


def _storages(val) -> list[tuple[object, int]]:
    vals = val if isinstance(val, (tuple, list)) else [val]
    out = []
    for v in vals:
        if isinstance(v, torch.Tensor):
            s = v.untyped_storage()
            out.append((P.StorageWeakRef(s), int(s.nbytes())))
    return out


class _Heap:
    """Live storages, each with the number of live FX values that reference it."""

    def __init__(self, fixed: set) -> None:
        self.refs: dict[object, int] = {}
        self.size: dict[object, int] = {}
        self.fixed = fixed
        self.live = 0
        self.step = 0  # index of the timeline entry being made
        self.born: dict[object, tuple[str, int]] = {}  # live storage -> (allocating node, step)
        self.lifetimes: list[tuple[str, int, int, int]] = []

    def hold(self, val, name: str = "") -> None:
        for key, nbytes in _storages(val):
            if key in self.fixed:
                continue
            if self.refs.get(key, 0) == 0:
                self.live += nbytes
                self.size[key] = nbytes
                self.born[key] = (name, self.step)
            self.refs[key] = self.refs.get(key, 0) + 1

    def rename(self, val, name: str) -> None:
        """Credit live storages of ``val`` to ``name`` (a multi-output op's getitem)."""
        for key, _ in _storages(val):
            if key in self.born:
                self.born[key] = (name, self.born[key][1])

    def drop(self, val) -> None:
        for key, _ in _storages(val):
            if key in self.fixed or key not in self.refs:
                continue
            self.refs[key] -= 1
            if self.refs[key] == 0:
                self.live -= self.size[key]
                name, first = self.born.pop(key)
                self.lifetimes.append((name, self.size[key], first, max(first, self.step - 1)))
                del self.refs[key]


def _run(gm: fx.GraphModule, heap: _Heap, phase: str, timeline: list) -> list:
    """Replay one module; placeholders must already be held. Returns its output values."""
    nodes = list(gm.graph.nodes)
    last_use: dict[fx.Node, fx.Node] = {}
    for n in nodes:
        for a in n.all_input_nodes:
            last_use[a] = n
    dies_at: dict[fx.Node, list[fx.Node]] = {}
    for v, user in last_use.items():
        dies_at.setdefault(user, []).append(v)
    outputs: list = []
    for n in nodes:
        if n.op == "placeholder":
            if n not in last_use:
                heap.drop(n.meta.get("val"))  # unused input: freed at once (boxed args)
            continue
        if n.op == "output":
            outputs = [a.meta.get("val") if isinstance(a, fx.Node) else None for a in n.args[0]]
            for a in n.args[0]:
                if isinstance(a, fx.Node):
                    heap.hold(a.meta.get("val"))  # the caller's reference
            for v in dies_at.get(n, []):
                heap.drop(v.meta.get("val"))
            continue
        heap.hold(n.meta.get("val"), n.name)
        if n.target is operator.getitem:
            heap.rename(n.meta.get("val"), n.name)
        # the op's measured workspace (graphremat.calibrate) is live only while it runs
        timeline.append((phase, n.name, heap.live + int(n.meta.get(WORKSPACE_KEY, 0))))
        heap.step = len(timeline)
        for v in dies_at.get(n, []):
            heap.drop(v.meta.get("val"))
        if not n.users:
            heap.drop(n.meta.get("val"))
    return outputs


def saved_storage_bytes(user_out: list, saved_out: list, fixed: set = frozenset()) -> int:
    """Bytes of the distinct storages of ``saved_out`` (the forward's values for the
    backward) that are not in ``fixed`` (inputs) or among ``user_out``'s storages."""
    skip = set(fixed) | {key for val in user_out for key, _ in _storages(val)}
    sizes = {key: nbytes for val in saved_out for key, nbytes in _storages(val) if key not in skip}
    return sum(sizes.values())


def simulate(
    fw: fx.GraphModule,
    bw: fx.GraphModule,
    num_user_outputs: int,
    *,
    outside_bytes: int = 0,
    held_copies: int = 0,
    room_between: int = 0,
) -> Simulation:
    """Peak live bytes of one training step running ``fw`` then ``bw``.

    ``outside_bytes``: resident bytes of other compiled regions (graph breaks), added to
    ``fixed_bytes``. ``held_copies``: the program runs that many more times per step and each
    other run holds what its forward saved for its backward (the saved outputs that are not
    inputs or user outputs) throughout: added to ``fixed_bytes`` too.

    ``num_user_outputs``: how many leading forward outputs go to the user (the rest, except
    symbolic ints, are saved for the backward and arrive as the backward's leading inputs).

    ``room_between``: bytes other code needs between the forward and the backward (the later
    regions of a step with graph breaks, while this program's outputs and saved values wait):
    one timeline entry, ``ROOM_ENTRY``, after the forward's last op.
    """
    fixed: set = set()
    fixed_bytes = outside_bytes
    heap = _Heap(fixed)
    for n in fw.graph.find_nodes(op="placeholder"):
        for key, nbytes in _storages(n.meta.get("val")):
            if key not in fixed:
                fixed.add(key)
                fixed_bytes += nbytes
    timeline: list = []
    fw_out = _run(fw, heap, "fwd", timeline)
    user_out, saved_out = fw_out[:num_user_outputs], fw_out[num_user_outputs:]
    if room_between:
        timeline.append(("fwd", ROOM_ENTRY, heap.live + room_between))
        heap.step = len(timeline)
    if held_copies:
        fixed_bytes += held_copies * saved_storage_bytes(user_out, saved_out, fixed)
    # the backward's inputs: saved values (handed over from the forward's outputs), tangents
    bw_inputs = list(bw.graph.find_nodes(op="placeholder"))
    for n in bw_inputs:
        heap.hold(n.meta.get("val"), n.name)
        if P._is_tangent(n):
            # the autograd engine keeps the incoming gradient alive until the backward returns
            heap.hold(n.meta.get("val"))
    for v in saved_out:
        heap.drop(v)  # the forward's references pass to the backward's arguments
    bw_out = _run(bw, heap, "bwd", timeline)
    del user_out, bw_out
    end = len(timeline)
    lifetimes = heap.lifetimes + [
        (name, heap.size[k], first, end - 1) for k, (name, first) in heap.born.items()
    ]
    live = [b for _, _, b in timeline] or [0]
    i = max(range(len(live)), key=live.__getitem__)
    return Simulation(
        peak_bytes=fixed_bytes + live[i],
        fixed_bytes=fixed_bytes,
        peak_node=timeline[i][1] if timeline else "",
        timeline=tuple((ph, name, b + fixed_bytes) for ph, name, b in timeline),
        lifetimes=tuple(sorted(lifetimes, key=lambda r: (r[2], r[3]))),
    )
