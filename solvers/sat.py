"""What every CP-SAT-based solver shares: status mapping and solver parameters."""

from __future__ import annotations

import logging

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


def solve_model(
    model: cp_model.CpModel,
    *,
    time_limit_s: float,
    seed: int,
    num_workers: int,
    log_progress: bool,
) -> tuple[cp_model.CpSolver, SolveStatus, dict[str, int]]:
    """Solve ``model``; return the solver (for values), the status and the model's size."""
    solver = make_solver(time_limit_s, seed, num_workers, log_progress)
    code = solver.solve(model)
    if code == cp_model.MODEL_INVALID:
        raise ModelMismatch(f"CP-SAT rejected the model: {model.validate()}")
    proto = model.proto
    sizes = {"num_variables": len(proto.variables), "num_constraints": len(proto.constraints)}
    return solver, STATUS[code], sizes


def make_solver(
    time_limit_s: float, seed: int, num_workers: int, log_progress: bool
) -> cp_model.CpSolver:
    """A CpSolver with a time limit, a fixed seed and worker count, and optional progress log.

    No ``interleave_search``: here it was 5-10x slower, and together with a hint and several
    workers OR-Tools 9.15 aborts the process ("Check failed: heuristics.fixed_search != nullptr",
    google/or-tools#5025). One worker (graphremat's default) gives the same plan on every run and
    every rank; with several, an optimal objective is the same but the plan may differ.
    """
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.max_time_in_seconds = float(time_limit_s)
    p.random_seed = int(seed)
    p.num_workers = int(num_workers)
    p.log_search_progress = bool(log_progress)
    if log_progress:
        solver.log_callback = log.info
    return solver
