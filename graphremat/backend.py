"""The torch.compile backend: ``torch.compile(m, backend="graphremat", options={...})``.

Registered through the ``torch_dynamo_backends`` entry point, so the string works right after
``pip install``. ``codegen="inductor"`` (default) installs graphremat's partitioner as Inductor's
``custom_partitioner_fn`` (keeping Inductor's fusion and codegen, and its own memory-saving
reorder switched off so graphremat's backward order stands); ``codegen="eager"`` runs the two
modules op by op through ``aot_autograd`` (exact op-level memory, debugging).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections import deque

import torch

from . import _private as P
from .errors import GraphRematError, InfeasibleBudget, find_cause
from .inductor_check import InductorMemory
from .planner import ConfigError, Options, Partitioner
from .regions import Regions, current_region_key
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

    @property
    def plans(self) -> list[Plan]:
        return self.partitioner.plans

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        region = current_region_key()
        if _is_dynamic(gm, example_inputs):
            return _PlanPerShape(self, gm, region)
        return self._compile(gm, example_inputs, region)

    def _compile(self, gm: torch.fx.GraphModule, example_inputs, region: object):
        self.partitioner.regions.current = region
        if self.options.codegen == "eager":
            backend = P.aot_autograd(
                fw_compiler=P.boxed_nop,
                bw_compiler=P.boxed_nop,
                partition_fn=self.partitioner,
            )
            return backend(gm, example_inputs)
        return self._compile_inductor(gm, example_inputs)

    def _compile_inductor(self, gm: torch.fx.GraphModule, example_inputs):
        """Compile with Inductor, then check the plan against Inductor's own memory timeline
        of the generated code (graphremat.inductor_check); if that exceeds the budget, plan
        the region again with the overshoot held back, up to INDUCTOR_REPLANS times."""
        from torch._functorch import config as functorch_config
        from torch._inductor import config as inductor_config
        from torch._inductor.compile_fx import compile_fx

        part = self.partitioner
        part.reserve_bytes = 0
        real = None
        for _ in range(INDUCTOR_REPLANS + 1):
            made = len(part.plans)
            memory = InductorMemory(previous=inductor_config._post_fusion_custom_pass)
            # the AOTAutograd cache would skip the partitioner (and so the plan and its report);
            # Inductor's FX graph cache still reuses kernels, keyed by the partitioner's uuid();
            # the backward is compiled now, not at its first call, so that it can be checked
            with (
                inductor_config.patch(
                    custom_partitioner_fn=part,
                    reorder_for_peak_memory=False,
                    _post_fusion_custom_pass=memory,
                ),
                functorch_config.patch(
                    enable_autograd_cache=False, force_non_lazy_backward_lowering=True
                ),
            ):
                try:
                    compiled = compile_fx(gm, example_inputs)
                except Exception as e:
                    found = find_cause(e, (GraphRematError,))
                    if part.reserve_bytes and isinstance(found, InfeasibleBudget):
                        part.reserve_bytes = 0
                        raise InfeasibleBudget(
                            found.budget_bytes,
                            found.min_feasible_bytes,
                            f"(Inductor's code for the first plan peaked at {real} bytes, above "
                            "graphremat's model of it; with that overshoot held back no plan "
                            "fits, and the minimum above includes it.)",
                        ) from None
                    raise
            if len(part.plans) == made:  # no training graph (inference): nothing planned
                return compiled
            plan = part.plans[-1]
            real = memory.step_peak(
                plan.fixed_bytes - part.reserve_bytes, part.last_user_output_bytes
            )
            if real is None or real <= plan.budget_bytes:
                part.reserve_bytes = 0
                return compiled
            log.info(
                "graphremat: Inductor's schedule peaks at %d > budget %d; planning again",
                real,
                plan.budget_bytes,
            )
            part.plans.pop()
            if part.also_to is not None and part.also_to and part.also_to[-1] is plan:
                part.also_to.pop()
            part.reserve_bytes += real - plan.budget_bytes
        part.reserve_bytes = 0
        raise GraphRematError(
            f"the code Inductor generates for this region peaks at {real} bytes, above the "
            f"budget of {plan.budget_bytes}, even after planning again {INDUCTOR_REPLANS} times "
            "with the overshoot held back. Raise the budget, or use codegen='eager' (graphremat's "
            "op-level memory model is exact there)."
        )


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
