"""graphremat: optimal activation rematerialization for PyTorch training steps.

    cmodel = graphremat.compile(model, budget="1.5GiB")   # or 0.5, or 1_500_000_000
    p = graphremat.plan(model, x, budget=0.5)              # solve only
"""

__version__ = "0.1.0"

from .api import compile, plan  # noqa: E402
from .budget import Budget, format_bytes, parse_budget  # noqa: E402
from .errors import (  # noqa: E402
    BudgetError,
    GraphRematError,
    InfeasibleBudget,
    SolverFailed,
    UnsupportedGraph,
)
from .planner import ConfigError, Options  # noqa: E402
from .report import Plan  # noqa: E402

__all__ = [
    "Budget",
    "BudgetError",
    "ConfigError",
    "GraphRematError",
    "InfeasibleBudget",
    "Options",
    "Plan",
    "SolverFailed",
    "UnsupportedGraph",
    "__version__",
    "compile",
    "format_bytes",
    "measure_peak_memory",
    "parse_budget",
    "plan",
]


def __getattr__(name: str):
    if name == "measure_peak_memory":
        from .measure import measure_peak_memory

        return measure_peak_memory
    raise AttributeError(f"module 'graphremat' has no attribute {name!r}")
