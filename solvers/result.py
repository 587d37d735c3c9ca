"""One result type for every solver: the plan (saved set), its status, objective, bound and gap."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SolveStatus(str, enum.Enum):
    OPTIMAL = "optimal"  # proven optimal for the solver's schedule class
    FEASIBLE = "feasible"  # a plan that fits, optimality not proven (see gap)
    INFEASIBLE = "infeasible"  # proven: no plan of the class fits the budget
    UNKNOWN = "unknown"  # time ran out before any plan that fits was found

    @property
    def has_plan(self) -> bool:
        return self in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)


@dataclass(frozen=True, slots=True)
class SolveResult:
    """What a solver returns.

    ``saved`` is the plan: the forward values kept for the backward. ``objective`` is the plan's
    recompute cost in the problem's cost unit, ``bound`` a proven lower bound on the optimum
    (equal to ``objective`` when optimal). ``peak_bytes`` is the peak the solver believes; callers
    re-check it with :func:`solvers.problem.evaluate`.
    """

    solver: str
    status: SolveStatus
    saved: frozenset[str] = frozenset()
    objective: float = float("nan")
    bound: float = float("nan")
    peak_bytes: int = -1
    wall_s: float = 0.0
    num_variables: int = 0
    num_constraints: int = 0
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status.has_plan and self.peak_bytes < 0:
            raise ValueError("a result with a plan must carry its peak_bytes")

    @property
    def gap(self) -> float:
        """Relative optimality gap (objective - bound) / objective; 0 when optimal."""
        if not self.status.has_plan:
            return float("inf")
        if self.status is SolveStatus.OPTIMAL or self.objective <= self.bound:
            return 0.0
        if self.objective == 0:
            return 0.0
        return (self.objective - self.bound) / abs(self.objective)
