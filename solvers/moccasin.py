"""Moccasin-style CP-SAT for the papers' setting: any value recomputed up to ``C - 1`` times.

Input: a :class:`SequenceProblem` (fixed order, see ``sequence.py`` for the schedule and memory
accounting) and a byte budget. Output: a :class:`SolveResult` whose ``info["plan"]`` is a
:class:`SequencePlan` re-checked by :func:`simulate`; ``objective`` is its recompute cost and
``bound`` CP-SAT's proven lower bound *for schedules with at most C copies per value*.

Variables, per value ``v`` at position ``v`` and copy ``c`` (copy 0 is the first computation):

  ``end[v,0]``                 last stage of the first copy (it starts at stage v)
  ``present[v,c]``             the c-th recomputation exists (c >= 1)
  ``start[v,c]``, ``end[v,c]`` its stages, inclusive
  ``serve[u->w,k,d]``          copy d of u is alive when copy k of its consumer w is computed

Constraints: copies are ordered with a dead stage between them (adjacent copies would merge at
no memory cost); every computation of w has each input alive (some ``serve`` literal); memory is
one ``AddCumulative`` over all copies, capacity the budget. Objective: summed cost of the
recomputations. Before the model: a budget below :func:`stage_lower_bound` is infeasible for any
schedule; the greedy plan of ``sequence_greedy.py`` is the hint (where it finds none, a
first plan comes from the same model with the budget made soft, see :func:`_fit_plan`). The
reported bound is also at least :func:`crossing_bound` and ``sequence_bound.cascade_bound``
(both valid for any number of copies). CP-SAT presolve is off by default: on these graphs it
spends the time limit before the search starts (the reference runs in
shared/literature-graphs/README.md: MobileNet at 80 % took 240 s with it, 37.5 s without).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from .result import SolveResult, SolveStatus
from .sat import STATUS, ModelMismatch, make_solver
from .sequence import (
    SequencePlan,
    SequenceProblem,
    no_remat_plan,
    simulate,
    stage_lower_bound,
)
from .sequence_bound import cascade_bound
from .sequence_greedy import greedy_plan


@dataclass(slots=True)
class _Model:
    model: cp_model.CpModel
    end0: list[cp_model.IntVar]
    present: dict[tuple[int, int], cp_model.IntVar]
    start: dict[tuple[int, int], cp_model.IntVar]
    end: dict[tuple[int, int], cp_model.IntVar]
    serve: dict[tuple[int, int, int, int], cp_model.IntVar]


def _reach(problem: SequenceProblem) -> list[int]:
    """reach[v]: the last stage that may read v (a consumer's last possible recomputation)."""
    reach = list(range(problem.num_nodes))
    for v in reversed(range(problem.num_nodes)):
        reach[v] = max([v, *(reach[w] for w in problem.succs[v])])
    return reach


def _integer_costs(problem: SequenceProblem) -> tuple[list[int], float]:
    """Costs as CP-SAT integers and their scale: scaled to 1e6 and rounded up when they are not
    integral (so a scaled bound, less one unit per costly node, is a bound in the real unit)."""
    top = max(problem.cost, default=0.0)
    if all(c == int(c) for c in problem.cost) and top <= 1e12:
        return [int(c) for c in problem.cost], 1.0
    scale = 1e6 / top
    return [math.ceil(c * scale) for c in problem.cost], scale


def _add_copies(m: cp_model.CpModel, problem: SequenceProblem, num_copies: int) -> _Model:
    # end[v,0]; present/start/end[v,c]: ordered copies, a dead stage between two copies
    reach = _reach(problem)
    built = _Model(m, [], {}, {}, {}, {})
    for v in range(problem.num_nodes):
        built.end0.append(m.new_int_var(v, reach[v], f"end[{v},0]"))
        if not problem.succs[v] or reach[v] < v + 2:
            continue  # a sink, or no room for a dead stage before a recomputation
        for c in range(1, num_copies):
            p = m.new_bool_var(f"present[{v},{c}]")
            s = m.new_int_var(v + 2, reach[v], f"start[{v},{c}]")
            e = m.new_int_var(v + 2, reach[v], f"end[{v},{c}]")
            prev_end = built.end0[v] if c == 1 else built.end[v, c - 1]
            m.add(s >= prev_end + 2).only_enforce_if(p)
            m.add(e >= s)
            m.add(s == v + 2).only_enforce_if(~p)
            m.add(e == v + 2).only_enforce_if(~p)
            if c > 1:
                m.add_implication(p, built.present[v, c - 1])
            built.present[v, c], built.start[v, c], built.end[v, c] = p, s, e
    return built


def _copies_of(built: _Model, v: int) -> list[int]:
    return [0, *(c for (u, c) in built.present if u == v)]


def _add_dependencies(m: cp_model.CpModel, problem: SequenceProblem, built: _Model) -> None:
    # every computation of w (copy k, at stage x) finds each input u alive: serve[u->w,k,d]
    copies = {v: _copies_of(built, v) for v in range(problem.num_nodes)}
    for w in range(problem.num_nodes):
        for k in copies[w]:
            x = w if k == 0 else built.start[w, k]
            enabled = [] if k == 0 else [built.present[w, k]]
            for u in problem.preds[w]:
                if copies[u] == [0]:
                    m.add(built.end0[u] >= x).only_enforce_if(enabled)
                    continue
                lits = []
                for d in copies[u]:
                    lit = m.new_bool_var(f"serve[{u}->{w},{k},{d}]")
                    if d == 0:
                        m.add(built.end0[u] >= x).only_enforce_if(lit)
                    else:
                        m.add_implication(lit, built.present[u, d])
                        m.add(built.start[u, d] <= x).only_enforce_if(lit)
                        m.add(built.end[u, d] >= x).only_enforce_if(lit)
                    built.serve[u, w, k, d] = lit
                    lits.append(lit)
                m.add_bool_or(lits + [~e for e in enabled])


def _add_memory(
    m: cp_model.CpModel, problem: SequenceProblem, built: _Model, cap: int, over=0
) -> None:
    # memory[t] = bytes of every copy covering t <= budget (+ ``over`` units; one cumulative)
    unit = math.gcd(*problem.mem_bytes) or 1
    intervals, demands = [], []
    for v in range(problem.num_nodes):
        size = problem.mem_bytes[v] // unit
        if not size:
            continue
        e0 = built.end0[v]
        intervals.append(m.new_interval_var(v, e0 - v + 1, e0 + 1, f"copy[{v},0]"))
        demands.append(size)
        for c in _copies_of(built, v)[1:]:
            s, e, p = built.start[v, c], built.end[v, c], built.present[v, c]
            length = m.new_int_var(1, problem.num_nodes, f"length[{v},{c}]")
            intervals.append(m.new_optional_interval_var(s, length, e + 1, p, f"copy[{v},{c}]"))
            demands.append(size)
    m.add_cumulative(intervals, demands, cap // unit + over)


def crossing_rows(problem: SequenceProblem, budget_bytes: int) -> list[tuple[list[int], int]]:
    """Rows ``(values, bytes)``: at least ``bytes`` of ``values`` must be recomputed, whatever
    the number of copies.

    At stage t, node t and its inputs are alive; a value ``v < t`` that some node after t reads
    and that is never recomputed is alive at t too. So the values crossing t that are never
    recomputed fit in the budget less the stage's own bytes. Only over-budget stages give rows.
    """
    rows, n, mem = {}, problem.num_nodes, problem.mem_bytes
    crossing: list[set[int]] = [set() for _ in range(n)]
    for v in range(n):
        for t in range(v + 1, problem.last_use(v)):
            crossing[t].add(v)
    for t in range(n):
        own = {t, *problem.preds[t]}
        across = tuple(sorted(crossing[t] - own))
        need = sum(mem[v] for v in own) + sum(mem[v] for v in across) - budget_bytes
        if need > 0 and across:
            rows[across] = max(rows.get(across, 0), need)
    return [(list(vs), need) for vs, need in rows.items()]


def _add_crossing_rows(
    m: cp_model.CpModel, problem: SequenceProblem, built: _Model, budget_bytes: int
) -> None:
    # recomputed bytes across each over-budget stage (see crossing_rows): redundant rows that give
    # the LP relaxation a real bound
    for values, need in crossing_rows(problem, budget_bytes):
        terms = [
            problem.mem_bytes[v] * built.present[v, 1] for v in values if (v, 1) in built.present
        ]
        m.add(sum(terms) >= need)


def crossing_bound(
    problem: SequenceProblem, budget_bytes: int, *, time_limit_s: float = 10.0
) -> float:
    """A lower bound on the recompute cost of *any* schedule (any number of copies): the
    cheapest set of values to recompute that satisfies :func:`crossing_rows`; inf if none does."""
    m = cp_model.CpModel()
    x = [m.new_bool_var(f"recomputed[{v}]") for v in range(problem.num_nodes)]
    for values, need in crossing_rows(problem, budget_bytes):
        m.add(sum(problem.mem_bytes[v] * x[v] for v in values) >= need)
    costs, scale = _integer_costs(problem)
    m.minimize(sum(c * xv for c, xv in zip(costs, x, strict=True) if c))
    solver = make_solver(time_limit_s, 0, 1, False)
    code = solver.solve(m)
    if code == cp_model.INFEASIBLE:
        return math.inf
    return _cost_bound(problem, solver, STATUS.get(code, SolveStatus.UNKNOWN))


def build_model(problem: SequenceProblem, budget_bytes: int, num_copies: int = 2) -> _Model:
    """The model of the module docstring for ``budget_bytes``."""
    m = cp_model.CpModel()
    built = _add_copies(m, problem, num_copies)
    _add_dependencies(m, problem, built)
    _add_memory(m, problem, built, budget_bytes)
    _add_crossing_rows(m, problem, built, budget_bytes)
    costs, _ = _integer_costs(problem)
    m.minimize(sum(costs[v] * p for (v, _), p in built.present.items() if costs[v]))
    return built


def _fit_plan(
    problem: SequenceProblem,
    budget_bytes: int,
    num_copies: int,
    time_limit_s: float,
    seed: int,
    num_workers: int,
    log_progress: bool,
) -> SequencePlan | None:
    """A plan within the budget, for when the greedy finds none: the model of
    :func:`build_model` with the budget softened by ``over`` (in memory units) and ``over``
    minimised, hinted with the no-remat plan (``over`` = its excess), so that CP-SAT's local
    search starts from a schedule and lowers its peak. None if it does not reach ``over`` = 0 in
    time (or proves it cannot with ``num_copies`` copies)."""
    m = cp_model.CpModel()
    built = _add_copies(m, problem, num_copies)
    _add_dependencies(m, problem, built)
    unit = math.gcd(*problem.mem_bytes) or 1
    start = no_remat_plan(problem)
    excess = max(0, -(-(simulate(problem, start).peak_bytes - budget_bytes) // unit))
    over = m.new_int_var(0, excess, "over")
    _add_memory(m, problem, built, budget_bytes, over)
    m.minimize(over)
    _add_hint(built, problem, start)
    m.add_hint(over, excess)
    solver = make_solver(time_limit_s, seed, num_workers, log_progress)
    solver.parameters.cp_model_presolve = False
    code = solver.solve(m)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE) or solver.value(over) > 0:
        return None
    return _plan_from(solver, built, problem)


def _add_hint(built: _Model, problem: SequenceProblem, plan: SequencePlan) -> None:
    """Hint every variable from ``plan`` (each read served by the first copy covering it)."""
    m = built.model
    for v, copies in enumerate(plan.copies):
        m.add_hint(built.end0[v], copies[0][1])
        for c in _copies_of(built, v)[1:]:
            here = c < len(copies)
            m.add_hint(built.present[v, c], here)
            m.add_hint(built.start[v, c], copies[c][0] if here else v + 2)
            m.add_hint(built.end[v, c], copies[c][1] if here else v + 2)
    for (u, w, k, d), lit in built.serve.items():
        x = plan.copies[w][k][0] if k < len(plan.copies[w]) else None
        first = next(
            (i for i, (s, e) in enumerate(plan.copies[u]) if x is not None and s <= x <= e), None
        )
        m.add_hint(lit, first == d)


def _plan_from(solver: cp_model.CpSolver, built: _Model, problem: SequenceProblem) -> SequencePlan:
    copies = []
    for v in range(problem.num_nodes):
        cv = [(v, solver.value(built.end0[v]))]
        for c in _copies_of(built, v)[1:]:
            if solver.boolean_value(built.present[v, c]):
                cv.append((solver.value(built.start[v, c]), solver.value(built.end[v, c])))
        copies.append(tuple(cv))
    return SequencePlan(tuple(copies))


class _Progress(cp_model.CpSolverSolutionCallback):
    """Records when each improving solution was found (seconds since ``t0``)."""

    def __init__(self, t0: float) -> None:
        super().__init__()
        self.t0, self.times = t0, []

    def on_solution_callback(self) -> None:
        self.times.append(time.perf_counter() - self.t0)


def solve_sequence(
    problem: SequenceProblem,
    budget_bytes: int,
    *,
    num_copies: int = 2,
    time_limit_s: float = 60.0,
    seed: int = 0,
    num_workers: int = 1,
    presolve: bool = False,
    log_progress: bool = False,
) -> SolveResult:
    """Cheapest plan with at most ``num_copies`` copies per value and simulated peak <= budget.

    ``status``/``bound`` are for that class. ``info``: ``plan``, ``time_to_first_s``,
    ``time_to_best_s``, ``greedy_cost`` (None if the greedy found no plan), ``warm_start``
    (the hint: "greedy", "fit" where the greedy found none and the soft-budget model of
    :func:`_fit_plan` did, within half the time left, or None),
    ``any_schedule_bound`` (valid for any number of copies; inf: no schedule at all fits): the
    larger of ``crossing_bound`` (:func:`crossing_bound`) and ``cascade_bound``
    (``sequence_bound.cascade_bound``, given up to a quarter of the time limit, at most 30 s).
    """
    t0 = time.perf_counter()
    crossing = (
        math.inf
        if budget_bytes < stage_lower_bound(problem)
        else crossing_bound(problem, budget_bytes, time_limit_s=min(5.0, time_limit_s / 10))
    )
    if crossing == math.inf:
        wall = time.perf_counter() - t0
        info = {
            "crossing_bound": crossing,
            "cascade_bound": math.inf,
            "any_schedule_bound": crossing,
        }
        return SolveResult("moccasin", SolveStatus.INFEASIBLE, wall_s=wall, info=info)
    warm = greedy_plan(problem, budget_bytes, time_limit_s=min(20.0, time_limit_s / 4))
    greedy_cost = simulate(problem, warm).recompute_cost if warm else None
    source = "greedy" if warm else None
    if warm is None:  # where the greedy sticks, let CP-SAT lower the peak of the no-remat plan
        left = max(0.1, time_limit_s - (time.perf_counter() - t0))
        warm = _fit_plan(
            problem, budget_bytes, num_copies, left / 2, seed, num_workers, log_progress
        )
        source = "fit" if warm else None
    t_warm = time.perf_counter() - t0
    # after the greedy, so that a first plan comes as early as before (the bound feeds no search)
    cascade = cascade_bound(problem, budget_bytes, time_limit_s=min(30.0, time_limit_s / 4))
    any_lb = max(crossing, cascade)
    bounds = {"crossing_bound": crossing, "cascade_bound": cascade, "any_schedule_bound": any_lb}
    built = build_model(problem, budget_bytes, num_copies)
    if warm is not None:
        _add_hint(built, problem, warm)
    left = max(0.1, time_limit_s - (time.perf_counter() - t0))
    solver = make_solver(left, seed, num_workers, log_progress)
    solver.parameters.cp_model_presolve = presolve
    progress = _Progress(t0)
    code = solver.solve(built.model, progress)
    if code == cp_model.MODEL_INVALID:
        raise ModelMismatch(f"CP-SAT rejected the model: {built.model.validate()}")
    status = STATUS[code]
    if status is SolveStatus.INFEASIBLE and warm is not None:
        raise ModelMismatch(f"{problem.name}: CP-SAT calls the budget infeasible, the greedy fits")
    info = {
        "greedy_cost": greedy_cost,
        "warm_start": source,
        "cpsat_status": status.value,
        **bounds,
    }
    cands = [(warm, t_warm)] if warm is not None else []
    if status.has_plan:
        cands.append((_plan_from(solver, built, problem), progress.times[-1]))
    return _result(problem, budget_bytes, built, solver, status, cands, info, t0)


def _result(problem, budget_bytes, built, solver, status, cands, info, t0) -> SolveResult:
    """Report the cheapest of the candidate ``(plan, seconds to find it)``, re-simulated."""
    wall = time.perf_counter() - t0
    sizes = {
        "num_variables": len(built.model.proto.variables),
        "num_constraints": len(built.model.proto.constraints),
    }
    if not cands:
        return SolveResult("moccasin", status, wall_s=wall, info=info, **sizes)
    sims = [(simulate(problem, p), p, t) for p, t in cands]
    sim, plan, t_best = min(
        sims, key=lambda s: (s[0].recompute_cost if s[0].valid else math.inf, s[2])
    )
    if not sim.valid or sim.peak_bytes > budget_bytes:
        raise ModelMismatch(
            f"{problem.name}: plan simulates to peak {sim.peak_bytes} > budget "
            f"{budget_bytes} (valid={sim.valid}: {sim.reason})"
        )
    cost = sim.recompute_cost
    bound = cost if status is SolveStatus.OPTIMAL else _cost_bound(problem, solver, status)
    bound = max(bound, info["any_schedule_bound"])
    info.update(plan=plan, time_to_first_s=min(t for _, _, t in sims), time_to_best_s=t_best)
    return SolveResult(
        "moccasin",
        SolveStatus.OPTIMAL if bound >= cost else SolveStatus.FEASIBLE,
        objective=cost,
        bound=min(bound, cost),
        peak_bytes=sim.peak_bytes,
        wall_s=wall,
        info=info,
        **sizes,
    )


def _cost_bound(problem: SequenceProblem, solver: cp_model.CpSolver, status: SolveStatus) -> float:
    """The solver's lower bound in the problem's cost unit (0 when it has none)."""
    if status is SolveStatus.UNKNOWN:
        return 0.0
    costs, scale = _integer_costs(problem)
    raw = solver.best_objective_bound
    return float(raw) if scale == 1.0 else max(0.0, (raw - sum(1 for c in costs if c)) / scale)
