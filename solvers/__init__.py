"""graphremat's solver layer: rematerialization problems, schedules and solvers.

This package imports no deep-learning framework. It takes a :class:`RematProblem` (a networkx DAG
with plain-number annotations plus the fixed forward and backward orders) and returns a
:class:`SolveResult`. Installed as ``graphremat.solvers``.
"""

from .problem import Evaluation, RematProblem, evaluate
from .registry import SOLVERS, get_solver
from .result import SolveResult, SolveStatus

__all__ = [
    "Evaluation",
    "RematProblem",
    "SOLVERS",
    "SolveResult",
    "SolveStatus",
    "evaluate",
    "get_solver",
]
