"""Largest batch under a fixed byte budget: no remat, per-block checkpoint, PyTorch's knob,
graphremat (issue 3, item 4).

Model: the test suite's GPT (tests/models.py), ``--layers`` blocks, context 32. For each method
the largest batch whose *measured* training-step peak (graphremat.measure_step_peak, CPU profiler
memory events) fits ``--budget``: doubling then bisection, every probe a real step.

  no remat        eager step
  checkpoint      eager step, every block wrapped in torch.utils.checkpoint (use_reentrant=False)
  pytorch knob    torch.compile with PyTorch's min-cut partitioner at activation_memory_budget=K
                  (solver dp, aot_eager configuration); the best of the ``--knobs`` per batch
  graphremat      graphremat.max_batch_size (plans only, no step), then one compiled step at that
                  batch to measure it (codegen eager)

    python benchmarks/max_batch.py [--budget 48MiB] [--layers 4] [--knobs 0.0,0.3] [--md F --json F]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from models import GPT  # noqa: E402

import graphremat  # noqa: E402
from graphremat.budget import format_bytes, parse_budget  # noqa: E402
from graphremat.measure import measure_step_peak  # noqa: E402
from graphremat.pytorch_baseline import run_pytorch_knob  # noqa: E402

SEQ = 32


def make(batch: int, layers: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = GPT(max_len=SEQ, num_layers=layers).train()
    idx = torch.randint(0, 128, (batch, SEQ))
    return model, (idx, torch.randint(0, 128, (batch, SEQ)))


class Checkpointed(torch.nn.Module):
    """``block`` run under torch.utils.checkpoint."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, x, use_reentrant=False)


def eager_peak(model, inputs) -> int:
    model(*inputs).backward()  # warm up (allocator, lazy init)
    return measure_step_peak(model, *inputs)


def largest(fits: Callable[[int], bool], start: int = 1, limit: int = 1 << 16) -> int:
    """Largest b in [start, limit] with fits(b), assuming monotone (doubling, then bisection)."""
    if not fits(start):
        return 0
    good, bad = start, None
    while bad is None and good < limit:
        nxt = min(2 * good, limit)
        good, bad = (nxt, None) if fits(nxt) else (good, nxt)
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def graphremat_row(budget: int, layers: int, start: int, k: int) -> dict:
    """graphremat.max_batch_size with ``max_recomputes=k``, then one measured step there."""
    t0 = time.perf_counter()
    opts = dict(codegen="eager", time_limit_s=10, max_recomputes=k)
    found = graphremat.max_batch_size(lambda b: make(b, layers), budget, start=start, **opts)
    b = found.batch_size
    model, inputs = make(b, layers)
    mine = copy.deepcopy(model)
    cmodel = graphremat.compile(mine, budget=budget, **opts)
    cmodel(*inputs).backward()
    peak = measure_step_peak(cmodel, *inputs)
    assert peak <= budget, f"graphremat measured {peak} > budget {budget} at batch {b}"
    method = "graphremat" if k == 1 else f"graphremat, max_recomputes={k}"
    row = {
        "method": method,
        "batch": b,
        "seconds": time.perf_counter() - t0,
        "note": f"measured {format_bytes(peak)} at that batch; next size proven infeasible: "
        f"{found.certain}",
    }
    print(f"{method:14s} batch {b:6d}  ({row['seconds']:.0f} s) {row['note']}", flush=True)
    return row


def run(
    budget: int, layers: int, knobs: list[float], start: int, recomputes: list[int], baselines=True
) -> list[dict]:
    rows = []
    if not baselines:
        return [graphremat_row(budget, layers, start, k) for k in recomputes]

    def record(method: str, fits: Callable[[int], bool], note: str = "") -> None:
        t0 = time.perf_counter()
        b = largest(fits, start)
        rows.append(
            {"method": method, "batch": b, "seconds": time.perf_counter() - t0, "note": note}
        )
        print(f"{method:14s} batch {b:6d}  ({rows[-1]['seconds']:.0f} s) {note}", flush=True)

    record("no remat", lambda b: eager_peak(*make(b, layers)) <= budget)

    def ckpt_fits(b: int) -> bool:
        model, inputs = make(b, layers)
        model.blocks = torch.nn.ModuleList(Checkpointed(blk) for blk in model.blocks)
        return eager_peak(model, inputs) <= budget

    record("checkpoint", ckpt_fits, "every block")

    def knob_fits(b: int) -> bool:
        model, inputs = make(b, layers)
        return min(run_pytorch_knob(model, inputs, k).measured_peak_bytes for k in knobs) <= budget

    record("pytorch knob", knob_fits, f"best of activation_memory_budget in {knobs}")

    for k in recomputes:
        rows.append(graphremat_row(budget, layers, start, k))
    return rows


def markdown(rows: list[dict], budget: int, layers: int) -> str:
    base = next((r["batch"] for r in rows if r["method"] == "no remat"), 0) or 1
    lines = [
        f"GPT ({layers} blocks, d=64, context {SEQ}), budget {format_bytes(budget)}, "
        "measured peaks",
        "",
        "| method | largest batch | vs no remat | search time | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['batch']} | {r['batch'] / base:.2f}x | {r['seconds']:.0f} s "
            f"| {r['note']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--budget", default="48MiB")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--knobs", default="0.0,0.3")
    ap.add_argument("--start", type=int, default=16)
    ap.add_argument("--max-recomputes", default="1", help="graphremat rows, e.g. 1,2")
    ap.add_argument("--no-baselines", action="store_true", help="graphremat rows only")
    ap.add_argument("--md")
    ap.add_argument("--json")
    args = ap.parse_args()
    budget = parse_budget(args.budget).nbytes
    knobs = [float(k) for k in args.knobs.split(",")]
    ks = [int(k) for k in args.max_recomputes.split(",")]
    rows = run(budget, args.layers, knobs, args.start, ks, not args.no_baselines)
    md = markdown(rows, budget, args.layers)
    print(md)
    if args.md:
        with open(args.md, "w") as f:
            f.write(md + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"budget_bytes": budget, "layers": args.layers, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
