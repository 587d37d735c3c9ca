"""The partition function: capture -> solve -> rewrite -> check, for one joint graph.

Input: the joint graph AOTAutograd hands to a partitioner, and the user's :class:`Options`.
Output: ``(fw_module, bw_module)`` and a :class:`Plan`. A plan is returned only if replaying the
emitted modules (:func:`graphremat.simulate.simulate`) gives a peak <= the budget.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import pickle
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
import torch.distributed as dist
import torch.fx as fx

from . import __version__
from . import _private as P
from . import cache as plan_cache
from .budget import Budget, format_bytes, parse_budget
from .calibrate import (
    annotate_times,
    annotate_workspace,
    devices,
    record_times,
    run_peak_bytes,
)
from .capture import EAGER_DISPATCH_NS, Capture, capture_joint, thread_roofline
from .errors import GraphRematError, InfeasibleBudget, SolverFailed, StepAgain, UnsupportedGraph
from .inductor_check import user_output_bytes
from .passes import split_dropout
from .records import tensor_records
from .regions import Regions
from .report import Plan
from .rewrite import rewrite
from .simulate import simulate
from .solvers import get_solver
from .solvers.cpsat import MinPeak, min_peak, solve_cpsat
from .solvers.greedy import greedy_fit, shed_free
from .solvers.multi import CopyPlan, evaluate_copies, min_peak_multi, solve_multi
from .solvers.problem import (
    Evaluation,
    evaluate,
    fixed_between,
    held_bytes,
    save_all_set,
    with_room_between,
)
from .solvers.result import SolveResult, SolveStatus
from .stock import saved_owners, stock_modules, stock_saved_values

log = logging.getLogger("graphremat")

CODEGENS = ("inductor", "eager")
FALLBACKS = (None, "pytorch")
COST_MODELS = ("roofline-v2", "roofline-v1", "measured")
MAX_RECOMPUTES = 4


class ConfigError(GraphRematError, ValueError):
    """An option graphremat does not accept."""


@dataclass(frozen=True)
class Options:
    """Everything that changes a plan. Validated on construction."""

    budget: Budget
    solver: str | Callable[..., SolveResult] = "cpsat"
    codegen: str = "inductor"
    time_limit_s: float = 60.0
    seed: int = 0
    num_workers: int = 1
    fallback: str | None = None
    log_progress: bool = False
    calibrate: bool | str = "auto"
    # "roofline-v2": roofline runtime per op at torch's thread count (capture.thread_roofline),
    # plus eager's per-op dispatch under codegen="eager" (capture.EAGER_DISPATCH_NS);
    # "roofline-v1": the roofline with fixed constants alone;
    # "measured" (codegen="eager" only): each forward op timed on this machine at plan time
    # (calibrate.measure_times; cached with the plans), roofline-v2 where an op cannot be timed
    cost_model: str = "roofline-v2"
    # solved plans on disk: True = $GRAPHREMAT_CACHE_DIR or ~/.cache/graphremat, a path, or False
    cache: bool | str = True
    # 1: each value recomputed at most once, just in time (scales to 8k-node graphs); k > 1:
    # up to k recomputations per value, placed freely (solvers/multi.py; lower peaks, slower)
    max_recomputes: int = 1
    # never plan a peak above what PyTorch's own partition of the graph peaks at in graphremat's
    # model (stock torch.compile's plan, graphremat.stock): a budget above it gets that plan's
    # memory or less, at no more recompute cost. False: a loose budget keeps more, recomputes less
    stock_cap: bool = True

    def __post_init__(self) -> None:
        mr = self.max_recomputes
        if isinstance(mr, bool) or not isinstance(mr, int) or not 1 <= mr <= MAX_RECOMPUTES:
            raise ConfigError(f"max_recomputes={mr!r} must be an int in [1, {MAX_RECOMPUTES}]")
        if not isinstance(self.cache, (bool, str)) or self.cache == "":
            raise ConfigError(f"cache={self.cache!r}; pass True, False or a directory path")
        if self.codegen not in CODEGENS:
            raise ConfigError(f"codegen={self.codegen!r}; choose one of {CODEGENS}")
        tl = self.time_limit_s
        if (
            isinstance(tl, bool)
            or not isinstance(tl, (int, float))
            or not math.isfinite(tl)
            or tl <= 0
        ):
            raise ConfigError(f"time_limit_s={tl!r} must be a positive number of seconds")
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"fallback={self.fallback!r}; choose one of {FALLBACKS}")
        if self.cost_model not in COST_MODELS:
            raise ConfigError(f"cost_model={self.cost_model!r}; choose one of {COST_MODELS}")
        if self.cost_model == "measured" and self.codegen != "eager":
            raise ConfigError(
                f"cost_model='measured' times each op as eager runs it, but codegen="
                f"{self.codegen!r} fuses ops into kernels: pass codegen='eager', or keep the "
                "default cost model ('roofline-v2') under Inductor"
            )
        if self.calibrate not in (True, False, "auto"):
            raise ConfigError(f"calibrate={self.calibrate!r}; choose True, False or 'auto'")
        # bools are ints to Python; CP-SAT takes both as 32-bit ints
        nw, seed = self.num_workers, self.seed
        if isinstance(nw, bool) or not isinstance(nw, int) or not 1 <= nw < 2**31:
            raise ConfigError(f"num_workers={nw!r} must be an int in [1, 2**31)")
        if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**31) <= seed < 2**31:
            raise ConfigError(f"seed={seed!r} must be an int in [-2**31, 2**31) (CP-SAT's seed)")
        if not isinstance(self.log_progress, bool):
            raise ConfigError(f"log_progress={self.log_progress!r}; pass True or False")
        if not isinstance(self.stock_cap, bool):
            raise ConfigError(f"stock_cap={self.stock_cap!r}; pass True or False")
        try:
            get_solver(self.solver)
        except KeyError as e:
            raise ConfigError(str(e.args[0])) from None

    @classmethod
    def make(cls, budget: object, **kwargs) -> Options:
        known = set(cls.__dataclass_fields__) - {"budget"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; graphremat accepts {sorted(known)}")
        return cls(budget=parse_budget(budget), **kwargs)

    def uuid(self) -> str:
        """Changes with everything that changes the plan (for Inductor's FX graph cache)."""
        solver = (
            self.solver
            if isinstance(self.solver, str)
            else (
                getattr(self.solver, "__module__", "")
                + "."
                + getattr(self.solver, "__qualname__", repr(self.solver))
            )
        )
        key = repr(
            (
                __version__,
                self.budget,
                solver,
                self.codegen,
                self.time_limit_s,
                self.seed,
                self.num_workers,
                self.fallback,
                self.calibrate,
                self.cost_model,
                self.max_recomputes,
                self.stock_cap,
                torch.get_num_threads(),  # roofline-v2's CPU costs depend on it
            )
        )
        return hashlib.sha256(key.encode()).hexdigest()


class PlanReady(Exception):
    """Raised inside compilation by plan-only mode to stop before anything runs."""

    def __init__(self, plan: Plan) -> None:
        super().__init__("plan ready")
        self.plan = plan


@dataclass
class Partitioner(P.CustomPartitionerFn):
    """graphremat's partition function (for ``aot_autograd`` and Inductor's
    ``custom_partitioner_fn``). Every plan it makes is appended to ``plans`` (and to
    ``also_to``, if given: the string backend's RECENT_PLANS)."""

    options: Options
    plans: list[Plan] = field(default_factory=list)
    plan_only: bool = False
    also_to: deque | None = None
    regions: Regions = field(default_factory=Regions)
    # bytes held back from the budget, on top of other regions' (the backend's Inductor check)
    reserve_bytes: int = 0
    # bytes of the last plan's forward outputs that go to the user (for the Inductor check)
    last_user_output_bytes: int = 0

    def __call__(self, joint: fx.GraphModule, joint_inputs, **kwargs):
        num_fwd_outputs = kwargs["num_fwd_outputs"]
        static_idx = kwargs.get("static_lifetime_input_indices") or []
        primals = [n for n in joint.graph.find_nodes(op="placeholder") if P._is_primal(n)]
        static_nodes = {p for i, p in enumerate(primals) if i in set(static_idx)}
        own = activations = 0

        def plan_it(reused: bool, held_cap: int | None = None):
            outside, held_copies = self.regions.outside(own, activations, reused=reused)
            return make_plan_on_every_rank(
                joint,
                num_fwd_outputs,
                self.options,
                static_lifetime_input_nodes=static_nodes,
                outside_bytes=outside,
                reserve_bytes=self.reserve_bytes,
                held_copies=held_copies,
                held_cap=held_cap,
                annotate=self._annotate,
                peak_floor=self.regions.peak_floor(),
            )

        try:
            _raise_if_not_strided(joint)
            own = _own_resident_bytes(joint, num_fwd_outputs, primals, static_idx)
            activations = _activation_bytes(joint, primals, static_idx)
            fw, bw, plan = self._plan_in_step(plan_it)
        except (InfeasibleBudget, SolverFailed, UnsupportedGraph) as e:
            if self.options.fallback != "pytorch":
                raise
            self.regions.fallbacks += 1
            warnings.warn(
                f"graphremat: {e} -- falling back to PyTorch's default partition "
                "(fallback='pytorch'); the budget is NOT enforced for this region.",
                RuntimeWarning,
                stacklevel=2,
            )
            return P.default_partition(
                joint,
                joint_inputs,
                num_fwd_outputs=num_fwd_outputs,
                static_lifetime_input_indices=static_idx,
            )
        self.last_user_output_bytes = user_output_bytes(fw, num_fwd_outputs)
        self.keep(plan)
        log.info("graphremat: %s", plan.summary().replace("\n", " |"))
        if self.plan_only:
            raise PlanReady(plan)
        return fw, bw

    def _plan_in_step(self, plan_it: Callable) -> tuple:
        """``plan_it(reused=True)``: the region's later runs in this step reuse this compile
        (graphremat.regions). With held caps (room a later region asked for), the first cap
        that has a plan. Where nothing fits, the later runs may not reuse it (the first block,
        whose input needs no gradient, gets its own compile): plan for this run alone; the
        step's replay plans it again if they do. Where what earlier regions keep for their
        backward leaves no plan, they make room (``_make_room``)."""
        c = self.regions.current
        tried = []
        for cap in self.regions.held_caps(c) if c is not None else []:
            try:
                fw, bw, plan = plan_it(reused=True, held_cap=cap)
            except InfeasibleBudget:
                tried.append(cap)
                continue
            self.regions.planned(c, cap, plan.saved_bytes)
            return fw, bw, plan
        if tried:
            log.info(
                "graphremat: no plan keeps at most %s bytes for the backward; planning this "
                "region without room for later regions",
                tried[-1],
            )
        reused = True
        try:
            fw, bw, plan = plan_it(reused=True)
            if c is not None:
                self.regions.planned(c, None, plan.saved_bytes)
            return fw, bw, plan
        except InfeasibleBudget as e:
            error = e
        if c is not None and c.held_copies:
            log.info("graphremat: planning this region for its own run only")
            reused = False
            try:
                fw, bw, plan = plan_it(reused=False)
                self.regions.planned(c, None, plan.saved_bytes)
                return fw, bw, plan
            except InfeasibleBudget as e:
                error = e
        if c is None or not c.earlier_bytes:
            raise error
        pending = c.refresh and c.rooms  # room asked for by this compile, not yet made
        if pending or self.regions.room_possible(error.budget_bytes, error.min_feasible_bytes):
            return self._make_room(plan_it, reused, error, ask=not pending)
        again = (
            " even after they were planned again to keep less"
            if c.rooms
            else ", more than their plans can free"
        )
        raise _no_room(
            error.budget_bytes,
            error.min_feasible_bytes,
            f"This region runs after other compiled regions of the step, which hold "
            f"{c.earlier_bytes} bytes for their backward{again}",
        )

    def _make_room(
        self, plan_it: Callable, reused: bool, error: InfeasibleBudget, ask: bool = True
    ) -> tuple:
        """This region has no plan under the budget with what the earlier regions of the step
        keep for their backward, and they could keep less: they are planned again before their
        next run with a cap on what they keep (graphremat.regions.Regions.make_room), and this
        region after them. If their forwards have run in this call: in the model's first call,
        StepAgain (graphremat.compile runs the call again; InfeasibleBudget once it has run as
        often as it may, or when its last run's new plans freed nothing for this region);
        otherwise this region gets its smallest plan for this call, with a warning.
        ``ask=False``: the room is asked for already (a second attempt of this compile, e.g.
        the Inductor check's), only plan."""
        budget, least = error.budget_bytes, error.min_feasible_bytes
        c, regions = self.regions.current, self.regions
        held = c.earlier_bytes
        ran = regions.earlier_ran(c)
        before = regions.room_needs.get(c.key)  # this region's need in the call's last run
        stuck = before is not None and least >= before
        if ask and ran and regions.runs_of_call > 1 and (stuck or not regions.can_run_again):
            # the first call ran its forward as often as it may, or the last run's new plans
            # freed nothing for this region: no room
            raise _no_room(
                budget,
                least,
                f"This region runs after {len(c.earlier)} other compiled region(s) of the "
                f"step, which keep {held} bytes for their backward after the first call ran "
                f"its forward {regions.runs_of_call} times, each time planning them again to "
                "keep less for a region after them",
            )
        with self.budget_at(least):
            fw, bw, plan = plan_it(reused=reused)
        if not ask:
            return fw, bw, plan
        kept, now_kept, ran = regions.make_room(budget, least, plan.unconstrained_peak_bytes)
        regions.room_needs[c.key] = least
        if ran and regions.can_run_again:
            raise StepAgain(
                f"a compiled region needed {least} bytes beside what the {len(c.earlier)} "
                f"compiled region(s) before it keep, above the budget of {budget}, so those "
                "were planned again to keep less"
            )
        now = (
            f"this step runs up to {least - budget} bytes over the budget (they already ran); "
            "the next steps are planned to fit it (if those regions cannot keep that little, "
            "the next step raises InfeasibleBudget). To fit the first step too, remove the "
            "graph breaks (fullgraph=True shows where)."
            if ran
            else "they have not run yet in this step, which is planned to fit."
        )
        warnings.warn(
            f"graphremat: a compiled region needs at least {least} bytes with what the "
            f"{len(c.earlier)} compiled region(s) before it keep for their backward ({held} "
            f"bytes, saved values and inputs), above the budget of {budget}. graphremat plans "
            f"those regions again before their next run, keeping at most {kept} of the "
            f"{now_kept} bytes of saved values they keep now, and this region after them: {now}",
            RuntimeWarning,
            stacklevel=2,
        )
        return fw, bw, plan

    @contextmanager
    def budget_at(self, nbytes: int) -> Iterator[None]:
        """Plan with a budget of ``nbytes`` for the duration (the smallest plan of a region, to
        run once or to measure)."""
        options = self.options
        self.options = replace(options, budget=Budget(nbytes=nbytes))
        try:
            yield
        finally:
            self.options = options

    def _annotate(self, plan: Plan) -> Plan:
        """``plan`` with its region's fields (graphremat.regions): runs per step, what one run
        holds, what other runs and regions hold in its predicted peak."""
        c = self.regions.current
        if c is None:
            return plan
        return replace(
            plan,
            runs_per_step=c.runs,
            held_bytes=plan.saved_bytes + c.activation_bytes,
            others_held_bytes=c.others_bytes + c.held_copies * plan.saved_bytes,
        )

    def keep(self, plan: Plan) -> None:
        """Record ``plan`` as its region's plan: its saved bytes for the regions after it, and
        in ``plans`` (and ``also_to``)."""
        self.regions.record(plan)
        self.plans.append(plan)
        if self.also_to is not None:
            self.also_to.append(plan)

    def uuid(self) -> str:
        return self.options.uuid()


def _no_room(budget_bytes: int, least: int, why: str) -> InfeasibleBudget:
    """A later region of a step with graph breaks has no plan beside what the regions before
    it keep (``why``, a sentence): its minimum is given their plans."""
    return InfeasibleBudget(
        budget_bytes,
        least,
        f"({why}: graphremat plans regions one at a time, so a joint plan might fit a lower "
        "budget. Remove the graph breaks (fullgraph=True shows where) to plan the step as one "
        "region.)",
        given_others=True,
    )


def _raise_if_not_strided(joint: fx.GraphModule) -> None:
    """UnsupportedGraph if a value of ``joint`` is not a strided tensor (a sparse gradient of
    ``nn.Embedding(sparse=True)``, say): graphremat counts memory per storage, and such a
    tensor's bytes depend on its values (its number of nonzeros)."""
    for node in joint.graph.nodes:
        val = node.meta.get("val")
        for v in val if isinstance(val, (tuple, list)) else (val,):
            if isinstance(v, torch.Tensor) and v.layout is not torch.strided:
                code = [
                    line.strip()
                    for line in node.meta.get("stack_trace", "").splitlines()
                    if line.strip() and not set(line.strip()) <= set("^~ ")
                ]
                raise UnsupportedGraph(
                    f"the training graph holds a {v.layout} tensor ({node.name} = "
                    f"{getattr(node.target, '__name__', node.target)}"
                    + (f", from: {code[-1]}" if code else "")
                    + "): graphremat counts memory per dense storage, and a sparse tensor's "
                    "bytes depend on its values. Use dense gradients (e.g. nn.Embedding("
                    "sparse=False)), or pass fallback='pytorch' to compile this region with "
                    "PyTorch's default partition (the budget is then not enforced for it)."
                )


def _own_resident_bytes(joint: fx.GraphModule, num_fwd_outputs: int, primals, static_idx) -> int:
    """Bytes of the region's own parameters and buffers (its static-lifetime inputs) and of
    their gradients (the joint's outputs after the forward's, one per primal)."""
    outs = list(joint.graph.find_nodes(op="output")[0].args[0])[num_fwd_outputs:]
    total = 0
    for i in set(static_idx):
        for node in (primals[i], outs[i] if i < len(outs) else None):
            val = node.meta.get("val") if isinstance(node, fx.Node) else None
            if isinstance(val, torch.Tensor):
                total += val.untyped_storage().nbytes()
    return total


def _same(plan: Plan) -> Plan:
    return plan


def _activation_bytes(joint: fx.GraphModule, primals, static_idx) -> int:
    """Bytes of the region's inputs that are not parameters or buffers (its activations) and
    that a run may keep until its backward: those the backward reads, directly or through
    forward values it reads (which a plan may recompute from them)."""
    graph = joint.graph
    bwd: set[fx.Node] = set()
    stack = [n for n in graph.find_nodes(op="placeholder") if P._is_tangent(n)]
    while stack:
        n = stack.pop()
        if n not in bwd:
            bwd.add(n)
            stack.extend(u for u in n.users if u.op != "output")
    ancestors: set[fx.Node] = set()
    stack = [a for n in bwd for a in n.all_input_nodes if a not in bwd]
    while stack:
        n = stack.pop()
        if n not in ancestors:
            ancestors.add(n)
            stack.extend(n.all_input_nodes)
    static = set(static_idx)
    sizes = {}
    for i, p in enumerate(primals):
        val = p.meta.get("val")
        if i not in static and p in ancestors and isinstance(val, torch.Tensor):
            s = val.untyped_storage()
            sizes[P.StorageWeakRef(s)] = s.nbytes()
    return sum(sizes.values())


def _distributed_rank() -> int | None:
    """This process's rank when torch.distributed runs more than one process, else None."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return dist.get_rank()


def _broadcast_from_rank0(obj: object) -> object:
    """Rank 0's ``obj`` on every rank of the default process group (real tensors: the
    partitioner runs under the compile's fake-tensor mode; outside the Python dispatcher it
    also runs under, which deadlocked gloo's broadcast, see P.outside_python_dispatch)."""
    box = [obj]
    with P.unset_fake_temporarily(), P.outside_python_dispatch():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def _portable(e: Exception) -> tuple[type[Exception], str, dict]:
    """``e`` as (class, message, attributes) that unpickle on another rank; a GraphRematError
    with the same message where ``e`` does not pickle."""
    try:
        return pickle.loads(pickle.dumps((type(e), str(e), vars(e))))
    except Exception:
        return GraphRematError, f"{type(e).__name__}: {e}", {}


def _rebuilt(cls: type[Exception], message: str, state: dict) -> Exception:
    e = cls.__new__(cls)
    e.args = (message,)
    e.__dict__.update(state)
    return e


def make_plan_on_every_rank(
    joint: fx.GraphModule, num_fwd_outputs: int, options: Options, **kwargs
) -> tuple[fx.GraphModule, fx.GraphModule, Plan]:
    """:func:`make_plan`, with one plan for every rank under torch.distributed.

    A time-limited solve can stop at different points on different ranks (load differs), and
    the plan cache is per machine, so ranks would not always agree. With more than one process
    in the default process group, rank 0 plans and broadcasts its plan (or its error); every
    other rank adopts it: re-emits rank 0's saved set on its own graph and replays it, and
    raises if the replay differs from rank 0's (the ranks traced different graphs). Every rank
    must compile the same regions in the same order (data parallelism: DDP, FSDP2).
    """
    rank = _distributed_rank()
    if rank is None:
        return make_plan(joint, num_fwd_outputs, options, **kwargs)
    if rank != 0:
        got = _broadcast_from_rank0(None)
        if isinstance(got, tuple):  # rank 0 raised
            raise _rebuilt(*got)
        return make_plan(joint, num_fwd_outputs, options, adopt=got, **kwargs)
    try:
        fw, bw, plan = make_plan(joint, num_fwd_outputs, options, **kwargs)
    except Exception as e:
        _broadcast_from_rank0(_portable(e))
        raise
    _broadcast_from_rank0(plan)
    return fw, bw, plan


def _solver_name(solver) -> str:
    return solver if isinstance(solver, str) else getattr(solver, "__qualname__", repr(solver))


def _solve(
    capture: Capture, budget_bytes: int, options: Options, start: frozenset[str] | None = None
) -> SolveResult:
    """Run the configured solver; ``start``: a saved set known to fit, for the built-in CP-SAT
    solver's warm start (other solvers keep the registry's signature)."""
    solver = get_solver(options.solver)
    extra = {"start": start} if start is not None and solver is solve_cpsat else {}
    try:
        result = solver(
            capture.problem,
            budget_bytes,
            time_limit_s=options.time_limit_s,
            seed=options.seed,
            num_workers=options.num_workers,
            log_progress=options.log_progress,
            **extra,
        )
    except GraphRematError:
        raise
    except Exception as e:
        raise SolverFailed(
            f"solver {_solver_name(options.solver)!r} failed on {capture.problem.name} "
            f"({capture.problem.num_steps} steps): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(result, SolveResult):
        raise SolverFailed(
            f"solver {_solver_name(options.solver)!r} returned {type(result).__name__}, not a "
            "graphremat.solvers.SolveResult; a solver must return one (see graphremat.solvers)"
        )
    return result


#: time limit of the min-peak solve that reports ``min_feasible_bytes`` (an upper bound when it
#: does not finish: a budget known to be feasible)
MIN_PEAK_TIME_LIMIT_S = 10.0

#: min-peak solves are reused for an identical problem (same graph, sizes and costs): compiling
#: one model at several budgets solves it once. Entry: (result, time limit it ran with); a
#: shorter-limit request reuses it, a longer one searches again and keeps the better result.
MIN_PEAK_CACHE_SIZE = 32
_MIN_PEAK_CACHE: dict[str, tuple[MinPeak, float]] = {}
_COPY_MIN_CACHE: dict[tuple, tuple] = {}  # see _copy_minimum

#: "auto" calibration runs the joint graph once for real (freeing each value after its last use)
#: when that run's peak is at most this
AUTO_CALIBRATE_MAX_BYTES = 2 * 2**30


def _should_calibrate(joint: fx.GraphModule, mode: bool | str) -> bool:
    if mode != "auto":
        return bool(mode)
    devs = devices(joint)
    return (
        bool(devs) and devs <= {"cpu", "cuda"} and run_peak_bytes(joint) <= AUTO_CALIBRATE_MAX_BYTES
    )


def _op_times(joint: fx.GraphModule, cap: Capture, options: Options) -> bool:
    """cost_model="measured": put each forward op's time on the joint graph's nodes, from the
    plan cache's directory when this problem was timed there before (same device and thread
    count), else measured now (and stored). False when nothing could be timed."""
    cache_at = plan_cache.cache_dir(options.cache)
    devs = devices(joint)
    device = (
        torch.cuda.get_device_name()
        if "cuda" in devs and torch.cuda.is_available()
        else ",".join(sorted(devs))
    )
    key = plan_cache.times_key(cap.problem.fingerprint(), device) if cache_at else None
    times = plan_cache.load_times(cache_at, key) if key else None
    if times is None:
        times = annotate_times(joint)
        if times and key:
            plan_cache.store_times(cache_at, key, times)
    else:
        record_times(joint, times)
    return bool(times)


def make_plan(
    joint: fx.GraphModule,
    num_fwd_outputs: int,
    options: Options,
    *,
    static_lifetime_input_nodes=None,
    outside_bytes: int = 0,
    reserve_bytes: int = 0,
    adopt: Plan | None = None,
    held_copies: int = 0,
    held_cap: int | None = None,
    annotate: Callable[[Plan], Plan] | None = None,
    peak_floor: int = 0,
) -> tuple[fx.GraphModule, fx.GraphModule, Plan]:
    """Plan one joint graph; with ``adopt`` (another rank's plan for the same graph), re-emit
    and replay that plan's saved set instead of solving. ``held_copies``: the graph runs that
    many more times per step, each other run holding its saved values (see
    :class:`solvers.problem.RematProblem`). ``held_cap``: the most bytes one run may keep for
    its backward (room for later regions of the step, graphremat.regions), enforced as a step
    between the forward and the backward (:func:`solvers.problem.with_room_between`) that the
    simulator checks too. ``annotate``: applied to the plan before it is cached or returned
    (the region's fields, see Partitioner). ``peak_floor``: a fraction budget is a fraction of
    the larger of this graph's peak without rematerialization and this (the step's other
    regions', graphremat.regions.Regions.peak_floor)."""
    if annotate is None:
        annotate = _same
    t0 = time.perf_counter()
    # stock torch.compile's plan, taken before graphremat's passes change the graph
    stock_names = (
        stock_saved_values(
            joint, num_fwd_outputs, _static_indices(joint, static_lifetime_input_nodes)
        )
        if options.stock_cap and adopt is None
        else None
    )
    if options.codegen == "eager":
        # under Inductor the dropout kernel's unused output buffer outlives the op (measured:
        # +19 % peak), so there the mask-multiply rewrite would break the promise
        split_dropout(joint)
    if _should_calibrate(joint, options.calibrate):
        annotate_workspace(joint)
    # bytes held back (the backend's Inductor check) are modelled as residents; a fraction budget
    # stays a fraction of the peak without them
    # a negative reserve is credit: bytes by which Inductor's code was measured to stay below the
    # op-level model (the backend's Inductor check); the model may then exceed the budget by it
    held, credit = max(reserve_bytes, 0), max(-reserve_bytes, 0)
    resident = outside_bytes + held
    v2 = options.cost_model in ("roofline-v2", "measured")
    captured = functools.partial(
        capture_joint,
        joint,
        num_fwd_outputs,
        outside_bytes=resident,
        held_copies=held_copies,
        dispatch_ns=EAGER_DISPATCH_NS if v2 and options.codegen == "eager" else None,
        solver_roofline=thread_roofline() if v2 else None,
        fused_pointwise=v2 and options.codegen == "inductor",
    )
    cap = captured()
    # (a rank adopting rank 0's plan replays its saved set: no costs needed)
    if options.cost_model == "measured" and adopt is None and _op_times(joint, cap, options):
        cap = captured(measured=True)
    if options.codegen == "inductor":
        # Inductor fuses a slot's recomputations into few kernels and places them by its own
        # scheduler: each recomputation timed on its own (exact for eager) let plans through
        # whose code then peaked above them (zoo GPT-2 at per-block checkpointing's peak, and
        # at the reported minimum); a slot counted as one instant leaves that room
        cap = replace(cap, problem=cap.problem.coarse())
    problem = cap.problem
    room = 0  # bytes kept free between forward and backward (held_cap), set below
    solve_cap = cap  # what the solvers see (with that step); the rewrite reads ``cap``

    def replay(fw, bw):
        """The simulator's replay of a forward and backward module pair in this region."""
        return simulate(
            fw,
            bw,
            num_fwd_outputs,
            outside_bytes=resident,
            held_copies=held_copies,
            room_between=room,
        )

    def emit(saved, copies=None):
        fw, bw = rewrite(
            joint,
            cap,
            saved,
            num_fwd_outputs=num_fwd_outputs,
            static_lifetime_input_nodes=static_lifetime_input_nodes,
            copies=copies,
        )
        return fw, bw, replay(fw, bw)

    keep_all = save_all_set(problem)
    ev_all = evaluate(problem, keep_all)
    fw, bw, sim_all = emit(keep_all)
    unconstrained = max(sim_all.peak_bytes, ev_all.peak_bytes)  # the model is conservative
    budget_bytes = options.budget.resolve(max(unconstrained - held, peak_floor))
    target = budget_bytes + credit  # what the op-level model must fit
    if held_cap is not None:
        room = max(0, target - fixed_between(problem) - (1 + held_copies) * held_cap)
    if room:  # (a cap the budget enforces anyway needs no room)
        problem = with_room_between(problem, room)
        solve_cap = replace(cap, problem=problem)
        ev_all = evaluate(problem, keep_all)
    # graphremat plans no higher than stock's plan peaks in this model (Options.stock_cap)
    ev_stock = _stock_plan(problem, cap, stock_names) if stock_names is not None else None
    stock_peak = None if ev_stock is None else ev_stock.peak_bytes
    modules = stock_modules(joint) if ev_stock is not None and options.codegen == "eager" else None
    if modules is not None:
        # stock's own program (its recomputations where PyTorch places them), replayed
        stock_peak = max(stock_peak, _stock_replay(modules, replay))
    aim = target if stock_peak is None else min(target, stock_peak)
    if adopt is not None:
        replayed = _replay(adopt, problem, emit, budget_bytes, credit)
        if isinstance(replayed, str):
            raise GraphRematError(
                f"rank 0's plan does not fit this rank's graph ({replayed}): the ranks traced "
                "different graphs. graphremat needs every rank to compile the same regions "
                "with the same shapes (data parallelism)."
            )
        fw, bw, _ = replayed
        return fw, bw, annotate(replace(adopt, solve_time_s=time.perf_counter() - t0))
    cache_at = plan_cache.cache_dir(options.cache)
    fingerprint = problem.fingerprint()
    # (a plan made on credit is not cached: the credit is measured per compile)
    key = (
        plan_cache.plan_key(fingerprint, budget_bytes, options) if cache_at and not credit else None
    )
    if key is not None:
        hit = _from_cache(cache_at, key, problem, emit, budget_bytes, t0)
        if hit is not None:
            return (*hit[:2], annotate(hit[2]))
    tmin = min(options.time_limit_s, MIN_PEAK_TIME_LIMIT_S)
    copy_class = options.max_recomputes > 1
    if copy_class and (held_copies or room):
        copy_class = False
        why = (
            f"that runs {held_copies + 1} times per step"
            if held_copies
            else "that keeps room for later regions of the step"
        )
        warnings.warn(
            f"graphremat: max_recomputes={options.max_recomputes} is not supported for a region "
            f"{why}; planning it with max_recomputes=1",
            RuntimeWarning,
            stacklevel=2,
        )
    once = None
    if copy_class and ev_all.peak_bytes > target:
        once = _shared_min_peak(problem, fingerprint, tmin, options, cache_at)
    # the copy class times a slot's recomputations together (solvers/multi.py): where a plan
    # recomputing each value once fits, the once-class plans it, and the copies go lower
    if once is not None and once.peak_bytes > target:
        coarse = _coarse_min_peak(problem, tmin, options, cache_at)
        fw, bw, plan = _copy_plan(
            cap, joint, options, emit, budget_bytes, credit, t0, tmin, coarse, fingerprint
        )
        plan = replace(
            plan,
            unconstrained_peak_bytes=unconstrained - held,
            unconstrained_timeline=sim_all.timeline,
        )
        plan = annotate(plan)
        if key is not None:
            plan_cache.store(cache_at, key, plan)
        return fw, bw, plan
    min_known: MinPeak | None = None

    def minimum() -> MinPeak:
        nonlocal min_known
        if min_known is None:
            min_known = _shared_min_peak(problem, fingerprint, tmin, options, cache_at)
        return min_known

    if ev_all.peak_bytes <= aim:
        result = SolveResult(
            "save_all",
            SolveStatus.OPTIMAL,
            ev_all.saved,
            ev_all.cost,
            ev_all.cost,
            ev_all.peak_bytes,
        )
    else:
        # the smallest-peak plan (needed for min_feasible_bytes anyway) is the warm start
        # where the greedy descent from "save everything" gets stuck above the budget
        mp = minimum()
        stock_fits = ev_stock is not None and ev_stock.peak_bytes <= aim
        if stock_fits:
            start = ev_stock.saved
        else:
            start = mp.saved if mp.peak_bytes <= aim else None
        result = _solve(solve_cap, aim, options, start=start)
        # (a budget between the proven bound and the smallest peak found is proven infeasible
        # by this very solve: the bound rises to the budget)
        lower = max(mp.lower_bound_bytes - credit, budget_bytes + 1)
        if result.status is SolveStatus.INFEASIBLE:
            raise InfeasibleBudget(budget_bytes, mp.peak_bytes - credit, lower_bound_bytes=lower)
        if not result.status.has_plan and stock_fits:
            # no plan within the time limit: stock's plan fits
            result = SolveResult(
                "stock",
                SolveStatus.FEASIBLE,
                ev_stock.saved,
                ev_stock.cost,
                0.0,
                ev_stock.peak_bytes,
                wall_s=result.wall_s,
            )
        if not result.status.has_plan:
            # no plan within the time limit: the smallest-peak plan may still fit
            if mp.peak_bytes > target and mp.optimal:
                raise InfeasibleBudget(budget_bytes, mp.peak_bytes - credit)
            if mp.peak_bytes > target:
                smallest, bound = mp.peak_bytes - credit, mp.lower_bound_bytes - credit
                raise SolverFailed(
                    f"no plan fitting {format_bytes(budget_bytes)} found within time_limit_s="
                    f"{options.time_limit_s:g} ({problem.num_steps} steps, solver "
                    f"{options.solver!r}); the smallest peak found is {format_bytes(smallest)} "
                    f"(proven >= {format_bytes(bound)}). Raise time_limit_s or the budget, or "
                    "pass fallback='pytorch'.",
                    smallest_peak_bytes=smallest,
                    budget_bytes=budget_bytes,
                )
            # the smallest-peak plan, with values saved back while they fit (a better plan
            # for this budget, found in milliseconds)
            ev_mp = evaluate(problem, mp.saved)
            ev_mp = greedy_fit(problem, target, start=ev_mp) or ev_mp
            result = SolveResult(
                "cpsat(min-peak)",
                SolveStatus.FEASIBLE,
                ev_mp.saved,
                ev_mp.cost,
                0.0,
                ev_mp.peak_bytes,
                wall_s=result.wall_s + mp.wall_s,
            )
    ev = evaluate(problem, result.saved)
    if options.codegen == "inductor":  # fused recomputations are free there: keep less
        ev = shed_free(problem, ev, aim)
    fw, bw, sim = emit(ev.saved) if ev.saved != ev_all.saved or room else (fw, bw, sim_all)
    if sim.peak_bytes > target:
        raise GraphRematError(
            f"internal check failed: the emitted program peaks at {sim.peak_bytes} bytes > budget "
            f"{target} (model said {ev.peak_bytes}). Please report this graph."
        )
    min_feasible = min(minimum().peak_bytes, ev.peak_bytes) - credit
    min_proven = minimum().optimal
    if room:  # the region's own minimum: room for later regions is not its own need
        own = _shared_min_peak(cap.problem, cap.problem.fingerprint(), tmin, options, cache_at)
        min_feasible, min_proven = own.peak_bytes - credit, own.optimal
    if copy_class:  # the budget fits without copies; report the copy minimum
        coarse = _coarse_min_peak(problem, tmin, options, cache_at)
        lowest, _, proven = _copy_minimum(problem, fingerprint, options, tmin, coarse)
        if lowest.peak_bytes - credit < min_feasible:
            min_feasible, min_proven = lowest.peak_bytes - credit, proven
    saved_bytes = held_bytes(problem, ev.saved)
    plan = Plan(
        budget_bytes=budget_bytes,
        predicted_peak_bytes=sim.peak_bytes - credit,
        unconstrained_peak_bytes=unconstrained - held,
        min_feasible_bytes=min_feasible,
        recompute_flops=sum(cap.info[v].flops for v in ev.recomputed),
        recompute_cost_ns=sum(cap.info[v].cost_ns for v in ev.recomputed),
        saved=tuple(sorted(ev.saved, key=problem.fwd_pos.__getitem__)),
        recomputed=tuple(sorted(ev.recomputed, key=problem.fwd_pos.__getitem__)),
        status=result.status.value,
        gap=result.gap,
        solver=result.solver,
        solve_time_s=time.perf_counter() - t0,
        objective=result.objective,
        bound=result.bound,
        model_peak_bytes=ev.peak_bytes,
        **_graph_fields(cap),
        fixed_bytes=sim.fixed_bytes,
        codegen=options.codegen,
        timeline=sim.timeline,
        saved_bytes=saved_bytes,
        # (with credit, the minimum is the model's less a saving measured on one plan: not proven)
        min_feasible_proven=min_proven and not credit,
        unconstrained_timeline=sim_all.timeline,
        lifetimes=sim.lifetimes,
        tensors=tensor_records(joint, cap, ev.saved, ev.recomputed),
        held_cap_bytes=held_cap if room else 0,
        later_room_bytes=room,
        stock_peak_bytes=max(stock_peak - credit, 0) if stock_peak is not None else 0,
    )
    plan = annotate(plan)
    if key is not None:
        plan_cache.store(cache_at, key, plan)
    return fw, bw, plan


def _static_indices(joint: fx.GraphModule, static_nodes) -> list[int]:
    primals = [n for n in joint.graph.find_nodes(op="placeholder") if P._is_primal(n)]
    return [i for i, p in enumerate(primals) if p in (static_nodes or ())]


def _stock_replay(modules, replay) -> int:
    """Peak of stock's own forward and backward modules by ``replay`` (the region's simulator
    call); 0 where they cannot be replayed: the cap then stays graphremat's model of stock's
    saved set."""
    try:
        return replay(*modules).peak_bytes
    except Exception as e:  # a module the simulator does not follow: no replay
        log.debug("graphremat: stock's modules could not be replayed: %s", e)
        return 0


def _stock_plan(problem, cap: Capture, names: frozenset[str]) -> Evaluation | None:
    """Stock torch.compile's plan (the values PyTorch's partition saves, graphremat.stock) on
    this problem, or None where graphremat's class cannot express it (it saves a value
    graphremat may not save, or leaves one unsaved that cannot be recomputed)."""
    g = problem.graph
    saved = saved_owners(names, cap.owner, problem.candidates())
    if any(not (g.nodes[v]["savable"] and g.nodes[v]["required"]) for v in saved):
        return None
    ev = evaluate(problem, saved)
    if not ev.valid:
        log.debug("graphremat: stock's plan is outside graphremat's class: %s", ev.reason)
        return None
    return ev


def _graph_fields(cap: Capture) -> dict:
    """The Plan fields that describe the graph, whatever the plan."""
    problem = cap.problem
    return dict(
        num_joint_nodes=cap.num_fx_nodes,
        num_problem_nodes=problem.graph.number_of_nodes(),
        num_candidates=len(problem.candidates()),
        step_cost_ns=sum(cap.info[v].cost_ns for v in problem.graph if v in cap.info),
        dag_edges=tuple(
            (u, v) for u, v in problem.graph.edges if problem.is_fwd(u) and problem.is_fwd(v)
        ),
    )


def _copy_plan(
    cap: Capture, joint, options: Options, emit, budget_bytes, credit, t0, tmin, once, fingerprint
):
    """Plan in the copy class (``max_recomputes`` > 1, solvers/multi.py): the cheapest plan
    with at most that many recomputations per value, placed freely, checked like any plan."""
    problem = cap.problem
    target = budget_bytes + credit
    found = _copy_minimum(problem, fingerprint, options, tmin, once)
    if once.peak_bytes > target and found[0].peak_bytes > target and not found[2]:
        # below both classes' smallest plans found so far: the smallest-peak copy plan is the
        # search, so it gets half of the time limit as well (the better of the two is kept, so
        # a plan never misses a minimum that max_batch_size's probe found)
        more = _copy_minimum(problem, fingerprint, options, options.time_limit_s / 2, once)
        found = min(found, more, key=lambda r: r[0].peak_bytes)
    lowest, bound, proven = found
    try:
        result = solve_multi(
            problem,
            target,
            max_recomputes=options.max_recomputes,
            time_limit_s=options.time_limit_s,
            log_progress=options.log_progress,
            seed=options.seed,
            num_workers=options.num_workers,
            once_saved=once.saved,
            lowest=found if once.peak_bytes > target else None,
        )
    except Exception as e:
        raise SolverFailed(f"the copy-class solver failed on {problem.name}: {e}") from e
    if not result.status.has_plan:
        # no plan within the time limit: the smallest-peak plan may still fit
        if lowest.peak_bytes > target:
            if result.status is SolveStatus.INFEASIBLE or proven:
                raise InfeasibleBudget(budget_bytes, lowest.peak_bytes - credit)
            raise SolverFailed(
                f"no plan fitting {format_bytes(budget_bytes)} found within time_limit_s="
                f"{options.time_limit_s:g} with max_recomputes={options.max_recomputes}; the "
                f"smallest peak found is {format_bytes(lowest.peak_bytes - credit)} (proven >= "
                f"{format_bytes(bound - credit)}). Raise time_limit_s or the budget.",
                smallest_peak_bytes=lowest.peak_bytes - credit,
                budget_bytes=budget_bytes,
            )
        result = SolveResult(
            "multi(min-peak)",
            SolveStatus.FEASIBLE,
            lowest.plan.saved,
            lowest.cost,
            0.0,
            lowest.peak_bytes,
            wall_s=result.wall_s,
            info={"plan": lowest.plan},
        )
    copies: CopyPlan = result.info["plan"]
    ev = evaluate_copies(problem, copies)
    fw, bw, sim = emit(copies.saved, copies)
    if sim.peak_bytes > target:
        raise GraphRematError(
            f"internal check failed: the emitted program peaks at {sim.peak_bytes} bytes > budget "
            f"{target} (copy model said {ev.peak_bytes}). Please report this graph."
        )
    recomputed = copies.recomputed
    flops = sum(cap.info[v].flops * len(cs) for v, cs in copies.copies.items())
    plan = Plan(
        budget_bytes=budget_bytes,
        predicted_peak_bytes=sim.peak_bytes - credit,
        unconstrained_peak_bytes=0,
        min_feasible_bytes=min(lowest.peak_bytes, ev.peak_bytes) - credit,
        recompute_flops=flops,
        recompute_cost_ns=sum(cap.info[v].cost_ns * len(cs) for v, cs in copies.copies.items()),
        saved=tuple(sorted(copies.saved, key=problem.fwd_pos.__getitem__)),
        recomputed=tuple(sorted(recomputed, key=problem.fwd_pos.__getitem__)),
        status=result.status.value,
        gap=result.gap,
        solver=f"{result.solver}(max_recomputes={options.max_recomputes})",
        solve_time_s=time.perf_counter() - t0,
        objective=result.objective,
        bound=result.bound,
        model_peak_bytes=ev.peak_bytes,
        **_graph_fields(cap),
        fixed_bytes=sim.fixed_bytes,
        codegen=options.codegen,
        timeline=sim.timeline,
        saved_bytes=held_bytes(problem, copies.saved),
        min_feasible_proven=proven and not credit,
        lifetimes=sim.lifetimes,
        tensors=tensor_records(joint, cap, copies.saved - recomputed, recomputed),
        copies=copies.to_json(),
    )
    return fw, bw, plan


def _copy_minimum(problem, fingerprint: str, options: Options, tmin: float, once: MinPeak):
    """The copy class's smallest-peak plan (:func:`min_peak_multi`), reused within the process.
    Its stages stop on deterministic work, so the same arguments give the same plan: a
    ``max_batch_size`` probe's minimum and the plan later made at that budget agree."""
    key = (
        fingerprint,
        options.max_recomputes,
        tmin,
        options.seed,
        options.num_workers,
        once.saved,
    )
    if key not in _COPY_MIN_CACHE:
        _COPY_MIN_CACHE[key] = min_peak_multi(
            problem,
            max_recomputes=options.max_recomputes,
            time_limit_s=tmin,
            seed=options.seed,
            num_workers=options.num_workers,
            once_saved=once.saved,
        )
    return _COPY_MIN_CACHE[key]


def _coarse_min_peak(problem, tmin: float, options, cache_at) -> MinPeak:
    """The smallest-peak once-class plan on the copy class's time axis
    (``RematProblem.coarse``): the copy solvers' hint."""
    coarse = problem.coarse()
    return _shared_min_peak(coarse, coarse.fingerprint(), tmin, options, cache_at)


def _shared_min_peak(problem, fingerprint: str, tmin: float, options, cache_at) -> MinPeak:
    """The smallest-peak plan of ``problem``, reused from memory or the disk cache when an
    earlier search was proven or ran at least ``tmin`` seconds; otherwise searched again, keeping
    the better of the old and new results."""
    cached = _MIN_PEAK_CACHE.get(fingerprint)
    on_disk = _min_peak_from_disk(cache_at, fingerprint, problem) if cache_at else None
    if on_disk is not None and (cached is None or on_disk[0].peak_bytes < cached[0].peak_bytes):
        cached = on_disk
    if cached is not None and (cached[0].optimal or cached[1] >= tmin):
        found, searched_s = cached
    else:
        found = min_peak(
            problem, time_limit_s=tmin, seed=options.seed, num_workers=options.num_workers
        )
        searched_s = max(tmin, cached[1] if cached else 0.0)
        if cached is not None and cached[0].peak_bytes < found.peak_bytes:
            found = cached[0]  # an earlier, longer search found a smaller peak
    if cache_at is not None and on_disk != (found, searched_s):
        plan_cache.store_min_peak(cache_at, fingerprint, found, searched_s)
    _MIN_PEAK_CACHE[fingerprint] = (found, searched_s)
    while len(_MIN_PEAK_CACHE) > MIN_PEAK_CACHE_SIZE:
        _MIN_PEAK_CACHE.pop(next(iter(_MIN_PEAK_CACHE)))
    return found


def _min_peak_from_disk(directory, key: str, problem) -> tuple[MinPeak, float] | None:
    """A stored smallest-peak plan, re-evaluated on this problem (None if it does not match)."""
    doc = plan_cache.load_min_peak(directory, key)
    if doc is None:
        return None
    saved = frozenset(doc["saved"])
    ev = evaluate(problem, saved) if saved <= set(problem.graph) else None
    if ev is None or not ev.valid or ev.peak_bytes != doc["peak_bytes"]:
        warnings.warn(
            "graphremat: a min-peak cache entry does not match this graph; solving again",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    mp = MinPeak(ev.peak_bytes, doc["lower_bound_bytes"], doc["optimal"], ev.saved, 0.0)
    return mp, float(doc["time_limit_s"])


def _replay(plan: Plan, problem, emit, budget_bytes: int, credit: int = 0):
    """``(fw, bw, sim)``: ``plan``'s saved set re-emitted on this graph and replayed by the
    simulator; or why it does not fit (a string): unknown values, another budget, or a replay
    that does not reproduce the plan's recorded peak (``credit``: see make_plan)."""
    saved = frozenset(plan.saved)
    if plan.copies:
        copies = CopyPlan.from_json(plan.copies)
        names = saved | set(copies.copies)
        ev = evaluate_copies(problem, copies) if names <= set(problem.graph) else None
        if ev is None or not ev.valid or plan.budget_bytes != budget_bytes:
            return "the plan does not match this graph or budget"
    else:
        ev = evaluate(problem, saved) if saved <= set(problem.graph) else None
        if ev is None or not ev.valid or plan.budget_bytes != budget_bytes:
            return "the plan does not match this graph or budget"
    try:
        fw, bw, sim = emit(copies.saved, copies) if plan.copies else emit(ev.saved)
    except GraphRematError as e:  # e.g. an entry another build of graphremat wrote
        return f"it does not emit on this graph: {e}"
    predicted = sim.peak_bytes - credit
    if predicted != plan.predicted_peak_bytes or predicted > budget_bytes:
        recorded = plan.predicted_peak_bytes
        return f"it replays to {sim.peak_bytes} bytes, not the {recorded} it recorded"
    return fw, bw, sim


def _from_cache(directory, key, problem, emit, budget_bytes: int, t0: float):
    """The cached plan for ``key`` re-emitted and re-checked by the simulator, or None."""
    plan = plan_cache.load(directory, key)
    if plan is None:
        return None
    replayed = _replay(plan, problem, emit, budget_bytes)
    if isinstance(replayed, str):
        warnings.warn(
            f"graphremat: a plan cache entry does not fit ({replayed}); solving again",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    fw, bw, sim = replayed
    log.info("graphremat: plan loaded from the cache (%s) and re-checked", key[:12])
    plan = replace(
        plan,
        solve_time_s=time.perf_counter() - t0,
        timeline=sim.timeline,
        lifetimes=sim.lifetimes,
        from_cache=True,
    )
    return fw, bw, plan
