"""graphremat vs PyTorch's ``activation_memory_budget`` at equal measured peak (issue 3, item 3).

For each knob value: run PyTorch's min-cut partitioner (solver ``dp``, eager codegen so op-level
memory is exact), measure its peak and cost what it recomputes; then give graphremat that
measured peak as its budget, and measure graphremat's peak and recompute work the same way.
Recompute work = roofline estimate of the recomputed ops (FLOPs and bytes moved), graphremat's
cost model for both. Also the median step time over interleaved runs.

    python benchmarks/vs_pytorch.py [--models mlp,gpt,resnet,unet] [--knobs 0.9,0.7,0.5,0.3,0.1]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from models import MODEL_FACTORIES  # noqa: E402

import graphremat  # noqa: E402
from graphremat.pytorch_baseline import run_pytorch_knob  # noqa: E402


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def _step_fn(model, runner, inputs):
    def step():
        model.zero_grad(set_to_none=True)
        runner(*inputs).backward()

    return step


def _pytorch_runner(model, knob):
    import graphremat._private as P

    backend = P.aot_autograd(  # PyTorch's aot_eager
        fw_compiler=P.boxed_nop,
        bw_compiler=P.boxed_nop,
        partition_fn=P.min_cut_rematerialization_partition,
        keep_inference_input_mutations=True,
    )
    return torch.compile(model, backend=backend, dynamic=False)


def median_times(steps, repeats: int = 5) -> list[float]:
    """Interleaved: one run of each step per round; the median per step."""
    times = [[] for _ in steps]
    for _ in range(repeats):
        for i, s in enumerate(steps):
            t0 = time.perf_counter()
            s()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1e3 for t in times]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,gpt,resnet,unet")
    ap.add_argument("--knobs", default="0.9,0.7,0.5,0.3,0.1")
    ap.add_argument("--time-limit", type=float, default=10.0)
    args = ap.parse_args()
    knobs = [float(k) for k in args.knobs.split(",")]
    print(
        "| model | knob | PyTorch peak MiB | PyTorch recompute ms est. | graphremat peak MiB "
        "| graphremat recompute ms est. | less work | PyTorch step ms | graphremat step ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model, inputs = MODEL_FACTORIES[name]()
        for knob in knobs:
            torch.manual_seed(0)
            try:
                r = run_pytorch_knob(model, inputs, knob)
            except RuntimeError as e:  # PyTorch's own partition can fail to run: a row, not a crash
                print(
                    f"| {name} | {knob} | PyTorch fails: {str(e).splitlines()[0][:90]} "
                    "| | | | | | |",
                    flush=True,
                )
                torch._dynamo.reset()
                continue
            mine = copy.deepcopy(model)
            try:
                cmodel = graphremat.compile(
                    mine,
                    budget=r.measured_peak_bytes,
                    codegen="eager",
                    time_limit_s=args.time_limit,
                )
                step = _step_fn(mine, cmodel, inputs)
                step()
                mine.zero_grad(set_to_none=True)
                peak = graphremat.measure_peak_memory(lambda *_, s=step: s(), mine, *inputs)
                plan = cmodel.graphremat_plans[-1]
            except graphremat.InfeasibleBudget as e:
                print(
                    f"| {name} | {knob} | {_mib(r.measured_peak_bytes)} | "
                    f"{r.recompute_cost_ns / 1e6:.3f} | infeasible (min "
                    f"{_mib(e.min_feasible_bytes)}) | | | | |"
                )
                continue
            theirs = copy.deepcopy(model)
            their_step = _step_fn(theirs, _pytorch_runner(theirs, knob), inputs)
            with torch._functorch.config.patch(activation_memory_budget=knob):
                their_step()
                t_theirs, t_mine = median_times([their_step, step])
            assert peak <= r.measured_peak_bytes, (peak, r.measured_peak_bytes)
            less = 1 - plan.recompute_cost_ns / r.recompute_cost_ns if r.recompute_cost_ns else 0
            print(
                f"| {name} | {knob} | {_mib(r.measured_peak_bytes)} | "
                f"{r.recompute_cost_ns / 1e6:.3f} | {_mib(peak)} | "
                f"{plan.recompute_cost_ns / 1e6:.3f} | {less:.0%} | {t_theirs:.1f} | {t_mine:.1f} |",
                flush=True,
            )
            torch._dynamo.reset()


if __name__ == "__main__":
    main()
