"""More than one recomputation of a value: the joint-graph schedule class with recompute copies.

The class of ``problem.py`` recomputes a value at most once, just in time, and keeps it until its
last backward use. Deep chains then hold a whole recomputed segment at once; Revolve-like
schedules go lower by recomputing a value, dropping it, and recomputing it again later. Here a
plan is a :class:`CopyPlan`:

* ``save_end[v]``: the forward value ``v`` is kept from the forward until global step
  ``save_end[v]`` (>= F, the first backward step); absent: not saved.
* ``copies[v]``: ``v``'s recomputations in the backward, each an inclusive global step interval
  ``(start, end)`` with ``F <= start <= end``; disjoint, in time order, and after the saved copy.
  A recomputation at ``start`` runs before the backward node of that step (several in one step
  run in forward order); its inputs must be alive then.

Validity (:func:`evaluate_copies`): every read of a forward value by a backward node at step
``t``, or by a recomputation starting at ``t``, finds the value pinned, saved until at least
``t``, or a copy whose interval covers ``t``; a multi-output op's output is recomputed only with
the op (a copy of the op starting in the same step). Memory at step ``t``: the plan-independent
profile of ``problem.py``, plus saved extensions ``[last forward use + 1, save_end]``, plus every
copy covering ``t``, plus a copy's transient bytes at its start. Cost: the summed cost of all
copies. This is the once-class's time axis without substeps (``RematProblem.coarse``: a slot's
recomputations counted together with its step), and every function here works on
``problem.coarse()``. A plan of that once-class is a plan here (:func:`from_evaluation`) with the
same profile, peak and cost, so this class contains it; with substeps the once-class can peak
lower, so the planner uses this class only below the once-class minimum.

:func:`solve_multi` is the CP-SAT model of this class with at most ``max_recomputes`` copies per
value (``serve`` literals choose which copy answers each read, one cumulative for memory),
hinted with the once-class plan of :func:`solvers.cpsat.solve_cpsat`; its plans are re-checked
by :func:`evaluate_copies`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from .cpsat import (
    _byte_unit,
    _capacity_hi,
    _integer_costs,
    fixed_intervals,
    min_peak,
    solve_cpsat,
)
from .problem import Evaluation, ProblemError, RematProblem, evaluate, held_bytes
from .result import SolveResult, SolveStatus
from .sat import ModelMismatch, solve_model

Interval = tuple[int, int]

# Deterministic work per second of a stage's share of the time limit. CP-SAT's deterministic
# clock advances 5-10x slower on the copy model than on the once-class model (27-74 s of wall time
# per unit on the test MLP, 2 cores), so the once-class rate (solvers.sat) would let the
# wall-clock cap decide, and the plan then depends on the machine and its load. At this rate a
# stage uses about half of its wall share here.
COPY_WORK = 0.3


@dataclass(frozen=True, slots=True)
class CopyPlan:
    """Saved values (with the step their saved copy ends) and recompute copies per value."""

    save_end: Mapping[str, int] = field(default_factory=dict)
    copies: Mapping[str, tuple[Interval, ...]] = field(default_factory=dict)

    @property
    def saved(self) -> frozenset[str]:
        return frozenset(self.save_end)

    @property
    def recomputed(self) -> frozenset[str]:
        return frozenset(v for v, cs in self.copies.items() if cs)

    @property
    def num_recomputations(self) -> int:
        return sum(len(cs) for cs in self.copies.values())

    def to_json(self) -> dict:
        return {
            "save_end": dict(sorted(self.save_end.items())),
            "copies": {v: [list(c) for c in cs] for v, cs in sorted(self.copies.items()) if cs},
        }

    @classmethod
    def from_json(cls, doc: dict) -> CopyPlan:
        return cls(
            {str(v): int(e) for v, e in doc["save_end"].items()},
            {str(v): tuple((int(s), int(e)) for s, e in cs) for v, cs in doc["copies"].items()},
        )


@dataclass(frozen=True, slots=True)
class CopyEvaluation:
    valid: bool
    reason: str
    plan: CopyPlan
    profile_bytes: tuple[int, ...]
    peak_bytes: int
    cost: float


def from_evaluation(problem: RematProblem, ev: Evaluation) -> CopyPlan:
    """The once-class plan ``ev`` (:func:`solvers.problem.evaluate`) as a copy plan."""
    problem = problem.coarse()
    f = problem.num_fwd
    save_end = {v: f + ev.end[v] for v in ev.saved if not problem.attr(v, "pinned")}
    copies = {v: ((f + ev.slot[v], f + ev.end[v]),) for v in ev.recomputed}
    return CopyPlan(save_end, copies)


def _alive(problem: RematProblem, save_end, copies, u: str, t: int) -> str | None:
    """How ``u`` is alive at step ``t``: "pinned", "saved", "copy@<start>", or None."""
    a = problem.graph.nodes[u]
    if a["pinned"] and a["required"]:
        return "pinned"
    if save_end.get(u, -1) >= t:
        return "saved"
    for s, e in copies.get(u, ()):
        if s <= t <= e:
            return f"copy@{s}"
    return None


def evaluate_copies(problem: RematProblem, plan: CopyPlan) -> CopyEvaluation:
    """Check ``plan`` against the class (see the module docstring); its profile, peak, cost."""
    problem = problem.coarse()
    g, f, total = problem.graph, problem.num_fwd, problem.num_steps
    reasons: list[str] = []
    for v, e in plan.save_end.items():
        a = g.nodes.get(v)
        if a is None or not problem.is_fwd(v):
            raise ProblemError(f"copy plan saves non-forward node {v!r}")
        if not (a["savable"] and a["required"]):
            reasons.append(f"{v!r} is saved but not savable")
        if not f <= e < total:
            reasons.append(f"{v!r} saved until step {e}, outside the backward")
    for v, cs in plan.copies.items():
        a = g.nodes.get(v)
        if a is None or not problem.is_fwd(v):
            raise ProblemError(f"copy plan recomputes non-forward node {v!r}")
        if cs and not a["recomputable"]:
            reasons.append(f"{v!r} is recomputed but not recomputable")
        prev = plan.save_end.get(v, f - 1)
        for s, e in cs:
            if not (f <= s <= e < total) or s <= prev:
                reasons.append(f"{v!r} has copy {(s, e)} out of order or outside the backward")
            prev = e

    def alive(u: str, t: int) -> bool:
        return _alive(problem, plan.save_end, plan.copies, u, t) is not None

    for b in problem.bwd_order:
        t = f + problem.bwd_pos[b]
        for u in g.pred[b]:
            if problem.is_fwd(u) and not alive(u, t):
                reasons.append(f"backward node {b!r} at step {t} reads {u!r}, not alive then")
    for v, cs in plan.copies.items():
        parent = g.nodes[v]["tied_to"]
        for s, _ in cs:
            for u in g.pred[v]:
                if not alive(u, s):
                    reasons.append(f"recomputing {v!r} at step {s} reads {u!r}, not alive then")
            if parent is not None and all(ps != s for ps, _ in plan.copies.get(parent, ())):
                reasons.append(f"{v!r} is recomputed at step {s} without its op {parent!r}")

    diff = [0] * (total + 1)
    for v, e in plan.save_end.items():
        a = g.nodes[v]
        if a["pinned"]:
            continue
        start = problem.last_fwd_use(v) + 1
        diff[start] += a["mem_bytes"]
        diff[e + 1] -= a["mem_bytes"]
    cost = 0.0
    for v, cs in plan.copies.items():
        a = g.nodes[v]
        for s, e in cs:
            diff[s] += a["mem_bytes"] + a["transient_bytes"]
            diff[s + 1] -= a["transient_bytes"]
            diff[e + 1] -= a["mem_bytes"]
            cost += float(a["cost"])
    base = problem.fixed_profile()
    held = problem.held_copies * held_bytes(problem, plan.save_end)
    profile, run = [], 0
    for t in range(total):
        run += diff[t]
        profile.append(base[t] + run + problem.fixed_bytes + held)
    return CopyEvaluation(
        valid=not reasons,
        reason="; ".join(reasons[:3]),
        plan=plan,
        profile_bytes=tuple(profile),
        peak_bytes=max(profile, default=problem.fixed_bytes + held),
        cost=cost,
    )


def _reads(problem: RematProblem, copies) -> dict[str, list[int]]:
    """Steps at which each forward value is read in the backward: by backward nodes, by the
    recomputations of its consumers (at their start) and, for a multi-output op, by its
    outputs' recomputations."""
    g, f = problem.graph, problem.num_fwd
    reads: dict[str, list[int]] = {}
    for b in problem.bwd_order:
        for u in g.pred[b]:
            if problem.is_fwd(u):
                reads.setdefault(u, []).append(f + problem.bwd_pos[b])
    for v, cs in copies.items():
        parent = g.nodes[v]["tied_to"]
        for s, _ in cs:
            for u in g.pred[v]:
                reads.setdefault(u, []).append(s)
            if parent is not None:
                reads.setdefault(parent, []).append(s)
    return reads


def tighten(problem: RematProblem, plan: CopyPlan) -> CopyPlan:
    """The same schedule without idle memory: each saved copy and recomputation ends at its last
    read, and one that no read needs is dropped (with the reads its inputs then lose), until
    nothing changes. Never raises the peak or the cost; a valid plan stays valid. (A saved value
    that the backward never reads would also be an unused input of the emitted backward, which
    the autograd runtime keeps alive to the end.)"""
    problem = problem.coarse()
    f = problem.num_fwd
    save_end = dict(plan.save_end)
    copies = {v: list(cs) for v, cs in plan.copies.items() if cs}
    while True:
        reads = _reads(problem, copies)
        new_save = {}
        for v, e in save_end.items():
            last = max((t for t in reads.get(v, ()) if t <= e), default=None)
            if last is not None:
                new_save[v] = max(last, f)
        new_copies = {}
        for v, cs in copies.items():
            kept = []
            for s, e in cs:
                last = max((t for t in reads.get(v, ()) if s <= t <= e), default=None)
                if last is not None:
                    kept.append((s, last))
            if kept:
                new_copies[v] = kept
        if new_save == save_end and new_copies == copies:
            return CopyPlan(save_end, {v: tuple(cs) for v, cs in copies.items()})
        save_end, copies = new_save, new_copies


# ------------------------------------------------------------------------------ local search
class _Stuck(Exception):
    """A local-search move that cannot be completed."""


def _start_copy(problem, save_end, copies, v: str, t: int, k: int, depth: int = 0) -> None:
    """Add a recomputation of ``v`` at step ``t`` (``v`` not alive then) and make its inputs
    alive at ``t``: each by a new recomputation if it may have one more, else by extending its
    latest earlier copy. Raises :class:`_Stuck` if that is impossible."""
    g = problem.graph
    a = g.nodes[v]
    if depth > 64 or not a["recomputable"] or len(copies.get(v, ())) >= k:
        raise _Stuck
    copies[v] = sorted([*copies.get(v, ()), (t, t)])
    parent = a["tied_to"]
    if parent is not None:
        how = _alive(problem, save_end, copies, parent, t)
        if how is None:
            _start_copy(problem, save_end, copies, parent, t, k, depth + 1)
        elif how != f"copy@{t}":
            raise _Stuck
    for u in g.pred[v]:
        if problem.is_fwd(u):
            _ensure(problem, save_end, copies, u, t, k, depth + 1)


def _ensure(problem, save_end, copies, u: str, t: int, k: int, depth: int) -> None:
    if _alive(problem, save_end, copies, u, t) is not None:
        return
    try:
        trial_save, trial_copies = dict(save_end), {w: list(cs) for w, cs in copies.items()}
        _start_copy(problem, trial_save, trial_copies, u, t, k, depth)
        save_end.clear(), save_end.update(trial_save)
        copies.clear(), copies.update(trial_copies)
        return
    except _Stuck:
        pass
    # extend the latest interval of u that ends before t
    cs = copies.get(u, [])
    before = [i for i, (_, e) in enumerate(cs) if e < t]
    if before:
        i = before[-1]
        if i + 1 < len(cs) and cs[i + 1][0] <= t:
            raise _Stuck
        cs[i] = (cs[i][0], t)
        return
    if u in save_end and not (cs and cs[0][0] <= t):
        save_end[u] = t
        return
    raise _Stuck


def _moves(problem: RematProblem, plan: CopyPlan, peak_step: int):
    """Candidate changes that free memory at ``peak_step``: (bytes, value, kind, interval
    index, r1, r2) for each saved copy or recomputation alive there, not read at that step but
    read later in the same interval (first at r2; last read before: r1, or None), biggest
    values first."""
    t = peak_step
    reads = _reads(problem, plan.copies)
    # (value, kind, index, interval): the saved copy's memory starts after its last forward use
    held = [
        (v, "save", -1, (max(problem.last_fwd_use(v) + 1, problem.num_fwd), e))
        for v, e in plan.save_end.items()
    ]
    held += [(v, "copy", i, c) for v, cs in plan.copies.items() for i, c in enumerate(cs)]
    found = []
    for v, kind, i, (lo, e) in held:
        if not lo <= t <= e:
            continue
        rs = [r for r in reads.get(v, ()) if r <= e and (kind == "save" or r >= lo)]
        r2 = min((r for r in rs if r > t), default=None)
        if t not in rs and r2 is not None:
            r1 = max((r for r in rs if r < t), default=None)
            found.append((problem.attr(v, "mem_bytes"), v, kind, i, r1, r2))
    found.sort(key=lambda m: (-m[0], problem.fwd_pos[m[1]]))
    return found


def _apply(problem, plan: CopyPlan, move, k: int) -> CopyPlan | None:
    _, v, kind, i, r1, r2 = move
    save_end = dict(plan.save_end)
    copies = {w: list(cs) for w, cs in plan.copies.items()}
    try:
        if kind == "save":
            end = save_end.pop(v)
            if r1 is not None:
                save_end[v] = r1
        else:
            s, end = copies[v].pop(i)
            if r1 is not None:
                copies[v].insert(i, (s, r1))
        _start_copy(problem, save_end, copies, v, r2, k)
        cs = copies[v]
        j = cs.index((r2, r2))
        cs[j] = (r2, end)
        if j + 1 < len(cs) and cs[j + 1][0] <= end:
            return None
    except _Stuck:
        return None
    return tighten(problem, CopyPlan(save_end, {w: tuple(cs) for w, cs in copies.items() if cs}))


def improve_min_peak(
    problem: RematProblem, start: CopyEvaluation, max_recomputes: int, deadline: float
) -> CopyEvaluation:
    """Lower the peak of the valid copy plan ``start`` by local search: at a step at the
    peak, a value alive but idle there (read before and after, or only after) is dropped
    after its last read before and recomputed at its first read after, its inputs made alive
    then (new recomputations, or longer ones). A move is kept when the exact check
    (:func:`evaluate_copies`) finds it valid with a lower peak, or the same peak at fewer steps;
    stops when no move helps, or at ``deadline`` (``time.perf_counter()``)."""
    problem = problem.coarse()

    def key(ev: CopyEvaluation):
        return ev.peak_bytes, ev.profile_bytes.count(ev.peak_bytes)

    best = start
    while time.perf_counter() < deadline:
        improved = False
        steps = [t for t, b in enumerate(best.profile_bytes) if b == best.peak_bytes]
        for peak_step in steps:
            for move in _moves(problem, best.plan, peak_step):
                if time.perf_counter() >= deadline:
                    return best
                plan = _apply(problem, best.plan, move, max_recomputes)
                if plan is None:
                    continue
                ev = evaluate_copies(problem, plan)
                if ev.valid and key(ev) < key(best):
                    best, improved = ev, True
                    break
            if improved:
                break
        if not improved:
            return best
    return best


# ------------------------------------------------------------------------------ CP-SAT model
@dataclass(slots=True)
class _Model:
    model: cp_model.CpModel
    save: dict[str, cp_model.IntVar]
    save_end: dict[str, cp_model.IntVar]
    present: dict[tuple[str, int], cp_model.IntVar]
    start: dict[tuple[str, int], cp_model.IntVar]
    end: dict[tuple[str, int], cp_model.IntVar]
    serve: dict[tuple, cp_model.IntVar]
    cost_int: dict[str, int]
    cost_scale: float
    capacity: cp_model.IntVar | None


def build_multi_model(
    problem: RematProblem, capacity_bytes: int | None, max_recomputes: int
) -> _Model:
    """CP-SAT model of the copy class with at most ``max_recomputes`` copies per value;
    ``capacity_bytes=None`` makes the capacity a variable to minimise (min-peak)."""
    problem = problem.coarse()
    g, f = problem.graph, problem.num_fwd
    m = cp_model.CpModel()
    unit = _byte_unit(problem)
    cand = problem.candidates()
    cset = set(cand)
    cost_int, scale = _integer_costs(problem, cand)
    built = _Model(m, {}, {}, {}, {}, {}, {}, cost_int, scale, None)

    # the last step that may read v: a backward reader, or a recomputation of a consumer
    reach: dict[str, int] = {}
    for v in reversed(cand):
        r = -1
        for c in g.successors(v):
            if not problem.is_fwd(c):
                r = max(r, f + problem.bwd_pos[c])
            elif c in cset and g.nodes[c]["recomputable"]:
                r = max(r, reach[c])
        reach[v] = r

    intervals, demands = [], []
    for v in cand:
        a = g.nodes[v]
        mem, tr = a["mem_bytes"] // unit, a["transient_bytes"] // unit
        hi = max(reach[v], f)
        if a["savable"] and a["required"] and not a["pinned"] and reach[v] >= f:
            sv = m.new_bool_var(f"save[{v}]")
            se = m.new_int_var(f, hi, f"save_end[{v}]")
            m.add(se == f).only_enforce_if(~sv)
            built.save[v], built.save_end[v] = sv, se
            if mem:
                lfu = problem.last_fwd_use(v)
                size = m.new_int_var(0, hi - lfu, f"save_len[{v}]")
                m.add(size == se - lfu)
                iv = m.new_optional_interval_var(lfu + 1, size, se + 1, sv, f"save_iv[{v}]")
                intervals.append(iv)
                demands.append(mem)
        if not a["recomputable"] or reach[v] < f:
            continue
        for c in range(1, max_recomputes + 1):
            p = m.new_bool_var(f"present[{v},{c}]")
            s = m.new_int_var(f, hi, f"start[{v},{c}]")
            e = m.new_int_var(f, hi, f"end[{v},{c}]")
            m.add(e >= s)
            m.add(s == f).only_enforce_if(~p)
            m.add(e == f).only_enforce_if(~p)
            if c == 1:
                if v in built.save:  # after the saved copy, a dead step between (else merge)
                    m.add(s >= built.save_end[v] + 2).only_enforce_if([p, built.save[v]])
            else:
                m.add_implication(p, built.present[v, c - 1])
                m.add(s >= built.end[v, c - 1] + 2).only_enforce_if(p)
            built.present[v, c], built.start[v, c], built.end[v, c] = p, s, e
            if mem:
                size = m.new_int_var(0, hi - f + 1, f"len[{v},{c}]")
                m.add(size == e - s + 1)
                intervals.append(m.new_optional_interval_var(s, size, e + 1, p, f"iv[{v},{c}]"))
                demands.append(mem)
            if tr:
                intervals.append(m.new_optional_fixed_size_interval_var(s, 1, p, f"tr[{v},{c}]"))
                demands.append(tr)

    # a multi-output op's output is recomputed only with the op, in the same step
    for v in cand:
        parent = g.nodes[v]["tied_to"]
        if parent is None:
            continue
        for c in range(1, max_recomputes + 1):
            if (v, c) not in built.present:
                break
            if (parent, c) not in built.present:
                m.add(built.present[v, c] == 0)
                continue
            m.add_implication(built.present[v, c], built.present[parent, c])
            m.add(built.start[v, c] == built.start[parent, c]).only_enforce_if(built.present[v, c])

    def serve(u: str, reader: str, x, enabled: list) -> None:
        """Some copy of ``u`` is alive at step ``x`` when ``reader`` runs (if ``enabled``)."""
        a = g.nodes[u]
        if a["pinned"] and a["required"]:
            return
        lits = []
        if u in built.save:
            lit = m.new_bool_var(f"serve[{u}->{reader},0]")
            m.add_implication(lit, built.save[u])
            m.add(built.save_end[u] >= x).only_enforce_if(lit)
            built.serve[u, reader, 0] = lit
            lits.append(lit)
        for c in range(1, max_recomputes + 1):
            if (u, c) not in built.present:
                break
            lit = m.new_bool_var(f"serve[{u}->{reader},{c}]")
            m.add_implication(lit, built.present[u, c])
            m.add(built.start[u, c] <= x).only_enforce_if(lit)
            m.add(built.end[u, c] >= x).only_enforce_if(lit)
            built.serve[u, reader, c] = lit
            lits.append(lit)
        m.add_bool_or(lits + [~e for e in enabled])

    for b in problem.bwd_order:
        x = f + problem.bwd_pos[b]
        for u in g.pred[b]:
            if u in cset:
                serve(u, b, x, [])
    for (v, c), p in built.present.items():
        for u in g.pred[v]:
            if u in cset:
                serve(u, f"{v}#{c}", built.start[v, c], [p])

    fixed, fixed_demands = fixed_intervals(m, problem, unit)
    intervals += fixed
    demands += fixed_demands
    if capacity_bytes is None:
        cap = m.new_int_var(0, _capacity_hi(problem, unit) * max_recomputes, "capacity")
        built.capacity = cap
        m.minimize(cap)
        m.add_cumulative(intervals, demands, cap)
    else:
        cap_units = (capacity_bytes - problem.fixed_bytes) // unit
        if cap_units < 0:
            m.add_bool_or([])
            cap_units = 0
        m.add_cumulative(intervals, demands, cap_units)
        m.minimize(sum(cost_int[v] * p for (v, _), p in built.present.items() if cost_int[v]))
    return built


def _decode(built: _Model, solver: cp_model.CpSolver) -> CopyPlan:
    save_end = {
        v: solver.value(built.save_end[v]) for v, s in built.save.items() if solver.value(s)
    }
    copies: dict[str, list[Interval]] = {}
    for (v, c), p in sorted(built.present.items(), key=lambda kv: kv[0][1]):
        if solver.value(p):
            copies.setdefault(v, []).append(
                (solver.value(built.start[v, c]), solver.value(built.end[v, c]))
            )
    return CopyPlan(save_end, {v: tuple(cs) for v, cs in copies.items()})


def _decode_tight(built: _Model, solver: cp_model.CpSolver, problem: RematProblem) -> CopyPlan:
    return tighten(problem, _decode(built, solver))


def _hint(built: _Model, problem: RematProblem, plan: CopyPlan) -> None:
    m, f = built.model, problem.num_fwd
    for v, s in built.save.items():
        m.add_hint(s, v in plan.save_end)
        m.add_hint(built.save_end[v], plan.save_end.get(v, f))
    for (v, c), p in built.present.items():
        cs = plan.copies.get(v, ())
        on = c <= len(cs)
        m.add_hint(p, on)
        m.add_hint(built.start[v, c], cs[c - 1][0] if on else f)
        m.add_hint(built.end[v, c], cs[c - 1][1] if on else f)


@dataclass(frozen=True, slots=True)
class Crossing:
    """What every plan of the copy class holds, whatever its number of copies (so also every
    plan of the once-class, which it contains).

    A forward value read by backward nodes at steps ``r1 < ... < rm`` is alive at each read.
    Between two reads, and from its last forward use to ``r1`` if it can be saved, it is alive
    unless it is dropped there, and each such *gap* it is dropped in costs one more
    computation (the copy that serves the read ending the gap). A value that cannot be saved
    costs one computation before ``r1``.

    ``sure``: per global step, bytes alive in every plan (``fixed_bytes``, the plan-independent
    profile, the values read then, gaps of values no plan can recompute). ``gaps``: per gap,
    ``(value, first step, last step)``; ``across``: per step, the gaps that cover it.
    ``forced``: values every plan recomputes; ``implies``: (a, b) where recomputing a needs b
    recomputed (an input that cannot be saved, or a's multi-output op); ``blocked``: values no
    plan can recompute; ``impossible``: no plan exists."""

    sure: tuple[int, ...]
    gaps: tuple[tuple[str, int, int], ...]
    across: tuple[tuple[int, ...], ...]
    forced: frozenset[str]
    implies: tuple[tuple[str, str], ...]
    blocked: frozenset[str]
    impossible: bool

    @property
    def peak_bound(self) -> int:
        """No plan of the class (any number of copies) peaks lower."""
        return max(self.sure, default=0)


def crossing(problem: RematProblem) -> Crossing:
    """:class:`Crossing` of ``problem`` (kept with it: every budget's bound uses it)."""
    problem = problem.coarse()
    if "crossing" not in problem._memo:
        problem._memo["crossing"] = _crossing(problem)
    return problem._memo["crossing"]


def _crossing(problem: RematProblem) -> Crossing:
    g, f, total = problem.graph, problem.num_fwd, problem.num_steps
    cand = problem.candidates()
    cset = set(cand)

    def always(v: str) -> bool:
        return bool(g.nodes[v]["pinned"] and g.nodes[v]["required"])

    def can_save(v: str) -> bool:
        a = g.nodes[v]
        return bool(a["savable"] and a["required"] and not a["pinned"])

    reads: dict[str, set[int]] = {v: set() for v in cand}
    for b in problem.bwd_order:
        for u in g.pred[b]:
            if u in cset and not always(u):
                reads[u].add(f + problem.bwd_pos[b])
    implies: list[tuple[str, str]] = []
    blocked: set[str] = set()
    for v in cand:
        if not g.nodes[v]["recomputable"]:
            blocked.add(v)
            continue
        parent = g.nodes[v]["tied_to"]
        needs = [u for u in g.pred[v] if u in cset and not always(u) and not can_save(u)]
        for u in [*needs, *([parent] if parent is not None else [])]:
            if u in cset and g.nodes[u]["recomputable"]:
                implies.append((v, u))
            else:
                blocked.add(v)
    changed = True
    while changed:  # recomputing a value that needs a blocked one is blocked too
        changed = False
        for x, y in implies:
            if y in blocked and x not in blocked:
                blocked.add(x)
                changed = True
    forced = {v for v in cand if reads[v] and not can_save(v)}
    frontier = list(forced)
    while frontier:
        v = frontier.pop()
        for x, y in implies:
            if x == v and y not in forced:
                forced.add(y)
                frontier.append(y)

    base = problem.fixed_profile()
    sure = [problem.fixed_bytes + base[t] for t in range(total)]
    gaps: list[tuple[str, int, int]] = []
    across: list[list[int]] = [[] for _ in range(total)]
    for v in cand:
        mem = g.nodes[v]["mem_bytes"]
        if not reads[v] or not mem:
            continue
        rs = sorted(reads[v])
        for t in rs:
            sure[t] += mem
        spans = [(a + 1, b - 1) for a, b in zip(rs, rs[1:], strict=False)]
        if can_save(v):
            spans.insert(0, (problem.last_fwd_use(v) + 1, rs[0] - 1))
        for lo, hi in spans:
            if lo > hi:
                continue
            if v in blocked:  # alive there in every plan
                for t in range(lo, hi + 1):
                    sure[t] += mem
                continue
            for t in range(lo, hi + 1):
                across[t].append(len(gaps))
            gaps.append((v, lo, hi))
    return Crossing(
        sure=tuple(sure),
        gaps=tuple(gaps),
        across=tuple(tuple(a) for a in across),
        forced=frozenset(forced),
        implies=tuple(implies),
        blocked=frozenset(blocked),
        impossible=bool(forced & blocked),
    )


def crossing_cost_bound(
    problem: RematProblem,
    budget_bytes: int,
    *,
    time_limit_s: float,
    work_s: float,
    max_recomputes: int | None = None,
    seed: int = 0,
) -> float:
    """A lower bound on the recompute cost of every plan of the copy class within
    ``budget_bytes`` (inf: none fits), with at most ``max_recomputes`` computations of a value
    in the backward (None: any number).

    The relaxation of :class:`Crossing`: choose the gaps each value is dropped in, paying its
    cost per gap (and once for a value that cannot be saved), such that at every step the
    gaps kept fit beside the sure bytes. Every plan gives such a choice at no more cost, so
    the cheapest choice bounds every plan. A small covering model, solved by CP-SAT within
    ``work_s`` of deterministic work; its proven bound is used, so a cut-short solve is valid.
    """
    problem = problem.coarse()
    _once_per_step(problem)
    cr = crossing(problem)
    if cr.impossible or cr.peak_bound > budget_bytes:
        return math.inf
    g = problem.graph
    rows: dict[tuple[int, ...], int] = {}
    for t, ids in enumerate(cr.across):
        need = cr.sure[t] + sum(g.nodes[cr.gaps[i][0]]["mem_bytes"] for i in ids) - budget_bytes
        if need > 0:
            rows[ids] = max(rows.get(ids, 0), need)
    used = sorted({i for ids in rows for i in ids})
    values = sorted({cr.gaps[i][0] for i in used} | cr.forced | {v for p in cr.implies for v in p})
    icost, scale = _integer_costs(problem, values, down=True)
    m = cp_model.CpModel()
    drop = {i: m.new_bool_var(f"drop[{i}]") for i in used}
    recomputed = {v: m.new_bool_var(f"recomputed[{v}]") for v in values}
    per_value: dict[str, list] = {v: [] for v in values}
    for i in used:
        per_value[cr.gaps[i][0]].append(drop[i])
    for values_, need in rows.items():
        m.add(sum(g.nodes[cr.gaps[i][0]]["mem_bytes"] * drop[i] for i in values_) >= need)
    objective = []
    for v in values:
        r, ds = recomputed[v], per_value[v]
        for d in ds:
            m.add_implication(d, r)
        if v in cr.blocked:
            m.add(r == 0)
        if v in cr.forced:
            m.add(r == 1)
        # computations: at least one per dropped gap (each needs a copy that starts in it or
        # at the read ending it), one more if it cannot be saved, and one if recomputed at all
        n = m.new_int_var(0, len(ds) + 2, f"computations[{v}]")
        m.add(n >= sum(ds) + (1 if v in cr.forced else 0))
        m.add(n >= r)
        if max_recomputes is not None:
            m.add(n <= max_recomputes)
        if icost[v]:
            objective.append(icost[v] * n)
    for a, b in cr.implies:
        m.add_implication(recomputed[a], recomputed[b])
    m.minimize(sum(objective))
    solver, status, _ = solve_model(
        m,
        time_limit_s=time_limit_s,
        seed=seed,
        num_workers=1,
        log_progress=False,
        work_s=work_s,
    )
    if status is SolveStatus.INFEASIBLE:
        return math.inf
    return max(0.0, float(solver.best_objective_bound)) / scale


def _once_per_step(problem: RematProblem) -> None:
    if problem.held_copies:
        raise ProblemError(
            f"{problem.name}: the copy class does not model a graph that runs several times per "
            "step (held_copies > 0); plan it with max_recomputes=1"
        )


def solve_multi(
    problem: RematProblem,
    budget_bytes: int,
    *,
    max_recomputes: int = 2,
    time_limit_s: float = 60.0,
    seed: int = 0,
    num_workers: int = 1,
    log_progress: bool = False,
    once_saved: frozenset[str] | None = None,
    lowest: tuple[CopyEvaluation, int, bool] | None = None,
) -> SolveResult:
    """Minimum-recompute copy plan with peak <= ``budget_bytes``, at most ``max_recomputes``
    recomputations per value. The once-class solve (:func:`solvers.cpsat.solve_cpsat`, a
    quarter of the time) gives the hint; below the once-class's minimum, the smallest-peak copy
    plan (:func:`min_peak_multi`, half of the time; kept in ``info["lowest"]``) does, and is the
    plan when it fits. ``info["plan"]`` is the :class:`CopyPlan`, re-checked by
    :func:`evaluate_copies`; ``objective``/``bound`` are in the problem's cost unit and the
    bound holds for the class with ``max_recomputes`` copies. ``once_saved``: the once-class
    smallest-peak plan, if known (see :func:`min_peak_multi`); ``lowest``: that function's
    result for the copy class, if known. Each stage's CP-SAT work is a
    fixed share of ``time_limit_s`` (deterministic time, see :func:`solvers.sat.make_solver`):
    with one worker the plan depends on the problem, budget, limit and seed, not on the machine
    (unless a much slower machine reaches the wall-clock cap first)."""
    problem = problem.coarse()
    _once_per_step(problem)
    if max_recomputes < 1:
        raise ValueError(f"max_recomputes must be >= 1, not {max_recomputes}")
    t0 = time.perf_counter()
    kw = dict(seed=seed, num_workers=num_workers, log_progress=log_progress)
    # a bound for any plan of the class (see Crossing): a cheap proof that nothing fits, and
    # the bound the copy model's own relaxation rarely reaches
    crossing_bound = crossing_cost_bound(
        problem,
        budget_bytes,
        max_recomputes=max_recomputes,
        time_limit_s=time_limit_s,
        work_s=time_limit_s / 20,
        seed=seed,
    )
    info: dict = {"max_recomputes": max_recomputes, "crossing_bound": crossing_bound}
    if crossing_bound == math.inf:
        wall = time.perf_counter() - t0
        return SolveResult("multi", SolveStatus.INFEASIBLE, wall_s=wall, info=info)
    once = solve_cpsat(problem, budget_bytes, time_limit_s=time_limit_s / 4, **kw)
    plans: list[CopyEvaluation] = []
    info["once_cost"] = once.objective
    hint = None
    if once.status.has_plan:
        hint = evaluate_copies(problem, from_evaluation(problem, evaluate(problem, once.saved)))
        plans.append(hint)
    else:  # below the once-class: the smallest-peak copy plan is the hint (if it fits, a plan)
        lowest = lowest or min_peak_multi(
            problem,
            max_recomputes=max_recomputes,
            time_limit_s=time_limit_s / 2,
            once_saved=once_saved,
            **kw,
        )
        info["lowest"] = lowest
        hint = lowest[0]
        if hint.peak_bytes <= budget_bytes:
            plans.append(hint)
        elif lowest[2]:  # proven: nothing fits
            wall = time.perf_counter() - t0
            return SolveResult("multi", SolveStatus.INFEASIBLE, wall_s=wall, info=info)
    built = build_multi_model(problem, budget_bytes, max_recomputes)
    _hint(built, problem, hint.plan)
    left = max(0.1, time_limit_s - (time.perf_counter() - t0))
    # deterministic work, a fixed share of the limit (not of the wall time left), so that with
    # one worker the plan is the same on every machine
    solver, status, sizes = solve_model(
        built.model, time_limit_s=left, work_s=COPY_WORK * time_limit_s / 4, **kw
    )
    bound = -math.inf
    if status.has_plan:
        ev = evaluate_copies(problem, _decode_tight(built, solver, problem))
        if not ev.valid or ev.peak_bytes > budget_bytes:
            raise ModelMismatch(
                f"copy plan of {problem.name} checks as peak {ev.peak_bytes} > {budget_bytes} "
                f"or invalid ({ev.reason})"
            )
        plans.append(ev)
        bound = float(solver.best_objective_bound)
        bound = (
            math.ceil(bound - 1e-6)
            if built.cost_scale == 1.0
            else (bound - len(built.present)) / built.cost_scale
        )
        if status is SolveStatus.OPTIMAL:
            bound = ev.cost
    elif status is SolveStatus.INFEASIBLE:
        if plans:
            raise ModelMismatch(f"copy model of {problem.name} rejects a plan that fits")
        return SolveResult("multi", status, wall_s=time.perf_counter() - t0, info=info, **sizes)
    wall = time.perf_counter() - t0
    if not plans:
        return SolveResult("multi", SolveStatus.UNKNOWN, wall_s=wall, info=info, **sizes)
    best = min(plans, key=lambda e: (e.cost, e.peak_bytes))
    if crossing_bound > best.cost * (1 + 1e-9) + 1e-6:
        raise ModelMismatch(
            f"copy plan of {problem.name} costs {best.cost} below the crossing bound "
            f"{crossing_bound}"
        )
    bound = max(0.0, min(max(bound, crossing_bound), best.cost))
    return SolveResult(
        solver="multi",
        status=SolveStatus.OPTIMAL if best.cost <= bound else SolveStatus.FEASIBLE,
        saved=best.plan.saved,
        objective=best.cost,
        bound=bound,
        peak_bytes=best.peak_bytes,
        wall_s=wall,
        info={**info, "plan": best.plan},
        **sizes,
    )


def min_peak_multi(
    problem: RematProblem,
    *,
    max_recomputes: int = 2,
    time_limit_s: float = 30.0,
    seed: int = 0,
    num_workers: int = 1,
    log_progress: bool = False,
    once_saved: frozenset[str] | None = None,
) -> tuple[CopyEvaluation, int, bool]:
    """The smallest peak of the copy class: (best plan found, proven lower bound in bytes,
    proven optimal). Staged: the once-class smallest-peak plan (``once_saved``, else searched
    in a quarter of the time) hints the model with one copy per value (3/8 of the time), whose
    plan, improved by :func:`improve_min_peak`, hints the model with ``max_recomputes`` (the
    rest): the smaller model finds low peaks much sooner (test GPT: 0.373 of the no-remat
    peak, proven, in 11 s, where two copies from the once-class hint stayed near 0.47).
    (Hinting k copies with the k - 1 result instead was no better: MLP k=3 0.453 instead of
    0.435, GPT k=3 unchanged at 0.373, benchmarks/copy_class.py --time-limit 60.)"""
    problem = problem.coarse()
    _once_per_step(problem)
    t0 = time.perf_counter()
    kw = dict(seed=seed, num_workers=num_workers, log_progress=log_progress)
    deadline = t0 + time_limit_s
    if max_recomputes > 1:
        hint, _, _ = min_peak_multi(
            problem,
            max_recomputes=1,
            time_limit_s=time_limit_s * 3 / 8,
            once_saved=once_saved,
            **kw,
        )
        share = 5 / 8
    else:
        share = 1.0
        if once_saved is None:
            once_saved = min_peak(problem, time_limit_s=time_limit_s / 4, **kw).saved
            share = 3 / 4
        hint = evaluate_copies(problem, from_evaluation(problem, evaluate(problem, once_saved)))
    hint = improve_min_peak(problem, hint, max_recomputes, deadline)
    built = build_multi_model(problem, None, max_recomputes)
    _hint(built, problem, hint.plan)
    left = max(0.1, deadline - time.perf_counter())
    # a fixed share of deterministic work (see solve_multi)
    solver, status, _ = solve_model(
        built.model, time_limit_s=left, work_s=COPY_WORK * time_limit_s * share, **kw
    )
    unit = _byte_unit(problem)
    best = hint
    if status.has_plan:
        ev = evaluate_copies(problem, _decode_tight(built, solver, problem))
        if not ev.valid:
            raise ModelMismatch(f"min-peak copy plan of {problem.name} is invalid: {ev.reason}")
        ev = improve_min_peak(problem, ev, max_recomputes, deadline)
        if ev.peak_bytes < best.peak_bytes:
            best = ev
    lb = problem.fixed_bytes + int(solver.best_objective_bound) * unit
    lb = min(max(lb, crossing(problem).peak_bound), best.peak_bytes)
    return best, lb, best.peak_bytes <= lb
