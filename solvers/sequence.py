"""The papers' setting: a fixed execution order in which any value may be computed again, and
its exact checker.

Input: a DAG in a fixed topological order (:class:`SequenceProblem`, position ``k`` is the node
``names[k]``), each node with a compute cost and the bytes of its output. Output of
:func:`simulate`: whether a :class:`SequencePlan` is a valid schedule, its peak and its extra
compute cost.

Schedule (Moccasin's, Bartan et al., ICML 2023). Stage ``t`` computes node ``t`` for the first
time; before that, it recomputes the values whose extra copies start at ``t``, in position order.
Each value has one or more *copies*, each an inclusive stage interval ``(start, end)``: the first
starts at the value's own stage, every later one (a recomputation) after the previous ended.
Computing a value at stage ``s`` needs each input alive at ``s`` (a copy covering ``s``; an input
recomputed in the same stage runs earlier, its position being smaller). Memory at stage ``t`` is
the bytes of every copy covering ``t``.

Memory model: with no recomputation this is the accounting of the Checkmate and Moccasin
experiments (a running node's inputs and output are live, a value is freed after its last
consumer). With recomputations a stage counts everything it computes for the whole stage, so a
program that frees inside a stage never needs more than the simulated peak.

Invariants: ``names`` are distinct, every edge goes forward in the order, sizes and costs >= 0.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from .problem import ProblemError

Copy = tuple[int, int]


@dataclass(frozen=True, slots=True)
class SequenceProblem:
    """A DAG in a fixed order; ``preds[k]`` are the positions node ``k`` reads (all < k)."""

    names: tuple[Hashable, ...]
    preds: tuple[tuple[int, ...], ...]
    mem_bytes: tuple[int, ...]
    cost: tuple[float, ...]
    name: str = "graph"
    succs: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.preds) == len(self.mem_bytes) == len(self.cost) == n):
            raise ProblemError(f"{self.name}: per-node tuples differ in length")
        if len(set(self.names)) != n:
            raise ProblemError(f"{self.name}: duplicate node names")
        succs: list[list[int]] = [[] for _ in range(n)]
        for k, ps in enumerate(self.preds):
            for p in ps:
                if not 0 <= p < k:
                    raise ProblemError(
                        f"{self.name}: node {self.names[k]!r} reads position {p}, not before it"
                    )
                succs[p].append(k)
            if self.mem_bytes[k] < 0 or self.cost[k] < 0:
                raise ProblemError(f"{self.name}: node {self.names[k]!r} has a negative size/cost")
        object.__setattr__(self, "succs", tuple(tuple(s) for s in succs))

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    def last_use(self, v: int) -> int:
        """Stage of the last first-computation reading ``v`` (``v`` itself for a sink)."""
        return max(self.succs[v], default=v)

    @property
    def total_cost(self) -> float:
        """Cost of the no-remat schedule: every node once."""
        return float(sum(self.cost))


@dataclass(frozen=True, slots=True)
class SequencePlan:
    """``copies[v]``: the inclusive stage intervals of value ``v``'s copies, in time order."""

    copies: tuple[tuple[Copy, ...], ...]

    @property
    def num_recomputations(self) -> int:
        return sum(len(c) - 1 for c in self.copies)


@dataclass(frozen=True, slots=True)
class Simulation:
    """What :func:`simulate` found: validity (with the first reason it is not), peak and cost."""

    valid: bool
    reason: str
    peak_bytes: int
    recompute_cost: float
    profile_bytes: tuple[int, ...]


def no_remat_plan(problem: SequenceProblem) -> SequencePlan:
    """Every value computed once and kept until its last consumer."""
    n = problem.num_nodes
    return SequencePlan(tuple(((v, problem.last_use(v)),) for v in range(n)))


def _shape_error(problem: SequenceProblem, plan: SequencePlan) -> str:
    """Why the copies are malformed (first copy not at the value's stage, overlap...), or ''."""
    n = problem.num_nodes
    if len(plan.copies) != n:
        return f"plan has {len(plan.copies)} entries for {n} nodes"
    for v, copies in enumerate(plan.copies):
        name = problem.names[v]
        if not copies or copies[0][0] != v:
            return f"first copy of {name!r} does not start at its own stage {v}"
        prev_end = -1
        for start, end in copies:
            if not (prev_end < start <= end < n):
                return f"copy ({start}, {end}) of {name!r} overlaps or leaves the stages"
            prev_end = end
    return ""


def simulate(problem: SequenceProblem, plan: SequencePlan) -> Simulation:
    """Run ``plan`` stage by stage, checking every read against the live set.

    Independent of the solvers: it walks the computations in execution order instead of reading
    any model variable.
    """
    n = problem.num_nodes
    bad = _shape_error(problem, plan)
    if bad:
        return Simulation(False, bad, -1, float("nan"), ())
    starting: list[list[tuple[int, int]]] = [[] for _ in range(n)]  # stage -> [(value, end)]
    for v, copies in enumerate(plan.copies):
        for start, end in copies:
            starting[start].append((v, end))
    live: set[int] = set()
    ending: list[list[int]] = [[] for _ in range(n)]  # stage -> values whose live copy ends there
    level, profile = 0, []
    for t in range(n):
        for v, end in sorted(starting[t]):
            missing = [p for p in problem.preds[v] if p not in live]
            if missing:
                reason = (
                    f"stage {t}: {problem.names[v]!r} reads {problem.names[missing[0]]!r}, "
                    "which is not alive"
                )
                return Simulation(False, reason, -1, float("nan"), ())
            live.add(v)
            ending[end].append(v)
            level += problem.mem_bytes[v]
        profile.append(level)
        for v in ending[t]:
            live.remove(v)
            level -= problem.mem_bytes[v]
    cost = float(sum(problem.cost[v] * (len(c) - 1) for v, c in enumerate(plan.copies)))
    return Simulation(True, "", max(profile, default=0), cost, tuple(profile))


def stage_lower_bound(problem: SequenceProblem) -> int:
    """Smallest peak any schedule can have: when node ``t`` first runs, it and its inputs are
    live. A budget below this is infeasible whatever is recomputed, and however often."""
    return max(
        (
            problem.mem_bytes[t] + sum(problem.mem_bytes[p] for p in problem.preds[t])
            for t in range(problem.num_nodes)
        ),
        default=0,
    )
