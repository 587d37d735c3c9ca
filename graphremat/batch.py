"""The largest batch whose training step fits a byte budget.

Input: ``model_fn(batch_size) -> (model, inputs)`` (``model(*inputs)`` returns the loss) and a
budget in bytes or with a unit. Output: a :class:`BatchSearch` with the largest feasible batch,
its plan, and every probe. A batch is feasible when graphremat's smallest feasible budget for it
(``Plan.min_feasible_bytes``, from one plan at the unconstrained budget, which solves no cost
problem) is within the budget; probes double from ``start`` until one fails, then bisect.
Monotonicity in the batch size is assumed (activations grow with it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .budget import format_bytes, parse_budget
from .errors import BudgetError, GraphRematError
from .report import Plan


@dataclass(frozen=True, slots=True)
class Probe:
    batch_size: int
    min_feasible_bytes: int
    unconstrained_peak_bytes: int
    proven: bool  # the minimum is proven: an infeasible verdict is certain

    def fits(self, budget_bytes: int) -> bool:
        return self.min_feasible_bytes <= budget_bytes


@dataclass(frozen=True, slots=True)
class BatchSearch:
    """``batch_size``: the largest batch found to fit (0: not even ``start`` fits); ``plan``: its
    plan at the budget; ``no_remat_batch_size``: the largest probed batch whose step fits
    without rematerialization; ``certain``: the first failing batch's minimum was proven."""

    batch_size: int
    budget_bytes: int
    plan: Plan | None
    no_remat_batch_size: int
    certain: bool
    probes: tuple[Probe, ...] = field(default=(), repr=False)

    def summary(self) -> str:
        lines = [
            f"largest batch within {format_bytes(self.budget_bytes)}: {self.batch_size} "
            f"({'certain' if self.certain else 'the next size up is not proven infeasible'}); "
            f"without rematerialization (largest probed batch): {self.no_remat_batch_size}"
        ]
        for p in sorted(self.probes, key=lambda p: p.batch_size):
            verdict = "fits" if p.fits(self.budget_bytes) else "too big"
            lines.append(
                f"  batch {p.batch_size:>6}: minimum {format_bytes(p.min_feasible_bytes)}, "
                f"no-remat peak {format_bytes(p.unconstrained_peak_bytes)} -> {verdict}"
            )
        return "\n".join(lines)


def max_batch_size(
    model_fn: Callable[[int], tuple],
    budget: int | str,
    *,
    start: int = 1,
    limit: int = 2**20,
    **options,
) -> BatchSearch:
    """Largest batch size ``b`` in ``[start, limit]`` whose step graphremat can fit in
    ``budget`` (bytes or a string with a unit; a fraction is refused: it would be relative to
    each batch's own peak). ``options`` go to :func:`graphremat.plan`."""
    from .api import plan as make_plan

    parsed = parse_budget(budget)
    if parsed.nbytes is None:
        raise BudgetError(
            f"max_batch_size needs an absolute budget (bytes or e.g. '2GiB'), not {budget!r}: a "
            "fraction would be relative to each batch size's own peak"
        )
    budget_bytes = parsed.nbytes
    if not (isinstance(start, int) and isinstance(limit, int) and 1 <= start <= limit):
        raise GraphRematError(
            f"need integers 1 <= start <= limit, got start={start!r}, limit={limit!r}"
        )
    probes: dict[int, Probe] = {}

    def probe(b: int) -> Probe:
        if b not in probes:
            model, inputs = model_fn(b)
            p = make_plan(model, *inputs, budget=1.0, **options)
            probes[b] = Probe(
                b, p.min_feasible_bytes, p.unconstrained_peak_bytes, p.min_feasible_proven
            )
        return probes[b]

    if not probe(start).fits(budget_bytes):
        return BatchSearch(0, budget_bytes, None, 0, probes[start].proven, tuple(probes.values()))
    good, bad = start, None
    while bad is None and good < limit:  # double until a batch does not fit
        nxt = min(2 * good, limit)
        if probe(nxt).fits(budget_bytes):
            good = nxt
        else:
            bad = nxt
    while bad is not None and bad - good > 1:  # bisect
        mid = (good + bad) // 2
        if probe(mid).fits(budget_bytes):
            good = mid
        else:
            bad = mid
    model, inputs = model_fn(good)
    final = make_plan(model, *inputs, budget=budget_bytes, **options)
    no_remat = max(
        (p.batch_size for p in probes.values() if p.unconstrained_peak_bytes <= budget_bytes),
        default=0,
    )
    certain = bad is None or probes[bad].proven
    return BatchSearch(good, budget_bytes, final, no_remat, certain, tuple(probes.values()))
