"""``python -m graphremat.demo``: plan and run a small MLP's training step under a budget.

Prints the plan (predicted peak, what is recomputed) and the measured peak of the compiled step.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch import nn

import graphremat
from graphremat.budget import format_bytes
from graphremat.measure import measure_peak_memory


class DeepMLP(nn.Module):
    def __init__(self, depth: int = 12, width: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(64, width)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(width, width)]
        self.net = nn.Sequential(*layers, nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.net(x), y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", default="0.6", help='bytes, "12MiB", or a fraction (0.6)')
    parser.add_argument("--codegen", default="eager", choices=["eager", "inductor"])
    args = parser.parse_args(argv)
    budget: int | float | str = args.budget
    try:
        budget = float(budget) if "." in budget else int(budget)
    except ValueError:
        pass
    torch.manual_seed(0)
    model = DeepMLP()
    x, y = torch.randn(1024, 64), torch.randint(0, 10, (1024,))

    plan = graphremat.plan(model, x, y, budget=budget, codegen=args.codegen)
    print(plan.summary())

    compiled_model = copy.deepcopy(model)
    cmodel = graphremat.compile(compiled_model, budget=budget, codegen=args.codegen)

    def step(*_):
        compiled_model.zero_grad(set_to_none=True)
        cmodel(x, y).backward()

    step()  # compile, and warm up
    compiled_model.zero_grad(set_to_none=True)
    peak = measure_peak_memory(step, compiled_model, x, y)
    print(
        f"measured peak of the compiled step: {format_bytes(peak)} ({peak} bytes); "
        f"budget {format_bytes(plan.budget_bytes)}: "
        + ("OK" if peak <= plan.budget_bytes else "EXCEEDED")
    )


if __name__ == "__main__":
    main()
