"""graphremat's error hierarchy. Every error names what went wrong and how to fix it."""

from __future__ import annotations


class GraphRematError(Exception):
    """Base class of every error graphremat raises on purpose."""


class BudgetError(GraphRematError, ValueError):
    """A budget that graphremat cannot parse (wrong form, sign, or type)."""


class InfeasibleBudget(GraphRematError, ValueError):
    """No plan fits the budget. ``min_feasible_bytes`` is the smallest budget that does; with
    ``given_others`` (a region of a step with graph breaks), the region's smallest peak given
    what the step's other regions keep as planned now, which they may plan differently at
    another budget. ``lower_bound_bytes``: where the smallest-peak search did not finish in
    its time limit, ``min_feasible_bytes`` is the smallest peak it found (a budget that fits)
    and the smallest is proven to be at least this; else equal to ``min_feasible_bytes``."""

    def __init__(
        self,
        budget_bytes: int,
        min_feasible_bytes: int,
        detail: str = "",
        given_others: bool = False,
        lower_bound_bytes: int | None = None,
    ) -> None:
        self.budget_bytes = int(budget_bytes)
        self.min_feasible_bytes = int(min_feasible_bytes)
        lower = self.min_feasible_bytes if lower_bound_bytes is None else int(lower_bound_bytes)
        self.lower_bound_bytes = min(lower, self.min_feasible_bytes)
        from .budget import format_bytes

        msg = f"no rematerialization plan fits the budget of {format_bytes(budget_bytes)} "
        if given_others:
            msg += (
                f"({budget_bytes} bytes); with what the step's other compiled regions keep as "
                f"planned now, this region needs at least {format_bytes(min_feasible_bytes)} "
                f"(min_feasible_bytes={min_feasible_bytes}). Raise the budget, or shrink the "
                "batch."
            )
        elif self.lower_bound_bytes < self.min_feasible_bytes:
            msg += (
                f"({budget_bytes} bytes); the smallest budget found to fit is "
                f"{format_bytes(min_feasible_bytes)} (min_feasible_bytes={min_feasible_bytes}; "
                f"the smallest is proven >= {format_bytes(self.lower_bound_bytes)}, not found "
                f"within the time limit). Raise the budget to {min_feasible_bytes} bytes, or "
                "shrink the batch; a larger time_limit_s may find a smaller minimum."
            )
        else:
            msg += (
                f"({budget_bytes} bytes); the smallest feasible budget is "
                f"{format_bytes(min_feasible_bytes)} (min_feasible_bytes={min_feasible_bytes}). "
                f"Raise the budget to at least {min_feasible_bytes} bytes, or shrink the batch."
            )
        super().__init__(msg + (f" {detail}" if detail else ""))


class UnsupportedGraph(GraphRematError, NotImplementedError):
    """The captured graph contains a construct graphremat cannot plan for."""


class SolverFailed(GraphRematError, RuntimeError):
    """The solver found no plan within its time limit (or failed). ``smallest_peak_bytes``: the
    smallest peak of any plan found (not proven minimal), where one was found; ``budget_bytes``:
    the budget it was solving for, where known."""

    def __init__(
        self,
        message: str,
        smallest_peak_bytes: int | None = None,
        budget_bytes: int | None = None,
    ) -> None:
        super().__init__(message)
        self.smallest_peak_bytes = smallest_peak_bytes
        self.budget_bytes = budget_bytes


class StepAgain(GraphRematError):
    """Internal: raised while compiling a later region in the model's first call, once the
    earlier regions (which already ran) were asked to make room for it (graphremat.regions):
    ``graphremat.compile``'s wrapper restores the model's buffers and the RNG state and runs the
    call again, so that the earlier regions run their new plans and the budget holds from the
    first step."""


class PlanFormatError(GraphRematError, ValueError):
    """A saved plan (JSON) that is truncated, modified, or from an incompatible version."""


def find_cause(e: BaseException | None, types: tuple[type, ...]) -> BaseException | None:
    """The first exception of ``types`` in ``e``'s chain of wrapped causes (Dynamo's
    ``inner_exception``, ``__cause__``, ``__context__``), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, types):
            return e
        seen.add(id(e))
        e = getattr(e, "inner_exception", None) or e.__cause__ or e.__context__
    return None
