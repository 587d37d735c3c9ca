"""graphremat's solver layer on the layer-level graphs of the Checkmate and Moccasin papers.

    python benchmarks/literature.py [--graphs-dir ../shared/literature-graphs] [--time-limit 120]
        [--graphs VGG16 ...] [--budgets 0.9 0.8] [--md out.md] [--json out.json]

Reads the graphs in place (they are GPL data: never copied into this repository), solves each
(graph, budget) with :func:`solvers.moccasin.solve_sequence` (greedy warm start, Moccasin-style
CP-SAT with two copies per value, presolve off, crossing-stage lower bound) under the papers'
memory model, re-simulates every plan here, and prints a markdown table next to the best-known
results and times measured on the same 2-core machine (shared/literature-graphs/README.md).
Without --graphs/--budgets it runs the rows of that README's table.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

from graphremat.solvers.literature import load
from graphremat.solvers.moccasin import solve_sequence
from graphremat.solvers.result import SolveResult, SolveStatus
from graphremat.solvers.sequence import simulate

DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "literature-graphs"

# (graph, budget) -> (best-known overhead, reference time), from shared/literature-graphs/README.md
REFERENCE = {
    ("VGG16", 0.9): ("1.968 % (proven)", "1.0 s MILP / 1.6 s CP-SAT"),
    ("VGG16", 0.8): ("infeasible (proven)", "20 s MILP / 0.9 s CP-SAT"),
    ("fcn_8_vgg", 0.9): ("0.029 % (proven)", "7.2 s MILP / 14.7 s CP-SAT"),
    ("fcn_8_vgg", 0.8): ("0.136 % (proven)", "12.8 s MILP / 17.3 s CP-SAT"),
    ("rl100", 0.9): ("0.789 % (C=2)", "52 s CP-SAT"),
    ("rl100", 0.8): ("2.296 % (C=2)", "56 s CP-SAT"),
    ("MobileNet", 0.9): ("0.163 % (C=2)", "186 s CP-SAT"),
    ("MobileNet", 0.8): ("0.370 % (C=2)", "240 s; 37.5 s presolve off"),
    ("ResNet50", 0.8): ("<= 0.309 %", "0.309 % at 77 s, no proof"),
    ("rl1000", 0.8): ("unknown", "no plan in 360 s"),
}


def _status(res: SolveResult) -> str:
    """Status text: proofs say whether they hold for two copies or for any schedule."""
    any_lb = res.info.get("any_schedule_bound", 0.0)
    if res.status is SolveStatus.INFEASIBLE:
        return "infeasible (any schedule)" if any_lb == math.inf else "infeasible (C=2)"
    if not res.status.has_plan:
        return "no plan"
    if res.status is SolveStatus.OPTIMAL:
        return "optimal (any schedule)" if any_lb >= res.objective else "optimal (C=2)"
    return f"feasible, gap {100 * res.gap:.1f} % (C=2)"


def run_row(path: pathlib.Path, frac: float, time_limit_s: float, workers: int) -> dict:
    """Solve one (graph, budget) and re-check the plan with the simulator."""
    lit = load(path)
    seq = lit.sequence
    budget = int(frac * lit.no_remat_peak_bytes())
    res = solve_sequence(seq, budget, time_limit_s=time_limit_s, num_workers=workers)
    row = {
        "graph": lit.name,
        "nodes": seq.num_nodes,
        "budget": frac,
        "status": _status(res),
        "total_s": res.wall_s,
    }
    if res.status.has_plan:
        sim = simulate(seq, res.info["plan"])
        if not sim.valid or sim.peak_bytes > budget or sim.recompute_cost != res.objective:
            raise SystemExit(f"{lit.name} at {frac}: the plan does not re-simulate ({sim.reason})")
        row.update(
            overhead_pct=100 * sim.recompute_cost / seq.total_cost,
            bound_pct=100 * res.bound / seq.total_cost,
            recomputations=res.info["plan"].num_recomputations,
            first_s=res.info["time_to_first_s"],
            best_s=res.info["time_to_best_s"],
        )
    best, ref = REFERENCE.get((lit.name, frac), ("", ""))
    row.update(best_known=best, reference=ref)
    return row


def markdown(rows: list[dict]) -> str:
    head = (
        "| graph | nodes | budget | our overhead | best known | status | first plan s "
        "| best plan s | total s | reference time |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def fmt(r: dict) -> str:
        ours = f"{r['overhead_pct']:.3f} %" if "overhead_pct" in r else "-"
        first = f"{r['first_s']:.2f}" if "first_s" in r else "-"
        best = f"{r['best_s']:.2f}" if "best_s" in r else "-"
        return (
            f"| {r['graph']} | {r['nodes']} | {r['budget']:.0%} | {ours} | {r['best_known']} "
            f"| {r['status']} | {first} | {best} | {r['total_s']:.2f} | {r['reference']} |"
        )

    return head + "\n".join(fmt(r) for r in rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graphs-dir", type=pathlib.Path, default=DEFAULT_DIR)
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per row")
    ap.add_argument("--graphs", nargs="+", help="graph file stems (default: the README rows)")
    ap.add_argument("--budgets", nargs="+", type=float, help="fractions of the no-remat peak")
    ap.add_argument("--workers", type=int, default=2, help="CP-SAT workers")
    ap.add_argument("--md", type=pathlib.Path, help="also write the table here")
    ap.add_argument("--json", type=pathlib.Path, help="also write the rows here")
    args = ap.parse_args(argv)
    if not args.graphs_dir.is_dir():
        sys.exit(
            f"graphs directory {args.graphs_dir} not found: pass --graphs-dir pointing to "
            "shared/literature-graphs (the graphs are not part of this repository)"
        )
    if args.graphs or args.budgets:
        graphs = args.graphs or sorted({g for g, _ in REFERENCE})
        cases = [(g, b) for g in graphs for b in (args.budgets or [0.9, 0.8])]
    else:
        cases = list(REFERENCE)
    rows = []
    for graph, frac in cases:
        path = args.graphs_dir / f"{graph}.json"
        if not path.is_file():
            stems = sorted(p.stem for p in args.graphs_dir.glob("*.json"))
            sys.exit(f"no graph {path}; available: {stems}")
        rows.append(run_row(path, frac, args.time_limit, args.workers))
        print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    if args.md:
        args.md.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
