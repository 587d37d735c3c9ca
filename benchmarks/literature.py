"""graphremat's solver layer on the layer-level graphs of the Checkmate and Moccasin papers.

    python benchmarks/literature.py [--graphs-dir ../shared/literature-graphs] [--time-limit 120]
        [--graphs VGG16 ...] [--budgets 0.9 0.8] [--md out.md] [--json out.json] [--out DIR]

A wrapper of ``python -m graphremat.bench literature`` (graphremat/bench.py: solves, re-checks,
the reference results, the table and the plot); every flag of that command works here.
``--graphs-dir`` defaults to shared/literature-graphs next to this checkout, wherever it is run
from.
"""

from __future__ import annotations

import pathlib
import sys

from graphremat.bench import main

DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "literature-graphs"

if __name__ == "__main__":
    # a --graphs-dir given on the command line comes later and wins
    argv = ["literature", "--graphs-dir", str(DEFAULT_DIR), *sys.argv[1:]]
    sys.exit(main(argv, prog="benchmarks/literature.py"))
