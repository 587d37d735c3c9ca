"""A fast heuristic for the papers' setting: evict values across the peak, compute them again
later. Used as the CP-SAT warm start (and as the answer if CP-SAT finds nothing better).

Input: a :class:`SequenceProblem` and a budget. Output: a :class:`SequencePlan` with at most two
copies per value whose simulated peak fits the budget, or None. No optimality claim.

Each value has its first copy ``[v, end0]`` and at most one recomputation ``[s, e]``. A move
*evicts* ``v`` at an over-budget stage ``t``: the first copy ends at ``v``'s last use before
``t``, the recomputation starts at its first use after ``t`` (just in time), right after ``t``,
or (in two of the four descents) at the quarter points between; each input of ``v`` not alive
there is either recomputed there too, recursively, or (if it has no recomputation yet) kept
alive until then. Computing early and keeping inputs matter where inputs were freed long
before: a just-in-time recomputation then needs its whole input cascade in one stage (on rl250
14-170 values, which lifted that stage above the peak it removed). Moves are chosen greedily by
(bytes x stages of excess removed) / (cost added) until the peak fits; then recomputations are
undone, most expensive first, where the plan still fits. The cheapest plan of the four descents
(two sets of start stages, two tie orders) is returned.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

from .sequence import SequencePlan, SequenceProblem, simulate

Extra = tuple[int, int] | None


@dataclass(slots=True)
class _State:
    end0: list[int]  # end0[v]: last stage of v's first copy
    extra: list[Extra]  # extra[v]: (start, end) of v's recomputation, or None


def _uses(problem: SequenceProblem, st: _State, v: int) -> list[int]:
    """Stages that read v: each consumer's first computation and its recomputation."""
    out = []
    for w in problem.succs[v]:
        out.append(w)
        if st.extra[w] is not None:
            out.append(st.extra[w][0])
    return sorted(set(out))


def _alive(end0: int, extra: Extra, v: int, t: int) -> bool:
    return v <= t <= end0 or (extra is not None and extra[0] <= t <= extra[1])


def _gap(problem: SequenceProblem, st: _State, v: int, t: int) -> tuple[int, int] | None:
    """(last use before t, first use after t) of a value alive at t through its first copy and
    not read at t; None if v cannot be evicted at t."""
    if not v < t <= st.end0[v] or (st.extra[v] is not None and st.extra[v][0] <= t):
        return None
    uses = _uses(problem, st, v)
    after = min((u for u in uses if u > t), default=None)
    if t in uses or after is None:
        return None
    return max((u for u in uses if u < t), default=v), after


def _evict(
    problem: SequenceProblem,
    st: _State,
    v: int,
    before: int,
    at: int,
    *,
    keep: bool,
    max_cost: float,
):
    """Changes {value: (end0, extra)} and added cost that make v dead after its use ``before``
    and compute it again at stage ``at``; an input not alive there is kept alive until then
    (``keep``, where it has no recomputation) or recomputed there too. None once the cost passes
    ``max_cost``."""
    end = st.extra[v][1] if st.extra[v] is not None else st.end0[v]
    changes = {v: (before, (at, end))}
    cost = problem.cost[v] if st.extra[v] is None else 0.0

    def get(u: int) -> tuple[int, Extra]:
        return changes.get(u, (st.end0[u], st.extra[u]))

    stack = [(v, at)]
    while stack:  # the inputs of a value recomputed at stage b must be alive at b
        if cost > max_cost:
            return None
        w, b = stack.pop()
        for u in problem.preds[w]:
            end0, extra = get(u)
            if _alive(end0, extra, u, b):
                continue
            if extra is None and keep:
                changes[u] = (b, None)
            elif extra is None:
                changes[u], cost = (end0, (b, b)), cost + problem.cost[u]
                stack.append((u, b))
            elif extra[0] > b:
                changes[u] = (end0, (b, extra[1]))
                stack.append((u, b))
            else:
                changes[u] = (end0, (extra[0], b))
    return changes, cost


def _diff(n: int, changes: dict, st: _State, mem: np.ndarray) -> np.ndarray:
    """Per-stage change in bytes that ``changes`` makes."""
    diff = np.zeros(n + 1, dtype=np.int64)
    for u, (end0, extra) in changes.items():
        for sign, (e0, ex) in ((-1, (st.end0[u], st.extra[u])), (1, (end0, extra))):
            diff[u] += sign * mem[u]
            diff[e0 + 1] -= sign * mem[u]
            if ex is not None:
                diff[ex[0]] += sign * mem[u]
                diff[ex[1] + 1] -= sign * mem[u]
    return np.cumsum(diff[:n])


def _profile(problem: SequenceProblem, st: _State) -> np.ndarray:
    """Bytes alive at each stage (the final plan is re-checked by :func:`simulate`)."""
    n = problem.num_nodes
    diff = np.zeros(n + 1, dtype=np.int64)
    for v, (e0, ex) in enumerate(zip(st.end0, st.extra, strict=True)):
        for s, e in ((v, e0),) if ex is None else ((v, e0), ex):
            diff[s] += problem.mem_bytes[v]
            diff[e + 1] -= problem.mem_bytes[v]
    return np.cumsum(diff[:n])


def _plan(st: _State) -> SequencePlan:
    return SequencePlan(
        tuple(
            ((v, e0),) if ex is None else ((v, e0), ex)
            for v, (e0, ex) in enumerate(zip(st.end0, st.extra, strict=True))
        )
    )


def _normalize(problem: SequenceProblem, st: _State) -> None:
    """Trim every copy to the uses it serves, dropping recomputations that serve none; consumers
    first, since their recomputations are uses of their inputs. Adjacent copies merge."""
    for v in reversed(range(problem.num_nodes)):
        uses = _uses(problem, st, v)
        if st.extra[v] is None:
            st.end0[v] = max(uses, default=v)
            continue
        first = [u for u in uses if u <= st.end0[v]]
        later = [u for u in uses if u >= st.extra[v][0]]
        st.end0[v] = max(first, default=v)
        st.extra[v] = (st.extra[v][0], later[-1]) if later else None
        if st.extra[v] is not None and st.extra[v][0] <= st.end0[v] + 1:
            st.end0[v], st.extra[v] = st.extra[v][1], None  # adjacent copies: same bytes, cheaper


def _best_move(problem, st, prof, budget, mem, early_first, splits):
    """The eviction with the most excess removed per unit of cost, at the highest stages. The
    recomputation starts at one of ``splits + 1`` evenly spaced stages from right after the
    evicted stage to the next use (ties: the first tried, earliest first by ``early_first``). A
    candidate's cascade stops once its cost cannot beat the best score so far."""
    over = np.maximum(prof - budget, 0)
    excess = over.sum()
    for t in np.argsort(-prof, kind="stable"):
        if prof[t] <= budget:
            return None
        best = None
        for v in range(t):
            gap = _gap(problem, st, v, int(t))
            if gap is None:
                continue
            gain_ub = np.minimum(over[gap[0] + 1 : gap[1]], mem[v]).sum()
            max_cost = gain_ub / best[0] if best is not None else math.inf
            # recompute between right after t and just in time; recompute or keep its inputs
            lo, hi = int(t) + 1, gap[1]
            starts = sorted({lo + (hi - lo) * k // splits for k in range(splits + 1)})
            starts = starts if early_first else starts[::-1]
            for at, keep in itertools.product(starts, (False, True)):
                move = _evict(problem, st, v, gap[0], at, keep=keep, max_cost=max_cost)
                if move is None:
                    continue
                changes, cost = move
                diff = _diff(len(prof), changes, st, mem)
                gain = excess - np.maximum(prof + diff - budget, 0).sum()
                if gain > 0:
                    score = gain / (cost + 1e-9)
                    if best is None or score > best[0]:
                        best = (score, changes)
        if best is not None:
            return best[1]
    return None


def _undo_recomputations(problem, st, budget, deadline) -> None:
    """Keep values instead of recomputing them, most expensive first, while the plan fits."""
    for v in sorted(range(problem.num_nodes), key=lambda v: -problem.cost[v]):
        if st.extra[v] is None or time.perf_counter() > deadline:
            continue
        trial = _State(list(st.end0), list(st.extra))
        trial.end0[v], trial.extra[v] = max(_uses(problem, st, v)), None
        _normalize(problem, trial)
        if _profile(problem, trial).max() <= budget:
            st.end0, st.extra = trial.end0, trial.extra


def greedy_plan(
    problem: SequenceProblem, budget_bytes: int, *, time_limit_s: float = 10.0
) -> SequencePlan | None:
    """A plan with peak <= ``budget_bytes`` (see the module docstring), or None: the cheapest of
    four descents, recomputing right after the evicted stage or just in time (``splits`` 1) or
    also at the quarter points between (4), each breaking ties between equally good moves both
    ways (one may get stuck where another does not)."""
    deadline = time.perf_counter() + time_limit_s
    found = [
        _descend(problem, budget_bytes, deadline, early, splits)
        for splits, early in itertools.product((1, 4), (False, True))
    ]
    ranked = [(cost, k, plan) for k, (cost, plan) in enumerate(f for f in found if f)]
    return min(ranked)[2] if ranked else None


def _descend(
    problem: SequenceProblem, budget_bytes: int, deadline: float, early_first: bool, splits: int
) -> tuple[float, SequencePlan] | None:
    """One descent: (recompute cost, plan) of a plan that fits, or None."""
    n = problem.num_nodes
    st = _State([problem.last_use(v) for v in range(n)], [None] * n)
    mem = np.asarray(problem.mem_bytes, dtype=np.int64)
    prof = _profile(problem, st)
    while prof.max(initial=0) > budget_bytes:
        if time.perf_counter() > deadline:
            return None
        changes = _best_move(problem, st, prof, budget_bytes, mem, early_first, splits)
        if changes is None:
            return None
        for u, (end0, extra) in changes.items():
            st.end0[u], st.extra[u] = end0, extra
        _normalize(problem, st)
        prof = _profile(problem, st)
    _undo_recomputations(problem, st, budget_bytes, deadline)
    plan = _plan(st)
    sim = simulate(problem, plan)
    return (sim.recompute_cost, plan) if sim.valid and sim.peak_bytes <= budget_bytes else None
