"""graphremat vs PyTorch's ``activation_memory_budget`` at equal measured peak (issue 3, item 3).

Table 1, for each knob value: run PyTorch's min-cut partitioner (solver ``dp``, eager codegen so
op-level memory is exact), measure its peak and cost what it recomputes; then give graphremat that
measured peak as its budget, and measure graphremat's peak and recompute work the same way.
Recompute work = roofline estimate of the recomputed ops (FLOPs and bytes moved), graphremat's
cost model for both. Also the median step time over interleaved runs, and the median of the
per-round ratios graphremat / PyTorch with a 95 % confidence interval (sign test): a row is
marked "slower" or "faster" only where the whole interval is on that side of 1, and the slower
rows are listed at the end.

Table 2, the lowest peak each method reaches at all: PyTorch's lowest measured peak over the
knobs of table 1 and 0.0 (its peak is not monotone in its knob); graphremat compiled at its
smallest feasible budget (``Plan.min_feasible_bytes``) and measured.

Models: the test families (tests/models.py) and ``hf_gpt2`` / ``hf_llama``, ``transformers``
GPT-2 and Llama built from configs (tests/real_models.py). A measured graphremat peak above its
budget is printed in its row and fails the run (exit 1) once both tables are out.

    python benchmarks/vs_pytorch.py [--models mlp,gpt,resnet,unet,hf_gpt2,hf_llama]
        [--knobs 0.9,0.7,0.5,0.3,0.1] [--tables compare,lowest] [--repeats 5] [--threads 0]
        [--max-recomputes 1] [--cost-model roofline-v2|roofline-v1|measured]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from models import MODEL_FACTORIES  # noqa: E402
from real_models import REAL_MODEL_FACTORIES  # noqa: E402

import graphremat  # noqa: E402
from graphremat.measure import measure_step_peak  # noqa: E402
from graphremat.pytorch_baseline import (  # noqa: E402
    KnobResult,
    aot_eager_backend,
    knob_config,
    run_pytorch_knob,
)
from graphremat.zoo_bench import interleaved_times, ratio_ci  # noqa: E402

FACTORIES = {**MODEL_FACTORIES, **{k: REAL_MODEL_FACTORIES[k] for k in ("hf_gpt2", "hf_llama")}}


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def _step_fn(model, runner, inputs):
    def step():
        model.zero_grad(set_to_none=True)
        runner(*inputs).backward()

    return step


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}"


def graphremat_step(
    model, inputs, budget_bytes: int, time_limit_s: float, max_recomputes=1, cost_model=None
):
    """A copy of ``model`` compiled by graphremat at ``budget_bytes``: its step (compiled and run
    once), measured peak and plan. Raises InfeasibleBudget."""
    mine = copy.deepcopy(model)
    cmodel = graphremat.compile(
        mine,
        budget=budget_bytes,
        codegen="eager",
        time_limit_s=time_limit_s,
        max_recomputes=max_recomputes,
        **({"cost_model": cost_model} if cost_model else {}),
    )
    step = _step_fn(mine, cmodel, inputs)
    step()  # compiles outside the measurement
    return step, measure_step_peak(cmodel, *inputs), cmodel.graphremat_plans[-1]


def pytorch_step(model, inputs, knob: float):
    """A copy of ``model`` compiled as :func:`run_pytorch_knob` compiles it, run once at ``knob``
    (the partition happens then); its step, for timing."""
    theirs = copy.deepcopy(model)
    compiled = torch.compile(theirs, backend=aot_eager_backend(), dynamic=False, fullgraph=True)
    step = _step_fn(theirs, compiled, inputs)
    with knob_config(knob):
        step()
    return step


def _over(name: str, what: str, peak: int, budget: int, plan) -> str:
    return (
        f"{name} {what}: graphremat measured {peak} B > budget {budget} B (plan predicted "
        f"{plan.predicted_peak_bytes} B, solver {plan.solver}, status {plan.status})"
    )


def compare_row(
    name, model, inputs, knob, r: KnobResult, args, failures: list[str], slower: list[str]
) -> None:
    """Table 1: graphremat at PyTorch's measured peak ``r`` (one row)."""
    try:
        step, peak, plan = graphremat_step(
            model,
            inputs,
            r.measured_peak_bytes,
            args.time_limit,
            args.max_recomputes,
            args.cost_model,
        )
    except graphremat.InfeasibleBudget as e:
        print(
            f"| {name} | {knob} | {_mib(r.measured_peak_bytes)} | {_ms(r.recompute_cost_ns)} | "
            f"infeasible (min {_mib(e.min_feasible_bytes)}) | | | | | |",
            flush=True,
        )
        return
    their_step = pytorch_step(model, inputs, knob)
    with knob_config(knob):
        theirs, mine = interleaved_times([their_step, step], args.repeats)
    t_theirs, t_mine = statistics.median(theirs), statistics.median(mine)
    ratio, ci = ratio_ci(theirs, mine)
    span = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
    verdict = ""
    if ci and ci[0] > 1:
        verdict = " slower"
        slower.append(f"{name} {knob}")
    elif ci and ci[1] < 1:
        verdict = " faster"
    mark = ""
    if peak > r.measured_peak_bytes:
        failures.append(_over(name, f"knob {knob}", peak, r.measured_peak_bytes, plan))
        mark = " OVER BUDGET"
    less = 1 - plan.recompute_cost_ns / r.recompute_cost_ns if r.recompute_cost_ns else 0
    print(
        f"| {name} | {knob} | {_mib(r.measured_peak_bytes)} | {_ms(r.recompute_cost_ns)} | "
        f"{_mib(peak)}{mark} | {_ms(plan.recompute_cost_ns)} | {less:.0%} | {t_theirs:.1f} | "
        f"{t_mine:.1f} | {_pct(ratio)} %{span}{verdict} |",
        flush=True,
    )


def lowest_row(name, model, inputs, results: dict[float, KnobResult], args, failures) -> str:
    """Table 2: PyTorch's lowest measured peak over ``results``; graphremat compiled at its
    smallest feasible budget and measured (one row)."""
    if results:
        best = min(results.values(), key=lambda r: (r.measured_peak_bytes, -r.knob))
        theirs = (
            f"| {name} | {_mib(best.measured_peak_bytes)} ({best.knob:g}) | "
            f"{_ms(best.recompute_cost_ns)} | "
        )
    else:
        theirs = f"| {name} | PyTorch fails at every knob | | "
    base = graphremat.plan(
        copy.deepcopy(model),
        *inputs,
        budget=1.0,
        time_limit_s=args.time_limit,
        max_recomputes=args.max_recomputes,
        **({"cost_model": args.cost_model} if args.cost_model else {}),
    )
    least = base.min_feasible_bytes
    proven = "proven" if base.min_feasible_proven else "not proven"
    torch._dynamo.reset()
    try:
        _, peak, plan = graphremat_step(
            model, inputs, least, args.time_limit, args.max_recomputes, args.cost_model
        )
    except graphremat.InfeasibleBudget as e:  # the compile captured a different graph
        return (
            theirs + f"{_mib(least)} ({proven}) | infeasible (min {_mib(e.min_feasible_bytes)}) | |"
        )
    finally:
        torch._dynamo.reset()
    mark = ""
    if peak > least:
        failures.append(_over(name, "at its smallest budget", peak, least, plan))
        mark = " OVER BUDGET"
    return (
        theirs + f"{_mib(least)} ({proven}) | {_mib(peak)}{mark} | {_ms(plan.recompute_cost_ns)} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,gpt,resnet,unet,hf_gpt2,hf_llama")
    ap.add_argument("--knobs", default="0.9,0.7,0.5,0.3,0.1")
    ap.add_argument("--tables", default="compare,lowest", help="compare, lowest, or both")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timed steps per method")
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument(
        "--max-recomputes",
        type=int,
        default=1,
        help="graphremat's recomputations per value (2..4: the copy class)",
    )
    ap.add_argument(
        "--cost-model",
        default=None,
        help="graphremat's cost model (graphremat.compile's cost_model; default: its default)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); 1 keeps step times steady on a "
        "shared machine, where busy cores stall multi-threaded ops",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    knobs = [float(k) for k in args.knobs.split(",")]
    names = args.models.split(",")
    tables = set(args.tables.split(","))
    unknown = [n for n in names if n not in FACTORIES] + sorted(tables - {"compare", "lowest"})
    if unknown:
        ap.error(f"unknown {unknown}; models: {', '.join(FACTORIES)}; tables: compare, lowest")
    # PyTorch's lowest peak is searched over 0.0 too (not a row of table 1 unless asked for)
    search = knobs + [0.0] if "lowest" in tables and 0.0 not in knobs else knobs
    if "compare" in tables:
        print(
            "| model | knob | PyTorch peak MiB | PyTorch recompute ms est. | graphremat peak MiB "
            "| graphremat recompute ms est. | less work | PyTorch step ms | graphremat step ms "
            "| step vs PyTorch (95 % CI) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
    failures: list[str] = []
    slower: list[str] = []
    lowest: list[str] = []
    for name in names:
        model, inputs = FACTORIES[name]()
        results: dict[float, KnobResult] = {}
        for knob in search:
            torch._dynamo.reset()
            torch.manual_seed(0)
            in_table = "compare" in tables and knob in knobs
            try:
                results[knob] = r = run_pytorch_knob(model, inputs, knob)
            except RuntimeError as e:  # PyTorch's own partition can fail to run: a row, not a crash
                if in_table:
                    print(
                        f"| {name} | {knob} | PyTorch fails: {str(e).splitlines()[0][:90]} "
                        "| | | | | | | |",
                        flush=True,
                    )
                continue
            if in_table:
                compare_row(name, model, inputs, knob, r, args, failures, slower)
        torch._dynamo.reset()
        if "lowest" in tables:
            lowest.append(lowest_row(name, model, inputs, results, args, failures))
    if lowest:
        print(
            "\n| model | PyTorch lowest measured peak MiB (knob) | PyTorch recompute ms est. there "
            "| graphremat smallest feasible budget MiB | graphremat lowest measured peak MiB "
            "| graphremat recompute ms est. there |"
        )
        print("|---|---|---|---|---|---|")
        print("\n".join(lowest), flush=True)
    if "compare" in tables:
        print(f"\ngraphremat's step slower beyond the 95 % interval: {', '.join(slower) or 'none'}")
    if failures:
        sys.exit("graphremat exceeded its budget:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
