"""Check a plan against the memory timeline of the code Inductor generates for it.

graphremat plans and simulates the op-level forward and backward modules. Inductor then fuses,
inlines and orders kernels its own way, and its wrapper keeps a freed buffer to hand to a later
allocation of the same size, so the peak of what actually runs can differ from the simulated one
(lower: fused pointwise values need no buffer; higher: a buffer held for reuse, a value inlined
into several kernels, a parameter copied into another layout and saved). This module replays the
generated wrapper itself, line by line after Inductor's buffer planning
(``_private.wrapper_peak_memory``: allocations, reuses, ``del`` lines, fallback kernels' outputs,
views of buffers), for the forward and then the backward, which is compiled at once for this, and
turns it into a whole-step peak in graphremat's accounting:

  forward   fixed bytes + the forward code's peak (its outputs, the user's outputs and the
            saved values, live to its end)
  backward  fixed bytes + the user's forward outputs + the tangents (held by autograd) + the
            backward code's peak (the saved values, each storage as the forward allocated it,
            freed where the code deletes them; the gradients live to its end)

where "fixed bytes" are the plan's (parameters, buffers, inputs, other regions' residents).
Scratch memory inside an extern kernel is not in the wrapper; an allowance is counted for it
(``_private.EXTERN_SCRATCH_BYTES``; measured on CPU up to 74 KB for the test ResNet's
convolution backward, 12 KB for the U-Net's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.fx as fx

from . import _private as P


@dataclass
class InductorMemory:
    """Records, for each graph Inductor compiles, the peak of its generated code (a callback
    for :func:`graphremat._private.on_wrapper_memory_plan`)."""

    peaks: dict[str, int] = field(default_factory=dict)  # "fwd" / "bwd" -> peak of its code
    tangent_bytes: int = 0
    # the forward's outputs its code allocated: FX name -> (storage, bytes of the storage)
    forward_outputs: dict[str, tuple[object, int]] = field(default_factory=dict)

    def __call__(self, wrapper) -> None:
        graph = P.inductor_graph()
        backward = bool(getattr(graph, "is_backward", False))
        inputs = list(graph.graph_inputs)
        # inputs the compiled backward frees after their last use: the saved values (parameters
        # are held by the module, tangents by the autograd engine); the forward frees none
        # (a saved view keeps its whole storage alive: sized and shared as the forward made it)
        freed = {}
        if backward:
            for n in inputs:
                if n in self.forward_outputs:  # incl. a parameter's copy (e.g. a conv layout)
                    freed[n] = self.forward_outputs[n]
                elif not n.startswith(("primals", "tangents")):
                    freed[n] = (n, P.graph_input_bytes(graph, n))
            self.tangent_bytes = sum(
                P.graph_input_bytes(graph, n) for n in inputs if n.startswith("tangents")
            )
        peak, outputs = P.wrapper_peak_memory(wrapper, freed)
        self.peaks["bwd" if backward else "fwd"] = peak
        if not backward:
            self.forward_outputs = outputs

    def step_peak(self, fixed_bytes: int, user_output_bytes: int) -> int | None:
        """The whole step's peak from Inductor's timelines (None unless both graphs were seen)."""
        if set(self.peaks) != {"fwd", "bwd"}:
            return None
        return fixed_bytes + max(
            self.peaks["fwd"], user_output_bytes + self.tangent_bytes + self.peaks["bwd"]
        )


def user_output_bytes(fw: fx.GraphModule, num_user_outputs: int) -> int:
    """Bytes of the forward's outputs that go to the user (and stay alive through the
    backward), not counting views of the forward's inputs."""
    inputs = {
        P.StorageWeakRef(v.untyped_storage())
        for n in fw.graph.find_nodes(op="placeholder")
        if hasattr(v := n.meta.get("val"), "untyped_storage")
    }
    out = fw.graph.find_nodes(op="output")[0].args[0][:num_user_outputs]
    seen, total = set(), 0
    for o in out:
        v = o.meta.get("val") if isinstance(o, fx.Node) else None
        if not hasattr(v, "untyped_storage"):
            continue
        key = P.StorageWeakRef(v.untyped_storage())
        if key in inputs or key in seen:
            continue
        seen.add(key)
        total += v.untyped_storage().nbytes()
    return total
