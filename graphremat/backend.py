"""The torch.compile backend: ``torch.compile(m, backend="graphremat", options={...})``.

Registered through the ``torch_dynamo_backends`` entry point, so the string works right after
``pip install``. ``codegen="inductor"`` (default) installs graphremat's partitioner as Inductor's
``custom_partitioner_fn`` (keeping Inductor's fusion and codegen, and its own memory-saving
reorder switched off so graphremat's backward order stands); ``codegen="eager"`` runs the two
modules op by op through ``aot_autograd`` (exact op-level memory, debugging).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import warnings
from collections import deque

import torch

from . import _private as P
from .errors import GraphRematError, InfeasibleBudget, find_cause
from .inductor_check import InductorMemory
from .planner import ConfigError, Options, Partitioner
from .regions import Compile, Regions, current_region_key
from .report import Plan

#: how many times a region is planned again when Inductor's code overshoots the budget
INDUCTOR_REPLANS = 3

#: the most recent plans made through the string backend (where no handle is returned)
RECENT_PLANS: deque[Plan] = deque(maxlen=64)

log = logging.getLogger("graphremat")


class GraphrematBackend:
    """A Dynamo backend; keeps every plan it made in ``plans``."""

    def __init__(self, options: Options, plan_only: bool = False, model: object = None) -> None:
        self.options = options
        # with the model, regions of a graph-broken step share the budget (graphremat.regions)
        self.partitioner = Partitioner(options, plan_only=plan_only, regions=Regions(model))
        self._buffer_reuse = True  # Inductor's, see _compile_inductor

    @property
    def plans(self) -> list[Plan]:
        return self.partitioner.plans

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        region = current_region_key()
        if _is_dynamic(gm, example_inputs):
            return _PlanPerShape(self, gm, region)
        return self._compile(gm, example_inputs, region)

    def _compile(
        self,
        gm: torch.fx.GraphModule,
        example_inputs,
        region: object,
        again: Compile | None = None,
    ):
        """Plan and compile one region; ``again``: a compile planned again (for the runs a
        step made, graphremat.regions) on the inputs of its next run."""
        regions = self.partitioner.regions
        if again is None:
            compile_ = regions.begin(region, P.TracingContext.get_traced_code())
        else:
            compile_ = regions.current = again
        if self.options.codegen == "eager":
            backend = P.aot_autograd(
                fw_compiler=P.boxed_nop,
                bw_compiler=P.boxed_nop,
                partition_fn=self.partitioner,
            )
            compiled = backend(gm, example_inputs)
        else:
            compiled = self._compile_inductor(gm, example_inputs)
        if again is not None or compile_.plan is None or regions.model is None:
            return compiled
        # each run of a planned region is noted, to check the step against the plans
        return regions.tracked(
            compiled, compile_, lambda inputs: self._compile(gm, inputs, region, compile_)
        )

    def _compile_inductor(self, gm: torch.fx.GraphModule, example_inputs):
        """Compile with Inductor and hold the plan against the peak of the code Inductor
        generates (graphremat.inductor_check). Planning is op by op, which Inductor's fusion
        beats by a margin; the check decides:

        * the code peaks above the budget: plan again with the overshoot held back;
        * no plan fits the op-level model: compile the model's smallest-peak plan once, take
          what Inductor saved on it (model peak - code peak) as credit, and plan again with it;
          an overshoot then takes credit back. Credit is measured on one plan and does not carry
          exactly to another: if the plans made with it do not fit but the smallest plan's own
          code does, that compile is returned (its plan relabelled with the budget and the
          measured peak; it recomputes more than a plan made for this budget would need).

        Inductor's wrapper reuses a freed buffer for a later allocation of the same size and
        keeps it alive until then, which can raise the peak above the plan's. It stays on (it
        saves allocations: 15-25 % of the ResNet's step on CPU) until the first attempt that
        does not fit; every later compile of the region turns it off (measured smallest
        budgets: GPT 0.539 -> 0.519, U-Net 0.551 -> 0.508 of the no-remat peak).

        At most INDUCTOR_REPLANS plans after the first; a compile is returned only when its
        code's peak fits the budget, otherwise a typed error."""
        part = self.partitioner
        part.reserve_bytes = 0
        self._buffer_reuse = True
        credit = 0  # bytes Inductor saved below the model, measured on the smallest plan
        smallest_compile = None  # the smallest plan's compile, if its code fits (_credit_at)
        real = None
        try:
            for _ in range(INDUCTOR_REPLANS + 2):
                try:
                    compiled, plan, real = self._inductor_attempt(gm, example_inputs)
                except Exception as e:
                    found = find_cause(e, (GraphRematError,))
                    smallest = getattr(found, "min_feasible_bytes", None) or getattr(
                        found, "smallest_peak_bytes", None
                    )
                    if smallest is None:
                        raise
                    self._buffer_reuse = False
                    if part.reserve_bytes == 0 and credit == 0:
                        credit, smallest_compile = self._credit_at(
                            gm, example_inputs, smallest, getattr(found, "budget_bytes", None)
                        )
                        if credit > 0:
                            part.reserve_bytes = -credit
                            continue
                    if smallest_compile is not None:
                        return self._adopt(smallest_compile)
                    if part.reserve_bytes == 0 or not isinstance(found, InfeasibleBudget):
                        raise
                    raise InfeasibleBudget(
                        found.budget_bytes,
                        found.min_feasible_bytes,
                        "(Inductor's code differs from graphremat's op-level model: "
                        + (
                            f"its fusion saved {credit} bytes on the smallest plan, "
                            if credit
                            else ""
                        )
                        + (f"the last plan's code peaked at {real} bytes; " if real else "")
                        + "with that difference taken into account no plan fits, and the "
                        "minimum above includes it.)",
                    ) from None
                if plan is None or real <= plan.budget_bytes:
                    return compiled
                if self._buffer_reuse:  # the same plan again, without Inductor's buffer reuse
                    self._buffer_reuse = False
                    self._drop(plan)
                    continue
                log.info(
                    "graphremat: Inductor's code peaks at %d > budget %d; planning again",
                    real,
                    plan.budget_bytes,
                )
                self._drop(plan)
                part.reserve_bytes += real - plan.budget_bytes
        finally:
            part.reserve_bytes = 0
        if smallest_compile is not None:
            return self._adopt(smallest_compile)
        raise GraphRematError(
            f"the code Inductor generates for this region peaks at {real} bytes, above the "
            f"budget of {plan.budget_bytes}, even after planning again {INDUCTOR_REPLANS} times "
            "with the overshoot held back. Raise the budget, or use codegen='eager' (graphremat's "
            "op-level memory model is exact there)."
        )

    def _inductor_attempt(self, gm, example_inputs):
        """One Inductor compile with the partitioner's current options and reserve. Returns the
        compiled function, the plan it made (None for a graph without backward) and the whole
        step's peak of the generated code."""
        from torch._functorch import config as functorch_config
        from torch._inductor import config as inductor_config
        from torch._inductor.compile_fx import compile_fx

        part = self.partitioner
        made = len(part.plans)
        memory = InductorMemory()
        # the AOTAutograd and FX graph caches would skip the partitioner, or Inductor's code
        # generation and with it the check; Inductor's kernels are still cached one by one; the
        # backward is compiled now, not at its first call, so that it can be checked
        with (
            inductor_config.patch(
                custom_partitioner_fn=part,
                reorder_for_peak_memory=False,
                fx_graph_cache=False,
                allow_buffer_reuse=self._buffer_reuse,
            ),
            functorch_config.patch(
                enable_autograd_cache=False, force_non_lazy_backward_lowering=True
            ),
            P.on_wrapper_memory_plan(memory),
            P.no_distant_vertical_fusion(),  # graphremat's placement of recomputations stands
        ):
            compiled = compile_fx(gm, example_inputs)
        if len(part.plans) == made:  # no training graph (inference): nothing planned
            return compiled, None, None
        plan = part.plans[-1]
        held = max(part.reserve_bytes, 0)  # (a negative reserve is credit, see planner)
        real = memory.step_peak(plan.fixed_bytes - held, part.last_user_output_bytes)
        if real is None:
            raise GraphRematError(
                "graphremat could not see the code Inductor generated for this region, so it "
                "cannot check the budget there. Use codegen='eager', or report this model."
            )
        return compiled, plan, real

    def _credit_at(self, gm, example_inputs, min_feasible_bytes: int, budget_bytes: int | None):
        """Compile the op-level model's smallest-peak plan once. Returns by how many bytes the
        code Inductor generates for it stays below the model (0 if it does not), and, if that
        code fits ``budget_bytes`` (the user's, where known), (compiled, plan, code peak,
        budget_bytes), else None."""
        try:
            with self.partitioner.budget_at(min_feasible_bytes):
                attempt = self._inductor_attempt(gm, example_inputs)
        except GraphRematError:
            return 0, None
        _, plan, real = attempt
        if plan is None:
            return 0, None
        self._drop(plan)
        log.info(
            "graphremat: at the smallest op-level peak %d, Inductor's code peaks at %d",
            plan.predicted_peak_bytes,
            real,
        )
        fits = budget_bytes is not None and real <= budget_bytes
        return max(0, plan.predicted_peak_bytes - real), (*attempt, budget_bytes) if fits else None

    def _adopt(self, attempt):
        """Return the smallest plan's compile (see _credit_at) under the user's budget: its
        plan is relabelled with that budget, its measured code peak as the prediction and its
        credit-adjusted minimum, and recorded as the region's plan."""
        compiled, plan, real, budget_bytes = attempt
        credit = plan.predicted_peak_bytes - real
        plan = dataclasses.replace(
            plan,
            budget_bytes=budget_bytes,
            predicted_peak_bytes=real,
            min_feasible_bytes=max(0, min(plan.min_feasible_bytes - credit, real)),
            solver=f"{plan.solver}, its smallest-peak plan",
            min_feasible_proven=False,  # a saving measured through Inductor, not a proof
        )
        log.info(
            "graphremat: the plans made with the credit do not fit Inductor's code; using the "
            "smallest plan, whose code peaks at %d <= budget %d",
            real,
            budget_bytes,
        )
        self.partitioner.keep(plan)
        return compiled

    def _drop(self, plan: Plan) -> None:
        """Forget a plan whose compile is not used."""
        part = self.partitioner
        part.plans.remove(plan)
        if part.also_to is not None and plan in part.also_to:
            part.also_to.remove(plan)


def _is_dynamic(gm: torch.fx.GraphModule, example_inputs) -> bool:
    """True if Dynamo traced ``gm`` with symbolic sizes (``dynamic=True``, or automatic dynamic
    shapes after a second input shape)."""
    for x in example_inputs:
        if isinstance(x, torch.SymInt | torch.SymFloat | torch.SymBool):
            return True
        if isinstance(x, torch.Tensor) and any(
            isinstance(d, torch.SymInt) for d in (*x.shape, *x.stride())
        ):
            return True
    return any(
        isinstance(n.meta.get("example_value"), torch.SymInt)
        for n in gm.graph.find_nodes(op="placeholder")
    )


class _PlanPerShape:
    """A region traced with symbolic sizes, planned once per concrete input signature.

    A plan and its budget promise hold for the sizes it was solved for, and memory grows with
    the batch, so graphremat never runs one shape's plan on another: each new signature (shapes,
    strides, dtypes, devices, integer arguments) specializes the traced graph to the concrete
    inputs, plans it and compiles it; later calls with a known signature reuse that compile.
    """

    def __init__(self, backend: GraphrematBackend, gm: torch.fx.GraphModule, region: object):
        self.backend = backend
        self.gm = gm
        self.region = region
        self.compiled: dict[tuple, object] = {}

    @staticmethod
    def signature(args) -> tuple:
        return tuple(
            (tuple(a.shape), a.stride(), a.dtype, a.device, a.requires_grad)
            if isinstance(a, torch.Tensor)
            else a
            for a in args
        )

    def __call__(self, *args):
        key = self.signature(args)
        fn = self.compiled.get(key)
        if fn is None:
            fn = self.backend._compile(copy.deepcopy(self.gm), list(args), self.region)
            self.compiled[key] = fn
        return fn(*args)


def graphremat_backend(gm: torch.fx.GraphModule, example_inputs, options: dict | None = None):
    """Entry point for ``torch.compile(model, backend="graphremat", options={"budget": ...})``."""
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"options must be a dict, not {type(options).__name__}")
    opts = dict(options or {})
    if "budget" not in opts:
        raise ConfigError(
            'backend="graphremat" needs a budget: torch.compile(model, backend="graphremat", '
            'options={"budget": "6GiB"}) (or a fraction such as 0.5, or an int of bytes)'
        )
    backend = GraphrematBackend(Options.make(opts.pop("budget"), **opts))
    reason = P.graph_break_reason(gm)
    if getattr(reason, "graph_break", False):
        warnings.warn(
            "graphremat: this compiled region ends at a graph break. torch.compile(backend="
            '"graphremat") plans each region under the full budget, so the training step\'s peak '
            "can exceed it: use graphremat.compile(model, budget=...), which shares the budget "
            "between regions (graphremat.regions), or remove the break (fullgraph=True).",
            RuntimeWarning,
            stacklevel=2,
        )
    # plans are made during this call, or later for each new shape of a dynamic region
    backend.partitioner.also_to = RECENT_PLANS
    return backend(gm, example_inputs)
