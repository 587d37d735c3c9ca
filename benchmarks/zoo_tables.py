"""Make the README's zoo tables again from the benchmark runs' JSON (benchmarks/results/).

A table in README.md between ``<!-- zoo table: benchmarks/results/NAME.json -->`` and
``<!-- end zoo table -->`` is what ``python -m graphremat.bench zoo --from NAME.json`` prints.
After a new run, copy its zoo.json there and run::

    python benchmarks/zoo_tables.py          # rewrite README.md
    python benchmarks/zoo_tables.py --check  # exit 1 if README.md differs (tests run this)
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from graphremat.zoo_bench import fill_tables

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = p.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text("utf-8")
    made = fill_tables(text, ROOT)
    if args.check:
        if made != text:
            print("README.md: zoo tables differ from benchmarks/results/; run "
                  "python benchmarks/zoo_tables.py", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    readme.write_text(made, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
