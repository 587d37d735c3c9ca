"""The torch.compile backend: ``torch.compile(m, backend="graphremat", options={...})``.

Registered through the ``torch_dynamo_backends`` entry point, so the string works right after
``pip install``. ``codegen="inductor"`` (default) installs graphremat's partitioner as Inductor's
``custom_partitioner_fn`` (keeping Inductor's fusion and codegen, and its own memory-saving
reorder switched off so graphremat's backward order stands); ``codegen="eager"`` runs the two
modules op by op through ``aot_autograd`` (exact op-level memory, debugging).
"""

from __future__ import annotations

from collections import deque

import torch

from . import _private as P
from .planner import ConfigError, Options, Partitioner
from .report import Plan

#: the most recent plans made through the string backend (where no handle is returned)
RECENT_PLANS: deque[Plan] = deque(maxlen=64)


class GraphrematBackend:
    """A Dynamo backend; keeps every plan it made in ``plans``."""

    def __init__(self, options: Options, plan_only: bool = False) -> None:
        self.options = options
        self.partitioner = Partitioner(options, plan_only=plan_only)

    @property
    def plans(self) -> list[Plan]:
        return self.partitioner.plans

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        if self.options.codegen == "eager":
            backend = P.aot_autograd(
                fw_compiler=P.boxed_nop,
                bw_compiler=P.boxed_nop,
                partition_fn=self.partitioner,
            )
            return backend(gm, example_inputs)
        from torch._functorch import config as functorch_config
        from torch._inductor import config as inductor_config
        from torch._inductor.compile_fx import compile_fx

        # the AOTAutograd cache would skip the partitioner (and so the plan and its report);
        # Inductor's FX graph cache still reuses kernels, keyed by the partitioner's uuid()
        with (
            inductor_config.patch(
                custom_partitioner_fn=self.partitioner, reorder_for_peak_memory=False
            ),
            functorch_config.patch(enable_autograd_cache=False),
        ):
            return compile_fx(gm, example_inputs)


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
    compiled = backend(gm, example_inputs)
    RECENT_PLANS.extend(backend.plans)  # the partitioner runs inside the compile call above
    return compiled
