"""Plan, compile (codegen="eager") and measure the test model families at several budgets.

    python benchmarks/e2e_report.py [--models mlp gpt resnet unet] [--out results.md]

Prints a markdown table: joint-graph size, solve time, unconstrained / minimum / predicted /
measured peaks, recompute FLOPs and status. Gradients are checked against eager on every row.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from e2e import assert_matches, compiled_step, measured_peak, reference  # noqa: E402
from models import MODEL_FACTORIES  # noqa: E402

import graphremat  # noqa: E402

MiB = 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["mlp", "gpt", "resnet", "unet"])
    ap.add_argument("--fractions", nargs="+", default=["1.0", "0.7", "0.5", "min"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--time-limit", type=float, default=20.0)
    args = ap.parse_args()
    rows = [
        "| model | budget | joint nodes | decisions | plan s | status (gap) | unconstrained MiB "
        "| min feasible MiB"
        " | budget MiB | predicted MiB | measured MiB | pred err | recomputed | recompute FLOPs |",
        "|" + "---|" * 14,
    ]
    for name in args.models:
        model, inputs = MODEL_FACTORIES[name]()
        ref = reference(model, inputs)
        base = graphremat.plan(model, *inputs, budget=1.0, codegen="eager", cache=False)
        for frac in args.fractions:
            budget = base.min_feasible_bytes if frac == "min" else float(frac)
            try:
                t0 = time.perf_counter()
                mine, cmodel, loss, plan = compiled_step(
                    model, inputs, budget, "eager", time_limit_s=args.time_limit
                )
                wall = time.perf_counter() - t0
            except graphremat.InfeasibleBudget as e:
                rows.append(
                    f"| {name} | {frac} | {base.num_joint_nodes} | {base.num_candidates} | "
                    f"| infeasible (min {e.min_feasible_bytes / MiB:.2f} MiB) | | | | | | | | |"
                )
                continue
            assert_matches(ref, mine, loss)
            peak = measured_peak(mine, cmodel, inputs)
            err = (peak - plan.predicted_peak_bytes) / peak
            rows.append(
                f"| {name} | {frac} | {plan.num_joint_nodes} | {plan.num_candidates} | "
                f"{plan.solve_time_s:.2f} | {plan.status} ({plan.gap:.0%}) | "
                f"{plan.unconstrained_peak_bytes / MiB:.2f} | "
                f"{plan.min_feasible_bytes / MiB:.2f}{'' if plan.min_feasible_proven else '*'} | "
                f"{plan.budget_bytes / MiB:.2f} | "
                f"{plan.predicted_peak_bytes / MiB:.2f} | {peak / MiB:.2f} | {err:+.2%} | "
                f"{len(plan.recomputed)} | {plan.recompute_flops:,} |"
            )
            del wall
    rows.append("")
    rows.append(
        "plan s: capture + calibration + solve + min-peak solve + rewrite + replay. "
        "* = minimum not proven within its time limit."
    )
    text = "\n".join(rows)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
