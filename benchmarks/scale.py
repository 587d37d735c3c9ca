"""Solver scaling on op-level joint graphs of a GPT-2-small-shaped model (issue 3).

    python benchmarks/scale.py [--layers 12] [--time-limit 30] [--budgets 0.8 0.6 0.4]
        [--workers 1] [--md out.md] [--json out.json] [--out DIR] [--no-progress]

A wrapper of ``python -m graphremat.bench scale`` (graphremat/bench.py: the model, the capture,
the solves, the table and the plot); every flag of that command works here.
"""

from __future__ import annotations

import sys

from graphremat.bench import main

if __name__ == "__main__":
    sys.exit(main(["scale", *sys.argv[1:]], prog="benchmarks/scale.py"))
