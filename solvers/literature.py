"""Load the layer-level graphs of the Checkmate and Moccasin papers (networkx node-link JSON).

Input: a JSON file in one of two dialects. Output: a :class:`LiteratureGraph` holding the
:class:`SequenceProblem` of the papers' setting (fixed order, any node may be recomputed, any
number of times) and, for graphs with a forward/backward split, graphremat's
:class:`RematProblem` (:func:`to_remat_problem`).

* Checkmate graphs (VGG16 ... ResNet50): nodes ``{"id", "name", "backward", "cost_cpu",
  "cost_ram"}``, edges ``{"source", "target"}``; the order is by ``id`` (forward nodes first).
* Random layered graphs (rl100 ... rl1000): nodes ``{"name", "duration", "out_cost", ...}``,
  edges ``{"0": u, "1": v}`` (so ``node_link_graph(..., edges="links")`` alone rejects them), the
  order in ``graph["order"]``. They have no forward/backward split: the whole graph is one
  sequence, which is also how Moccasin treats them.

Memory model (both papers): a value is allocated when its node runs and freed after its last
consumer; budgets are fractions of the no-remat peak; overhead = extra cost / no-remat cost.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import networkx as nx

from .problem import ProblemError, RematProblem
from .sequence import SequenceProblem, no_remat_plan, simulate


@dataclass(frozen=True, slots=True)
class LiteratureGraph:
    """A paper's graph: the DAG (``cost``, ``mem_bytes``, ``backward`` node attributes), its
    fixed order, and the sequence problem built from them."""

    name: str
    dag: nx.DiGraph
    order: tuple
    sequence: SequenceProblem

    @property
    def has_backward(self) -> bool:
        return any(self.dag.nodes[v]["backward"] for v in self.order)

    def no_remat_peak_bytes(self) -> int:
        return simulate(self.sequence, no_remat_plan(self.sequence)).peak_bytes


def _read_dag(data: dict) -> tuple[nx.DiGraph, list]:
    """The DAG with uniform attributes (cost, mem_bytes, backward) and its order."""
    if "cost_ram" in data["nodes"][0]:
        g = nx.node_link_graph(data, edges="links")
        order = sorted(g.nodes)  # node keys are the "id" field, a topological index
        for v in order:
            a = g.nodes[v]
            a.update(cost=a["cost_cpu"], mem_bytes=a["cost_ram"], backward=bool(a["backward"]))
        return g, order
    if "out_cost" in data["nodes"][0]:
        g = nx.node_link_graph(data, edges="links", source="0", target="1", name="name")
        order = list(data["graph"]["order"])
        for v in order:
            a = g.nodes[v]
            a.update(cost=a["duration"], mem_bytes=a["out_cost"], backward=False)
        return g, order
    raise ProblemError("node-link graph has neither cost_ram (Checkmate) nor out_cost (rl)")


def from_node_link(data: dict, name: str = "graph") -> LiteratureGraph:
    """Build the literature graph from parsed node-link JSON (see the module docstring)."""
    g, order = _read_dag(data)
    if set(order) != set(g.nodes) or len(order) != g.number_of_nodes():
        raise ProblemError(f"{name}: the order does not list every node exactly once")
    pos = {v: k for k, v in enumerate(order)}
    seq = SequenceProblem(
        names=tuple(order),
        preds=tuple(tuple(sorted(pos[u] for u in g.pred[v])) for v in order),
        mem_bytes=tuple(int(g.nodes[v]["mem_bytes"]) for v in order),
        cost=tuple(float(g.nodes[v]["cost"]) for v in order),
        name=name,
    )
    return LiteratureGraph(name, g, tuple(order), seq)


def load(path: str | pathlib.Path) -> LiteratureGraph:
    """Read a literature graph file (its stem becomes the name)."""
    path = pathlib.Path(path)
    with path.open() as f:
        return from_node_link(json.load(f), name=path.stem)


def to_remat_problem(lit: LiteratureGraph) -> RematProblem:
    """graphremat's joint-graph problem: forward nodes may be saved or recomputed once, just in
    time; backward nodes run once. Under the papers' memory model its save-all plan has the
    no-remat peak. Raises :class:`ProblemError` for graphs without a backward part (the rl
    graphs), which that schedule class cannot express.
    """
    g = lit.dag
    fwd = [v for v in lit.order if not g.nodes[v]["backward"]]
    bwd = [v for v in lit.order if g.nodes[v]["backward"]]
    if not bwd:
        raise ProblemError(
            f"{lit.name}: no backward nodes; graphremat's schedule class recomputes forward "
            "values for the backward only. Use solvers.moccasin on lit.sequence instead."
        )
    joint = nx.DiGraph()
    for v in lit.order:
        back = g.nodes[v]["backward"]
        joint.add_node(
            v,
            phase="bwd" if back else "fwd",
            mem_bytes=int(g.nodes[v]["mem_bytes"]),
            transient_bytes=0,
            cost=float(g.nodes[v]["cost"]),
            recomputable=not back,
            required=True,
            savable=not back,
            pinned=False,
            tied_to=None,
        )
    joint.add_edges_from(g.edges)
    return RematProblem(joint, tuple(fwd), tuple(bwd), name=lit.name)
