"""The Plan: what graphremat decided for one compiled region, and what it promises."""

from __future__ import annotations

from dataclasses import dataclass, field

from .budget import format_bytes


@dataclass(frozen=True, slots=True)
class Plan:
    """A solved rematerialization plan for one compiled region (one joint graph).

    Peaks count every tensor byte live during the step: parameters, buffers, inputs, gradients,
    saved and transient values. ``predicted_peak_bytes`` comes from replaying the emitted forward
    and backward modules (:mod:`graphremat.simulate`) and is <= ``budget_bytes``.
    """

    budget_bytes: int
    predicted_peak_bytes: int
    unconstrained_peak_bytes: int
    min_feasible_bytes: int
    recompute_flops: int
    recompute_cost_ns: int
    saved: tuple[str, ...]
    recomputed: tuple[str, ...]
    status: str
    gap: float
    solver: str
    solve_time_s: float
    objective: float
    bound: float
    model_peak_bytes: int
    num_joint_nodes: int
    num_problem_nodes: int
    num_candidates: int
    fixed_bytes: int
    codegen: str
    timeline: tuple[tuple[str, str, int], ...] = field(default=(), repr=False)
    saved_bytes: int = 0
    min_feasible_proven: bool = False  # False: the smallest peak found in the time limit

    def summary(self) -> str:
        lines = [
            f"graphremat plan ({self.codegen}, solver {self.solver}: {self.status}, "
            f"gap {self.gap:.2%}, {self.solve_time_s:.2f} s)",
            f"  budget               {format_bytes(self.budget_bytes)}",
            f"  predicted peak       {format_bytes(self.predicted_peak_bytes)}",
            f"  unconstrained peak   {format_bytes(self.unconstrained_peak_bytes)}",
            f"  min feasible budget  {format_bytes(self.min_feasible_bytes)}"
            + (" (proven)" if self.min_feasible_proven else " (best found, not proven)"),
            f"  resident (params, inputs) {format_bytes(self.fixed_bytes)}",
            f"  saved for backward   {len(self.saved)} values, {format_bytes(self.saved_bytes)}",
            f"  recomputed           {len(self.recomputed)} values, "
            f"{self.recompute_flops:,} FLOPs, ~{self.recompute_cost_ns / 1e6:.3f} ms est.",
            f"  joint graph          {self.num_joint_nodes} FX nodes, "
            f"{self.num_problem_nodes} storages, {self.num_candidates} decisions",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        import html

        return "<pre>" + html.escape(self.summary()) + "</pre>"
