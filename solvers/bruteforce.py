"""Exact optimum of the schedule class by enumeration: the oracle for tiny graphs."""

from __future__ import annotations

import itertools
import time

from .problem import RematProblem, evaluate, must_save_set
from .result import SolveResult, SolveStatus

MAX_FREE_NODES = 16


def solve_bruteforce(problem: RematProblem, budget_bytes: int, **_: object) -> SolveResult:
    """Try every saved set; return the cheapest that fits (ties: fewer bytes saved, then peak)."""
    t0 = time.perf_counter()
    forced = must_save_set(problem)
    free = [
        v
        for v in problem.candidates()
        if problem.attr(v, "savable") and problem.attr(v, "recomputable")
    ]
    if len(free) > MAX_FREE_NODES:
        raise ValueError(
            f"bruteforce enumerates 2^{len(free)} plans; it is meant for graphs with at most "
            f"{MAX_FREE_NODES} free decisions. Use the 'cpsat' solver."
        )
    best = None
    for k in range(len(free) + 1):
        for combo in itertools.combinations(free, k):
            ev = evaluate(problem, forced | set(combo))
            if not ev.valid or ev.peak_bytes > budget_bytes:
                continue
            key = (ev.cost, ev.peak_bytes)
            if best is None or key < best[0]:
                best = (key, ev)
    wall = time.perf_counter() - t0
    if best is None:
        return SolveResult("bruteforce", SolveStatus.INFEASIBLE, wall_s=wall)
    ev = best[1]
    return SolveResult(
        solver="bruteforce",
        status=SolveStatus.OPTIMAL,
        saved=ev.saved,
        objective=ev.cost,
        bound=ev.cost,
        peak_bytes=ev.peak_bytes,
        wall_s=wall,
    )
