"""Benchmarks as a command: ``python -m graphremat.bench {scale,literature} ... --out DIR``.

``scale``: the solver on the op-level joint graph of a GPT (GPT-2-small's shape by default). The
model is built here (:class:`GPT`), its joint-graph :class:`RematProblem` captured through
:func:`graphremat.plan` (the first solve records the capture and stops planning: nothing is
executed), then each budget -- a fraction of the save-all plan's peak -- is solved with
:func:`solvers.cpsat.solve_cpsat`. Per budget: the time to the first feasible plan (the greedy
warm start, timed alone), its cost, the final objective, the proven bound and gap, the wall time.

``literature``: the layer-level graphs of the Checkmate and Moccasin papers, read in place from
``--graphs-dir`` (shared/literature-graphs: GPL data, never copied here), each (graph, budget)
solved with :func:`solvers.moccasin.solve_sequence` (``--copies`` computations per value, default
2) under the papers' memory model, next to the
best-known results and the published formulations' times on the same machine (:data:`REFERENCE`,
from that directory's README).

Output: a markdown table on stdout and, with ``--out DIR``, ``DIR/<name>.md``, ``DIR/<name>.json``
and ``DIR/<name>.png`` (``--md/--json/--plot`` name single files). Invariant: every plan in a
table was re-checked by an independent replay (:func:`solvers.problem.evaluate`,
:func:`solvers.sequence.simulate`) and fits its budget; a plan that does not is an error, never a
row. Progress bars on stderr (``--no-progress`` turns them off).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import graphremat
from graphremat import planner
from graphremat.cli import UsageError, _check_outputs, _positive_float, _save_plot, solve_progress
from graphremat.solvers.cpsat import solve_cpsat
from graphremat.solvers.greedy import greedy_fit
from graphremat.solvers.literature import load
from graphremat.solvers.moccasin import solve_sequence
from graphremat.solvers.problem import RematProblem, evaluate, save_all_set
from graphremat.solvers.result import SolveResult, SolveStatus
from graphremat.solvers.sequence import simulate

EXIT_OK, EXIT_USAGE = 0, 2
#: GPT-2 small: hidden 768, 12 heads, context 512 (as benchmarked), batch 8, vocab 50257
GPT2_SMALL = {"hidden": 768, "heads": 12, "seq": 512, "batch": 8, "vocab": 50257}


# ---------------------------------------------------------------------- the GPT of `scale`
class _Attention(nn.Module):
    """Causal multi-head self-attention written out as matmul + masked softmax (no SDPA), so the
    attention matrices are separate values in the joint graph."""

    def __init__(self, hidden: int, heads: int, seq: int, p_drop: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.attn_drop, self.resid_drop = nn.Dropout(p_drop), nn.Dropout(p_drop)
        causal = torch.tril(torch.ones(seq, seq, dtype=torch.bool)).view(1, 1, seq, seq)
        self.register_buffer("causal_mask", causal, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).split(c, 2))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
        scores = scores.masked_fill(~self.causal_mask[:, :, :t, :t], float("-inf"))
        y = self.attn_drop(F.softmax(scores, dim=-1)) @ v
        return self.resid_drop(self.proj(y.transpose(1, 2).contiguous().view(b, t, c)))


class GPT(nn.Module):
    """Pre-LN GPT-2 (learned positions, GELU MLP of width 4 x hidden, dropout, untied head) whose
    ``forward(idx, targets)`` returns the cross-entropy loss: one joint graph per step. The test
    suite's GPT (tests/models.py) is this one, with small defaults."""

    def __init__(
        self, vocab: int, seq: int, hidden: int, heads: int, layers: int, p_drop: float = 0.1
    ) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, hidden)
        self.pos_emb = nn.Parameter(torch.randn(1, seq, hidden) * 0.02)
        self.drop = nn.Dropout(p_drop)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            block = nn.ModuleDict({"ln1": nn.LayerNorm(hidden)})
            block["attn"] = _Attention(hidden, heads, seq, p_drop)
            block["ln2"] = nn.LayerNorm(hidden)
            block["mlp"] = nn.Sequential(
                nn.Linear(hidden, 4 * hidden),
                nn.GELU(),
                nn.Linear(4 * hidden, hidden),
                nn.Dropout(p_drop),
            )
            self.blocks.append(block)
        self.ln_f = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.tok_emb(idx) + self.pos_emb[:, : idx.shape[1]])
        for b in self.blocks:
            x = x + b["attn"](b["ln1"](x))
            x = x + b["mlp"](b["ln2"](x))
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


# ---------------------------------------------------------------------- scale
class _Captured(Exception):
    """Raised from inside planning once the problem is recorded: stops the compile there."""


def capture_gpt(
    layers: int, *, hidden: int, heads: int, seq: int, batch: int, vocab: int
) -> tuple[RematProblem, int]:
    """The joint-graph problem of a training step of :class:`GPT` (seed 0, train mode) and the
    joint graph's number of FX nodes."""
    torch.manual_seed(0)
    model = GPT(vocab, seq, hidden, heads, layers).train()
    idx = torch.randint(0, vocab, (batch, seq))
    targets = torch.randint(0, vocab, (batch, seq))
    real_solve, got = planner._solve, []

    def grab(capture, budget_bytes, options, **_):
        got.append(capture)
        raise _Captured  # Dynamo wraps it in BackendCompilerFailed

    planner._solve = grab
    try:
        graphremat.plan(
            model, idx, targets, budget=0.9, time_limit_s=1, calibrate=False, cache=False
        )
    except Exception:
        if not got:
            raise
    finally:
        planner._solve = real_solve
    if not got:
        raise RuntimeError("planning finished without calling the solver: 0.9 fits save-all")
    return got[0].problem, got[0].num_fx_nodes


def scale_row(problem: RematProblem, frac: float, time_limit_s: float, workers: int) -> dict:
    """Solve one budget (``frac`` of the save-all peak) and re-check the plan with
    :func:`evaluate`. The first feasible plan is the greedy warm start's, timed alone."""
    full = evaluate(problem, save_all_set(problem)).peak_bytes
    budget = int(frac * full)
    t0 = time.perf_counter()
    warm = greedy_fit(problem, budget)
    first_s = time.perf_counter() - t0
    res = solve_cpsat(problem, budget, time_limit_s=time_limit_s, num_workers=workers)
    row = {
        "budget_frac": frac,
        "budget_bytes": budget,
        "first_feasible_s": round(first_s, 3) if warm is not None else None,
        "first_cost": warm.cost if warm is not None else None,
        "status": res.status.value,
        "objective": res.objective if res.status.has_plan else None,
        "bound": res.bound if res.status.has_plan else None,
        "gap_pct": round(100 * res.gap, 3) if res.status.has_plan else None,
        "wall_s": round(res.wall_s, 3),
        "peak_bytes": None,
        "saved": [],
        "info": {k: v for k, v in res.info.items() if isinstance(v, int | float | str)},
    }
    if res.status.has_plan:
        ev = evaluate(problem, res.saved)
        if not ev.valid or ev.peak_bytes > budget or ev.cost != res.objective:
            raise RuntimeError(
                f"budget {frac:g}: the solver's plan does not replay (valid={ev.valid}, peak "
                f"{ev.peak_bytes} vs budget {budget}, cost {ev.cost} vs {res.objective})"
            )
        row.update(peak_bytes=ev.peak_bytes, saved=sorted(res.saved))
    return row


def _step_cost(problem: RematProblem) -> float:
    """Estimated cost of the whole step (every forward and backward node run once)."""
    return float(sum(a["cost"] for _, a in problem.graph.nodes(data=True)))


def run_scale(args: argparse.Namespace) -> tuple[dict, str]:
    """Capture the GPT, solve every budget; return the JSON document and the markdown."""
    shape = {k: getattr(args, k) for k in GPT2_SMALL}
    if args.progress:
        print(f"capturing the joint graph of a {args.layers}-layer GPT ...", file=sys.stderr)
    t0 = time.perf_counter()
    problem, num_fx = capture_gpt(args.layers, **shape)
    capture_s = time.perf_counter() - t0
    cand = problem.candidates()
    free = sum(1 for v in cand if problem.attr(v, "savable") and problem.attr(v, "recomputable"))
    doc = {
        "benchmark": "scale",
        "layers": args.layers,
        **shape,
        "time_limit_s": args.time_limit,
        "workers": args.workers,
        "capture_s": round(capture_s, 2),
        "fx_nodes": num_fx,
        "problem_nodes": problem.graph.number_of_nodes(),
        "decisions": len(cand),
        "free_decisions": free,
        "save_all_peak_bytes": evaluate(problem, save_all_set(problem)).peak_bytes,
        "step_cost": _step_cost(problem),
        "rows": [],
    }
    for frac in args.budgets:
        with solve_progress(args.time_limit, args.progress, desc=f"budget {frac:g}"):
            doc["rows"].append(scale_row(problem, frac, args.time_limit, args.workers))
        if args.progress:
            print(scale_markdown(doc).splitlines()[-1], file=sys.stderr, flush=True)
    return doc, scale_markdown(doc)


def _scale_head(doc: dict) -> str:
    gpt2 = all(doc[k] == v for k, v in GPT2_SMALL.items() if k != "batch")
    shape = "GPT-2-small shape" if gpt2 else "GPT"
    layers = f"{doc['layers']} layer" + "s" * (doc["layers"] != 1)
    return (
        f"{shape}, {layers} (hidden {doc['hidden']}, {doc['heads']} heads, context "
        f"{doc['seq']}, batch {doc['batch']}, vocab {doc['vocab']}): {doc['fx_nodes']} FX nodes "
        f"-> {doc['problem_nodes']} storages -> {doc['decisions']} decisions "
        f"({doc['free_decisions']} free), capture {doc['capture_s']:.1f} s; solver time limit "
        f"{doc['time_limit_s']:g} s, {doc['workers']} worker(s)"
    )


def scale_markdown(doc: dict) -> str:
    """The head line and one table row per budget (overheads are % of the step's cost)."""
    lines = [
        _scale_head(doc),
        "",
        "| budget | first plan (s) | first plan overhead | objective | bound | gap "
        "| final overhead | re-checked peak | wall (s) | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    step = doc["step_cost"] or 1.0
    for r in doc["rows"]:
        first = "-" if r["first_feasible_s"] is None else f"{r['first_feasible_s']:.2f}"
        first_ov = "-" if r["first_cost"] is None else f"{100 * r['first_cost'] / step:.2f} %"
        if r["objective"] is None:
            obj = bound = gap = final = peak = "-"
        else:
            obj, bound = f"{r['objective']:.4g}", f"{r['bound']:.4g}"
            gap, final = f"{r['gap_pct']:.2f} %", f"{100 * r['objective'] / step:.2f} %"
            peak = f"{r['peak_bytes'] / doc['save_all_peak_bytes']:.3f}"
        lines.append(
            f"| {r['budget_frac']:g} | {first} | {first_ov} | {obj} | {bound} | {gap} | {final} "
            f"| {peak} | {r['wall_s']:.2f} | {_scale_status(r)} |"
        )
    return "\n".join(lines) + "\n"


def _scale_status(r: dict) -> str:
    return {"infeasible": "infeasible (proven)", "unknown": "no plan in the time limit"}.get(
        r["status"], r["status"]
    )


# ---------------------------------------------------------------------- literature
@dataclass(frozen=True, slots=True)
class Reference:
    """A row of shared/literature-graphs/README.md. ``best_pct``: best-known overhead (None:
    infeasible or unknown); ``proven``: "any" (optimal for any schedule: both exact models
    agree), "C=2" (for at most two computations per value) or "" (not proven). ``milp_s`` /
    ``cpsat_s``: seconds the exact Checkmate MILP / the Moccasin-style CP-SAT took on the same
    machine (None: not run); ``*_done`` False: no result by then (a lower bound on the time)."""

    best: str
    time: str
    best_pct: float | None
    proven: str
    milp_s: float | None
    cpsat_s: float | None
    milp_done: bool = True
    cpsat_done: bool = True
    infeasible: bool = False


# (graph, budget) -> reference, from shared/literature-graphs/README.md. MobileNet 80 %: the
# 37.5 s run (presolve off) is the faster of the two published; ResNet50: time to 0.309 %, no proof
REFERENCE = {
    ("VGG16", 0.9): Reference(
        "1.968 % (proven)", "1.0 s MILP / 1.6 s CP-SAT", 1.968, "any", 1.0, 1.6
    ),
    ("VGG16", 0.8): Reference(
        "infeasible (proven)", "20 s MILP / 0.9 s CP-SAT", None, "any", 20.0, 0.9, infeasible=True
    ),
    ("fcn_8_vgg", 0.9): Reference(
        "0.029 % (proven)", "7.2 s MILP / 14.7 s CP-SAT", 0.029, "any", 7.2, 14.7
    ),
    ("fcn_8_vgg", 0.8): Reference(
        "0.136 % (proven)", "12.8 s MILP / 17.3 s CP-SAT", 0.136, "any", 12.8, 17.3
    ),
    ("rl100", 0.9): Reference("0.789 % (C=2)", "52 s CP-SAT", 0.789, "C=2", 120.0, 52.0, False),
    ("rl100", 0.8): Reference("2.296 % (C=2)", "56 s CP-SAT", 2.296, "C=2", 120.0, 56.0, False),
    ("MobileNet", 0.9): Reference(
        "0.163 % (C=2)", "186 s CP-SAT", 0.163, "C=2", 120.0, 186.0, False
    ),
    ("MobileNet", 0.8): Reference(
        "0.370 % (C=2)", "240 s; 37.5 s presolve off", 0.370, "C=2", 120.0, 37.5, False
    ),
    ("ResNet50", 0.8): Reference("<= 0.309 %", "0.309 % at 77 s, no proof", 0.309, "", None, 77.0),
    ("rl1000", 0.8): Reference(
        "unknown", "no plan in 360 s", None, "", None, 360.0, cpsat_done=False
    ),
}


def _lit_status(res: SolveResult, copies: int = 2) -> str:
    """Status text: proofs say whether they hold for ``copies`` computations per value (C) or
    for any schedule."""
    any_lb = res.info.get("any_schedule_bound", 0.0)
    c = f"C={copies}"
    if res.status is SolveStatus.INFEASIBLE:
        return "infeasible (any schedule)" if any_lb == math.inf else f"infeasible ({c})"
    if not res.status.has_plan:
        return "no plan"
    if res.status is SolveStatus.OPTIMAL:
        return "optimal (any schedule)" if any_lb >= res.objective else f"optimal ({c})"
    proof = "any schedule" if any_lb >= res.bound else c
    return f"feasible, gap {100 * res.gap:.1f} % ({proof})"


def literature_row(
    path: pathlib.Path, frac: float, time_limit_s: float, workers: int, copies: int = 2
) -> dict:
    """Solve one (graph, budget) with at most ``copies`` computations per value and re-check
    the plan with the simulator."""
    lit = load(path)
    seq = lit.sequence
    budget = int(frac * lit.no_remat_peak_bytes())
    res = solve_sequence(
        seq, budget, num_copies=copies, time_limit_s=time_limit_s, num_workers=workers
    )
    row = {
        "graph": lit.name,
        "nodes": seq.num_nodes,
        "budget": frac,
        "budget_bytes": budget,
        "copies": copies,
        "status": _lit_status(res, copies),
        "total_s": res.wall_s,
    }
    if res.status.has_plan:
        sim = simulate(seq, res.info["plan"])
        if not sim.valid or sim.peak_bytes > budget or sim.recompute_cost != res.objective:
            raise RuntimeError(
                f"{lit.name} at {frac}: the plan does not re-simulate ({sim.reason})"
            )
        row.update(
            overhead_pct=100 * sim.recompute_cost / seq.total_cost,
            bound_pct=100 * res.bound / seq.total_cost,
            peak_bytes=sim.peak_bytes,
            recomputations=res.info["plan"].num_recomputations,
            first_s=res.info["time_to_first_s"],
            best_s=res.info["time_to_best_s"],
        )
    ref = REFERENCE.get((lit.name, frac))
    row.update(
        best_known=ref.best if ref else "",
        reference=ref.time if ref else "",
        vs_best=_vs_best(row, ref),
    )
    return row


def _vs_best(row: dict, ref: Reference | None) -> str:
    """How the row compares with the best-known result (overheads rounded as published)."""
    if ref is None:
        return ""
    if ref.infeasible:
        ours = row["status"].startswith("infeasible")
        return "matched proven infeasibility" if ours else "differs: proven infeasible"
    if "overhead_pct" not in row:
        return ""
    if ref.best_pct is None:
        return "a plan; none published"
    ours = round(row["overhead_pct"], 3)
    if ours == ref.best_pct:
        return {"any": "matched proven optimum", "C=2": "matched C=2 optimum"}.get(
            ref.proven, "matched best known"
        )
    if ours < ref.best_pct:
        return "below best known"
    return f"+{ours - ref.best_pct:.3f} pp"


def literature_markdown(rows: list[dict]) -> str:
    head = (
        "| graph | nodes | budget | our overhead | best known | status | first plan s "
        "| best plan s | total s | reference time | vs best known |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def fmt(r: dict) -> str:
        ours = f"{r['overhead_pct']:.3f} %" if "overhead_pct" in r else "-"
        first = f"{r['first_s']:.2f}" if "first_s" in r else "-"
        best = f"{r['best_s']:.2f}" if "best_s" in r else "-"
        return (
            f"| {r['graph']} | {r['nodes']} | {r['budget']:.0%} | {ours} | {r['best_known']} "
            f"| {r['status']} | {first} | {best} | {r['total_s']:.2f} | {r['reference']} "
            f"| {r['vs_best']} |"
        )

    return head + "\n".join(fmt(r) for r in rows) + "\n"


def literature_cases(args: argparse.Namespace) -> list[tuple[str, float]]:
    """The (graph, budget) rows: the reference table's, or the product of --graphs/--budgets."""
    if not (args.graphs or args.budgets):
        return list(REFERENCE)
    graphs = args.graphs or sorted({g for g, _ in REFERENCE})
    return [(g, b) for g in graphs for b in (args.budgets or [0.9, 0.8])]


def run_literature(args: argparse.Namespace) -> tuple[list[dict], str]:
    rows = []
    for graph, frac in literature_cases(args):
        path = args.graphs_dir / f"{graph}.json"
        with solve_progress(args.time_limit, args.progress, desc=f"{graph} at {frac:.0%}"):
            rows.append(literature_row(path, frac, args.time_limit, args.workers, args.copies))
        if args.progress:
            print(literature_markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows, literature_markdown(rows)


def _check_graphs(args: argparse.Namespace) -> str | None:
    """What is wrong with --graphs-dir / --graphs (None: nothing)."""
    where = args.graphs_dir
    if not where.is_dir():
        return (
            f"--graphs-dir {str(where)!r} is not a directory: point it at shared/literature-graphs "
            "(the graphs are GPL data, not part of this repository)"
        )
    missing = [g for g, _ in literature_cases(args) if not (where / f"{g}.json").is_file()]
    if missing:
        stems = sorted(p.stem for p in where.glob("*.json"))
        return f"--graphs: no {sorted(set(missing))} in {str(where)!r}; available: {stems}"
    return None


# ---------------------------------------------------------------------- command line
def _checked(convert: type, ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert(text)``, refused unless ``ok(value)``, naming ``what``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_fraction = _checked(float, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
_count = _checked(int, lambda v: v >= 1, "a whole number >= 1")
_copies = _checked(int, lambda v: v >= 2, "a whole number >= 2")


def _add_time_limit(p: argparse.ArgumentParser, default: float, per: str) -> None:
    p.add_argument(
        "--time-limit",
        type=_positive_float,
        default=default,
        metavar="SECONDS",
        help=f"solver time limit per {per} (default {default:g})",
    )


def _add_outputs(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument(
        "--out",
        type=pathlib.Path,
        metavar="DIR",
        help="write DIR/NAME.md, DIR/NAME.json and DIR/NAME.png (DIR is created)",
    )
    p.add_argument("--name", default=name, help=f"file stem under --out (default {name})")
    p.add_argument("--md", type=pathlib.Path, metavar="PATH", help="also write the table here")
    p.add_argument("--json", type=pathlib.Path, metavar="PATH", help="also write the JSON here")
    p.add_argument("--plot", type=pathlib.Path, metavar="PATH", help="also write the PNG here")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress")


def build_parser(prog: str = "python -m graphremat.bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="graphremat's benchmarks: a markdown table on stdout; with --out DIR, "
        "DIR/NAME.md, .json and .png. Every plan is re-checked by an independent replay.",
    )
    sub = parser.add_subparsers(dest="benchmark", metavar="{scale,literature,zoo}", required=True)
    s = sub.add_parser(
        "scale",
        help="CP-SAT on a GPT's op-level joint graph: first plan, objective, bound, gap",
        description="Capture a GPT training step's joint graph (GPT-2-small shape by default) "
        "and solve each budget, a fraction of the save-all plan's peak.",
    )
    s.add_argument("--layers", type=_count, default=12, help="blocks (default 12)")
    for key, value in GPT2_SMALL.items():
        s.add_argument(f"--{key}", type=_count, default=value, help=f"default {value}")
    _add_time_limit(s, 30.0, "budget")
    s.add_argument(
        "--budgets",
        type=_fraction,
        nargs="+",
        default=[0.8, 0.6, 0.4],
        metavar="FRAC",
        help="fractions of the save-all peak (default 0.8 0.6 0.4)",
    )
    s.add_argument("--workers", type=_count, default=1, help="CP-SAT workers (default 1)")
    _add_outputs(s, "scale")

    lit = sub.add_parser(
        "literature",
        help="the Checkmate / Moccasin papers' graphs vs the published solve times",
        description="Solve the literature graphs read from --graphs-dir under the papers' "
        "memory model. Without --graphs/--budgets: the rows of that directory's README table.",
    )
    lit.add_argument(
        "--graphs-dir",
        type=pathlib.Path,
        default=pathlib.Path("../shared/literature-graphs"),
        metavar="DIR",
        help="shared/literature-graphs (default ../shared/literature-graphs)",
    )
    _add_time_limit(lit, 120.0, "row")
    lit.add_argument("--graphs", nargs="+", help="graph file stems (default: the README rows)")
    lit.add_argument(
        "--budgets",
        nargs="+",
        type=_fraction,
        metavar="FRAC",
        help="fractions of the no-remat peak (default 0.9 0.8 with --graphs)",
    )
    lit.add_argument("--workers", type=_count, default=2, help="CP-SAT workers (default 2)")
    lit.add_argument(
        "--copies",
        type=_copies,
        default=2,
        metavar="C",
        help="computations per value the CP-SAT model allows (default 2, the papers' C=2; "
        "proofs that hold only for this class are labelled (C=...))",
    )
    _add_outputs(lit, "literature")

    zoo = sub.add_parser(
        "zoo",
        help="real architectures against stock torch.compile, PyTorch's knob, checkpointing",
        description="Each zoo model (graphremat.zoo) in a fresh process: every baseline and "
        "graphremat at each baseline's measured peak, peaks measured, steps timed interleaved.",
    )
    from .zoo_bench import add_arguments

    add_arguments(zoo)
    return parser


def _outputs(args: argparse.Namespace) -> dict[str, pathlib.Path]:
    """Where the table, the JSON and the plot go ("md", "json", "png"), if anywhere."""
    paths = {}
    if args.out is not None:
        paths = {ext: args.out / f"{args.name}.{ext}" for ext in ("md", "json", "png")}
    for ext, given in (("md", args.md), ("json", args.json), ("png", args.plot)):
        if given is not None:
            paths[ext] = given
    return paths


def main(argv: list[str] | None = None, prog: str = "python -m graphremat.bench") -> int:
    """Run a benchmark on ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return EXIT_OK if e.code is None else e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.benchmark == "zoo":
        from .zoo_bench import run

        return run(args)
    scale = args.benchmark == "scale"
    if scale and args.hidden % args.heads:
        return _usage(
            f"{parser.prog} {args.benchmark}",
            f"--hidden {args.hidden} is not a multiple of --heads {args.heads}",
        )
    if not scale and (problem := _check_graphs(args)):
        return _usage(f"{parser.prog} {args.benchmark}", problem)
    if args.out is not None:
        if args.out.exists() and not args.out.is_dir():
            return _usage(
                f"{parser.prog} {args.benchmark}",
                f"--out {str(args.out)!r} exists and is not a directory",
            )
        args.out.mkdir(parents=True, exist_ok=True)
    paths = _outputs(args)
    try:
        png = str(paths["png"]) if "png" in paths else None
        _check_outputs([str(paths[k]) for k in ("md", "json") if k in paths], png)
    except UsageError as e:
        return _usage(f"{parser.prog} {args.benchmark}", str(e))

    doc, table = (run_scale if scale else run_literature)(args)
    print(table)
    if "md" in paths:
        paths["md"].write_text(table, "utf-8")
    if "json" in paths:
        paths["json"].write_text(json.dumps(doc, indent=1) + "\n", "utf-8")
    if "png" in paths:
        from .bench_plot import plot_literature, plot_scale

        draw = plot_scale if scale else plot_literature
        _save_plot(lambda: draw(doc).axes[0], str(paths["png"]))
    for path in paths.values():
        print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def _usage(prog: str, message: str) -> int:
    """A usage error found after parsing, reported as argparse reports its own."""
    print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
