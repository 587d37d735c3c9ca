"""Solvers by name. Every solver has the signature of :data:`SolverFn`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .problem import RematProblem
from .result import SolveResult


class SolverFn(Protocol):
    def __call__(
        self,
        problem: RematProblem,
        budget_bytes: int,
        *,
        time_limit_s: float = ...,
        seed: int = ...,
        num_workers: int = ...,
        log_progress: bool = ...,
    ) -> SolveResult: ...


def _load() -> dict[str, Callable[..., SolveResult]]:
    from . import baselines, bruteforce, checkmate, cpsat

    return {
        "cpsat": cpsat.solve_cpsat,
        "save_all": baselines.solve_save_all,
        "recompute_all": baselines.solve_recompute_all,
        "bruteforce": bruteforce.solve_bruteforce,
        "checkmate": checkmate.solve_checkmate,
    }


SOLVERS: dict[str, Callable[..., SolveResult]] = {}


def get_solver(name_or_fn: str | Callable[..., SolveResult]) -> Callable[..., SolveResult]:
    """Resolve a solver name (``cpsat``, ``save_all``, ``recompute_all``, ``bruteforce``) or pass
    a callable through."""
    if callable(name_or_fn):
        return name_or_fn
    if not SOLVERS:
        SOLVERS.update(_load())
    if not isinstance(name_or_fn, str) or name_or_fn not in SOLVERS:
        raise KeyError(
            f"unknown solver {name_or_fn!r}; choose one of {sorted(SOLVERS)} or pass a callable "
            "(problem, budget_bytes, *, time_limit_s, seed, num_workers, log_progress) -> "
            "SolveResult"
        )
    return SOLVERS[name_or_fn]
