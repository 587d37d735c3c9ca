"""Public entry points: :func:`compile` and :func:`plan`."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .backend import GraphrematBackend
from .errors import GraphRematError, UnsupportedGraph
from .planner import Options, PlanReady
from .report import Plan
from .solvers.result import SolveResult


def compile(
    model: torch.nn.Module | Callable,
    budget: int | float | str,
    *,
    solver: str | Callable[..., SolveResult] = "cpsat",
    codegen: str = "inductor",
    time_limit_s: float = 60.0,
    fallback: str | None = None,
    seed: int = 0,
    num_workers: int = 1,
    log_progress: bool = False,
    calibrate: bool | str = "auto",
    fullgraph: bool = False,
    dynamic: bool | None = False,
):
    """Compile ``model`` so that its training step's peak memory stays within ``budget``.

    ``budget``: bytes (int), a string with a unit ("1.5GiB", "800MB"), or a fraction in (0, 1]
    of the step's peak without rematerialization. Returns the ``torch.compile``d model; its
    ``graphremat_plans`` attribute lists the plan of each compiled region (filled on first call).
    Raises :class:`~graphremat.InfeasibleBudget` (with ``min_feasible_bytes``) when no plan fits.
    ``calibrate`` ("auto", True, False): run each op of the captured graph once on real tensors to
    measure its hidden workspace ("auto": on CPU/CUDA graphs under 2 GiB of values).
    """
    options = Options.make(
        budget,
        solver=solver,
        codegen=codegen,
        time_limit_s=time_limit_s,
        fallback=fallback,
        seed=seed,
        num_workers=num_workers,
        log_progress=log_progress,
        calibrate=calibrate,
    )
    if not callable(model):
        raise GraphRematError(
            f"compile() takes an nn.Module or a callable, not {type(model).__name__}"
        )
    backend = GraphrematBackend(options)
    compiled = torch.compile(model, backend=backend, fullgraph=fullgraph, dynamic=dynamic)
    if isinstance(compiled, torch.nn.Module):
        compiled.forward = _raising_graphremat_errors(compiled.forward)
    else:
        compiled = _raising_graphremat_errors(compiled)
    compiled.graphremat_plans = backend.plans
    compiled.graphremat_backend = backend
    return compiled


def _raising_graphremat_errors(fn: Callable) -> Callable:
    """Re-raise graphremat's own errors as themselves, not wrapped in Dynamo's
    BackendCompilerFailed, so ``except graphremat.InfeasibleBudget`` works."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as e:
            found = _unwrap(e)
            if isinstance(found, GraphRematError):
                raise found.with_traceback(None) from None
            raise

    return call


def _unwrap(e: BaseException) -> BaseException:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (PlanReady, GraphRematError)):
            return e
        inner = getattr(e, "inner_exception", None) or e.__cause__ or e.__context__
        if inner is None:
            return e
        e = inner
    return e


def plan(model: torch.nn.Module | Callable, *inputs, budget: int | float | str, **options) -> Plan:
    """Solve only: capture ``model(*inputs)``'s training step and return its :class:`Plan`.

    Nothing is executed: compilation stops once the plan is made. ``model(*inputs)`` must return
    the loss (a scalar), so that the whole step is one joint graph. Options as for :func:`compile`.
    """
    options.setdefault("codegen", "eager")
    opts = Options.make(budget, **options)
    backend = GraphrematBackend(opts, plan_only=True)
    compiled = torch.compile(model, backend=backend, dynamic=False)
    try:
        compiled(*inputs)
    except Exception as e:  # compilation is stopped on purpose by PlanReady
        found = _unwrap(e)
        if isinstance(found, PlanReady):
            return found.plan
        if isinstance(found, GraphRematError):
            raise found.with_traceback(None) from None
        raise
    raise UnsupportedGraph(
        "no training graph was captured: make sure the model is in train mode, has parameters "
        "that require grad, grad mode is enabled, and the forward returns a tensor"
    )
