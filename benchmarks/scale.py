"""Solver scaling on op-level joint graphs of a GPT-2-small-shaped model (issue 3).

    python benchmarks/scale.py [--layers 12] [--time-limit 30] [--budgets 0.8 0.6 0.4]
        [--workers 1] [--md out.md] [--json out.json]

Builds the GPT of tests/models.py with GPT-2-small's shape (hidden 768, 12 heads, context 512,
batch 8, vocab 50257; ``--layers`` blocks) on the CPU, and captures its joint-graph
:class:`RematProblem` through ``graphremat.plan``: ``planner._solve`` is wrapped so that the
first solve records the capture and stops planning (nothing is executed, no plan is made). Then
each budget -- a fraction of the save-all plan's peak -- is solved directly with
:func:`solvers.cpsat.solve_cpsat`. Printed per budget: time to the first feasible plan (the greedy
warm start), the plan's objective (recompute cost), the proven bound and the gap at the time
limit, each plan re-checked by :func:`solvers.problem.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import torch
from graphremat.solvers.cpsat import solve_cpsat
from graphremat.solvers.greedy import greedy_fit
from graphremat.solvers.problem import RematProblem, evaluate, save_all_set

import graphremat
from graphremat import planner

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from models import GPT  # noqa: E402  (tests/ is not a package)


class _Captured(Exception):
    """Raised from inside planning once the problem is recorded: stops the compile there."""


def capture_gpt(num_layers: int, *, batch: int = 8, seq: int = 512) -> tuple[RematProblem, int]:
    """The joint-graph problem of a GPT-2-small-shaped model and its number of FX nodes."""
    torch.manual_seed(0)
    model = GPT(
        vocab_size=50257, max_len=seq, d_model=768, num_heads=12, num_layers=num_layers
    ).train()
    idx = torch.randint(0, 50257, (batch, seq))
    targets = torch.randint(0, 50257, (batch, seq))
    real_solve = planner._solve
    got: list = []

    def grab(capture, budget_bytes, options):
        got.append(capture)
        raise _Captured  # Dynamo wraps it in BackendCompilerFailed

    planner._solve = grab
    try:
        graphremat.plan(
            model,
            idx,
            targets,
            budget=0.9,
            codegen="eager",
            time_limit_s=1,
            calibrate=False,
            cache=False,
        )
    except Exception:
        if not got:
            raise
    finally:
        planner._solve = real_solve
    if not got:
        raise RuntimeError("planning finished without calling the solver: 0.9 fits save-all")
    return got[0].problem, got[0].num_fx_nodes


def run_budget(problem: RematProblem, frac: float, time_limit_s: float, workers: int) -> dict:
    """Solve one budget; the first feasible plan is the greedy warm start's (timed alone)."""
    full = evaluate(problem, save_all_set(problem)).peak_bytes
    budget = int(frac * full)
    t0 = time.perf_counter()
    warm = greedy_fit(problem, budget)
    first_s = time.perf_counter() - t0
    res = solve_cpsat(problem, budget, time_limit_s=time_limit_s, num_workers=workers)
    row = {
        "budget_frac": frac,
        "budget_bytes": budget,
        "first_feasible_s": round(first_s, 2) if warm is not None else None,
        "first_cost": warm.cost if warm is not None else None,
        "status": res.status.value,
        "objective": res.objective,
        "bound": res.bound,
        "gap_pct": round(100 * res.gap, 2),
        "wall_s": round(res.wall_s, 1),
        "info": {k: v for k, v in res.info.items() if isinstance(v, int | float | str)},
    }
    if res.status.has_plan:
        ev = evaluate(problem, res.saved)
        assert ev.valid and ev.peak_bytes <= budget and ev.cost == res.objective, row
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--time-limit", type=float, default=30.0)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.8, 0.6, 0.4])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--md", type=pathlib.Path)
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    problem, num_fx = capture_gpt(args.layers)
    capture_s = time.perf_counter() - t0
    cand = problem.candidates()
    num_cand = len(cand)
    num_free = sum(
        1 for v in cand if problem.attr(v, "savable") and problem.attr(v, "recomputable")
    )
    head = (
        f"GPT-2-small shape, {args.layers} layers: {num_fx} FX nodes -> "
        f"{problem.graph.number_of_nodes()} problem nodes -> {num_cand} decisions "
        f"({num_free} free) "
        f"(capture {capture_s:.1f} s); time limit {args.time_limit:g} s, {args.workers} worker(s)"
    )
    print(head, flush=True)
    rows = []
    for frac in args.budgets:
        row = run_budget(problem, frac, args.time_limit, args.workers)
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        head,
        "",
        "| budget | first feasible (s) | objective | bound | gap | wall (s) | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['budget_frac']:g} | {r['first_feasible_s']} | {r['objective']:.4g} | "
            f"{r['bound']:.4g} | {r['gap_pct']:.1f} % | {r['wall_s']} | {r['status']} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    if args.json:
        doc = {
            "layers": args.layers,
            "fx_nodes": num_fx,
            "problem_nodes": problem.graph.number_of_nodes(),
            "decisions": num_cand,
            "free_decisions": num_free,
            "rows": rows,
        }
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
