"""What stock ``torch.compile`` would keep: PyTorch's own partition of a joint graph, as a plan.

Input: the joint forward+backward graph AOTAutograd hands a partition function. Output of
:func:`stock_saved_values`: the FX names of the forward values PyTorch's default partitioner
(the min-cut partitioner that ``torch.compile`` runs with Inductor and ``aot_eager``, at
``activation_memory_budget=1.0``) keeps for the backward. Everything else it recomputes: the
cheap pointwise ops it judges fusible, which is how stock torch.compile saves memory for free.

The planner maps those names to its own problem (:func:`saved_owners`) and evaluates that saved
set in its model: the stock plan's peak and cost on graphremat's schedule, and a feasible warm
start for the solver. Under eager codegen it also replays stock's own modules
(:func:`stock_modules`: PyTorch places recomputations by its own order, so its program can peak
higher than graphremat's schedule of the same saved set); the ceiling graphremat plans under
(``Options.stock_cap``) is the higher of the two, so that it never keeps more memory than not
using graphremat at all would, nor recomputes to stay below what stock really keeps.

The partition runs on a copy of the joint graph, before graphremat's own passes change it
(split dropout), and its answer is remembered on the joint graph (``joint.meta``): planning the
same graph again (retries, the Inductor check) does not partition it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import fx

from . import _private as P

log = logging.getLogger("graphremat")

_META_KEY = "graphremat_stock_saved"
_MODULES_KEY = "graphremat_stock_modules"


def stock_saved_values(
    joint: fx.GraphModule, num_fwd_outputs: int, static_lifetime_input_indices: Iterable[int]
) -> frozenset[str] | None:
    """FX names of the values PyTorch's default partition saves for the backward (forward ops
    only: placeholders, which it may save too, are resident anyway); None where that partition
    fails on this graph (logged: the stock plan is then simply not known)."""
    if _META_KEY in joint.meta:
        return joint.meta[_META_KEY]
    saved: frozenset[str] | None
    try:
        graph = fx.Graph()
        graph.output(graph.graph_copy(joint.graph, {}))  # nodes and meta copied, values shared
        work = fx.GraphModule(joint, graph)
        with torch._functorch.config.patch(activation_memory_budget=1.0):
            fw, bw = P.min_cut_rematerialization_partition(
                work,
                None,
                num_fwd_outputs=num_fwd_outputs,
                static_lifetime_input_indices=list(static_lifetime_input_indices),
            )
        out = fw.graph.output_node().args[0]
        saved = frozenset(
            n.name
            for n in out[num_fwd_outputs:]
            if isinstance(n, fx.Node) and n.op == "call_function"
        )
        joint.meta[_MODULES_KEY] = (fw, bw)
    except Exception as e:  # PyTorch's partitioner refused the graph: nothing to compare with
        log.debug("graphremat: PyTorch's default partition failed on this graph: %s", e)
        saved = None
    joint.meta[_META_KEY] = saved
    return saved


def stock_modules(joint: fx.GraphModule) -> tuple[fx.GraphModule, fx.GraphModule] | None:
    """The forward and backward modules of that partition (after :func:`stock_saved_values`),
    with each node's recorded workspace (``calibrate.META_KEY``) taken from the joint graph's
    node of the same name: what the simulator replays as stock's own program. None if the
    partition failed."""
    from .calibrate import META_KEY

    found = joint.meta.get(_MODULES_KEY)
    if found is None:
        return None
    ws = {n.name: n.meta[META_KEY] for n in joint.graph.nodes if META_KEY in n.meta}
    for gm in found:
        for n in gm.graph.nodes:
            if n.name in ws:
                n.meta[META_KEY] = ws[n.name]
    return found


def saved_owners(
    names: Iterable[str], owner: dict[str, str | None], candidates: Iterable[str]
) -> frozenset[str]:
    """The problem's candidate values whose storage one of ``names`` holds (a saved view keeps
    its base alive), given the capture's FX-name -> storage-owner map."""
    held = {owner.get(n) for n in names}
    return frozenset(c for c in candidates if c in held)
