"""Trivial plans: save everything the backward needs, or recompute everything recomputable."""

from __future__ import annotations

import time

from .problem import RematProblem, evaluate, must_save_set, save_all_set
from .result import SolveResult, SolveStatus


def _fixed_plan(name: str, problem: RematProblem, budget_bytes: int, saved) -> SolveResult:
    t0 = time.perf_counter()
    ev = evaluate(problem, saved)
    fits = ev.valid and ev.peak_bytes <= budget_bytes
    return SolveResult(
        solver=name,
        status=SolveStatus.FEASIBLE if fits else SolveStatus.UNKNOWN,
        saved=ev.saved if fits else frozenset(),
        objective=ev.cost if fits else float("nan"),
        bound=0.0,
        peak_bytes=ev.peak_bytes if fits else -1,
        wall_s=time.perf_counter() - t0,
        info={"plan_peak_bytes": ev.peak_bytes},
    )


def solve_save_all(problem: RematProblem, budget_bytes: int, **_: object) -> SolveResult:
    """Keep every forward value the backward needs (no rematerialization)."""
    return _fixed_plan("save_all", problem, budget_bytes, save_all_set(problem))


def solve_recompute_all(problem: RematProblem, budget_bytes: int, **_: object) -> SolveResult:
    """Keep only what cannot be recomputed; recompute the rest just in time."""
    return _fixed_plan("recompute_all", problem, budget_bytes, must_save_set(problem))
