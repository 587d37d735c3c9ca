"""How much lower the copy class (``max_recomputes`` > 1) goes than the once-class, per model.

    python benchmarks/copy_class.py [--models mlp gpt] [--time-limit 60] [--codegen eager]

For each model: the joint-graph problem as graphremat plans it, the smallest peak of the
once-class (recompute each value at most once, just in time; ``min_peak``) and of the copy class
with 1, 2 and 3 recomputations per value (``min_peak_multi``), as fractions of the no-remat
peak; then one real step compiled at the budget halfway between the two classes' minima with
``max_recomputes=2``: gradients checked, peak measured. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from e2e import assert_matches, measured_peak, reference, train_step  # noqa: E402
from graphremat.solvers.cpsat import min_peak  # noqa: E402
from graphremat.solvers.multi import min_peak_multi  # noqa: E402
from graphremat.solvers.problem import evaluate, save_all_set  # noqa: E402
from models import MODEL_FACTORIES  # noqa: E402

import graphremat  # noqa: E402
from graphremat import planner  # noqa: E402


class _Captured(Exception):
    pass


def capture(model, inputs, codegen: str):
    """The problem graphremat solves for ``model``'s step (planning stops at the solver)."""
    got, real = [], planner._solve

    def grab(cap, budget_bytes, options, **_):
        got.append(cap)
        raise _Captured

    planner._solve = grab
    try:
        graphremat.plan(model, *inputs, budget=0.9, codegen=codegen, time_limit_s=1, cache=False)
    except Exception:
        if not got:
            raise
    finally:
        planner._solve = real
    return got[0].problem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["mlp", "gpt"])
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--codegen", default="eager")
    args = ap.parse_args()
    print(
        "| model | decisions | no-remat peak | once-class min | copy min, k=1 | k=2 | k=3 | "
        "budget (k=2) | predicted | measured | recomputations |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model, inputs = MODEL_FACTORIES[name]()
        problem = capture(model, inputs, args.codegen)
        full = evaluate(problem, save_all_set(problem)).peak_bytes
        once = min_peak(problem, time_limit_s=args.time_limit)
        cells = []
        for k in (1, 2, 3):
            t0 = time.perf_counter()
            best, _, proven = min_peak_multi(
                problem, max_recomputes=k, time_limit_s=args.time_limit
            )
            cells.append(
                f"{best.peak_bytes / full:.3f}{' (proven)' if proven else ''}, "
                f"{time.perf_counter() - t0:.0f} s"
            )
        two, _, _ = min_peak_multi(problem, max_recomputes=2, time_limit_s=args.time_limit)
        frac = (two.peak_bytes + once.peak_bytes) / 2 / full
        ref = reference(model, inputs, inductor=args.codegen == "inductor")
        mine = copy.deepcopy(model)
        cm = graphremat.compile(
            mine, frac, codegen=args.codegen, max_recomputes=2, time_limit_s=args.time_limit
        )
        loss = train_step(cm, inputs)
        assert_matches(ref, mine, loss)
        plan = cm.graphremat_plans[-1]
        peak = measured_peak(mine, cm, inputs)
        if peak > plan.budget_bytes:
            raise SystemExit(f"{name}: measured {peak} > budget {plan.budget_bytes}")
        n_copies = sum(len(c) for c in plan.copies.get("copies", {}).values())
        print(
            f"| {name} | {len(problem.candidates())} | {full:,} | {once.peak_bytes / full:.3f}"
            f"{' (proven)' if once.optimal else ''} | {cells[0]} | {cells[1]} | {cells[2]} | "
            f"{frac:.3f} = {plan.budget_bytes:,} | {plan.predicted_peak_bytes:,} | {peak:,} | "
            f"{n_copies} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
