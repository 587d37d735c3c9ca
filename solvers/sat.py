"""What every CP-SAT-based solver shares: status mapping and solver parameters."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ortools.sat.python import cp_model

from .result import SolveStatus

log = logging.getLogger("graphremat")

STATUS = {
    cp_model.OPTIMAL: SolveStatus.OPTIMAL,
    cp_model.FEASIBLE: SolveStatus.FEASIBLE,
    cp_model.INFEASIBLE: SolveStatus.INFEASIBLE,
    cp_model.UNKNOWN: SolveStatus.UNKNOWN,
}


class ModelMismatch(RuntimeError):
    """A CP-SAT model disagrees with its independent check (or was rejected): a graphremat bug."""


#: CP-SAT deterministic time units granted per second of ``time_limit_s``. Measured on the
#: 2-core development machine on the GPT joint graphs: 0.1-0.2 units per wall second with one
#: worker, so the work limit ends a solve at a third to a half of its wall limit, and a machine
#: up to about twice as slow (or as loaded) still stops on work, not on the clock.
DETERMINISTIC_UNITS_PER_S = 0.1


def solve_model(
    model: cp_model.CpModel,
    *,
    time_limit_s: float,
    seed: int,
    num_workers: int,
    log_progress: bool,
    work_s: float | None = None,
    linearization_level: int | None = None,
) -> tuple[cp_model.CpSolver | Portfolio, SolveStatus, dict[str, int]]:
    """Solve ``model``; return the solver (for values and the bound), the status and the
    model's size. ``work_s`` and ``linearization_level``: see :func:`make_solver` and CP-SAT.

    With ``work_s`` and several workers the solve is a :class:`Portfolio` of one-worker solves
    (deterministic: the same answer for the same seed and worker count); without ``work_s``,
    CP-SAT's own parallel search (wall-time limited, not reproducible)."""
    if work_s is not None and num_workers > 1:
        solvers = [
            portfolio_solver(i, time_limit_s, seed, work_s, log_progress and i == 0)
            for i in range(num_workers)
        ]
        if linearization_level is not None:
            for s in solvers:
                s.parameters.linearization_level = linearization_level

        def run(i: int) -> int:
            code = solvers[i].solve(model)
            if code in (cp_model.OPTIMAL, cp_model.INFEASIBLE):
                for later in solvers[i + 1 :]:  # a proof here outranks every later worker
                    later.stop_search()
            return code

        with ThreadPoolExecutor(max_workers=num_workers) as pool:  # solve() releases the GIL
            codes = list(pool.map(run, range(num_workers)))
        solver: cp_model.CpSolver | Portfolio = Portfolio(solvers, codes, model)
        code = solver.status_code
    else:
        solver = make_solver(time_limit_s, seed, num_workers, log_progress, work_s=work_s)
        if linearization_level is not None:
            solver.parameters.linearization_level = linearization_level
        code = solver.solve(model)
    if code == cp_model.MODEL_INVALID:
        raise ModelMismatch(f"CP-SAT rejected the model: {model.validate()}")
    proto = model.proto
    sizes = {"num_variables": len(proto.variables), "num_constraints": len(proto.constraints)}
    return solver, STATUS[code], sizes


def portfolio_solver(
    index: int, time_limit_s: float, seed: int, work_s: float, log_progress: bool
) -> cp_model.CpSolver:
    """Worker ``index`` of a deterministic portfolio: one CP-SAT worker with the same work
    limit as a one-worker solve. Worker 0 is exactly the one-worker solve (so more workers never
    give a worse plan); 1 adds LP cuts (linearization level 2), 2 searches without LP, and the
    rest randomise the search with their own seeds."""
    solver = make_solver(time_limit_s, seed, 1, log_progress, work_s=work_s)
    p = solver.parameters
    if index == 1:
        p.linearization_level = 2
    elif index == 2:
        p.linearization_level = 0
    elif index > 2:
        p.random_seed = int(seed) + index
        p.randomize_search = True
    return solver


class Portfolio:
    """The answer of several one-worker CP-SAT solves of one minimisation model, chosen by
    rule, not by timing: a proof wins (optimal, then infeasible), else the lowest objective;
    ties go to the lowest worker index. (A worker that proves its answer stops the workers
    after it, which could not outrank it; the ones before it run to their work limit.) Values
    are read from the chosen solver; the objective bound is the best any worker proved."""

    def __init__(
        self, solvers: list[cp_model.CpSolver], codes: list[int], model: cp_model.CpModel
    ) -> None:
        if model.proto.objective.scaling_factor < 0:  # a maximisation: not used here
            raise ValueError("Portfolio answers minimisation models only")
        has_plan = {cp_model.OPTIMAL, cp_model.FEASIBLE}

        def rank(i: int) -> tuple:
            code = codes[i]
            if code == cp_model.OPTIMAL:
                return (0, 0.0, i)
            if code in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
                return (1, 0.0, i)
            if code in has_plan:
                return (2, solvers[i].objective_value, i)
            return (3, 0.0, i)

        self.index = min(range(len(solvers)), key=rank)
        self.chosen = solvers[self.index]
        self.status_code = codes[self.index]
        bounds = [s.best_objective_bound for s in solvers]
        self._bound = (
            max(bounds) if self.status_code in has_plan else self.chosen.best_objective_bound
        )
        if self.status_code == cp_model.FEASIBLE:  # never above the plan's own objective
            self._bound = min(self._bound, self.chosen.objective_value)

    @property
    def best_objective_bound(self) -> float:
        return self._bound

    def __getattr__(self, name: str):  # values, objective, response: the chosen worker's
        return getattr(self.chosen, name)


def make_solver(
    time_limit_s: float,
    seed: int,
    num_workers: int,
    log_progress: bool,
    *,
    work_s: float | None = None,
) -> cp_model.CpSolver:
    """A CpSolver with a time limit, a fixed seed and worker count, and optional progress log.

    ``work_s``: the solve also stops after ``DETERMINISTIC_UNITS_PER_S * work_s`` deterministic
    time units (CP-SAT's count of work done, independent of the clock and of machine load), so
    with one worker the same model, seed and ``work_s`` give the same answer on every machine
    and every rank. ``time_limit_s`` stays a wall-clock safety cap: a solve that reaches it
    first (a much slower or overloaded machine) is cut by the clock and may differ.

    This solver runs ``num_workers`` CP-SAT workers that share solutions as they go: not
    reproducible for more than one. :func:`solve_model` therefore runs several workers with a
    work limit as a :class:`Portfolio` of one-worker solvers from here instead. (CP-SAT's own
    deterministic parallel mode, ``interleave_search``, was 5-10x slower here, and together with
    a hint OR-Tools 9.15 aborts the process: "Check failed: heuristics.fixed_search != nullptr",
    google/or-tools#5025.)
    """
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.max_time_in_seconds = float(time_limit_s)
    if work_s is not None:
        p.max_deterministic_time = DETERMINISTIC_UNITS_PER_S * float(work_s)
    p.random_seed = int(seed)
    p.num_workers = int(num_workers)
    p.log_search_progress = bool(log_progress)
    if log_progress:
        solver.log_callback = log.info
    return solver
