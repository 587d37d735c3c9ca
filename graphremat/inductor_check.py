"""Check a plan against the memory timeline of the code Inductor generates for it.

graphremat plans and simulates the op-level forward and backward modules. Inductor then fuses,
inlines and orders kernels its own way, so the peak of what actually runs can differ from the
simulated one (it is usually lower: fused pointwise values need no buffer; it can be higher:
a value inlined into several kernels keeps its inputs alive longer). Inductor knows its
schedule: after fusion it can replay its buffers' lifetimes (``torch._inductor.memory``). This
module records that replay for each compiled graph and turns it into a whole-step peak in
graphremat's accounting:

  forward   fixed bytes + Inductor's peak of the forward (its outputs, the user's outputs and
            the saved values, live to its end)
  backward  fixed bytes + the user's forward outputs + the tangents (held by autograd) +
            Inductor's peak of the backward (the saved values freed after their last use, the
            gradients live to its end)

where "fixed bytes" are the plan's (parameters, buffers, inputs, other regions' residents).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.fx as fx

from . import _private as P


@dataclass
class InductorMemory:
    """An Inductor ``_post_fusion_custom_pass`` that records each graph's peak (and chains to
    ``previous``, a pass the user had installed)."""

    previous: object = None
    peaks: dict[str, int] = field(default_factory=dict)  # "fwd" / "bwd" -> Inductor's peak
    tangent_bytes: int = 0

    def __call__(self, nodes: list) -> list:
        if self.previous is not None:
            nodes = self.previous(nodes)
        if not nodes:
            return nodes
        graph = P.inductor_graph()
        backward = bool(getattr(graph, "is_backward", False))
        inputs = list(graph.graph_inputs)
        readable = P.freeable_input_buffers(nodes, inputs)
        # inputs the compiled backward frees after their last use: the saved values (parameters
        # are held by the module, tangents by the autograd engine); the forward frees none
        freed = {
            name: buf
            for name, buf in readable.items()
            if backward and not name.startswith(("primals", "tangents"))
        }
        if backward:
            self.tangent_bytes = sum(
                P.graph_input_bytes(graph, name) for name in inputs if name.startswith("tangents")
            )
        peak = P.inductor_peak_memory(nodes, freed, graph.get_output_names())
        self.peaks["bwd" if backward else "fwd"] = peak
        return nodes

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
