"""Random joint-graph-shaped RematProblems for solver tests (no torch)."""

from __future__ import annotations

import random

import networkx as nx
from graphremat.solvers.problem import RematProblem


def _node(phase: str, mem: int, cost: int, **kw) -> dict:
    a = dict(
        phase=phase,
        mem_bytes=mem,
        transient_bytes=0,
        cost=cost,
        recomputable=phase == "fwd",
        required=phase == "fwd",
        savable=phase == "fwd",
        pinned=False,
        tied_to=None,
    )
    a.update(kw)
    return a


def random_problem(seed: int, num_fwd: int = 6, num_bwd: int = 6) -> RematProblem:
    """A forward DAG, a loss, and a backward DAG reading forward values, with random sizes.

    Includes a non-recomputable node, a multi-output op with tied outputs, transient bytes and
    pinned outputs, so every rule of the schedule class is exercised.
    """
    rng = random.Random(seed)
    g = nx.DiGraph()
    fwd = [f"f{i}" for i in range(num_fwd)]
    for i, v in enumerate(fwd):
        g.add_node(v, **_node("fwd", rng.choice([1, 2, 3, 4, 6, 8]) * 16, rng.randint(1, 20)))
        if i:
            preds = {fwd[i - 1]} | {fwd[j] for j in range(i - 1) if rng.random() < 0.25}
            g.add_edges_from((p, v) for p in preds)
        g.nodes[v]["transient_bytes"] = rng.choice([0, 0, 0, 16])
    # a non-recomputable node (like dropout), somewhere in the middle
    if num_fwd > 3:
        g.nodes[fwd[rng.randrange(1, num_fwd - 1)]]["recomputable"] = False
    # a multi-output op: a tuple node (owns nothing itself) with two tied outputs
    if num_fwd > 4:
        k = rng.randrange(1, num_fwd - 2)
        tup, o1, o2 = fwd[k], fwd[k + 1], fwd[k + 2]
        g.nodes[tup].update(mem_bytes=0, savable=False, recomputable=True)
        for o in (o1, o2):
            for p in list(g.pred[o]):
                g.remove_edge(p, o)
            g.add_edge(tup, o)
            g.nodes[o].update(tied_to=tup, cost=0, recomputable=True)
    loss = "loss"
    g.add_node(loss, **_node("fwd", 16, 1, pinned=True))
    g.add_edge(fwd[-1], loss)
    bwd = [f"b{i}" for i in range(num_bwd)]
    for i, b in enumerate(bwd):
        g.add_node(b, **_node("bwd", rng.choice([1, 2, 4, 8]) * 16, 1))
        if i:
            g.add_edge(bwd[i - 1], b)
        reads = rng.sample(fwd, k=min(len(fwd), rng.randint(0, 2)))
        g.add_edges_from((f, b) for f in reads)
        if rng.random() < 0.3:
            g.nodes[b]["pinned"] = True  # a parameter gradient
    g.nodes[bwd[-1]]["pinned"] = True
    return RematProblem(g, tuple(fwd + [loss]), tuple(bwd), fixed_bytes=64, name=f"rand{seed}")
