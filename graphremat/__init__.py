"""graphremat: optimal activation rematerialization for PyTorch training steps.

    cmodel = graphremat.compile(model, budget="1.5GiB")   # or 0.5, or 1_500_000_000
    p = graphremat.plan(model, x, budget=0.5)              # solve only
    print(p.summary()); print(p.explain()); p.plot_timeline()
    s = graphremat.sweep(model, x, budgets=[1.0, 0.7, 0.5, "min"], pytorch_budgets=[0.5])

Torch-dependent entry points load lazily, so ``import graphremat.solvers`` stays torch-free.
"""

__version__ = "0.1.0"

from .budget import Budget, format_bytes, parse_budget  # noqa: E402
from .errors import (  # noqa: E402
    BudgetError,
    GraphRematError,
    InfeasibleBudget,
    PlanFormatError,
    SolverFailed,
    UnsupportedGraph,
)

_LAZY = {
    "compile": "api",
    "plan": "api",
    "Plan": "report",
    "TensorRecord": "report",
    "sweep": "sweeps",
    "max_batch_size": "batch",
    "BatchSearch": "batch",
    "Sweep": "sweeps",
    "SweepPoint": "sweeps",
    "Options": "planner",
    "ConfigError": "planner",
    "measure_peak_memory": "measure",
}

__all__ = [
    "Budget",
    "BatchSearch",
    "BudgetError",
    "ConfigError",
    "GraphRematError",
    "InfeasibleBudget",
    "Options",
    "Plan",
    "PlanFormatError",
    "SolverFailed",
    "Sweep",
    "SweepPoint",
    "TensorRecord",
    "UnsupportedGraph",
    "__version__",
    "compile",
    "format_bytes",
    "max_batch_size",
    "measure_peak_memory",
    "parse_budget",
    "plan",
    "sweep",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graphremat' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
