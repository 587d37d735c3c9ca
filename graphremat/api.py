"""Public entry points: :func:`compile` and :func:`plan`."""

from __future__ import annotations

import contextlib
import functools
import gc
import warnings
from collections.abc import Callable

import torch

from .backend import GraphrematBackend
from .errors import GraphRematError, StepAgain, UnsupportedGraph, find_cause
from .planner import Options, PlanReady
from .regions import Regions
from .report import Plan
from .solvers.result import SolveResult

#: how many times the first call of a model may run its forward (StepAgain: each run can find
#: one more region that needs the regions before it to keep less)
MAX_FIRST_CALL_RUNS = 5

#: Dynamo's recompile limits while a graphremat-compiled model runs (see _raising_graphremat_errors)
UNLIMITED_RECOMPILES = 2**20


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
    cache: bool | str = True,
    max_recomputes: int = 1,
    cost_model: str = "roofline-v2",
    stock_cap: bool = True,
    fullgraph: bool = False,
    dynamic: bool | None = False,
):
    """Compile ``model`` so that its training step's peak memory stays within ``budget``.

    ``budget``: bytes (int), a string with a unit ("1.5GiB", "800MB"), or a fraction in (0, 1]
    of the step's peak without rematerialization. Returns the ``torch.compile``d model; its
    ``graphremat_plans`` attribute lists the plan of each compiled region (filled on first call).
    Raises :class:`~graphremat.InfeasibleBudget` (with ``min_feasible_bytes``) when no plan fits.
    ``calibrate`` ("auto", True, False): run each op of the captured graph once on real tensors to
    measure its hidden workspace ("auto": on CPU/CUDA graphs whose run, each value freed after
    its last use, peaks under 2 GiB).
    ``cache``: keep solved plans on disk and reuse them (re-checked) when the same graph and
    budget come again: True ($GRAPHREMAT_CACHE_DIR or ~/.cache/graphremat), a directory, or False.
    ``seed``, ``num_workers``: the solver's seed, and how many one-worker CP-SAT solves run side
    by side (a portfolio, graphremat/solvers/sat.py); the same pair gives the same plan (for
    a CPU model, at the same torch thread count: see ``cost_model``).
    ``max_recomputes``: 1 (default) recomputes a value at most once, just before the backward
    needs it; k > 1 lets the solver recompute a value up to k times, anywhere in the backward
    (lower peaks, for graphs of a few hundred decisions; see graphremat/solvers/multi.py).
    ``cost_model``: what a recomputation costs the solver: "roofline-v2" (default) its roofline
    runtime (FLOPs and bytes moved; a CPU's FLOPs at torch's thread count when planning), plus,
    with ``codegen="eager"``, each op's dispatch (graphremat.capture.EAGER_DISPATCH_NS: many
    tiny ops are not free); "roofline-v1": the roofline with fixed constants alone;
    "measured" (``codegen="eager"`` only): each forward op timed on this machine while
    planning (on made-up inputs of its shapes; the times are cached with the plans, so a model
    compiled again on this machine gets the same plan); plans then differ between machines and
    thread counts, and between first compiles.
    ``stock_cap``: True (default) never plans a peak above what stock torch.compile's own plan
    (PyTorch's min-cut partition of the same graph) peaks at in graphremat's model, so a loose
    budget (1.0 included) keeps no more memory than not using graphremat, for at most that
    plan's recompute cost; False lets a budget above it keep more and recompute less.

    A model with graph breaks compiles to several regions that share the budget
    (graphremat.regions); where a later region needs the earlier ones to keep less, the first
    call runs the model's forward again after planning them again (buffers and random state
    restored, with a warning).
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
        cache=cache,
        max_recomputes=max_recomputes,
        cost_model=cost_model,
        stock_cap=stock_cap,
    )
    if not callable(model):
        raise GraphRematError(
            f"compile() takes an nn.Module or a callable, not {type(model).__name__}"
        )
    if _is_fsdp2(model):
        warnings.warn(
            "graphremat: under FSDP2 the budget is not a strict promise for the whole step: "
            "graphremat counts the other blocks' saved activations and FSDP2's own buffers "
            "(all-gathered parameters, unsharded gradients) by a model of FSDP2 fitted to "
            "measurements on CPU with gloo, not by replaying FSDP2. Leave headroom, and measure "
            "the step (graphremat.measure_peak_memory).",
            RuntimeWarning,
            stacklevel=2,
        )
    backend = GraphrematBackend(options, model=model)
    compiled = torch.compile(model, backend=backend, fullgraph=fullgraph, dynamic=dynamic)
    if isinstance(compiled, torch.nn.Module):
        compiled.forward = _raising_graphremat_errors(
            compiled.forward, model, backend.plans, backend.partitioner.regions
        )
    else:
        compiled = _raising_graphremat_errors(
            compiled, model, backend.plans, backend.partitioner.regions
        )
    compiled.graphremat_plans = backend.plans
    compiled.graphremat_backend = backend
    return compiled


def _raising_graphremat_errors(
    fn: Callable, model: object = None, plans: list | None = None, regions: Regions | None = None
) -> Callable:
    """Re-raise graphremat's own errors as themselves, not wrapped in Dynamo's
    BackendCompilerFailed, so ``except graphremat.InfeasibleBudget`` works.

    Also lifts Dynamo's recompile limit while the model runs: past it Dynamo would run the
    step eagerly, without any plan, so the budget would silently not hold (every new input
    shape needs its own plan; other compiles of the same model class count towards the limit).
    If a training call still ran without any plan (Dynamo had given up on the model's code
    before graphremat saw it), warns: the budget is then not enforced. With ``regions``, replays
    each call's runs of the compiled regions against their plans (graphremat.regions) and
    warns where a run's whole-step peak exceeds its budget (the region is then planned again);
    and runs the model's first call again where a later region needed the earlier ones, which
    had run, to keep less (StepAgain; buffers and random state restored, one warning).
    """

    @functools.wraps(fn)
    def call(*args, **kwargs):
        # the first call of a model with graph breaks may be run again (StepAgain): keep what
        # its forward changes outside the autograd graph (buffers, the RNG state) to restore
        state = _call_state(model) if regions is not None and regions.step == 0 else None
        reasons: list[str] = []  # why the call ran again, per run
        for run in range(MAX_FIRST_CALL_RUNS):
            if reasons:
                # the last try's tensors (its frames' locals, autograd graph) go with the
                # tracebacks cleared below; then the state before the call comes back
                gc.collect()
                _restore(model, state)
            try:
                if regions is not None:
                    regions.begin_step(again=run > 0)
                    regions.can_run_again = state is not None and run + 1 < MAX_FIRST_CALL_RUNS
                    regions.runs_of_call = run + 1
                with _lifted_recompile_limits():
                    out = fn(*args, **kwargs)
                break
            except (torch._dynamo.exc.BackendCompilerFailed, StepAgain) as e:
                # (a region compiled again before a run of the call, graphremat.regions, raises
                # its StepAgain as itself: that compile does not go through Dynamo)
                found = find_cause(e, (GraphRematError,))
                if isinstance(found, StepAgain) and state is not None:
                    _forget_frames(e)
                    reasons.append(str(found))
                    continue
                if found is not None:
                    raise found.with_traceback(None) from None
                raise
            except RuntimeError as e:
                _raise_if_mixed_devices(e, model, args, kwargs)
                raise
            finally:
                if regions is not None:
                    regions.can_run_again = False
        if reasons:
            warnings.warn(
                f"graphremat: the first call ran the model's forward {len(reasons) + 1} times, "
                "its backward once: "
                + "; then ".join(reasons)
                + ". The model's buffers and the random number generators' state were restored "
                "before each run; other side effects of its forward happened each time.",
                RuntimeWarning,
                stacklevel=2,
            )
        ran_region = regions is not None and bool(regions.ran)
        problem = regions.end_step() if regions is not None else None
        if problem is not None:
            warnings.warn(problem, RuntimeWarning, stacklevel=2)
        fell_back = regions is not None and regions.fallbacks
        if plans is not None and not plans and not fell_back and _needs_grad(out):
            warnings.warn(
                "graphremat: this training step ran without a plan: Dynamo compiled no graph "
                "for it, so the budget is NOT enforced. Either it cannot trace the model's "
                "code (an nn.LSTM/GRU/RNN, say, which it leaves to eager; "
                "TORCH_LOGS=graph_breaks shows why), or it "
                "gave up on this code earlier (e.g. at its recompile limit before "
                "graphremat.compile was called: call torch._dynamo.reset() first).",
                RuntimeWarning,
                stacklevel=2,
            )
        elif plans and regions is not None and not ran_region and _needs_grad(out):
            warnings.warn(
                "graphremat: this training step ran none of graphremat's compiled code (Dynamo "
                "ran the model eagerly, e.g. under torch.compiler.set_stance('force_eager')), "
                "so the budget was NOT enforced for it.",
                RuntimeWarning,
                stacklevel=2,
            )
        return out

    return call


@contextlib.contextmanager
def _lifted_recompile_limits():
    """Dynamo's recompile limits set to UNLIMITED_RECOMPILES, restored on exit (process-wide
    while the call runs: another thread compiling meanwhile sees them too). Set directly, not
    with ``config.patch``: a patched (thread-local) config made every call of the test Llama
    ~0.05-0.1 ms slower (its forward takes ~3.3 ms), setting and restoring ~0.02 ms."""
    config = torch._dynamo.config
    before = config.recompile_limit, config.accumulated_recompile_limit
    config.recompile_limit = config.accumulated_recompile_limit = UNLIMITED_RECOMPILES
    try:
        yield
    finally:
        config.recompile_limit, config.accumulated_recompile_limit = before


def _call_state(model: object) -> tuple | None:
    """What a call of ``model`` changes outside its autograd graph and StepAgain restores:
    copies of its buffers (on the CPU) and the CPU's and CUDA devices' generator states. None
    if the call cannot be run again: a model that is not an ``nn.Module`` (its state is not
    known), or under torch.distributed with several processes (a collective would run twice
    on this rank only)."""
    if not isinstance(model, torch.nn.Module):
        return None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_world_size() > 1:
            return None
    with torch.no_grad():
        buffers = [(b, b.detach().to("cpu", copy=True)) for b in model.buffers()]
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return buffers, torch.get_rng_state(), cuda


def _forget_frames(e: BaseException) -> None:
    """Drop the tracebacks of ``e`` and of every exception it wraps or was raised during:
    their frames hold the tensors of the interrupted call (Dynamo's frame being compiled)."""
    seen: set[int] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        x.__traceback__ = None
        stack += [getattr(x, "inner_exception", None), x.__cause__, x.__context__]


def _restore(model: object, state: tuple) -> None:
    buffers, cpu, cuda = state
    with torch.no_grad():
        for b, copy in buffers:
            b.copy_(copy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _is_fsdp2(model: object) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, torch.nn.Module) and any(
        isinstance(m, FSDPModule) for m in model.modules()
    )


def _needs_grad(out: object) -> bool:
    leaves = torch.utils._pytree.tree_leaves(out)
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in leaves
    )


def _raise_if_mixed_devices(e: RuntimeError, model: object, args: tuple, kwargs: dict) -> None:
    """Dynamo fails to trace a step whose tensors sit on several devices with a long trace
    through torch internals: say which devices instead (only once tracing has failed, so a
    model that moves tensors between devices itself is never refused)."""
    leaves = torch.utils._pytree.tree_leaves((args, kwargs))
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    if isinstance(model, torch.nn.Module):
        tensors += [*model.parameters(), *model.buffers()]
    found = sorted({str(t.device) for t in tensors})
    if len(found) > 1 and "device" in str(e):
        raise UnsupportedGraph(
            f"the model's inputs and parameters are on several devices ({', '.join(found)}), so "
            "the step cannot be traced. Move the model and every input to one device "
            "(model.to(device), x.to(device)) before compiling or planning."
        ) from e


def plan(model: torch.nn.Module | Callable, *inputs, budget: int | float | str, **options) -> Plan:
    """Solve only: capture ``model(*inputs)``'s training step and return its :class:`Plan`.

    Nothing is executed: compilation stops once the plan is made. ``model(*inputs)`` must return
    the loss (a scalar), so that the whole step is one joint graph. Options as for :func:`compile`.
    """
    options.setdefault("codegen", "eager")
    opts = Options.make(budget, **options)
    if not callable(model):
        raise GraphRematError(
            f"plan() takes an nn.Module or a callable, not {type(model).__name__}"
        )
    backend = GraphrematBackend(opts, plan_only=True, model=model)
    compiled = torch.compile(model, backend=backend, dynamic=False)
    try:
        # planning stores no compiled code, but earlier compiles of the same model class count
        # towards Dynamo's recompile limit: past it Dynamo would run eager and plan nothing
        with torch._dynamo.config.patch(
            recompile_limit=UNLIMITED_RECOMPILES, accumulated_recompile_limit=UNLIMITED_RECOMPILES
        ):
            compiled(*inputs)
    except Exception as e:  # compilation is stopped on purpose by PlanReady
        found = find_cause(e, (PlanReady, GraphRematError))
        if isinstance(found, PlanReady):
            return found.plan
        if isinstance(found, GraphRematError):
            raise found.with_traceback(None) from None
        if isinstance(e, RuntimeError):
            _raise_if_mixed_devices(e, model, inputs, {})
        raise
    raise UnsupportedGraph(
        "no training graph was captured: make sure the model is in train mode, has parameters "
        "that require grad, grad mode is enabled, and the forward returns a tensor"
    )
