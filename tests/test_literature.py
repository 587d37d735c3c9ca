"""The papers' setting on synthetic node-link graphs: loader, simulator, greedy and CP-SAT.

Oracles: hand-computed peaks on tiny graphs, :func:`simulate` for every plan, and enumeration of
every plan with at most two copies per value (dead stage between copies or not) on graphs of up
to five nodes. The real literature graphs are not needed (CI has none): each test builds its
graph in the same node-link JSON dialects.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
from graphremat.solvers.literature import from_node_link, to_remat_problem
from graphremat.solvers.moccasin import crossing_bound, solve_sequence
from graphremat.solvers.problem import ProblemError, evaluate, save_all_set
from graphremat.solvers.result import SolveStatus
from graphremat.solvers.sequence import (
    SequencePlan,
    SequenceProblem,
    no_remat_plan,
    simulate,
    stage_lower_bound,
)
from graphremat.solvers.sequence_bound import cascade_bound
from graphremat.solvers.sequence_greedy import greedy_plan
from hypothesis import given, settings
from hypothesis import strategies as st

FAST = {"time_limit_s": 20, "num_workers": 1}


def checkmate_json() -> dict:
    """f0 -> f1 -> f2 forward, b0 <- f2, b1 <- (b0, f1), b2 <- (b1, f0): a 3-layer chain."""
    names = ["f0", "f1", "f2", "b0", "b1", "b2"]
    ram = [4, 2, 1, 1, 2, 4]
    cpu = [10, 20, 30, 30, 20, 10]
    nodes = [
        {"id": i, "name": n, "backward": n[0] == "b", "cost_cpu": c, "cost_ram": r}
        for i, (n, c, r) in enumerate(zip(names, cpu, ram, strict=True))
    ]
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (1, 4), (4, 5), (0, 5)]
    links = [{"source": u, "target": v} for u, v in edges]
    return {"directed": True, "multigraph": False, "graph": {}, "nodes": nodes, "links": links}


def rl_json() -> dict:
    """Random-layered dialect: edges keyed "0"/"1", order in graph["order"] (not by name)."""
    nodes = [
        {"name": 0, "duration": 0, "out_cost": 3, "param_cost": 0},
        {"name": 1, "duration": 0, "out_cost": 1, "param_cost": 0},
        {"name": 2, "duration": 5, "out_cost": 2, "param_cost": 0},
        {"name": 3, "duration": 7, "out_cost": 4, "param_cost": 0},
    ]
    links = [{"0": 0, "1": 3}, {"0": 0, "1": 2}, {"0": 3, "1": 2}, {"0": 2, "1": 1}]
    graph = {"order": [0, 3, 2, 1], "source_node": 0, "target_node": 1}
    return {"directed": True, "multigraph": False, "graph": graph, "nodes": nodes, "links": links}


def test_checkmate_dialect_no_remat_peak_by_hand():
    """Live at each stage = values computed and read at or after it: f0 | f0 f1 | f0 f1 f2 |
    f0 f1 f2 b0 | f0 f1 b0 b1 | f0 b1 b2, i.e. 4, 6, 7, 8, 9, 10 bytes."""
    lit = from_node_link(checkmate_json(), "tiny")
    sim = simulate(lit.sequence, no_remat_plan(lit.sequence))
    assert sim.profile_bytes == (4, 6, 7, 8, 9, 10)
    assert lit.no_remat_peak_bytes() == 10
    assert lit.sequence.total_cost == 120
    assert stage_lower_bound(lit.sequence) == 10  # b2 with its inputs b1 and f0


def test_checkmate_dialect_remat_problem_agrees_on_the_no_remat_peak():
    lit = from_node_link(checkmate_json(), "tiny")
    p = to_remat_problem(lit)
    assert p.fwd_order == (0, 1, 2) and p.bwd_order == (3, 4, 5)
    assert evaluate(p, save_all_set(p)).peak_bytes == lit.no_remat_peak_bytes()


def test_rl_dialect_follows_the_given_order():
    """Order 0, 3, 2, 1: stage 0 = {0}:3, stage 1 = {0, 3}:7, stage 2 = {0, 3, 2}:9,
    stage 3 = {2, 1}:3."""
    lit = from_node_link(rl_json(), "rl")
    assert lit.order == (0, 3, 2, 1) and not lit.has_backward
    assert simulate(lit.sequence, no_remat_plan(lit.sequence)).profile_bytes == (3, 7, 9, 3)
    with pytest.raises(ProblemError, match="no backward nodes"):
        to_remat_problem(lit)


def test_simulator_rejects_a_read_of_a_dead_value():
    lit = from_node_link(checkmate_json(), "tiny")
    copies = list(no_remat_plan(lit.sequence).copies)
    copies[0] = ((0, 1),)  # f0 freed after f1, but b2 (stage 5) reads it
    sim = simulate(lit.sequence, SequencePlan(tuple(copies)))
    assert not sim.valid and "reads 0" in sim.reason
    copies[0] = ((0, 1), (5, 5))  # recomputed just in time for b2
    sim = simulate(lit.sequence, SequencePlan(tuple(copies)))
    assert sim.valid and sim.recompute_cost == 10 and sim.peak_bytes == 10


def test_budget_below_the_stage_bound_is_infeasible_for_any_schedule():
    lit = from_node_link(checkmate_json(), "tiny")
    res = solve_sequence(lit.sequence, stage_lower_bound(lit.sequence) - 1, **FAST)
    assert res.status is SolveStatus.INFEASIBLE
    assert res.info["any_schedule_bound"] == math.inf


# --------------------------------------------------------------------------- random small DAGs


@st.composite
def sequences(draw, max_nodes: int = 5) -> SequenceProblem:
    n = draw(st.integers(3, max_nodes))
    preds = []
    for k in range(n):
        chosen = draw(st.lists(st.integers(0, k - 1), max_size=2, unique=True)) if k else []
        preds.append(tuple(sorted(chosen)))
    mem = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    cost = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    return SequenceProblem(tuple(range(n)), tuple(preds), tuple(mem), tuple(map(float, cost)))


def all_two_copy_plans(p: SequenceProblem):
    """Every plan with at most two copies per value, adjacent copies included."""
    n = p.num_nodes
    per_value = []
    for v in range(n):
        opts = []
        for e0 in range(v, n):
            opts.append(((v, e0),))
            opts += [((v, e0), (s, e)) for s in range(e0 + 1, n) for e in range(s, n)]
        per_value.append(opts)
    for combo in itertools.product(*per_value):
        yield SequencePlan(combo)


def brute_force(p: SequenceProblem, budget: int) -> float:
    costs = [
        sim.recompute_cost
        for sim in map(lambda plan: simulate(p, plan), all_two_copy_plans(p))
        if sim.valid and sim.peak_bytes <= budget
    ]
    return min(costs, default=math.inf)


budgets = st.floats(0.4, 1.0)


@settings(max_examples=25, deadline=None)
@given(sequences(max_nodes=4), budgets)
def test_cpsat_optimum_equals_enumeration(p, frac):
    budget = int(frac * simulate(p, no_remat_plan(p)).peak_bytes)
    best = brute_force(p, budget)
    res = solve_sequence(p, budget, **FAST)
    if best == math.inf:
        assert res.status is SolveStatus.INFEASIBLE
        return
    assert res.status is SolveStatus.OPTIMAL and res.objective == best
    assert res.info["any_schedule_bound"] <= best


@settings(max_examples=30, deadline=None)
@given(sequences(max_nodes=9), budgets)
def test_every_plan_re_simulates_within_budget(p, frac):
    """Solver and greedy plans are real schedules; the bounds never exceed the plan's cost."""
    budget = int(frac * simulate(p, no_remat_plan(p)).peak_bytes)
    res = solve_sequence(p, budget, **FAST)
    greedy = greedy_plan(p, budget)
    if greedy is not None:
        sim = simulate(p, greedy)
        assert sim.valid and sim.peak_bytes <= budget
        assert res.status.has_plan and res.objective <= sim.recompute_cost
    if res.status.has_plan:
        sim = simulate(p, res.info["plan"])
        assert sim.valid and sim.peak_bytes <= budget and sim.recompute_cost == res.objective
        assert res.bound <= res.objective
        assert crossing_bound(p, budget) <= res.objective


def test_the_cascade_bound_counts_the_inputs_a_recomputation_needs():
    """b must be dropped across the big stage 2 and computed again for d; that needs a, which is
    not alive then and cannot be kept across stage 2 either: any schedule recomputes a and b
    (cost 6), while the crossing rows see only b (cost 1)."""
    p = SequenceProblem(
        names=("a", "b", "c", "d"),
        preds=((), (0,), (), (1,)),
        mem_bytes=(1, 1, 9, 1),
        cost=(5.0, 1.0, 0.0, 0.0),
    )
    assert simulate(p, no_remat_plan(p)).peak_bytes == 10
    assert crossing_bound(p, 9) == 1
    assert cascade_bound(p, 9) == 6 == brute_force(p, 9)
    res = solve_sequence(p, 9, **FAST)
    assert res.status is SolveStatus.OPTIMAL and res.objective == 6
    assert res.info["any_schedule_bound"] == 6 and res.info["cascade_bound"] == 6


def test_the_greedy_computes_early_and_keeps_the_input():
    """Stage 2 (a b c, 14 bytes) is over 13: b must go. Just in time (stage 4) b needs a, freed
    after stage 2: recomputing or keeping it puts a b e (14) in stage 4. Computing b at stage 3
    with a kept until then fits (a b d, 10 bytes): the enumerated optimum, cost 4."""
    p = SequenceProblem(
        names=("a", "b", "c", "d", "e"),
        preds=((), (0,), (0,), (), (1,)),
        mem_bytes=(4, 5, 5, 1, 5),
        cost=(4.0, 4.0, 1.0, 3.0, 2.0),
    )
    assert simulate(p, no_remat_plan(p)).peak_bytes == 14
    plan = greedy_plan(p, 13)
    assert plan is not None and plan.copies[0] == ((0, 3),) and plan.copies[1] == ((1, 1), (3, 4))
    sim = simulate(p, plan)
    assert sim.valid and sim.peak_bytes <= 13 and sim.recompute_cost == 4 == brute_force(p, 13)


def test_where_the_greedy_sticks_a_soft_budget_solve_gives_the_first_plan():
    """Stage 3 (a b c d, 14 bytes) is over 11. The greedy drops b (cost 0) first and keeps a
    for b's recomputation at stage 4, which then holds a b c e (12) with nothing left to drop;
    dropping c instead (cost 1) fits. The soft-budget model finds a plan and CP-SAT proves it
    optimal."""
    p = SequenceProblem(
        names=("a", "b", "c", "d", "e"),
        preds=((), (0,), (), (0,), (1, 2)),
        mem_bytes=(2, 3, 5, 4, 2),
        cost=(1.0, 0.0, 1.0, 1.0, 0.0),
    )
    assert greedy_plan(p, 11) is None
    res = solve_sequence(p, 11, **FAST)
    assert res.info["warm_start"] == "fit" and res.info["greedy_cost"] is None
    assert res.status is SolveStatus.OPTIMAL and res.objective == 1 == brute_force(p, 11)
    sim = simulate(p, res.info["plan"])
    assert sim.valid and sim.peak_bytes <= 11


def test_the_cascade_bound_counts_a_value_dropped_between_two_uses_twice():
    """a must be dropped at both big stages (1 and 3) and is read between them (c) and after
    (d): two recomputations, cost 10, where counting each value once gives 5."""
    p = SequenceProblem(
        names=("a", "B1", "c", "B2", "d"),
        preds=((), (), (0,), (), (0,)),
        mem_bytes=(1, 9, 1, 9, 1),
        cost=(5.0, 0.0, 0.0, 0.0, 0.0),
    )
    assert simulate(p, no_remat_plan(p)).peak_bytes == 10
    twice = SequencePlan((((0, 0), (2, 2), (4, 4)), ((1, 1),), ((2, 2),), ((3, 3),), ((4, 4),)))
    sim = simulate(p, twice)
    assert sim.valid and sim.peak_bytes == 9 and sim.recompute_cost == 10
    assert crossing_bound(p, 9) == 5
    assert cascade_bound(p, 9) == 10
    res = solve_sequence(p, 9, num_copies=3, **FAST)
    assert res.status is SolveStatus.OPTIMAL and res.objective == 10
    assert res.info["any_schedule_bound"] == 10


def random_schedule(p: SequenceProblem, rng: random.Random) -> SequencePlan:
    """A valid schedule with any number of copies per value: consumers first, each value's uses
    (its consumers' computations) split at random into runs, one copy per run, a recomputation
    starting just in time (or, one time in four, earlier, after the previous copy)."""
    n = p.num_nodes
    starts: list[list[int]] = [[k] for k in range(n)]  # stages where each value is computed
    copies: list[tuple] = [()] * n
    for v in reversed(range(n)):
        uses = sorted({s for w in p.succs[v] for s in starts[w]})
        cuts = [i for i in range(1, len(uses)) if rng.random() < 0.5]
        runs = [uses[i:j] for i, j in zip([0, *cuts], [*cuts, len(uses)], strict=True)]
        cv = [(v, runs[0][-1] if runs and runs[0] else v)]
        for run in runs[1:]:
            early = rng.random() < 0.25
            cv.append((rng.randint(cv[-1][1] + 1, run[0]) if early else run[0], run[-1]))
        copies[v] = tuple(cv)
        starts[v] = [c[0] for c in cv]
    return SequencePlan(tuple(copies))


@settings(max_examples=60, deadline=None)
@given(sequences(max_nodes=9), st.integers(0, 2**32 - 1))
def test_the_cascade_bound_holds_for_schedules_with_any_number_of_copies(p, seed):
    """At the peak of each of 40 random schedules, the bound is at most the cheapest of them
    that fits (each value may have up to as many copies as it has uses)."""
    rng = random.Random(seed)
    sims = [simulate(p, random_schedule(p, rng)) for _ in range(40)]
    assert all(s.valid for s in sims), [s.reason for s in sims if not s.valid]
    for peak in {s.peak_bytes for s in sims}:
        cheapest = min(s.recompute_cost for s in sims if s.peak_bytes <= peak)
        assert cascade_bound(p, peak) <= cheapest


@settings(max_examples=25, deadline=None)
@given(sequences(max_nodes=4), budgets)
def test_the_cascade_bound_never_passes_the_two_copy_optimum(p, frac):
    budget = int(frac * simulate(p, no_remat_plan(p)).peak_bytes)
    best = brute_force(p, budget)
    if best < math.inf:
        assert cascade_bound(p, budget) <= best
