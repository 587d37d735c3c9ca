"""The rematerialization problem on a joint forward+backward graph, and its exact evaluator.

Input: a networkx DAG whose nodes are values (one per storage-owning op), with plain-number
annotations, plus the fixed forward order and the fixed backward order. Output of
:func:`evaluate`: for a chosen set of *saved* forward values, the schedule that graphremat emits
(which values are recomputed, in which backward slot, until when they live), its peak memory and
its recompute cost.

Schedule class (what the rewrite emits, and what every solver optimises over):

* The forward runs every ``required`` forward node in ``fwd_order``. A value lives from its step to
  its last forward use; a *saved* value lives on until its last backward use.
* The backward runs ``bwd_order``. A forward value that the backward needs and that is not saved
  (nor ``pinned``) is *recomputed* once, just in time: in the slot before the first backward step
  that needs it, directly or through other recomputed values. Recomputations of one slot run in
  topological order; a multi-output op's outputs (nodes ``tied_to`` it) are recomputed with it.
* Time: forward steps ``0..F-1``; then, per backward step ``b``, one instant per forward
  position ``q`` (the recomputation of the value at ``q`` in the slot before ``b``, at
  ``RematProblem.at(b, q)``), then the step itself (``at(b)``). A value lives from its
  instant to the instant of its last reader (a backward step, or a recomputation); a
  multi-output op's recomputed outputs are born at the op's instant. Memory at an instant is
  ``fixed_bytes`` plus every value alive then plus the transient bytes of what runs then; during
  a slot the backward side holds what it held entering the step (the step's own output and
  workspace not yet). This is the order and the lifetimes of the emitted program, which frees
  each value after its last use. The profile has one entry per step (``F + B``): a backward
  step's entry is the largest of its slot's instants and the step itself.
  With ``substeps=False`` a slot's recomputations and the step share one instant (every value
  recomputed in a slot counted together with the step's output: an upper bound, the time axis
  of the copy class in ``multi.py``).
* ``held_copies`` (default 0): the graph runs ``held_copies + 1`` times per training step (a
  compiled block shared by several blocks, a graph break inside a repeated module), and the
  other runs keep their saved values until their own backward. The last run's peak is what
  counts, so every saved (non-pinned) value adds ``held_copies * mem_bytes`` at every step.

Node attributes (all required):
  ``phase``            "fwd" or "bwd"
  ``mem_bytes``        bytes of the value's own storage (0 for a node that owns none)
  ``transient_bytes``  bytes alive only during the node's own step (workspace, unused outputs)
  ``cost``             cost of computing the node once (any unit, >= 0); what recomputation costs
  ``recomputable``     forward nodes only: may run again in the backward
  ``required``         forward nodes only: runs in the forward whatever the plan
  ``savable``          forward nodes only: may be kept for the backward (implies ``required``)
  ``pinned``           alive from its step to the end of the training step (outputs)
  ``tied_to``          name of the multi-output op this node is an output of, or None
Edges ``u -> v``: ``v`` reads ``u``; ``u`` must be alive when ``v`` runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

NODE_ATTRS = (
    "phase",
    "mem_bytes",
    "transient_bytes",
    "cost",
    "recomputable",
    "required",
    "savable",
    "pinned",
    "tied_to",
)


class ProblemError(ValueError):
    """A RematProblem that violates its own invariants."""


@dataclass(frozen=True, slots=True)
class RematProblem:
    """A joint graph ready for a solver. See the module docstring for the attributes."""

    graph: nx.DiGraph
    fwd_order: tuple[str, ...]
    bwd_order: tuple[str, ...]
    fixed_bytes: int = 0
    name: str = "graph"
    held_copies: int = 0
    substeps: bool = True
    # derived indices, filled in __post_init__
    fwd_pos: dict[str, int] = field(init=False, repr=False, compare=False)
    bwd_pos: dict[str, int] = field(init=False, repr=False, compare=False)
    # plan-independent results (fixed profile, last forward uses, backward reads), computed once
    # on first use:
    # solvers evaluate thousands of saved sets of one problem. The graph must not change after
    # construction.
    _memo: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fwd_pos", {n: i for i, n in enumerate(self.fwd_order)})
        object.__setattr__(self, "bwd_pos", {n: i for i, n in enumerate(self.bwd_order)})
        object.__setattr__(self, "_memo", {})
        self._validate()

    # ---------------------------------------------------------------- structure
    def fingerprint(self) -> str:
        """SHA-256 of everything a solver reads: orders, node attributes, edges, fixed bytes.
        Equal fingerprints mean equal problems (used to reuse solves)."""
        import hashlib
        import json

        g = self.graph
        doc = [
            self.fwd_order,
            self.bwd_order,
            self.fixed_bytes,
            self.held_copies,
            self.substeps,
            sorted((str(v), [g.nodes[v][a] for a in NODE_ATTRS]) for v in g.nodes),
            sorted((str(u), str(v)) for u, v in g.edges),
        ]
        return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()

    @property
    def num_fwd(self) -> int:
        return len(self.fwd_order)

    @property
    def num_bwd(self) -> int:
        return len(self.bwd_order)

    @property
    def num_steps(self) -> int:
        return self.num_fwd + self.num_bwd

    @property
    def horizon(self) -> int:
        """Number of instants on the time axis (see the module docstring)."""
        return self.num_fwd + self.num_bwd * self._stride

    @property
    def _stride(self) -> int:
        return self.num_fwd + 1 if self.substeps else 1

    def at(self, b: int, q: int | None = None) -> int:
        """Instant of backward step ``b`` itself (``q`` None), or of the recomputation of the
        forward value at position ``q`` in the slot before it."""
        if not self.substeps:
            return self.num_fwd + b
        return self.num_fwd + b * (self.num_fwd + 1) + (self.num_fwd if q is None else q)

    def step_of(self, instant: int) -> int:
        """The step (``0..F+B-1``) an instant belongs to: a slot belongs to its backward step."""
        if instant < self.num_fwd:
            return instant
        return self.num_fwd + (instant - self.num_fwd) // self._stride

    def coarse(self) -> RematProblem:
        """This problem with ``substeps=False`` (see the module docstring)."""
        if not self.substeps:
            return self
        if "coarse" not in self._memo:
            self._memo["coarse"] = dataclasses.replace(self, substeps=False)
        return self._memo["coarse"]

    def slot_base(self) -> list[int]:
        """Per backward step, the plan-independent bytes alive during its slot: the fixed
        profile of the step without the step's own output and workspace (excluding
        ``fixed_bytes``). Without substeps: the step's fixed profile."""
        if "slot_base" not in self._memo:
            base, f, g = self.fixed_profile(), self.num_fwd, self.graph
            out = []
            for b, v in enumerate(self.bwd_order):
                own = g.nodes[v]["mem_bytes"] + g.nodes[v]["transient_bytes"]
                out.append(base[f + b] - (own if self.substeps else 0))
            self._memo["slot_base"] = tuple(out)
        return list(self._memo["slot_base"])

    def attr(self, node: str, key: str):
        return self.graph.nodes[node][key]

    def is_fwd(self, node: str) -> bool:
        return node in self.fwd_pos

    def candidates(self) -> list[str]:
        """Forward nodes that the backward may need, in forward order.

        A forward node is a candidate if a backward node reads it, or if a recomputable
        candidate reads it (recomputing that candidate would need it).
        """
        g = self.graph
        cand: set[str] = set()
        for v in reversed(self.fwd_order):
            for c in g.successors(v):
                if not self.is_fwd(c) or (c in cand and g.nodes[c]["recomputable"]):
                    cand.add(v)
                    break
        return [v for v in self.fwd_order if v in cand]

    def last_fwd_use(self, node: str) -> int:
        """Last forward step at which ``node``'s forward copy is read (its own step if none)."""
        memo = self._memo.setdefault("last_fwd_use", {})
        if node not in memo:
            g = self.graph
            last = self.fwd_pos[node]
            for c in g.successors(node):
                if self.is_fwd(c) and g.nodes[c]["required"]:
                    last = max(last, self.fwd_pos[c])
            memo[node] = last
        return memo[node]

    def read_by_bwd(self) -> tuple[str, ...]:
        """Forward nodes that some backward node reads (with repeats), in backward order."""
        if "read_by_bwd" not in self._memo:
            g = self.graph
            reads = (u for b in self.bwd_order for u in g.pred[b] if self.is_fwd(u))
            self._memo["read_by_bwd"] = tuple(reads)
        return self._memo["read_by_bwd"]

    def last_bwd_use_of_bwd(self, node: str) -> int:
        last = self.bwd_pos[node]
        for c in self.graph.successors(node):
            last = max(last, self.bwd_pos[c])
        return last

    def fixed_profile(self) -> list[int]:
        """Bytes alive at each global step whatever the plan (excluding ``fixed_bytes``).

        Counts required forward nodes up to their last forward use (to the end if pinned),
        forward transients, and every backward node. Plan-dependent parts (saved extensions and
        recomputations) are added by :func:`evaluate` and by the solvers.
        """
        if "fixed_profile" not in self._memo:
            self._memo["fixed_profile"] = tuple(self._fixed_profile())
        return list(self._memo["fixed_profile"])

    def _fixed_profile(self) -> list[int]:
        g = self.graph
        num_f, total = self.num_fwd, self.num_steps
        diff = [0] * (total + 1)

        def add(start: int, end_incl: int, nbytes: int) -> None:
            if nbytes:
                diff[start] += nbytes
                diff[end_incl + 1] -= nbytes

        for v in self.fwd_order:
            a = g.nodes[v]
            if not a["required"]:
                continue
            p = self.fwd_pos[v]
            end = total - 1 if a["pinned"] else self.last_fwd_use(v)
            add(p, end, a["mem_bytes"])
            add(p, p, a["transient_bytes"])
        for v in self.bwd_order:
            a = g.nodes[v]
            p = num_f + self.bwd_pos[v]
            end = total - 1 if a["pinned"] else num_f + self.last_bwd_use_of_bwd(v)
            add(p, end, a["mem_bytes"])
            add(p, p, a["transient_bytes"])
        out, run = [], 0
        for t in range(total):
            run += diff[t]
            out.append(run)
        return out

    # ---------------------------------------------------------------- validation
    def _validate(self) -> None:
        g = self.graph
        nodes = set(g.nodes)
        if len(self.fwd_pos) != len(self.fwd_order) or len(self.bwd_pos) != len(self.bwd_order):
            raise ProblemError(f"{self.name}: duplicate node in fwd_order or bwd_order")
        ordered = set(self.fwd_order) | set(self.bwd_order)
        if ordered != nodes or set(self.fwd_order) & set(self.bwd_order):
            raise ProblemError(
                f"{self.name}: every node must appear in exactly one of fwd_order / bwd_order"
            )
        if self.fixed_bytes < 0:
            raise ProblemError(f"{self.name}: fixed_bytes must be >= 0")
        if self.held_copies < 0:
            raise ProblemError(f"{self.name}: held_copies must be >= 0")
        for v, a in g.nodes(data=True):
            missing = [k for k in NODE_ATTRS if k not in a]
            if missing:
                raise ProblemError(f"{self.name}: node {v!r} lacks attributes {missing}")
            if a["mem_bytes"] < 0 or a["transient_bytes"] < 0 or a["cost"] < 0:
                raise ProblemError(f"{self.name}: node {v!r} has a negative size or cost")
            fwd = self.is_fwd(v)
            if a["phase"] != ("fwd" if fwd else "bwd"):
                raise ProblemError(f"{self.name}: node {v!r} phase disagrees with the orders")
            if fwd and a["savable"] and not a["required"]:
                raise ProblemError(f"{self.name}: node {v!r} is savable but not required")
            if a["tied_to"] is not None and a["tied_to"] not in g.pred[v]:
                raise ProblemError(f"{self.name}: node {v!r} is tied to a non-input")
        for u, v in g.edges:
            fu, fv = self.is_fwd(u), self.is_fwd(v)
            if fv and not fu:
                raise ProblemError(f"{self.name}: forward node {v!r} reads backward node {u!r}")
            if fu == fv:
                pos = self.fwd_pos if fu else self.bwd_pos
                if pos[u] >= pos[v]:
                    raise ProblemError(f"{self.name}: edge {u!r}->{v!r} goes against the order")
            if fv and g.nodes[v]["required"] and not g.nodes[u]["required"]:
                raise ProblemError(
                    f"{self.name}: required node {v!r} reads non-required node {u!r}"
                )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The schedule that a saved set induces, and what it costs."""

    valid: bool
    reason: str
    saved: frozenset[str]
    recomputed: frozenset[str]
    slot: dict[str, int]
    end: dict[str, int]
    profile_bytes: tuple[int, ...]
    peak_bytes: int
    cost: float

    @property
    def peak_step(self) -> int:
        return max(range(len(self.profile_bytes)), key=self.profile_bytes.__getitem__, default=0)


def evaluate(problem: RematProblem, saved: Iterable[str]) -> Evaluation:
    """Replay the schedule class on ``problem`` for the forward values in ``saved``.

    Saved values that the backward does not need are dropped (they would cost memory for
    nothing). The result is invalid if the backward needs a value that can be neither saved
    nor recomputed.
    """
    g, num_f = problem.graph, problem.num_fwd
    total = problem.num_steps
    saved_in = set(saved)
    unknown = [v for v in saved_in if not problem.is_fwd(v)]
    if unknown:
        raise ProblemError(f"saved set names non-forward nodes {sorted(unknown)[:5]}")

    def available(v: str) -> bool:
        a = g.nodes[v]
        return a["required"] and (a["pinned"] or (v in saved_in and a["savable"]))

    # 1. which forward values the backward needs, and which of them are recomputed
    needed: set[str] = set()
    recomputed: set[str] = set()
    bad = ""
    stack = list(problem.read_by_bwd())
    while stack:
        u = stack.pop()
        if u in needed:
            continue
        needed.add(u)
        if available(u):
            continue
        if not g.nodes[u]["recomputable"]:
            bad = (
                bad
                or f"node {u!r} is needed by the backward but can be neither saved nor recomputed"
            )
            continue
        recomputed.add(u)
        stack.extend(p for p in g.pred[u] if problem.is_fwd(p))
    kept = frozenset(v for v in needed if v in saved_in and available(v))

    # 2. recompute slots (just in time), instants, last readers
    need: dict[str, int] = {}
    slot: dict[str, int] = {}
    for v in sorted(recomputed, key=problem.fwd_pos.__getitem__, reverse=True):
        best = problem.num_bwd
        for c in g.successors(v):
            if not problem.is_fwd(c):
                best = min(best, problem.bwd_pos[c])
            elif c in recomputed:
                best = min(best, need[c] if g.nodes[c]["tied_to"] == v else slot[c])
        need[v] = best
        slot[v] = best
    born: dict[str, int] = {}  # instant of each recomputation
    for v in recomputed:
        parent = g.nodes[v]["tied_to"]
        if parent is not None and parent in recomputed:
            slot[v] = slot[parent]
            born[v] = problem.at(slot[v], problem.fwd_pos[parent])
        else:
            born[v] = problem.at(slot[v], problem.fwd_pos[v])
    end: dict[str, int] = {}  # step of the last reader (a slot counts as its step)
    dies: dict[str, int] = {}  # instant of the last reader
    for v in kept | recomputed:
        last, last_at = 0, born.get(v, 0)
        for c in g.successors(v):
            if not problem.is_fwd(c):
                last = max(last, problem.bwd_pos[c])
                last_at = max(last_at, problem.at(problem.bwd_pos[c]))
            elif c in recomputed:
                last = max(last, slot[c])
                last_at = max(last_at, born[c])
        end[v], dies[v] = last, last_at

    # 3. memory: plan-dependent bytes as events on the time axis, read at every forward step,
    # every backward step and every recomputation's instant
    delta: dict[int, int] = {}

    def add(t0: int, t1: int, nbytes: int) -> None:
        if nbytes:
            delta[t0] = delta.get(t0, 0) + nbytes
            delta[t1 + 1] = delta.get(t1 + 1, 0) - nbytes

    for v in kept:
        a = g.nodes[v]
        if not a["pinned"]:  # else already alive to the end in the fixed profile
            add(problem.last_fwd_use(v) + 1, dies[v], a["mem_bytes"])
    for v in recomputed:
        a = g.nodes[v]
        add(born[v], dies[v], a["mem_bytes"])
        add(born[v], born[v], a["transient_bytes"])
    base, slot_base = problem.fixed_profile(), problem.slot_base()
    # the other runs' saved values (see held_copies), alive at every step
    const = problem.fixed_bytes + problem.held_copies * held_bytes(problem, kept)
    points = {t: t for t in range(num_f)}
    points.update((problem.at(b), num_f + b) for b in range(problem.num_bwd))
    reads = sorted(set(points) | set(born.values()))
    events = sorted(delta.items())
    profile = [0] * total
    run, i = 0, 0
    for t in reads:
        while i < len(events) and events[i][0] <= t:
            run += events[i][1]
            i += 1
        if t in points:
            step = points[t]
            here = base[step] + run
        else:
            step = problem.step_of(t)
            here = slot_base[step - num_f] + run
        profile[step] = max(profile[step], here + const)
    peak = max(profile, default=const)
    cost = float(sum(g.nodes[v]["cost"] for v in recomputed))
    return Evaluation(
        valid=not bad,
        reason=bad,
        saved=kept,
        recomputed=frozenset(recomputed),
        slot=slot,
        end=end,
        profile_bytes=tuple(profile),
        peak_bytes=peak,
        cost=cost,
    )


#: name of the step that :func:`with_room_between` inserts between the forward and the backward
ROOM_STEP = "__room_between__"


def fixed_between(problem: RematProblem) -> int:
    """Bytes alive between the forward and the backward whatever the plan: ``fixed_bytes``
    and the required pinned forward values (outputs). A plan adds its kept values,
    ``(1 + held_copies) * held_bytes(kept)`` in all."""
    g = problem.graph
    pinned = sum(
        g.nodes[v]["mem_bytes"]
        for v in problem.fwd_order
        if g.nodes[v]["pinned"] and g.nodes[v]["required"]
    )
    return problem.fixed_bytes + pinned


def with_room_between(problem: RematProblem, nbytes: int) -> RematProblem:
    """``problem`` with one more step between its forward and its backward, at which
    ``nbytes`` more are alive: other code runs there (the later regions of a training step
    with graph breaks) while this graph's kept values wait for the backward. Nothing reads or
    is recomputed at that step, so every solver handles it as an ordinary backward step: the
    constraint it adds is ``fixed_between + (1 + held_copies) * held_bytes(kept) + nbytes <=
    budget``, i.e. a cap on the bytes a plan keeps."""
    if nbytes < 0:
        raise ProblemError(f"{problem.name}: room between forward and backward must be >= 0")
    if ROOM_STEP in problem.graph:
        raise ProblemError(f"{problem.name}: already has a step between forward and backward")
    g = problem.graph.copy()
    g.add_node(
        ROOM_STEP,
        phase="bwd",
        mem_bytes=0,
        transient_bytes=int(nbytes),
        cost=0,
        recomputable=False,
        required=False,
        savable=False,
        pinned=False,
        tied_to=None,
    )
    return RematProblem(
        g,
        problem.fwd_order,
        (ROOM_STEP, *problem.bwd_order),
        problem.fixed_bytes,
        name=problem.name,
        held_copies=problem.held_copies,
        substeps=problem.substeps,
    )


def held_bytes(problem: RematProblem, kept: Iterable[str]) -> int:
    """Bytes one run of the graph holds from its forward to its backward for the kept values
    ``kept`` (pinned values excluded: they outlive the run anyway)."""
    g = problem.graph
    return sum(g.nodes[v]["mem_bytes"] for v in kept if not g.nodes[v]["pinned"])


def save_all_set(problem: RematProblem) -> frozenset[str]:
    """Every savable candidate: the plan that recomputes as little as the schedule class allows."""
    return frozenset(v for v in problem.candidates() if problem.attr(v, "savable"))


def must_save_set(problem: RematProblem) -> frozenset[str]:
    """Candidates that can only reach the backward by being saved."""
    return frozenset(
        v
        for v in problem.candidates()
        if problem.attr(v, "savable") and not problem.attr(v, "recomputable")
    )
