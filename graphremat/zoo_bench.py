"""graphremat against every baseline a user would pick instead, on the model zoo, measured.

Input: zoo model names (graphremat.zoo), a size, a codegen. Output: per model, one JSON record
and a markdown row; with ``--out DIR`` also ``DIR/zoo.json``, ``DIR/zoo.md`` and one Pareto plot
per model (``DIR/zoo-<model>.png``: measured peak against median step time, every method on the
same axes).

Each model runs in a fresh Python process (:func:`run_model`, ``python -m graphremat.zoo_bench
--worker``). There, every configuration is compiled on its own copy of the model and its peak
measured (torch.profiler's live bytes on CPU, ``max_memory_allocated`` on CUDA):

* ``eager``; ``stock`` (plain torch.compile: Inductor, or ``aot_eager`` under codegen "eager");
* ``knob-K``: PyTorch's ``activation_memory_budget`` at K (0.8, 0.5, 0.3, 0.1 by default);
* ``block``: per-block ``torch.utils.checkpoint`` (transformers' activation checkpointing,
  non-reentrant), compiled as stock; ``sac``: the same blocks under a selective-checkpoint
  policy that saves matmul and attention outputs and recomputes the rest; models without
  transformers' checkpointing have neither;
* ``gr-1.0``: graphremat at budget 1.0; ``gr@B``: graphremat given baseline B's measured peak as
  its budget; ``gr-min``: graphremat at its smallest feasible budget.

Then the steps are timed interleaved (each configuration once per round), and each ``gr@B`` is
compared with B by the median of the per-round step-time ratios and its 95 % sign-test interval
(:func:`ratio_ci`).

With ``--sweep N`` each model is instead compiled at N budgets from its reported minimum to its
peak without rematerialization (:func:`run_sweep`): every one must compile and measure within it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import functools
import json
import math
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import torch

DEFAULT_KNOBS = (0.8, 0.5, 0.3, 0.1)
#: ops whose outputs the selective-checkpoint baseline saves (matmuls and attention)
SAC_SAVE = (
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "convolution",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_flash_attention",
)


# --- statistics -------------------------------------------------------------------------------


def interleaved_times(steps: list[Callable[[], None]], repeats: int) -> list[list[float]]:
    """One run of each step per round, ``repeats`` rounds: each step's times in ms, by round."""
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            t0 = time.perf_counter()
            step()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return times


def ratio_ci(theirs: list[float], mine: list[float], alpha: float = 0.05):
    """The median of the per-round ratios ``mine / theirs`` and a distribution-free 1 - alpha
    confidence interval for it from the sign test's order statistics; the interval is None with
    fewer than 6 rounds."""
    ratios = sorted(m / t for t, m in zip(theirs, mine, strict=True))
    n = len(ratios)
    # the largest k with P(Binomial(n, 1/2) < k) <= alpha / 2: [r_k, r_(n-k+1)], 1-based
    k, below = 0, 0.0
    while below + math.comb(n, k) / 2**n <= alpha / 2:
        below += math.comb(n, k) / 2**n
        k += 1
    ci = (ratios[k - 1], ratios[n - k]) if k >= 1 else None
    return statistics.median(ratios), ci


# --- one model, in its own process ------------------------------------------------------------


def _hf_model(model: torch.nn.Module):
    """The transformers model inside ``model`` that supports gradient checkpointing, or None."""
    for m in model.modules():
        if getattr(m, "supports_gradient_checkpointing", False):
            return m
    return None


def _sac_policy(ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy

    name = getattr(op, "__name__", "").split(".")[0]
    if name in SAC_SAVE:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _checkpointed(model: torch.nn.Module, selective: bool) -> torch.nn.Module | None:
    """A copy of ``model`` with every transformers block checkpointed (``selective``: under the
    matmul-saving policy), or None where the model has no such blocks."""
    mine = copy.deepcopy(model)
    hf = _hf_model(mine)
    if hf is None:
        return None
    kwargs: dict = {"use_reentrant": False}
    if selective:
        from torch.utils.checkpoint import create_selective_checkpoint_contexts

        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _sac_policy)
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return mine


class _Config:
    """One configuration: a compiled copy of the model, its step, peak and plan."""

    def __init__(
        self, name: str, model: torch.nn.Module, runner, inputs: tuple, amp: str | None = None
    ) -> None:
        self.name, self.model, self.runner, self.inputs = name, model, runner, inputs
        self.amp = amp
        self.record: dict = {"name": name}

    def step(self) -> None:
        self.model.zero_grad(set_to_none=True)
        _step(self.runner, self.amp, *self.inputs)

    def first(self, ctx=None) -> None:
        """The first step (compiles), then the measured peak of a second."""
        t0 = time.perf_counter()
        with ctx if ctx is not None else contextlib.nullcontext():
            self.step()
            self.record["compile_s"] = round(time.perf_counter() - t0, 3)
            self.record["peak_bytes"] = _step_peak(self.runner, self.amp, self.inputs)


#: ``--autocast`` choices: the forward under ``torch.autocast`` with this dtype
AUTOCAST = {"bf16": torch.bfloat16}


def _step(runner, amp: str | None, *inputs) -> None:
    """One training step: the forward (under autocast with ``amp``), then the backward."""
    with torch.autocast("cpu", dtype=AUTOCAST[amp]) if amp else contextlib.nullcontext():
        loss = runner(*inputs)
    loss.backward()


def _step_peak(runner, amp: str | None, inputs: tuple) -> int:
    """Measured peak of one :func:`_step` (gradients set to None first)."""
    from .measure import measure_peak_memory

    for p in runner.parameters():
        p.grad = None
    return measure_peak_memory(_step, runner, amp, *inputs)


def _stock_backend(codegen: str):
    """A new backend object for each configuration: Dynamo reuses a compiled graph whose guards
    pass for the same backend (a model copy passes them: its parameters are graph inputs), so
    with the one "inductor" string every knob would run stock's graph."""
    from .pytorch_baseline import aot_eager_backend

    if codegen == "eager":
        return aot_eager_backend()

    def inductor(gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, example_inputs)

    return inductor


def _setup(name: str, size: str, threads: int) -> tuple[torch.nn.Module, tuple]:
    """The worker's torch settings, and the zoo model with its inputs."""
    from . import zoo

    torch.set_num_threads(threads)
    # every configuration compiles the same code objects again, on its own copy
    torch._dynamo.config.recompile_limit = 10**6
    torch._dynamo.config.accumulated_recompile_limit = 10**6
    return zoo.build(name, size)


def _why(e: Exception) -> str:
    """A failed row's reason: the exception's type and first line."""
    lines = str(e).splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def run_model(
    name: str,
    *,
    size: str = "full",
    codegen: str = "eager",
    knobs: tuple[float, ...] = DEFAULT_KNOBS,
    repeats: int = 11,
    time_limit_s: float = 30.0,
    threads: int = 1,
    amp: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Every configuration of one zoo model, measured (see the module docstring); ``amp``: the
    forward under autocast to that dtype (see AUTOCAST)."""
    import graphremat

    from .pytorch_baseline import knob_config

    model, inputs = _setup(name, size, threads)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    configs: list[_Config] = []
    doc: dict = {
        "model": name,
        "size": size,
        "codegen": codegen,
        "threads": threads,
        "autocast": amp,
        "param_bytes": params,
        "torch": torch.__version__,
        "configs": [],
        "pairs": [],
    }

    def add(cfg: _Config | None, ctx=None) -> _Config | None:
        if cfg is None:
            return None
        log(f"{name}: {cfg.name}")
        try:
            cfg.first(ctx)
        except Exception as e:  # a configuration that fails is a row that says why
            cfg.record["error"] = _why(e)
            log(f"{name}: {cfg.name} failed: {cfg.record['error']}")
            doc["configs"].append(cfg.record)
            return None
        configs.append(cfg)
        doc["configs"].append(cfg.record)
        return cfg

    def compiled(cname: str, m: torch.nn.Module | None) -> _Config | None:
        if m is None:
            return None
        runner = torch.compile(m, backend=_stock_backend(codegen), dynamic=False)
        return _Config(cname, m, runner, inputs, amp)

    def gr(cname: str, budget) -> _Config | None:
        m = copy.deepcopy(model)
        runner = graphremat.compile(m, budget=budget, codegen=codegen, time_limit_s=time_limit_s)
        cfg = _Config(cname, m, runner, inputs, amp)
        if add(cfg) is None:
            return None
        plan = runner.graphremat_plans[-1]
        cfg.record.update(
            budget_bytes=plan.budget_bytes,
            predicted_bytes=plan.predicted_peak_bytes,
            min_feasible_bytes=plan.min_feasible_bytes,
            stock_model_bytes=plan.stock_peak_bytes,
            unconstrained_bytes=plan.unconstrained_peak_bytes,
            status=plan.status,
            solve_s=round(plan.solve_time_s, 3),
            recomputed=len(plan.recomputed),
            regions=len(runner.graphremat_plans),
        )
        return cfg

    eager_m = copy.deepcopy(model)
    add(_Config("eager", eager_m, eager_m, inputs, amp))
    add(compiled("stock", copy.deepcopy(model)))
    for k in knobs:
        add(compiled(f"knob-{k:g}", copy.deepcopy(model)), knob_config(k))
    add(compiled("block", _checkpointed(model, selective=False)))
    add(compiled("sac", _checkpointed(model, selective=True)))
    baselines = [c for c in configs if c.name != "eager"]
    gr("gr-1.0", 1.0)
    for base in baselines:
        g = gr(f"gr@{base.name}", base.record["peak_bytes"])
        if g is not None:
            doc["pairs"].append({"baseline": base.name, "graphremat": g.name})
    first = next((c for c in configs if c.name == "gr-1.0"), None)
    if first is not None:
        gr("gr-min", first.record["min_feasible_bytes"])
        doc["pairs"].insert(0, {"baseline": "stock", "graphremat": "gr-1.0"})

    log(f"{name}: timing {len(configs)} configurations, {repeats} rounds")
    times = interleaved_times([c.step for c in configs], repeats)
    by_name = {}
    for cfg, ts in zip(configs, times, strict=True):
        cfg.record["step_ms"] = [round(t, 3) for t in ts]
        cfg.record["median_ms"] = round(statistics.median(ts), 3)
        by_name[cfg.name] = ts
    for pair in doc["pairs"]:
        if pair["baseline"] in by_name and pair["graphremat"] in by_name:
            ratio, ci = ratio_ci(by_name[pair["baseline"]], by_name[pair["graphremat"]])
            pair["ratio"] = ratio
            pair["ci"] = list(ci) if ci else None
    return doc


def run_sweep(
    name: str,
    *,
    size: str = "full",
    codegen: str = "eager",
    points: int = 12,
    time_limit_s: float = 30.0,
    threads: int = 1,
    amp: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """graphremat compiled at ``points`` budgets evenly spaced from the smallest feasible one that
    ``graphremat.plan`` reports to the peak without rematerialization, each run once and its
    peak measured: every one must compile and stay within its budget."""
    import graphremat

    model, inputs = _setup(name, size, threads)
    with torch.autocast("cpu", dtype=AUTOCAST[amp]) if amp else contextlib.nullcontext():
        top = graphremat.plan(
            model, *inputs, budget=1.0, codegen=codegen, time_limit_s=time_limit_s
        )
    lo, hi = top.min_feasible_bytes, top.unconstrained_peak_bytes
    rows = []
    for i in range(points):
        budget = lo + (hi - lo) * i // max(points - 1, 1)
        row: dict = {"budget_bytes": budget}
        m = copy.deepcopy(model)
        try:
            runner = graphremat.compile(
                m, budget=budget, codegen=codegen, time_limit_s=time_limit_s
            )
            _step(runner, amp, *inputs)
            row["peak_bytes"] = _step_peak(runner, amp, inputs)
            row["predicted_bytes"] = runner.graphremat_plans[-1].predicted_peak_bytes
        except Exception as e:  # the row says why; the table counts it as a failure
            row["error"] = _why(e)
        log(f"{name}: budget {budget}: " + row.get("error", f"measured {row.get('peak_bytes')}"))
        rows.append(row)
    return {
        "model": name,
        "size": size,
        "codegen": codegen,
        "threads": threads,
        "autocast": amp,
        "torch": torch.__version__,
        "min_feasible_bytes": lo,
        "min_feasible_proven": top.min_feasible_proven,
        "unconstrained_bytes": hi,
        "sweep": rows,
    }


def sweep_markdown(docs: list[dict]) -> str:
    """Per model: budgets tried, how many failed to compile or measured above their budget."""
    lines = [
        "| model | codegen | min MiB | budgets | failed | over budget | "
        "largest measured / budget |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for d in docs:
        rows = d["sweep"]
        failed = [r for r in rows if "error" in r]
        measured = [r for r in rows if "peak_bytes" in r]
        over = [r for r in measured if r["peak_bytes"] > r["budget_bytes"]]
        worst = max((r["peak_bytes"] / r["budget_bytes"] for r in measured), default=0.0)
        proven = "" if d["min_feasible_proven"] else "*"
        lines.append(
            f"| {d['model']} | {_codegen(d)} | {_mib(d['min_feasible_bytes'])}{proven} | "
            f"{len(rows)} | {len(failed)} | {len(over)} | {worst:.4f} |"
        )
        notes += [f"- {d['model']} at {r['budget_bytes']} B: {r['error']}" for r in failed]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


# --- the table --------------------------------------------------------------------------------


def _codegen(doc: dict) -> str:
    """The codegen column: "eager", "inductor", with "+bf16" under autocast."""
    amp = doc.get("autocast")
    return doc["codegen"] + (f"+{amp}" if amp else "")


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.1f}"


def _pct(r: float) -> str:
    return f"{(r - 1) * 100:+.1f}"


def _ratio(pair: dict) -> str:
    if "ratio" not in pair:
        return "n/a"
    ci = pair.get("ci")
    span = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
    return f"{_pct(pair['ratio'])} %{span}"


def pred_error(doc: dict) -> float | None:
    """The largest |measured - predicted| / measured over the model's graphremat rows."""
    errs = [
        abs(c["peak_bytes"] - c["predicted_bytes"]) / c["peak_bytes"]
        for c in doc["configs"]
        if "predicted_bytes" in c and "peak_bytes" in c and c.get("regions", 1) == 1
    ]
    return max(errs) if errs else None


def markdown(docs: list[dict]) -> str:
    """Two tables: per model and baseline, the baseline's peak and time beside graphremat's at
    that peak; and per model the lowest measured peaks."""
    rows = [
        "| model | baseline | baseline MiB | baseline ms | graphremat MiB | graphremat ms | "
        "step time vs baseline (95 % CI) | fits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    low = [
        "| model | codegen | prediction error (eager) | lowest baseline | its MiB | "
        "graphremat min MiB | ratio | over budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for doc in docs:
        cfgs = {c["name"]: c for c in doc["configs"]}
        for pair in doc["pairs"]:
            b, g = cfgs[pair["baseline"]], cfgs[pair["graphremat"]]
            fits = "yes" if g["peak_bytes"] <= b["peak_bytes"] else "NO"
            rows.append(
                f"| {doc['model']} | {b['name']}{' (1.0)' if g['name'] == 'gr-1.0' else ''} | "
                f"{_mib(b['peak_bytes'])} | {b.get('median_ms', '')} | {_mib(g['peak_bytes'])} | "
                f"{g.get('median_ms', '')} | {_ratio(pair)} | {fits} |"
            )
        for c in doc["configs"]:
            if "error" in c:
                rows.append(f"| {doc['model']} | {c['name']} | failed: {c['error'][:120]} |||||")
        low.append(_lowest_row(doc, cfgs))
    return "\n".join(rows) + "\n\n" + "\n".join(low) + "\n"


def _lowest_row(doc: dict, cfgs: dict[str, dict]) -> str:
    """The model's prediction error, its lowest baseline peak beside graphremat's smallest, and
    how many graphremat rows measured above their budget."""
    measured = [c for c in doc["configs"] if "peak_bytes" in c]
    bases = [c for c in measured if not c["name"].startswith("gr") and c["name"] != "eager"]
    lowest = min(bases, key=lambda c: c["peak_bytes"], default=None)
    least = cfgs.get("gr-min", {}).get("peak_bytes")
    err = pred_error(doc) if doc["codegen"] == "eager" else None
    over = sum(1 for c in measured if c["peak_bytes"] > c.get("budget_bytes", c["peak_bytes"]))
    cells = [
        doc["model"],
        _codegen(doc),
        "" if err is None else f"{err:.2%}",
        lowest["name"] if lowest else "",
        _mib(lowest["peak_bytes"]) if lowest else "",
        _mib(least),
        f"{least / lowest['peak_bytes']:.2f}" if lowest and least else "",
        str(over),
    ]
    return "| " + " | ".join(cells) + " |"


def plot_model(doc: dict, path: str) -> None:
    """Measured peak (MiB) against median step time (ms), one point per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for c in doc["configs"]:
        if "median_ms" not in c:
            continue
        mine = c["name"].startswith("gr")
        ax.scatter(
            c["median_ms"],
            c["peak_bytes"] / 2**20,
            marker="o" if mine else "s",
            color="tab:blue" if mine else "tab:gray",
        )
        ax.annotate(c["name"], (c["median_ms"], c["peak_bytes"] / 2**20), fontsize=7)
    ax.set_xlabel("median step time (ms)")
    ax.set_ylabel("measured peak (MiB)")
    ax.set_title(f"{doc['model']} ({doc['size']}, {_codegen(doc)}, {doc['threads']} thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- command line -----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", help="zoo names (default: all)")
    p.add_argument("--size", choices=("test", "full"), default="full")
    p.add_argument("--codegen", choices=("eager", "inductor"), default="eager")
    p.add_argument("--knobs", type=float, nargs="+", default=list(DEFAULT_KNOBS))
    p.add_argument("--repeats", type=int, default=11, help="timing rounds (default 11)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--autocast", choices=sorted(AUTOCAST), help="the forward under torch.autocast (CPU)"
    )
    p.add_argument("--time-limit", type=float, default=30.0, help="solver seconds per plan")
    p.add_argument(
        "--sweep",
        type=int,
        default=0,
        metavar="N",
        help="instead of the comparison: compile each model at N budgets from its minimum to "
        "its peak without rematerialization, and count those that fail or measure over budget",
    )
    p.add_argument("--out", type=pathlib.Path, help="write zoo.json, zoo.md and plots here")
    p.add_argument(
        "--from",
        dest="from_json",
        type=pathlib.Path,
        metavar="JSON",
        help="run nothing: make the table (and, with --out, the plots) from a run's zoo.json",
    )


def run(args: argparse.Namespace) -> int:
    """Each model in a fresh process; the table on stdout; files under ``--out``, rewritten after
    each model (so a long run keeps what it measured). With ``--from``: only the table and
    plots, made again from a run's JSON."""
    from . import zoo

    prog = "python -m graphremat.bench zoo"
    if args.from_json is not None:
        try:
            docs = json.loads(args.from_json.read_text("utf-8"))
        except (OSError, ValueError) as e:
            print(f"{prog}: error: --from {args.from_json}: {e}", file=sys.stderr)
            return 2
        _write(docs, args.out)
        return 0
    if args.sweep == 1 or args.sweep < 0:
        print(f"{prog}: error: --sweep {args.sweep}: give 0 (off) or at least 2", file=sys.stderr)
        return 2
    unknown = [m for m in args.models or () if m not in zoo.ZOO]
    if unknown:
        print(
            f"{prog}: error: unknown model(s) {', '.join(unknown)}; the zoo has "
            f"{', '.join(zoo.names())}",
            file=sys.stderr,
        )
        return 2
    docs = []
    for name in args.models or zoo.names():
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "doc.json")
            cmd = [
                sys.executable, "-m", "graphremat.zoo_bench", "--worker", name, "--to", out,
                "--size", args.size, "--codegen", args.codegen, "--repeats", str(args.repeats),
                "--threads", str(args.threads), "--time-limit", str(args.time_limit),
                "--knobs", *map(str, args.knobs), "--sweep", str(args.sweep),
                *(["--autocast", args.autocast] if args.autocast else []),
            ]  # fmt: skip
            print(f"[zoo] {name} ...", file=sys.stderr, flush=True)
            returncode, lines = _run_worker(cmd)
            if returncode != 0 or not os.path.exists(out):
                tail = "\n".join(lines[-5:])
                print(f"[zoo] {name} failed:\n{tail}", file=sys.stderr)
                docs.append({"model": name, "error": tail, "configs": [], "pairs": []})
            else:
                with open(out, encoding="utf-8") as f:
                    docs.append(json.load(f))
        if args.out is not None:
            _write(docs, args.out, quiet=True)
    _write(docs, args.out)
    return 0


#: a table in a markdown document made from a run's zoo.json: the line
#: ``<!-- zoo table: PATH -->`` (PATH relative to the document's repository root), the table,
#: then ``<!-- end zoo table -->``
TABLE_MARK = re.compile(r"<!-- zoo table: (\S+) -->\n.*?<!-- end zoo table -->", re.S)


def table_of(docs: list[dict]) -> str:
    """The markdown a run's JSON makes (the comparison, or the sweep's table)."""
    done = [d for d in docs if "error" not in d]
    return sweep_markdown(done) if any("sweep" in d for d in done) else markdown(done)


def fill_tables(text: str, root: pathlib.Path) -> str:
    """``text`` with every marked zoo table (see TABLE_MARK) made again from its JSON."""

    def made(m: re.Match) -> str:
        docs = json.loads((root / m.group(1)).read_text("utf-8"))
        return f"<!-- zoo table: {m.group(1)} -->\n{table_of(docs)}\n<!-- end zoo table -->"

    return TABLE_MARK.sub(made, text)


def _write(docs: list[dict], out: pathlib.Path | None, quiet: bool = False) -> None:
    """The table (on stdout unless ``quiet``) and, under ``out``, zoo.json, zoo.md and a plot per
    model."""
    done = [d for d in docs if "error" not in d]
    table = table_of(docs)
    if not quiet:
        print(table)
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo.json").write_text(json.dumps(docs, indent=1) + "\n", "utf-8")
    (out / "zoo.md").write_text(table, "utf-8")
    for d in done:
        if d.get("configs"):
            plot_model(d, str(out / f"zoo-{d['model']}.png"))


def _run_worker(cmd: list[str]) -> tuple[int, list[str]]:
    """Run a worker, passing its progress lines (``[zoo] ...``) on to stderr as they come; its
    exit code and the last lines of its stderr."""
    tail: collections.deque[str] = collections.deque(maxlen=20)
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            if line.startswith("[zoo]"):
                print(line, end="", file=sys.stderr, flush=True)
    return proc.returncode, list(tail)


def _worker(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m graphremat.zoo_bench")
    p.add_argument("--worker", required=True)
    p.add_argument("--to", required=True)
    add_arguments(p)
    a = p.parse_args(argv)
    common = {
        "size": a.size,
        "codegen": a.codegen,
        "time_limit_s": a.time_limit,
        "threads": a.threads,
        "amp": a.autocast,
        "log": lambda s: print(f"[zoo] {s}", file=sys.stderr, flush=True),
    }
    try:
        if a.sweep:
            doc = run_sweep(a.worker, points=a.sweep, **common)
        else:
            doc = run_model(a.worker, knobs=tuple(a.knobs), repeats=a.repeats, **common)
    except Exception:
        traceback.print_exc()
        return 1
    with open(a.to, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
