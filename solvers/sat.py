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
) -> tuple[cp_model.CpSolver, SolveStatus, dict[str, int]]:
    """Solve ``model``; return the solver (for values), the status and the model's size.
    ``work_s`` and ``linearization_level``: see :func:`make_solver` and CP-SAT."""
    solver = make_solver(time_limit_s, seed, num_workers, log_progress, work_s=work_s)
    if linearization_level is not None:
        solver.parameters.linearization_level = linearization_level
    code = solver.solve(model)
    if code == cp_model.MODEL_INVALID:
        raise ModelMismatch(f"CP-SAT rejected the model: {model.validate()}")
    proto = model.proto
    sizes = {"num_variables": len(proto.variables), "num_constraints": len(proto.constraints)}
    return solver, STATUS[code], sizes


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

    No ``interleave_search``: here it was 5-10x slower, and together with a hint and several
    workers OR-Tools 9.15 aborts the process ("Check failed: heuristics.fixed_search != nullptr",
    google/or-tools#5025). So one worker (graphremat's default) with ``work_s`` gives the same
    plan on every run and every rank; with several, an optimal objective is the same but the
    plan may differ.
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
