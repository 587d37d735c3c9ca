"""How far graphremat's schedule class is from the unrestricted Checkmate optimum, on small real
joint graphs (the exact Checkmate model is only tractable there).

    python benchmarks/checkmate_gap.py

For budgets spread between graphremat's minimum feasible peak and the no-remat peak, prints
graphremat's optimal recompute cost (CP-SAT, proven) and Checkmate's (any number of
recomputations, any placement; same memory accounting), both in the roofline cost unit (ns).
"""

from __future__ import annotations

import pathlib
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

from graphremat.solvers.checkmate import solve_checkmate  # noqa: E402
from graphremat.solvers.cpsat import min_peak, solve_cpsat  # noqa: E402
from graphremat.solvers.problem import evaluate, save_all_set  # noqa: E402
from joint import joint_graph  # noqa: E402

from graphremat.calibrate import annotate_workspace  # noqa: E402
from graphremat.capture import capture_joint  # noqa: E402
from graphremat.passes import split_dropout  # noqa: E402


class Chain(nn.Module):
    def __init__(self, depth=4, width=64):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = torch.tanh(layer(x)) if i % 2 else F.gelu(layer(x))
        return x.square().mean()


class Block(nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        h = x + self.drop(self.fc2(F.gelu(self.fc1(self.ln(x)))))
        return h.square().mean()


def main() -> None:
    torch.manual_seed(0)
    cases = {
        "chain4": (Chain(), torch.randn(256, 64)),
        "mlp_block": (Block(), torch.randn(256, 64)),
    }
    print(
        "| graph | storages | budget (frac of no-remat) | graphremat cost | Checkmate cost | gap |"
    )
    print("|---|---|---|---|---|---|")
    for name, (model, x) in cases.items():
        joint, nfo = joint_graph(model, x)
        split_dropout(joint)
        annotate_workspace(joint)
        p = capture_joint(joint, nfo).problem
        hi = evaluate(p, save_all_set(p)).peak_bytes
        lo = min_peak(p).peak_bytes
        for k in range(-1, 4):
            # k = -1: below graphremat's minimum, where only unrestricted schedules may fit
            budget = int(lo * 0.93) if k < 0 else lo + (hi - lo) * k // 4
            ours = solve_cpsat(p, budget, time_limit_s=60)
            cm = solve_checkmate(p, budget, time_limit_s=120, num_workers=2)
            ref = cm.info.get("recompute_cost", float("nan"))
            gap = (
                (ours.objective - ref) / ours.objective
                if ours.status.has_plan and ours.objective
                else 0.0
            )
            print(
                f"| {name} | {p.graph.number_of_nodes()} | {budget / hi:.3f} | "
                f"{ours.objective:.0f} ({ours.status.value}) | {ref:.0f} ({cm.status.value}) | "
                f"{gap:.1%} |"
            )
        print(f"| {name} | | graphremat minimum peak {lo / hi:.3f} of no-remat | | | |")


if __name__ == "__main__":
    main()
