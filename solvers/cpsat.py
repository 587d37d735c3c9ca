"""CP-SAT model of the fixed-order joint-graph schedule class (see ``problem.py``).

Exact for that class: on any problem, the optimum of this model equals the best saved set found by
enumerating :func:`solvers.problem.evaluate` (tests check this with hypothesis).

Time axis: forward steps ``0..F-1``, then backward steps ``F..F+B-1``. Variables, per candidate
forward value ``v`` (a forward node the backward may need):

  ``save[v]``      v is kept from the forward until its last backward use
  ``recomp[v]``    v is recomputed once in the backward
  ``slot[v]``      backward step before which the recomputation runs (meaningful if recomp[v])
  ``last[v]``      last backward step that reads v (meaningful if save[v] or recomp[v])

Memory is one ``AddCumulative`` over: the plan-independent profile (as constant intervals), each
saved value's extension ``[last_fwd_use+1, F+last]`` and each recomputed value's interval
``[F+slot, F+last]`` (plus its transient bytes at ``F+slot``). Capacity: budget - fixed bytes.
Objective: minimise the summed cost of recomputed values.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from .greedy import greedy_fit, greedy_min_peak
from .problem import RematProblem, evaluate, save_all_set
from .result import SolveResult, SolveStatus
from .sat import ModelMismatch, solve_model

log = logging.getLogger("graphremat")


@dataclass(slots=True)
class _Model:
    model: cp_model.CpModel
    save: dict[str, cp_model.IntVar]
    recomp: dict[str, cp_model.IntVar]
    byte_unit: int
    cost_scale: float
    cost_int: dict[str, int]
    capacity: cp_model.IntVar | None


def _byte_unit(problem: RematProblem) -> int:
    g = problem.graph
    unit = 0
    for _, a in g.nodes(data=True):
        unit = math.gcd(unit, int(a["mem_bytes"]), int(a["transient_bytes"]))
    return unit or 1


def _integer_costs(problem: RematProblem, cand: list[str]) -> tuple[dict[str, int], float]:
    costs = {v: float(problem.attr(v, "cost")) for v in cand}
    top = max(costs.values(), default=0.0)
    if all(c == int(c) for c in costs.values()) and top <= 1e12:
        return {v: int(c) for v, c in costs.items()}, 1.0
    scale = 1e6 / top if top > 0 else 1.0
    return {v: (math.ceil(c * scale) if c > 0 else 0) for v, c in costs.items()}, scale


def build_model(problem: RematProblem, capacity_bytes: int | None) -> _Model:
    """Build the model; ``capacity_bytes=None`` makes the capacity a variable (for min-peak)."""
    g, num_f, num_b = problem.graph, problem.num_fwd, problem.num_bwd
    horizon = problem.num_steps
    m = cp_model.CpModel()
    unit = _byte_unit(problem)
    cand = problem.candidates()
    cset = set(cand)
    cost_int, scale = _integer_costs(problem, cand)

    save: dict[str, cp_model.IntVar] = {}
    recomp: dict[str, cp_model.IntVar] = {}
    slot: dict[str, cp_model.IntVar] = {}
    last: dict[str, cp_model.IntVar] = {}
    b_hi = max(num_b - 1, 0)

    # variables: save[v], recomp[v], slot[v], last[v]
    for v in cand:
        a = g.nodes[v]
        save[v] = m.new_bool_var(f"save[{v}]")
        recomp[v] = m.new_bool_var(f"recomp[{v}]")
        slot[v] = m.new_int_var(0, b_hi, f"slot[{v}]")
        last[v] = m.new_int_var(0, b_hi, f"last[{v}]")
        if not (a["savable"] and a["required"]):
            m.add(save[v] == 0)
        elif a["pinned"]:
            m.add(save[v] == 1)  # alive to the end anyway: keeping it is free
        if not a["recomputable"]:
            m.add(recomp[v] == 0)
        # one copy reaches the backward: saved or recomputed, never both
        m.add(save[v] + recomp[v] <= 1)

    # need[v]: a backward node reads v, or a recomputed candidate reads v.
    # first[v]: the first backward step needing v; the emitter recomputes v exactly there
    # (just in time), so slot[v] == first[v] -- an earlier slot would let v's inputs die
    # earlier than they really do.
    first = {v: m.new_int_var(0, num_b, f"first[{v}]") for v in cand}
    for v in cand:
        uses = []
        for c in g.successors(v):
            if not problem.is_fwd(c):
                p = problem.bwd_pos[c]
                m.add(save[v] + recomp[v] == 1)
                m.add(last[v] >= p)
                uses.append(p)
            elif c in cset:
                m.add(save[v] + recomp[v] >= recomp[c])
                m.add(last[v] >= slot[c]).only_enforce_if(recomp[c])
                # use[v,c]: when c is recomputed, the step that needs v through c; else "never"
                use = m.new_int_var(0, num_b, f"use[{v}->{c}]")
                tied_child = g.nodes[c]["tied_to"] == v
                m.add(use == (first[c] if tied_child else slot[c])).only_enforce_if(recomp[c])
                m.add(use == num_b).only_enforce_if(~recomp[c])
                uses.append(use)
        m.add_min_equality(first[v], uses + [num_b])

    # slot[v]: recomputation runs at first[v]; a multi-output op's outputs run in the op's slot
    for v in cand:
        parent = g.nodes[v]["tied_to"]
        if parent is not None and parent in cset:
            m.add(slot[v] == slot[parent]).only_enforce_if(recomp[v])
        else:
            m.add(slot[v] == first[v]).only_enforce_if(recomp[v])

    # memory[t]: fixed profile + saved extensions + recomputed intervals <= capacity
    intervals, demands = [], []
    profile = problem.fixed_profile()
    t = 0
    while t < horizon:
        t1 = t
        while t1 + 1 < horizon and profile[t1 + 1] == profile[t]:
            t1 += 1
        if profile[t]:
            intervals.append(m.new_fixed_size_interval_var(t, t1 - t + 1, f"fixed[{t}]"))
            demands.append(profile[t] // unit)
        t = t1 + 1
    for v in cand:
        a = g.nodes[v]
        mem, tr = a["mem_bytes"] // unit, a["transient_bytes"] // unit
        if mem and a["savable"] and a["required"] and not a["pinned"]:
            start = problem.last_fwd_use(v) + 1
            end = m.new_int_var(num_f, horizon, f"save_end[{v}]")
            m.add(end == num_f + last[v] + 1)
            size = m.new_int_var(1, horizon, f"save_len[{v}]")
            intervals.append(m.new_optional_interval_var(start, size, end, save[v], f"saved[{v}]"))
            demands.append(mem)
        if a["recomputable"] and (mem or tr):
            start = m.new_int_var(num_f, horizon - 1, f"re_start[{v}]")
            m.add(start == num_f + slot[v])
            if mem:
                end = m.new_int_var(num_f + 1, horizon, f"re_end[{v}]")
                m.add(end == num_f + last[v] + 1)
                size = m.new_int_var(1, horizon, f"re_len[{v}]")
                intervals.append(
                    m.new_optional_interval_var(start, size, end, recomp[v], f"recomputed[{v}]")
                )
                demands.append(mem)
            if tr:
                intervals.append(
                    m.new_optional_fixed_size_interval_var(start, 1, recomp[v], f"transient[{v}]")
                )
                demands.append(tr)

    cap_var = None
    if capacity_bytes is None:
        hi = sum(demands) + 1
        cap_var = m.new_int_var(0, hi, "capacity")
        capacity = cap_var
    else:
        capacity = max(-1, (capacity_bytes - problem.fixed_bytes)) // unit
        if capacity < 0:
            m.add_bool_or([])  # trivially infeasible
            capacity = 0
    m.add_cumulative(intervals, demands, capacity)
    _add_sure_memory_rows(m, problem, cand, save, unit, profile, capacity)

    # objective: total recompute cost
    if capacity_bytes is None:
        m.minimize(cap_var)
    else:
        m.minimize(sum(cost_int[v] * recomp[v] for v in cand if cost_int[v]))
    return _Model(m, save, recomp, unit, scale, cost_int, cap_var)


def _add_sure_memory_rows(m, problem, cand, save, unit, profile, capacity) -> None:
    """memory_lb[t]: redundant linear rows that give the LP relaxation a real bound.

    A candidate read directly by the backward is alive, whatever the plan, from its first to its
    last direct backward use; if saved, it is also alive from its last forward use to its first
    backward use. So at step t: fixed + surely-alive + sum(mem * save over gaps covering t) <=
    capacity. Implied by the cumulative constraint; stated linearly so the LP sees it.
    """
    g, num_f, horizon = problem.graph, problem.num_fwd, problem.num_steps
    sure = [0] * (horizon + 1)
    gaps: list[tuple[int, int, str]] = []
    for v in cand:
        a = g.nodes[v]
        uses = [problem.bwd_pos[c] for c in g.successors(v) if not problem.is_fwd(c)]
        mem = a["mem_bytes"] // unit
        if not uses or not mem or a["pinned"]:
            continue
        first, last = num_f + min(uses), num_f + max(uses)
        sure[first] += mem
        sure[last + 1] -= mem
        if a["savable"] and a["required"]:
            start = problem.last_fwd_use(v) + 1
            if start <= first - 1:
                gaps.append((start, first - 1, v))
    run = 0
    rows: dict[tuple[str, ...], int] = {}
    for t in range(horizon):
        run += sure[t]
        members = tuple(v for s0, s1, v in gaps if s0 <= t <= s1)
        if not members:
            continue
        slack_used = profile[t] // unit + run
        rows[members] = max(rows.get(members, 0), slack_used)
    for members, used in rows.items():
        terms = sum((g.nodes[v]["mem_bytes"] // unit) * save[v] for v in members)
        m.add(terms + used <= capacity)


def _hint_save_all(built: _Model, problem: RematProblem, keep=None) -> None:
    keep = save_all_set(problem) if keep is None else keep
    for v, var in built.save.items():
        built.model.add_hint(var, v in keep)


def _warm_time(time_limit_s: float) -> float:
    """The greedy warm start's share of a solve's time limit."""
    return min(2.0, time_limit_s / 4)


def _solve_hinted(problem, budget_bytes, keep, t0: float, time_limit_s: float, **solve_kw):
    """Build the model (``budget_bytes`` None: minimise the peak), hint the saved set ``keep``
    (None: save everything) and solve in what is left of ``time_limit_s`` since ``t0``."""
    built = build_model(problem, budget_bytes)
    _hint_save_all(built, problem, keep)
    left = max(0.1, time_limit_s - (time.perf_counter() - t0))
    solver, status, sizes = solve_model(built.model, time_limit_s=left, **solve_kw)
    return built, solver, status, sizes


def solve_cpsat(
    problem: RematProblem,
    budget_bytes: int,
    *,
    time_limit_s: float = 60.0,
    seed: int = 0,
    num_workers: int = 1,
    log_progress: bool = False,
) -> SolveResult:
    """Minimum-recompute plan with peak <= ``budget_bytes`` (exact for the schedule class)."""
    t0 = time.perf_counter()
    warm = greedy_fit(problem, budget_bytes, time_limit_s=_warm_time(time_limit_s))
    built, solver, status, sizes = _solve_hinted(
        problem,
        budget_bytes,
        warm.saved if warm is not None else None,
        t0,
        time_limit_s,
        seed=seed,
        num_workers=num_workers,
        log_progress=log_progress,
    )
    wall = time.perf_counter() - t0
    if not status.has_plan and warm is None:
        return SolveResult("cpsat", status, wall_s=wall, **sizes)
    cp_status = status
    if status.has_plan:
        ev = evaluate(problem, {v for v, var in built.save.items() if solver.boolean_value(var)})
    if not status.has_plan or (warm is not None and warm.cost < ev.cost):
        # CP-SAT did not improve on its warm start in the time limit: the greedy plan stands
        if status is SolveStatus.INFEASIBLE:
            log.warning("CP-SAT calls %s infeasible but a greedy plan fits", problem.name)
        ev, status = warm, SolveStatus.FEASIBLE
    if not ev.valid or ev.peak_bytes > budget_bytes:
        raise ModelMismatch(
            f"CP-SAT plan on {problem.name} evaluates to peak {ev.peak_bytes} > budget "
            f"{budget_bytes} (valid={ev.valid}: {ev.reason})"
        )
    bound = solver.best_objective_bound if cp_status is not SolveStatus.INFEASIBLE else 0.0
    if built.cost_scale != 1.0:
        bound = max(0.0, (bound - len(built.recomp)) / built.cost_scale)
    return SolveResult(
        solver="cpsat",
        status=status,
        saved=ev.saved,
        objective=ev.cost,
        bound=ev.cost if status is SolveStatus.OPTIMAL else min(float(bound), ev.cost),
        peak_bytes=ev.peak_bytes,
        wall_s=wall,
        info={"cpsat_status": cp_status.value, "warm_start_cost": warm.cost if warm else None},
        **sizes,
    )


@dataclass(frozen=True, slots=True)
class MinPeak:
    """Smallest peak of the schedule class: ``peak_bytes`` is achieved by ``saved``;
    ``lower_bound_bytes`` is proven (equal when ``optimal``)."""

    peak_bytes: int
    lower_bound_bytes: int
    optimal: bool
    saved: frozenset[str]
    wall_s: float


def min_peak(
    problem: RematProblem,
    *,
    time_limit_s: float = 30.0,
    seed: int = 0,
    num_workers: int = 1,
    log_progress: bool = False,
) -> MinPeak:
    """Smallest budget for which a plan of the schedule class exists."""
    t0 = time.perf_counter()
    warm = greedy_min_peak(problem, time_limit_s=_warm_time(time_limit_s))
    built, solver, status, _ = _solve_hinted(
        problem,
        None,
        warm.saved,
        t0,
        time_limit_s,
        seed=seed,
        num_workers=num_workers,
        log_progress=log_progress,
    )
    if not status.has_plan:  # the save-all hint always fits an unbounded capacity
        raise ModelMismatch(f"min-peak model found no plan (status {status.value})")
    saved = {v for v, var in built.save.items() if solver.boolean_value(var)}
    ev = evaluate(problem, saved)
    if warm.peak_bytes < ev.peak_bytes:
        ev = warm
    lower = int(solver.best_objective_bound) * built.byte_unit + problem.fixed_bytes
    return MinPeak(
        peak_bytes=ev.peak_bytes,
        lower_bound_bytes=min(lower, ev.peak_bytes),
        optimal=status is SolveStatus.OPTIMAL and ev.peak_bytes <= lower,
        saved=ev.saved,
        wall_s=time.perf_counter() - t0,
    )
