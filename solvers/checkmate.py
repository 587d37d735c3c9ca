"""Exact, unrestricted Checkmate (Jain et al., MLSys 2020) on CP-SAT: the tests' reference optimum.

Input: a DAG whose nodes carry a cost and a size in bytes, a topological order, and a byte budget
(:func:`solve_checkmate_dag`); or a :class:`RematProblem` (:func:`solve_checkmate`), converted to
such a DAG as described below. Output: a :class:`SolveResult` whose ``objective`` is the summed
cost of *every* computation (first computations included), ``info["R"]`` the node names computed
in each stage, ``info["recompute_cost"]`` the objective minus the cost of computing each staged
node once, and ``peak_bytes`` the plan's peak recomputed by :func:`_replay` from the solver's R
and S values (never read from the model's U).

The model, with positions ``k`` in the given order and stages ``t`` (stage t computes node
``stages[t]`` for the first time; every stage runs its computations in position order):

  ``R[t,k]``       node k is computed in stage t (lower-triangular: only for k <= stages[t])
  ``S[t,i]``       node i is resident entering stage t (only for i computed in an earlier stage)
  ``FREE[t,i,k]``  i is freed right after k is computed in stage t: k ran, i is not kept for
                   stage t+1, and no later consumer of i runs in stage t (i is k or an input of k)
  ``U[t,k]``       bytes resident right after k is computed in stage t, before the frees

Memory model (the one of the Checkmate and Moccasin experiments): while a node runs, its inputs
and its output are live (plus its transient bytes); a value is freed after its last consumer in
the stage; ``U[t,k] <= budget - fixed_bytes``. Objective: minimise ``sum cost[k] * R[t,k]``.
Bytes are divided by their gcd (exact, no rounding); non-integral costs are scaled and rounded up.
Beyond the paper, two dominance rules that keep an optimum: a value is never both resident and
recomputed in a stage, and a value computed (other than the stage's own node) or resident in a
stage is read in it or kept for the next; so S is exactly what the R schedule needs. The
checkpoint-all schedule is given to CP-SAT as a hint.

Invariants: a returned plan replays within the budget (else :class:`ModelMismatch`), and the
replayed peak equals the model's (``info["model_peak_bytes"]``).

Conversion of a RematProblem (:func:`_problem_graph`). Positions: ``fwd_order`` then
``bwd_order``. Stages: the required forward nodes in ``fwd_order``, then every backward node.
Non-required forward nodes get no stage: they can only be computed inside backward stages, as
graphremat's schedules do (the forward never runs them). Non-recomputable forward nodes and
backward nodes are computed in their own stage only. ``pinned`` staged nodes stay resident from
their stage to the end. A required forward node that is neither savable nor pinned may not be
resident entering the first backward stage (the forward cannot hand it over). ``fixed_bytes`` is
added to every stage and ``transient_bytes`` to a node's memory while it runs. Every schedule of
graphremat's fixed-order class maps to a schedule of this model with no larger peak and the same
cost, so Checkmate's ``recompute_cost`` lower-bounds the class's optimum. Relaxations (the model
may do better than any real program): ``tied_to`` is not modelled (a multi-output op's outputs
are tied only through their edge from the op, so they may be materialised in different stages),
and values that graphremat frees only at a step boundary are freed here after their last
consumer.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import networkx as nx
from ortools.sat.python import cp_model

from .problem import ProblemError, RematProblem
from .result import SolveResult, SolveStatus
from .sat import ModelMismatch, solve_model

log = logging.getLogger("graphremat")


@dataclass(frozen=True, slots=True)
class CheckmateGraph:
    """The model's input, by position (``names[k]`` is the node at position k).

    ``preds[k]``: positions k reads (all < k). ``stages[t]``: position that stage t computes for
    the first time (strictly increasing). ``may_compute[k]``: stages in which k may be computed.
    ``pinned``: positions resident from their stage to the end. ``barred``: pairs (t, i) such
    that i may not be resident entering stage t.
    """

    names: tuple[Hashable, ...]
    preds: tuple[tuple[int, ...], ...]
    mem_bytes: tuple[int, ...]
    transient_bytes: tuple[int, ...]
    cost: tuple[float, ...]
    stages: tuple[int, ...]
    may_compute: tuple[frozenset[int], ...]
    pinned: frozenset[int] = frozenset()
    barred: frozenset[tuple[int, int]] = frozenset()
    fixed_bytes: int = 0

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.preds) == len(self.mem_bytes) == len(self.transient_bytes) == n):
            raise ProblemError("checkmate: per-node tuples differ in length")
        if len(self.cost) != n or len(self.may_compute) != n:
            raise ProblemError("checkmate: per-node tuples differ in length")
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            raise ProblemError("checkmate: stage positions must strictly increase")
        for k, ps in enumerate(self.preds):
            if any(not 0 <= p < k for p in ps):
                raise ProblemError(f"checkmate: node {self.names[k]!r} reads a later node")
        for t, k in enumerate(self.stages):
            if t not in self.may_compute[k]:
                raise ProblemError(f"checkmate: stage {t} may not compute its own node")

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def successors(self) -> list[list[int]]:
        succ: list[list[int]] = [[] for _ in self.names]
        for k, ps in enumerate(self.preds):
            for p in ps:
                succ[p].append(k)
        return succ


# ---------------------------------------------------------------------------------- conversions


def _dag_graph(dag: nx.DiGraph, order: Sequence, cost_attr: str, mem_attr: str) -> CheckmateGraph:
    """Plain Checkmate: stage t computes ``order[t]``; any node may be recomputed later."""
    pos = {v: k for k, v in enumerate(order)}
    if len(pos) != len(order) or set(pos) != set(dag.nodes):
        raise ProblemError("checkmate: order must list every node of the DAG exactly once")
    for u, v in dag.edges:
        if pos[u] >= pos[v]:
            raise ProblemError(f"checkmate: edge {u!r}->{v!r} goes against the order")
    for v in order:
        a = dag.nodes[v]
        if cost_attr not in a or mem_attr not in a:
            raise ProblemError(f"checkmate: node {v!r} lacks {cost_attr!r} or {mem_attr!r}")
        if a[cost_attr] < 0 or a[mem_attr] < 0:
            raise ProblemError(f"checkmate: node {v!r} has a negative cost or size")
    n = len(order)
    return CheckmateGraph(
        names=tuple(order),
        preds=tuple(tuple(sorted(pos[u] for u in dag.pred[v])) for v in order),
        mem_bytes=tuple(int(dag.nodes[v][mem_attr]) for v in order),
        transient_bytes=(0,) * n,
        cost=tuple(float(dag.nodes[v][cost_attr]) for v in order),
        stages=tuple(range(n)),
        may_compute=tuple(frozenset(range(k, n)) for k in range(n)),
    )


def _problem_graph(problem: RematProblem) -> CheckmateGraph:
    """The Checkmate DAG of a RematProblem (see the module docstring for each rule)."""
    g = problem.graph
    names = list(problem.fwd_order) + list(problem.bwd_order)
    pos = {v: k for k, v in enumerate(names)}
    staged = [v for v in problem.fwd_order if g.nodes[v]["required"]] + list(problem.bwd_order)
    stage_of = {v: t for t, v in enumerate(staged)}
    num_stages = len(staged)
    first_bwd = num_stages - problem.num_bwd
    may_compute = []
    for v in names:
        a = g.nodes[v]
        if v in stage_of:
            own = stage_of[v]
            again = problem.is_fwd(v) and a["recomputable"]
            may_compute.append(frozenset(range(own, num_stages) if again else (own,)))
        else:  # non-required forward node: only recomputed inside backward stages
            bwd_stages = range(first_bwd, num_stages) if a["recomputable"] else ()
            may_compute.append(frozenset(bwd_stages))
    pinned = frozenset(pos[v] for v in staged if g.nodes[v]["pinned"])
    barred = frozenset(
        (first_bwd, pos[v])
        for v in problem.fwd_order
        if problem.num_bwd
        and v in stage_of
        and not g.nodes[v]["savable"]
        and not g.nodes[v]["pinned"]
    )
    return CheckmateGraph(
        names=tuple(names),
        preds=tuple(tuple(sorted(pos[u] for u in g.pred[v])) for v in names),
        mem_bytes=tuple(int(g.nodes[v]["mem_bytes"]) for v in names),
        transient_bytes=tuple(int(g.nodes[v]["transient_bytes"]) for v in names),
        cost=tuple(float(g.nodes[v]["cost"]) for v in names),
        stages=tuple(pos[v] for v in staged),
        may_compute=tuple(may_compute),
        pinned=pinned,
        barred=barred,
        fixed_bytes=problem.fixed_bytes,
    )


# ---------------------------------------------------------------------------------- the model


@dataclass(slots=True)
class _Model:
    model: cp_model.CpModel
    R: dict[tuple[int, int], cp_model.IntVar]
    S: dict[tuple[int, int], cp_model.IntVar]
    FREE: dict[tuple[int, int, int], cp_model.IntVar]
    U: dict[tuple[int, int], cp_model.IntVar]
    byte_unit: int
    cost_scale: float
    num_costly: int


def _byte_unit(cg: CheckmateGraph) -> int:
    unit = 0
    for m, tr in zip(cg.mem_bytes, cg.transient_bytes, strict=True):
        unit = math.gcd(unit, m, tr)
    return unit or 1


def _integer_costs(cg: CheckmateGraph) -> tuple[list[int], float]:
    top = max(cg.cost, default=0.0)
    if all(c == int(c) for c in cg.cost) and top <= 1e12:
        return [int(c) for c in cg.cost], 1.0
    scale = 1e6 / top
    return [math.ceil(c * scale) if c > 0 else 0 for c in cg.cost], scale


def _domains(cg: CheckmateGraph) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(t, k) pairs where R may be 1 and (t, i) pairs where S may be 1; every other is 0."""
    succ = cg.successors()
    last_use = [max((max(cg.may_compute[j], default=-1) for j in s), default=-1) for s in succ]
    own = {k: t for t, k in enumerate(cg.stages)}
    r_dom = {
        (t, k)
        for k in range(len(cg.names))
        for t in cg.may_compute[k]
        if own.get(k) == t or last_use[k] >= t  # a recomputation must feed a later consumer
    }
    first = [min(cg.may_compute[i], default=cg.num_stages) for i in range(len(cg.names))]
    s_dom = set()
    for i in range(len(cg.names)):
        for t in range(first[i] + 1, cg.num_stages):
            if (i in cg.pinned or last_use[i] >= t) and (t, i) not in cg.barred:
                s_dom.add((t, i))
    return r_dom, s_dom


def _keep(cg: CheckmateGraph, S: dict, t: int, i: int):
    """Literal, or constant 0/1, for 'i stays resident after stage t'."""
    if i in cg.pinned and ((t + 1, i) in S or t + 1 == cg.num_stages):
        return 1  # pinned values stay resident from their stage on
    return S.get((t + 1, i), 0)


def _add_first_computation(m: cp_model.CpModel, cg: CheckmateGraph, R: dict) -> None:
    # Stage t computes its own node: R[t, stages[t]] = 1.
    for t, k in enumerate(cg.stages):
        m.add(R[t, k] == 1)


def _add_residency(m: cp_model.CpModel, cg: CheckmateGraph, R: dict, S: dict) -> None:
    # A value is resident entering stage t+1 only if it was resident in, or computed in, stage t;
    # pinned values stay resident after their stage; a resident value is never computed again.
    own = {k: t for t, k in enumerate(cg.stages)}
    for (t, i), s in S.items():
        m.add(s <= S.get((t - 1, i), 0) + R.get((t - 1, i), 0))
        if i in cg.pinned and t > own[i]:
            m.add(s == 1)
        if (t, i) in R:
            m.add(R[t, i] + s <= 1)


def _add_dependencies(m: cp_model.CpModel, cg: CheckmateGraph, R: dict, S: dict) -> None:
    # A node computed in stage t reads inputs computed earlier in stage t or resident entering it.
    for (t, k), r in R.items():
        for i in cg.preds[k]:
            m.add(r <= R.get((t, i), 0) + S.get((t, i), 0))


def _add_usefulness(m: cp_model.CpModel, cg: CheckmateGraph, R: dict, S: dict) -> None:
    # A value computed (other than the stage's own node) or resident in stage t is read in stage t
    # or kept for stage t+1; dropping a useless one never costs more nor uses more memory.
    succ = cg.successors()
    targets = set(enumerate(cg.stages))
    for (t, k), r in R.items():
        if (t, k) in targets:
            continue
        keep = _keep(cg, S, t, k)
        if isinstance(keep, int) and keep:
            continue
        uses = [R[t, j] for j in succ[k] if (t, j) in R]
        m.add_bool_or(uses + ([] if isinstance(keep, int) else [keep])).only_enforce_if(r)
    for (t, i), s in S.items():
        keep = _keep(cg, S, t, i)
        if isinstance(keep, int) and keep:
            continue
        uses = [R[t, j] for j in succ[i] if (t, j) in R]
        m.add_bool_or(uses + ([] if isinstance(keep, int) else [keep])).only_enforce_if(s)


def _add_frees(m: cp_model.CpModel, cg: CheckmateGraph, R: dict, S: dict) -> dict:
    # FREE[t,i,k] <=> k runs in stage t, i is not kept after t, and no later consumer of i runs
    # in t.
    succ = cg.successors()
    FREE: dict[tuple[int, int, int], cp_model.IntVar] = {}
    for (t, k), r in R.items():
        for i in (*cg.preds[k], k):
            if (t, i) not in R and (t, i) not in S:
                continue  # i cannot be live in stage t, so k cannot run (dependencies)
            keep = _keep(cg, S, t, i)
            if isinstance(keep, int) and keep:
                continue  # pinned: never freed
            later = [R[t, j] for j in succ[i] if j > k and (t, j) in R]
            f = m.new_bool_var(f"FREE[{t},{cg.names[i]},{cg.names[k]}]")
            blockers = ([] if isinstance(keep, int) else [keep]) + later
            m.add_bool_and([r, *(~b for b in blockers)]).only_enforce_if(f)
            m.add_bool_or([~r, *blockers, f])
            FREE[t, i, k] = f
    return FREE


def _add_memory(
    m: cp_model.CpModel, cg: CheckmateGraph, R: dict, S: dict, FREE: dict, unit: int, cap: int
) -> dict:
    # U[t,k] = resident bytes after computing k in stage t (before frees), and U + transient <= cap.
    U: dict[tuple[int, int], cp_model.IntVar] = {}
    freed_after: dict[tuple[int, int], list] = {}
    for (t, i, k), f in FREE.items():
        freed_after.setdefault((t, k), []).append(cg.mem_bytes[i] // unit * f)
    for t in range(cg.num_stages):
        active = sorted(k for (s, k) in R if s == t)
        level = sum(cg.mem_bytes[i] // unit * s for (s_t, i), s in S.items() if s_t == t)
        for k in active:
            u = m.new_int_var(0, cap, f"U[{t},{cg.names[k]}]")
            m.add(u == level + cg.mem_bytes[k] // unit * R[t, k])
            tr = cg.transient_bytes[k] // unit
            if tr:
                m.add(u + tr * R[t, k] <= cap)
            U[t, k] = u
            level = u - sum(freed_after.get((t, k), []))
    return U


def build_model(cg: CheckmateGraph, budget_bytes: int) -> _Model:
    """Checkmate's model of ``cg`` under ``budget_bytes`` (see the module docstring)."""
    m = cp_model.CpModel()
    unit = _byte_unit(cg)
    cap = (budget_bytes - cg.fixed_bytes) // unit
    r_dom, s_dom = _domains(cg)
    # R[t,k]: node k computed in stage t; S[t,i]: node i resident entering stage t
    R = {(t, k): m.new_bool_var(f"R[{t},{cg.names[k]}]") for t, k in sorted(r_dom)}
    S = {(t, i): m.new_bool_var(f"S[{t},{cg.names[i]}]") for t, i in sorted(s_dom)}
    _add_first_computation(m, cg, R)
    _add_residency(m, cg, R, S)
    _add_dependencies(m, cg, R, S)
    _add_usefulness(m, cg, R, S)
    FREE = _add_frees(m, cg, R, S)
    U = _add_memory(m, cg, R, S, FREE, unit, cap)
    costs, scale = _integer_costs(cg)
    m.minimize(sum(costs[k] * r for (t, k), r in R.items() if costs[k]))
    num_costly = sum(1 for (_, k) in R if costs[k])
    return _Model(m, R, S, FREE, U, unit, scale, num_costly)


# ---------------------------------------------------------------------------------- replay, hint


def _replay(cg: CheckmateGraph, R_sets: list[set[int]], S_sets: list[set[int]]) -> tuple[int, set]:
    """Peak bytes of a schedule, freeing each value after its last consumer in the stage; and
    the (t, i, k) frees that happened."""
    succ = cg.successors()
    peak, frees = cg.fixed_bytes, set()
    for t in range(cg.num_stages):
        kept = S_sets[t + 1] if t + 1 < cg.num_stages else cg.pinned
        live = set(S_sets[t])
        level = cg.fixed_bytes + sum(cg.mem_bytes[i] for i in live)
        order = sorted(R_sets[t])
        for n, k in enumerate(order):
            live.add(k)
            level += cg.mem_bytes[k]
            peak = max(peak, level + cg.transient_bytes[k])
            later = set(order[n + 1 :])
            for i in (*cg.preds[k], k):
                if i in live and i not in kept and not later.intersection(succ[i]):
                    live.discard(i)
                    level -= cg.mem_bytes[i]
                    frees.add((t, i, k))
    return peak, frees


def _greedy_plan(cg: CheckmateGraph, r_dom: set, s_dom: set):
    """Checkpoint-all: keep every value while it may be used, compute missing inputs just in time.
    Returns (R_sets, S_sets), or None where a missing input cannot be computed in the stage."""
    R_sets, S_sets, resident = [], [], set()
    for t, target in enumerate(cg.stages):
        computed: set[int] = set()
        stack, seen = [target], set()
        while stack:  # post-order walk over inputs that are not resident
            k = stack[-1]
            todo = [i for i in cg.preds[k] if i not in resident and i not in seen]
            if k not in seen and todo:
                seen.add(k)
                stack.extend(todo)
                continue
            stack.pop()
            if (t, k) not in r_dom:
                return None
            computed.add(k)
            seen.add(k)
        R_sets.append(computed)
        S_sets.append(resident)
        resident = {i for i in resident | computed if (t + 1, i) in s_dom}
    return R_sets, S_sets


def _add_hint(built: _Model, cg: CheckmateGraph, r_dom: set, s_dom: set) -> None:
    plan = _greedy_plan(cg, r_dom, s_dom)
    if plan is None:
        return
    R_sets, S_sets = plan
    _, frees = _replay(cg, R_sets, S_sets)
    for (t, k), var in built.R.items():
        built.model.add_hint(var, k in R_sets[t])
    for (t, i), var in built.S.items():
        built.model.add_hint(var, i in S_sets[t])
    for key, var in built.FREE.items():
        built.model.add_hint(var, key in frees)


# ---------------------------------------------------------------------------------- solving


def _solve(
    cg: CheckmateGraph,
    budget_bytes: int,
    baseline_cost: float,
    time_limit_s: float,
    seed: int,
    num_workers: int,
    log_progress: bool,
) -> tuple[SolveResult, list[set[int]], list[set[int]]]:
    t0 = time.perf_counter()
    if budget_bytes < cg.fixed_bytes:
        wall = time.perf_counter() - t0
        return SolveResult("checkmate", SolveStatus.INFEASIBLE, wall_s=wall), [], []
    built = build_model(cg, budget_bytes)
    _add_hint(built, cg, set(built.R), set(built.S))
    solver, status, sizes = solve_model(
        built.model,
        time_limit_s=time_limit_s,
        seed=seed,
        num_workers=num_workers,
        log_progress=log_progress,
    )
    wall = time.perf_counter() - t0
    if not status.has_plan:
        return SolveResult("checkmate", status, wall_s=wall, **sizes), [], []

    T = cg.num_stages
    R_sets = [set() for _ in range(T)]
    S_sets = [set() for _ in range(T)]
    for (t, k), var in built.R.items():
        if solver.boolean_value(var):
            R_sets[t].add(k)
    for (t, i), var in built.S.items():
        if solver.boolean_value(var):
            S_sets[t].add(i)
    peak, _ = _replay(cg, R_sets, S_sets)
    model_peak = cg.fixed_bytes + built.byte_unit * max(
        (
            solver.value(u) + cg.transient_bytes[k] // built.byte_unit
            for (t, k), u in built.U.items()
            if k in R_sets[t]
        ),
        default=0,
    )
    if peak > budget_bytes or peak != model_peak:
        raise ModelMismatch(
            f"Checkmate plan replays to peak {peak} bytes; the model says {model_peak}, the "
            f"budget is {budget_bytes}"
        )
    objective = float(sum(cg.cost[k] for t in range(T) for k in R_sets[t]))
    bound = solver.best_objective_bound
    if built.cost_scale != 1.0:
        bound = max(0.0, (bound - built.num_costly) / built.cost_scale)
    result = SolveResult(
        solver="checkmate",
        status=status,
        objective=objective,
        bound=objective if status is SolveStatus.OPTIMAL else min(float(bound), objective),
        peak_bytes=peak,
        wall_s=wall,
        info={
            "R": [[cg.names[k] for k in sorted(R_sets[t])] for t in range(T)],
            "stages": [cg.names[k] for k in cg.stages],
            "recompute_cost": objective - baseline_cost,
            "model_peak_bytes": model_peak,
        },
        **sizes,
    )
    return result, R_sets, S_sets


def solve_checkmate_dag(
    dag: nx.DiGraph,
    order: Sequence,
    budget_bytes: int,
    *,
    cost_attr: str = "cost",
    mem_attr: str = "mem_bytes",
    time_limit_s: float = 60.0,
    seed: int = 0,
    num_workers: int = 2,
    log_progress: bool = False,
) -> SolveResult:
    """Cheapest Checkmate schedule of ``dag`` (stage t computes ``order[t]`` first) whose peak,
    counting each running node's inputs and output, is at most ``budget_bytes``."""
    cg = _dag_graph(dag, order, cost_attr, mem_attr)
    result, _, _ = _solve(
        cg, budget_bytes, sum(cg.cost), time_limit_s, seed, num_workers, log_progress
    )
    return result


def solve_checkmate(
    problem: RematProblem,
    budget_bytes: int,
    *,
    time_limit_s: float = 60.0,
    seed: int = 0,
    num_workers: int = 2,
    log_progress: bool = False,
) -> SolveResult:
    """Unrestricted Checkmate optimum of ``problem``: a lower bound on graphremat's schedule class.

    ``info["recompute_cost"]`` is comparable to ``solve_cpsat(...).objective``. ``saved`` lists the
    forward values resident entering the first backward stage; Checkmate's schedule
    (``info["R"]``) is not of graphremat's class, so ``evaluate(problem, saved)`` may not fit.
    """
    if problem.held_copies:
        raise ProblemError(
            f"{problem.name}: the Checkmate model does not model held_copies; use solver='cpsat'"
        )
    cg = _problem_graph(problem)
    baseline = sum(cg.cost[k] for k in cg.stages)
    result, _, S_sets = _solve(
        cg, budget_bytes, baseline, time_limit_s, seed, num_workers, log_progress
    )
    first_bwd = cg.num_stages - problem.num_bwd
    if not result.status.has_plan or not problem.num_bwd:
        return result
    saved = frozenset(cg.names[i] for i in S_sets[first_bwd] if problem.is_fwd(cg.names[i]))
    return dataclasses.replace(result, saved=saved)
