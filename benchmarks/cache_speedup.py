"""Second compile of the same model with the on-disk plan cache vs the first.

Each run is a fresh Python process (so nothing is reused in memory), sharing one temporary cache
directory: run 1 solves and writes the plan, run 2 finds it, re-emits and re-checks it.

    python benchmarks/cache_speedup.py [--model gpt] [--budget 0.6] [--time-limit 20]
        [--codegen eager|inductor]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
t0 = time.perf_counter()
import copy, graphremat
from models import MODEL_FACTORIES
from e2e import train_step
model, inputs = MODEL_FACTORIES[{model!r}]()
cmodel = graphremat.compile(model, budget={budget!r}, codegen={codegen!r}, time_limit_s={tl!r})
train_step(cmodel, inputs)
plan = cmodel.graphremat_plans[-1]
print(f"RESULT {{time.perf_counter() - t0:.2f}} {{plan.solve_time_s:.2f}} {{plan.from_cache}}")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt")
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--codegen", default="eager", choices=["eager", "inductor"])
    args = ap.parse_args()
    tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
    code = CHILD.format(
        tests=tests, model=args.model, budget=args.budget, tl=args.time_limit, codegen=args.codegen
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "GRAPHREMAT_CACHE_DIR": cache}
        rows = []
        for run in (1, 2):
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
            wall = time.perf_counter() - t0
            total, plan_s, cached = out.split("RESULT ")[1].split()
            rows.append((run, wall, float(total), float(plan_s), cached))
    print(
        f"model {args.model}, budget {args.budget}, time_limit_s {args.time_limit}, {args.codegen}"
    )
    print("| run | process wall s | compile+step s | partition step s | from cache |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.2f} | {r[4]} |")


if __name__ == "__main__":
    main()
