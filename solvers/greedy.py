"""Greedy local search over saved sets: fast feasible plans, used as CP-SAT hints.

Input: a :class:`RematProblem`. Output: an :class:`Evaluation` of the schedule class (so every
result is exact for what it claims: its peak and cost come from :func:`evaluate`). No
optimality claims: these plans seed the exact solvers (OR-Tools: "solve a greedy first and feed
it as a hint") and give a feasible answer within a fraction of a second.

* :func:`greedy_min_peak`: from "save everything", toggle one decision at a time (save <->
  recompute) while that lowers ``(peak, memory summed over all steps)``; first improvement.
* :func:`greedy_fit`: from the smallest-peak plan found, save values back, most expensive to
  recompute first, as long as the peak stays within the budget.
"""

from __future__ import annotations

import time

from .problem import Evaluation, RematProblem, evaluate, must_save_set, save_all_set


def _free(problem: RematProblem) -> list[str]:
    """Decisions that may go either way: savable and recomputable candidates."""
    must = must_save_set(problem)
    return [v for v in problem.candidates() if problem.attr(v, "savable") and v not in must]


def _key(ev: Evaluation) -> tuple[int, int, float]:
    return (ev.peak_bytes, sum(ev.profile_bytes), ev.cost)


def greedy_min_peak(
    problem: RematProblem, *, time_limit_s: float = 2.0, max_passes: int = 50
) -> Evaluation:
    """A small-peak plan by first-improvement local search (see the module docstring)."""
    deadline = time.perf_counter() + time_limit_s
    saved = set(save_all_set(problem))
    best = evaluate(problem, saved)
    free = _free(problem)
    for _ in range(max_passes):
        improved = False
        for v in free:
            if time.perf_counter() > deadline:
                return best
            saved ^= {v}
            ev = evaluate(problem, saved)
            if ev.valid and _key(ev) < _key(best):
                best, improved = ev, True
            else:
                saved ^= {v}
        if not improved:
            break
    return best


def greedy_fit(
    problem: RematProblem,
    budget_bytes: int,
    *,
    start: Evaluation | None = None,
    time_limit_s: float = 2.0,
) -> Evaluation | None:
    """A plan with peak <= ``budget_bytes`` and little recomputation, or None if the start
    plan (default: :func:`greedy_min_peak`) does not fit."""
    deadline = time.perf_counter() + time_limit_s
    best = start if start is not None else greedy_min_peak(problem, time_limit_s=time_limit_s)
    if best.peak_bytes > budget_bytes:
        return None
    saved = set(best.saved)
    by_cost = sorted(best.recomputed, key=lambda v: -problem.attr(v, "cost"))
    for v in by_cost:
        if time.perf_counter() > deadline:
            break
        if v in saved or not problem.attr(v, "savable"):
            continue
        ev = evaluate(problem, saved | {v})
        if ev.valid and ev.peak_bytes <= budget_bytes and ev.cost <= best.cost:
            saved.add(v)
            best = ev
    return best
