"""A lower bound on the recompute cost of *any* schedule in the papers' setting (any number of
copies per value), stronger than the crossing rows: a value dropped across a stage must be
computed again after it, and so must be every input of that later computation that is not kept
across the stage.

Input: a :class:`SequenceProblem` (``sequence.py``: fixed order, stages, memory accounting) and a
byte budget. Output of :func:`cascade_bound`: a cost no schedule with peak <= budget can beat
(``inf`` when the relaxation itself is infeasible, i.e. no schedule fits).

The relaxation, for an over-budget stage ``t`` (more bytes alive at ``t`` without recomputation
than the budget) and a value ``v < t``:

  ``a[v,t]``  some copy of v covers stage t (v is alive at t)
  ``r[v,t]``  some copy of v starts after t (v is computed again later)
  ``x[v]``    how many times v is computed again (cost ``cost[v]``; objective: sum of cost * x)
  ``w[v,u]``  v is computed again between its last use before a stage and its next use ``u``

  * node t and its inputs are alive at t (constants);
  * a value read by a first computation after t is alive at t or computed again after it:
    ``a[v,t] + r[v,t] >= 1``;
  * computing v after t needs each input u alive then, from a copy that covers t or starts after
    it: ``a[u,t] + r[u,t] >= r[v,t]``;
  * ``x[v] >= r[v,t]``; the bytes alive at t fit: ``sum mem[v] * a[v,t] + own bytes <= budget``;
  * a value read after t that is not alive at t is computed again in (t, its next use u]:
    ``w[v,u] >= 1 - a[v,t]``; windows with different next uses are disjoint (the earlier next use
    comes before the later stage), so ``x[v] >= sum over u of w[v,u]`` (a value dropped at two
    peaks with a read between them is computed again twice).

Every schedule satisfies these with its own 0/1 values, so the LP optimum (any subset of stages,
any subset of the input rows) is a lower bound. Inputs are followed one level (the inputs of
values read after t); deeper levels changed nothing on the rl graphs. The LP has a block per
stage, coupled only through ``x``; stages are added in rounds, twice as many each round (the
local peaks of the no-remat memory first, then the other over-budget stages by height), until
all are in, a round gains little, or the time limit is reached: the bound of the last finished
round is returned. GLOP (OR-Tools' simplex) solves it; the margin below its optimum (``_SAFETY``)
is a guard against its tolerances, not a rounding-safe proof.
"""

from __future__ import annotations

import math
import time

from ortools.linear_solver import pywraplp

from .sequence import SequenceProblem, no_remat_plan, simulate

# The LP's optimum is computed in floating point: the bound given away is this fraction of it
# (GLOP's primal/dual tolerances are 1e-7 relative).
_SAFETY = 1e-6


def _stage_order(problem: SequenceProblem, budget_bytes: int) -> list[int]:
    """Over-budget stages, the most telling first: the local peaks of the no-remat profile by
    height (one per crowded region), then the other stages by height."""
    profile = simulate(problem, no_remat_plan(problem)).profile_bytes
    n = len(profile)
    over = [t for t in range(n) if profile[t] > budget_bytes]
    peaks = {
        t
        for t in over
        if (t == 0 or profile[t] >= profile[t - 1]) and (t + 1 == n or profile[t] >= profile[t + 1])
    }
    by_height = sorted(over, key=lambda t: (-profile[t], t))
    return [t for t in by_height if t in peaks] + [t for t in by_height if t not in peaks]


class _Relaxation:
    """The LP of the module docstring, grown one stage block at a time."""

    def __init__(self, problem: SequenceProblem, budget_bytes: int) -> None:
        self.p, self.budget = problem, budget_bytes
        self.lp = pywraplp.Solver.CreateSolver("GLOP")
        self.x: dict[int, pywraplp.Variable] = {}
        self.windows: dict[tuple[int, int], pywraplp.Variable] = {}
        self.objective = self.lp.Objective()
        self.objective.SetMinimization()
        self.infeasible = False

    def _x(self, v: int) -> pywraplp.Variable:
        if v not in self.x:
            self.x[v] = self.lp.NumVar(0.0, self.lp.infinity(), f"x{v}")
            self.objective.SetCoefficient(self.x[v], self.p.cost[v])
        return self.x[v]

    def add_stage(self, t: int) -> None:
        p, lp, inf = self.p, self.lp, self.lp.infinity()
        own = {t, *p.preds[t]}
        crossing = [v for v in range(t) if v not in own and p.last_use(v) > t]
        inputs = {u for v in crossing for u in p.preds[v]} - own
        values = sorted(set(crossing) | inputs)
        a = {v: lp.NumVar(0.0, 1.0, f"a{v},{t}") for v in values}
        r = {v: lp.NumVar(0.0, 1.0, f"r{v},{t}") for v in values}
        for v in crossing:
            row = lp.Constraint(1.0, inf)
            row.SetCoefficient(a[v], 1.0)
            row.SetCoefficient(r[v], 1.0)
            # dropped at t: computed again in (t, next use], one window per next use
            key = (v, min(w for w in p.succs[v] if w > t))
            if key not in self.windows:
                self.windows[key] = lp.NumVar(0.0, 1.0, f"w{key}")
            row = lp.Constraint(1.0, inf)
            row.SetCoefficient(self.windows[key], 1.0)
            row.SetCoefficient(a[v], 1.0)
        for v in values:
            row = lp.Constraint(0.0, inf)  # x[v] >= r[v,t]
            row.SetCoefficient(self._x(v), 1.0)
            row.SetCoefficient(r[v], -1.0)
            for u in p.preds[v]:
                if u in a:  # inputs in ``own`` are alive at t anyway
                    row = lp.Constraint(0.0, inf)
                    row.SetCoefficient(a[u], 1.0)
                    row.SetCoefficient(r[u], 1.0)
                    row.SetCoefficient(r[v], -1.0)
        room = self.budget - sum(p.mem_bytes[v] for v in own)
        if room < 0:
            self.infeasible = True
            return
        row = lp.Constraint(-inf, float(room))
        for v in values:
            if p.mem_bytes[v]:
                row.SetCoefficient(a[v], float(p.mem_bytes[v]))

    def solve(self, time_limit_s: float) -> float | None:
        """The LP's optimum as a safe bound; inf if infeasible; None if not solved in time."""
        if self.infeasible:
            return math.inf
        per_value: dict[int, list[pywraplp.Variable]] = {}
        for (v, _), w in self.windows.items():
            per_value.setdefault(v, []).append(w)
        for v, ws in per_value.items():
            if len(ws) > 1:  # x[v] >= recomputations in disjoint windows
                row = self.lp.Constraint(0.0, self.lp.infinity())
                row.SetCoefficient(self._x(v), 1.0)
                for w in ws:
                    row.SetCoefficient(w, -1.0)
        self.lp.SetTimeLimit(max(1, int(time_limit_s * 1000)))
        code = self.lp.Solve()
        if code == pywraplp.Solver.INFEASIBLE:
            return math.inf
        if code != pywraplp.Solver.OPTIMAL:
            return None
        value = self.objective.Value()
        bound = value - _SAFETY * abs(value)
        if all(c == int(c) for c in self.p.cost):  # any schedule's cost is then an integer
            bound = math.ceil(bound - 1e-9)
        return max(0.0, bound)


def cascade_bound(
    problem: SequenceProblem,
    budget_bytes: int,
    *,
    time_limit_s: float = 10.0,
    first_stages: int = 8,
    min_gain: float = 0.01,
) -> float:
    """A lower bound on the recompute cost of any schedule with peak <= ``budget_bytes``
    (module docstring); ``inf`` if no schedule fits; 0.0 if no round finished in time.

    Rounds of ``first_stages``, then twice as many stages each, solved from scratch (GLOP's
    re-solve after adding rows was slower than a fresh solve on the rl graphs); it stops when all
    over-budget stages are in, when a round raised the bound by less than ``min_gain``
    (relative), or at ``time_limit_s``.
    """
    deadline = time.perf_counter() + time_limit_s
    order = _stage_order(problem, budget_bytes)
    bound, size = 0.0, first_stages
    while order:
        relax = _Relaxation(problem, budget_bytes)
        for t in order[:size]:
            if time.perf_counter() > deadline:
                return bound  # the last solved round's bound
            relax.add_stage(t)
        value = relax.solve(deadline - time.perf_counter())
        if value is None:
            return bound
        gained = value > bound * (1 + min_gain)
        bound = max(bound, value)
        if value == math.inf or size >= len(order) or not gained:
            return bound
        size *= 2
    return bound
