"""Greedy plans over saved sets: fast feasible plans, used as CP-SAT hints.

Input: a :class:`RematProblem`. Output: an :class:`Evaluation` of the schedule class (so every
result is exact for what it claims: its peak and cost come from :func:`evaluate`). No
optimality claims: these plans seed the exact solvers (OR-Tools: "solve a greedy first and feed
it as a hint") and give a feasible answer within seconds (0.1-0.5 s on a 12-layer GPT-2-small
joint graph).

* :func:`greedy_min_peak`: from "save everything", recompute saved values one at a time, the one
  that frees the most bytes at the peak step per unit of recompute cost first, while that lowers
  ``(peak, memory summed over all steps)``.
* :func:`greedy_fit`: the same descent, stopped as soon as the peak fits the budget, then save
  values back, most expensive to recompute first, as long as the peak stays within the budget.
  It first drops values in batches (the best-ranked ones whose bytes cover the overshoot at the
  peak, one evaluation per batch), and falls back to single moves where batches get stuck.

Both are deterministic: their limit is a number of evaluations (``max_evals``), never wall time,
so one problem gives one plan on every machine and every rank, however loaded.
"""

from __future__ import annotations

from .problem import Evaluation, RematProblem, evaluate, save_all_set

#: default work limit of one greedy call, in :func:`evaluate` calls (about 2 ms each on a
#: 12-layer GPT-2-small joint graph)
MAX_EVALS = 1000


def _key(ev: Evaluation) -> tuple[int, int, float]:
    return (ev.peak_bytes, sum(ev.profile_bytes), ev.cost)


def _extra_cost(problem: RematProblem, have: frozenset[str], v: str) -> float:
    """Recompute cost that dropping saved ``v`` adds: ``v`` and every input chain that is not
    in ``have`` (kept or already recomputed); inf if one of them cannot be recomputed."""
    g = problem.graph
    total, seen, stack = 0.0, set(), [v]
    while stack:
        u = stack.pop()
        if u in seen:
            continue
        seen.add(u)
        a = g.nodes[u]
        if not a["recomputable"]:
            return float("inf")
        total += a["cost"]
        for p in g.pred[u]:
            if problem.is_fwd(p) and not g.nodes[p]["pinned"] and p not in have:
                stack.append(p)
    return total


def _slot_if_dropped(problem: RematProblem, ev: Evaluation, v: str) -> int:
    """The backward step before which saved ``v`` would be recomputed if it were dropped (its
    consumers' recomputations staying where they are)."""
    first = problem.num_bwd
    for c in problem.graph.successors(v):
        if not problem.is_fwd(c):
            first = min(first, problem.bwd_pos[c])
        elif c in ev.recomputed:
            first = min(first, ev.slot[c])
    return first


def _ranked_moves(problem: RematProblem, ev: Evaluation) -> list[str]:
    """Saved values whose recomputation frees bytes at the peak step, best bytes per cost
    first (ties by name, so the order is deterministic)."""
    g, num_f = problem.graph, problem.num_fwd
    t = ev.peak_step
    have = ev.saved | ev.recomputed
    scored = []
    for v in ev.saved:
        a = g.nodes[v]
        if a["pinned"] or not a["recomputable"] or not a["mem_bytes"]:
            continue
        alive_saved = problem.last_fwd_use(v) < t <= num_f + ev.end[v]
        if not alive_saved or t >= num_f + _slot_if_dropped(problem, ev, v):
            continue  # not alive at t now, or alive at t as a recomputation too
        cost = _extra_cost(problem, have, v)
        if cost < float("inf"):
            scored.append((-a["mem_bytes"] / (cost + 1.0), v))
    return [v for _, v in sorted(scored)]


def _descend(
    problem: RematProblem,
    ev: Evaluation,
    budget_bytes: int,
    max_evals: int,
    batch: bool = False,
) -> tuple[Evaluation, int]:
    """Recompute saved values (see :func:`_ranked_moves`) while the peak exceeds
    ``budget_bytes`` and a move lowers ``(peak, summed memory)``; returns the plan and the
    number of evaluations spent. With ``batch``, each round first tries one move that drops
    the best-ranked values together until their bytes cover the overshoot at the peak step
    (one evaluation instead of one per value: a 48-layer GPT's joint graph needs hundreds of
    single moves at ~20 ms each), and single values only if that does not lower the key."""
    evals = 0
    g = problem.graph
    while ev.peak_bytes > budget_bytes and evals < max_evals:
        ranked = _ranked_moves(problem, ev)
        if batch and len(ranked) > 1:
            need, group = ev.peak_bytes - budget_bytes, []
            for v in ranked:
                group.append(v)
                need -= g.nodes[v]["mem_bytes"]
                if need <= 0:
                    break
            if len(group) > 1:
                new = evaluate(problem, ev.saved - set(group))
                evals += 1
                if new.valid and _key(new) < _key(ev):
                    ev = new
                    continue
        for v in ranked:
            if evals >= max_evals:
                break
            new = evaluate(problem, ev.saved - {v})
            evals += 1
            if new.valid and _key(new) < _key(ev):
                ev = new
                break  # the peak moved: rank again
        else:
            break  # no move improves
    return ev, evals


def greedy_min_peak(problem: RematProblem, *, max_evals: int = MAX_EVALS) -> Evaluation:
    """A small-peak plan by greedy descent (see the module docstring)."""
    start = evaluate(problem, save_all_set(problem))
    return _descend(problem, start, 0, max_evals)[0]


def greedy_fit(
    problem: RematProblem,
    budget_bytes: int,
    *,
    start: Evaluation | None = None,
    max_evals: int = MAX_EVALS,
) -> Evaluation | None:
    """A plan with peak <= ``budget_bytes`` and little recomputation, or None if the descent
    from ``start`` (default: save everything) does not reach the budget within ``max_evals``
    evaluations."""
    first = start if start is not None else evaluate(problem, save_all_set(problem))
    ev, evals = _descend(problem, first, budget_bytes, max_evals, batch=True)
    if ev.peak_bytes > budget_bytes:
        # batches can end where no single move helps (on a chain, one recomputed segment
        # outgrows the peak it removed); the single-move descent may still get there
        ev, more = _descend(problem, first, budget_bytes, max_evals - evals)
        evals += more
    if ev.peak_bytes > budget_bytes:
        return None
    by_cost = sorted(ev.recomputed, key=lambda v: (-problem.attr(v, "cost"), v))
    for v in by_cost:
        if evals >= max_evals:
            break
        if v in ev.saved or not problem.attr(v, "savable"):
            continue
        new = evaluate(problem, ev.saved | {v})
        evals += 1
        if new.valid and new.peak_bytes <= budget_bytes and new.cost < ev.cost:
            ev = new
    return ev


def shed_free(
    problem: RematProblem, ev: Evaluation, budget_bytes: int, *, max_evals: int = MAX_EVALS
) -> Evaluation:
    """Among plans no dearer than ``ev``, one that saves fewer bytes: drop saved values whose
    recomputation (with whatever else it needs recomputed) adds no cost, largest first, while
    the peak stays within ``budget_bytes``. For costs in which a fused recomputation is free
    (Inductor): a plan that minimises cost alone keeps such values for nothing, and memory
    outside the model's peak step is memory the compiled code really holds."""
    evals, dropped = 0, True
    while dropped and evals < max_evals:  # a drop can make an earlier refusal possible
        dropped = False
        free = sorted(
            (v for v in ev.saved if problem.attr(v, "cost") == 0 and not problem.attr(v, "pinned")),
            key=lambda v: (-problem.attr(v, "mem_bytes"), v),
        )
        for v in free[: max_evals - evals]:
            new = evaluate(problem, ev.saved - {v})
            evals += 1
            if new.valid and new.cost <= ev.cost and new.peak_bytes <= budget_bytes:
                ev, dropped = new, dropped or new.saved != ev.saved
    return ev
