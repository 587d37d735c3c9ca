"""One budget for a whole training step compiled as several regions (graph breaks).

Dynamo compiles a model with graph breaks into regions that run one after another: forwards in
order, then backwards in reverse. While region k runs, memory also holds what the other regions
keep: the parameters, buffers and gradients of the rest of the model, and what the regions before
k hold for their backward (theirs runs after k's): their saved values and the inputs their
backward reads. graphremat plans region k with those bytes as fixed residents, so each region's
promise is a promise about the whole step:

    outside(k) = (model params + buffers + grads [+ FSDP2's buffers])
                 - (region k's own params, buffers and grads)
                 + sum over regions j first compiled before k: held(j) * runs(j)
                 + what other runs of k hold (see below)

A region can run several times per step (a graph break inside a module used by several
blocks; under FSDP2 the block graph): ``runs`` is predicted from the model (its modules whose
class's ``forward`` is the compiled code). Earlier compiles of k in the same step each serve
one other run (counted by what they hold); the remaining ``runs - 1 - earlier`` runs use this
plan, so the solver counts its saved values that many more times (``held_copies``) and its
held inputs as fixed bytes. Each run of a planned region is noted; after every call of the
compiled model the runs are replayed against the plans; a run whose whole-step peak exceeds
its budget (an unpredicted run, another order) gives a warning, and its compile is planned
again before its next run, for the runs the step made (``Regions.end_step``).

Regions are planned one at a time, in the order the first step reaches them, so an early region
can keep more for its backward than leaves room for a later one. Where a later region then has
no plan, and the earlier compiles it counts keep enough saved bytes that a new plan could free
(``Regions.make_room``), each of them is asked to keep the same fraction less: a cap on the bytes
one run keeps (room for the later region's peak without rematerialization if that is possible,
else for the midpoint, else for its smallest plan; the first cap with a plan stays), enforced by
a step between the region's forward and backward at which the later region's need is alive
(``solvers.problem.with_room_between``, checked by the simulator too); what one compile cannot
free falls to those planned after it, and none may keep more than before. The earlier compiles
are planned again before their next run and the later one after them. In the model's first
call, whose earlier forwards have run by then, ``graphremat.compile``'s wrapper runs the call
again (StepAgain; buffers and random state restored; a run whose new plans freed nothing for
that region raises InfeasibleBudget); where it cannot (torch.distributed, later calls), the
later region runs its smallest plan in that call, which exceeds the budget, with a warning that
says by how much.

A fraction budget is resolved against the step, not the region: the largest peak without
rematerialization among the step's regions planned so far, this one included
(``Regions.peak_floor``), so a region after a wide one is not held to a fraction of its own
small peak (mostly what the wide one keeps).

Regions are keyed by Dynamo's frame id (under DistributedDataParallel, by frame id and the
gradient bucket at which Dynamo's DDPOptimizer split the frame's graph): they are compiled in
the order the first step reaches them, which is their forward order; a recompilation of a
region (a new input shape) keeps its place. Gradients are counted as if every parameter's
``.grad`` were alive throughout (the usual case once a step has run). This needs the model
(``graphremat.compile``); the string backend sees one region at a time and plans each under the
full budget, with a warning.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from . import _private as P


def local_part(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this process holds: a DTensor's (FSDP2's sharded parameters) local
    shard, else ``t``."""
    if isinstance(t, DTensor):
        with torch.no_grad():
            return t.to_local()
    return t


def model_resident_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's distinct parameter and buffer storages on this process (a sharded
    parameter's local shard), plus one gradient per parameter that requires grad, and, under
    DistributedDataParallel without ``gradient_as_bucket_view``, DDP's gradient buckets (one
    more copy of the gradients, kept for the communication)."""
    # DDP's buckets are views of the gradients with gradient_as_bucket_view, else a copy
    grad_copies = 1
    if isinstance(model, DistributedDataParallel) and not model.gradient_as_bucket_view:
        grad_copies = 2
    seen: set[int] = set()
    total = 0
    for t in (*model.parameters(), *model.buffers()):
        s = local_part(t).untyped_storage()
        if s.data_ptr() in seen and s.nbytes():
            continue
        seen.add(s.data_ptr())
        total += s.nbytes() * (1 + grad_copies * t.requires_grad)
    return total


@dataclass(eq=False)
class Compile:
    """One compile of a region: what its plan assumed and what one run of it holds."""

    key: object
    step: int  # the ledger's step (top-level call) during which it was compiled
    runs: int  # runs per step predicted for its region
    held_copies: int = 0  # other runs of this plan the plan counts (solver's held_copies)
    reused: bool = True  # planned as serving the region's later runs in the step too
    others_bytes: int = 0  # bytes of other runs and earlier regions the plan counts, fixed part
    earlier_bytes: int = 0  # of which the compiles in ``earlier`` hold
    activation_bytes: int = 0  # the region's non-parameter inputs (held until its backward)
    plan: object = None  # its Plan, once made
    # set by Regions.end_step when a step's runs exceeded the plan's budget: (runs of this
    # compile, bytes other compiles' runs hold) before its worst run, to plan it again with
    replan: tuple[int, int] | None = None
    replans: int = 0
    recompile: Callable | None = None  # compiles the region again for given inputs
    impl: Callable | None = None  # the compiled region now in use
    # the compiles whose runs this compile's plan counts as holding their bytes (earlier
    # regions', and earlier compiles of its own region in the step), with how many runs each
    earlier: list[tuple[Compile, int]] = field(default_factory=list)
    # room for a later region (Regions.make_room): the request it is to be planned again for,
    # and the cap on the bytes one run may keep for its backward that its plan met (kept by
    # its later compiles)
    room: Room | None = None
    held_cap: int | None = None
    refresh: bool = False  # plan again before the next run, with the ledger as it is then
    rooms: int = 0  # times this compile had earlier regions make room for it

    @property
    def held_bytes(self) -> int:
        """Bytes one run holds from its forward to its backward."""
        saved = self.plan.saved_bytes if self.plan is not None else 0
        return saved + self.activation_bytes


@dataclass(eq=False)
class Room:
    """A later region's request that the earlier compiles it counts keep less for their
    backward (Regions.make_room). ``keeps``: saved bytes all their counted runs may keep in
    all, one per candidate (most room first); ``runs`` and ``old``: each compile's runs
    counted and saved bytes per run when asked, in run order; ``new``: saved bytes per run of
    those planned again since."""

    keeps: list[int]
    runs: dict[Compile, int]
    old: dict[Compile, int]
    new: dict[Compile, int] = field(default_factory=dict)

    def caps(self, c: Compile) -> list[int]:
        """Caps on the bytes one run of ``c`` may keep, to try in order: per candidate, what
        is left after the compiles planned again (what they keep now) and the others (their
        share, the same fraction of what they kept); then the loosest cap the last candidate
        allows (the others keeping nothing), so that what one compile cannot free falls to
        the ones after it; last, what ``c`` kept: its plan must not take the room that the
        compiles before it made."""
        reducible = sum(n * self.old[d] for d, n in self.runs.items())
        n, mine = self.runs[c], self.old[c]
        out: list[int] = []
        for keep in self.keeps:
            others = sum(
                m * (self.new[d] if d in self.new else self.old[d] * keep // reducible)
                for d, m in self.runs.items()
                if d is not c
            )
            out.append((keep - others) // n)
        done = sum(m * self.new[d] for d, m in self.runs.items() if d in self.new)
        out.append((self.keeps[-1] - done) // n)
        caps: list[int] = []
        for cap in (*out, mine):
            cap = min(cap, mine)
            if cap >= 0 and cap not in caps:
                caps.append(cap)
            if cap == mine:
                break
        return caps


def fsdp2_buffer_bytes(model: torch.nn.Module) -> int:
    """FSDP2's own buffers beside a compiled block (``fully_shard`` modules), allocated by its
    hooks outside the compiled graphs: while one block runs, the next block's all-gathered
    parameters (prefetched), the previous block's unsharded gradients (the reduce-scatter's
    input) and, depending on when the asynchronous collectives finish, one more such buffer;
    the outermost module's parameters stay all-gathered from its forward to the end of the
    backward, with its all-gather and reduce-scatter buffers and unsharded gradients. Counted
    as four times the largest module's unsharded parameter bytes plus five times the
    outermost's own; 0 without FSDP2. Three of the largest and the outermost's five were the
    worst case of 12 runs of the 2-rank test on CPU with gloo; the fourth came after a later
    run (1 of about 25) measured 526,336 bytes over the prediction: exactly one more block's
    unsharded parameters."""
    from torch.distributed.fsdp import FSDPModule

    largest, root = 0, None
    for m in model.modules():
        if not isinstance(m, FSDPModule):
            continue
        inner = {
            id(p)
            for c in m.modules()
            if c is not m and isinstance(c, FSDPModule)
            for p in c.parameters()
        }
        own = sum(p.numel() * p.element_size() for p in m.parameters() if id(p) not in inner)
        largest = max(largest, own)
        root = own if root is None else root
    return 4 * largest + 5 * (root or 0)


class Regions:
    """The ledger of one compiled model's regions (see the module docstring)."""

    def __init__(self, model: object = None) -> None:
        self.model = model if isinstance(model, torch.nn.Module) else None
        self.model_bytes = model_resident_bytes(model) if self.model is not None else None
        if self.model is not None:
            self.model_bytes += fsdp2_buffer_bytes(self.model)
        self.compiles: list[Compile] = []
        self.current: Compile | None = None  # the compile being planned
        self.step = 0  # top-level calls so far (see begin_step)
        self.ran: list[Compile] = []  # compiles run during the current top-level call
        # the current call can be run again (StepAgain): set by graphremat.compile's wrapper
        self.can_run_again = False
        self.runs_of_call = 1  # the current call's runs so far, this one included
        self.room_needs: dict = {}  # region key -> its need when it asked for room, this call
        self.fallbacks = 0  # regions compiled with PyTorch's partition instead (fallback="pytorch")
        # step -> the largest peak without rematerialization any plan of a compile made in that
        # step has had (peak_floor: it never falls, though making room lowers later figures)
        self.step_peaks: dict[int, int] = {}

    # ---------------------------------------------------------------- planning
    def begin(self, key: object, codes: list | None = None) -> Compile:
        """A compile of region ``key`` starts (``codes``: the code objects Dynamo traced)."""
        runs = runs_per_step(self.model, codes) if self.model is not None else 1
        self.current = Compile(key, self.step, runs)
        return self.current

    def outside(
        self, own_bytes: int, activation_bytes: int, *, reused: bool = True
    ) -> tuple[int, int]:
        """``(bytes other regions and other runs keep alive while the current compile runs,
        held_copies for its solver)``. See the module docstring. ``reused=False``: the
        region's later runs in this step are assumed to get compiles of their own (no
        held_copies)."""
        c = self.current
        if self.model_bytes is None or c is None:
            return 0, 0
        c.activation_bytes = activation_bytes
        c.reused = reused
        if c.replan is not None:  # planned again with the runs a step made (end_step)
            c.held_copies, others = c.replan
            c.others_bytes = others + c.held_copies * activation_bytes
            c.earlier_bytes = 0  # (runs of this region and others: not told apart here)
            return max(0, self.model_bytes - own_bytes) + c.others_bytes, c.held_copies
        # regions first compiled before this one run before it (a recompile keeps its place);
        # each with its runs: those of its compiles in this step (the first block's own,
        # say), the rest on its latest compile
        keys: list = []
        for d in self.compiles:
            if d.key == c.key:
                break
            if d.key not in keys:
                keys.append(d.key)
        c.earlier = []
        for key in keys:
            mine = [d for d in self.compiles if d.key == key]
            now = [d for d in mine if d.step == c.step] or mine[-1:]
            rest = max(0, now[-1].runs - len(now)) if now[-1].reused else 0
            c.earlier += [(d, 1) for d in now[:-1]] + [(now[-1], 1 + rest)]
        # planned again, a compile counts the compiles made before it as before; one made
        # after it in its step serves the region's later runs, which then run after this one
        at = self.compiles.index(c) if c in self.compiles else len(self.compiles)
        same_step = [d for d in self.compiles[:at] if d.key == c.key and d.step == c.step]
        later = any(d.key == c.key and d.step == c.step for d in self.compiles[at + 1 :])
        # earlier compiles of this region in this step serve other runs (e.g. the first
        # block, whose input needs no gradient); the remaining runs use this plan
        same = same_step[-(c.runs - 1) :] if c.runs > 1 else []
        c.earlier += [(d, 1) for d in same]
        c.held_copies = max(0, c.runs - 1 - len(same)) if reused and not later else 0
        earlier = sum(n * d.held_bytes for d, n in c.earlier)
        mine = c.held_copies * activation_bytes
        c.others_bytes, c.earlier_bytes = earlier + mine, earlier
        return max(0, self.model_bytes - own_bytes) + earlier + mine, c.held_copies

    def room_possible(self, budget: int, least: int) -> bool:
        """Whether the earlier compiles the current compile counts keep, for their backward,
        at least ``least - budget`` bytes that a new plan could free (``least``: the current
        compile's smallest whole-step peak with them as they are)."""
        c = self.current
        if c is None or c.rooms or self.model_bytes is None:
            return False
        return 0 < least - budget <= self._reducible(c)

    @staticmethod
    def _askable(c: Compile) -> list[tuple[Compile, int]]:
        """The compiles ``c`` counts (with their runs) that could be planned again to keep
        less: tracked, planned, keeping some saved bytes."""
        return [
            (d, n)
            for d, n in c.earlier
            if d.recompile is not None and d.plan is not None and d.plan.saved_bytes
        ]

    def _reducible(self, c: Compile) -> int:
        return sum(n * d.plan.saved_bytes for d, n in self._askable(c))

    def earlier_ran(self, c: Compile) -> bool:
        """Whether a compile that ``c`` counts has run in the current call."""
        return any(d in self.ran for d, _ in c.earlier)

    def make_room(self, budget: int, least: int, most: int) -> tuple[int, int, bool]:
        """The current compile (a later region) needs ``least`` bytes at its smallest and
        ``most`` without rematerialization, counting what the earlier compiles keep for their
        backward: ask each of those to keep less, by one common fraction (their held caps;
        room for ``most`` first, then for the midpoint, then for ``least``), planned again
        before its next run, and plan the current one again after them. Returns (the saved
        bytes the earlier compiles may keep in all with the first caps, what they keep now,
        whether some of them already ran in this step, which then exceeds the budget)."""
        c = self.current
        reducible = self._reducible(c)
        keeps = []  # saved bytes all of them may keep, per need
        for need in (most, (most + least) // 2, least):
            keep = reducible - (need - budget)
            if 0 <= keep < reducible and keep not in keeps:
                keeps.append(keep)
        asked = self._askable(c)
        room = Room(keeps, dict(asked), {d: d.plan.saved_bytes for d, _ in asked})
        for d, _ in asked:
            d.room, d.refresh = room, True
        c.refresh, c.rooms = True, c.rooms + 1
        return keeps[0], reducible, self.earlier_ran(c)

    def peak_floor(self) -> int:
        """What a fraction budget of the current compile is at least a fraction of: the largest
        peak without rematerialization (a whole-step peak, as each was planned) among the other
        compiles made in the same step, and the largest any plan of that step has had (a compile
        planned again to make room holds less, which lowers the other regions' figures: without
        this, each round of room-making lowered the budget it was making room for, and HF GPT-2
        with a break before each block failed at 0.8 and 0.75 but fit at 0.7); 0 if none. So the
        regions of one step share one budget: a later region never gets fewer bytes than an
        earlier one because its own peak without rematerialization is lower (its peak is mostly
        what the others hold). 0 without the model (the string backend: its regions do not
        share a budget)."""
        c = self.current
        if c is None or self.model is None:
            return 0
        now = max(
            (
                d.plan.unconstrained_peak_bytes
                for d in self.compiles
                if d is not c and d.step == c.step and d.plan is not None
            ),
            default=0,
        )
        return max(now, self.step_peaks.get(c.step, 0))

    @staticmethod
    def held_caps(c: Compile) -> list[int]:
        """Caps to plan compile ``c`` with, in order (see Room.caps); its own cap if it has
        met a room request before; [] for none."""
        if c.room is not None:
            return c.room.caps(c)
        return [c.held_cap] if c.held_cap is not None else []

    @staticmethod
    def planned(c: Compile, cap: int | None, saved_bytes: int) -> None:
        """Compile ``c`` has a plan keeping ``saved_bytes`` per run, under ``cap``."""
        if c.room is not None:
            c.room.new[c] = saved_bytes
            c.room = None
        c.held_cap = cap

    def record(self, plan) -> None:
        """The current compile's plan (again, if a compile plans more than once)."""
        c = self.current
        if c is None:
            return
        c.plan = plan
        if c not in self.compiles:
            self.compiles.append(c)
        peak = self.step_peaks.get(c.step, 0)
        self.step_peaks[c.step] = max(peak, plan.unconstrained_peak_bytes)

    # ---------------------------------------------------------------- running
    def begin_step(self, again: bool = False) -> None:
        """A top-level call of the compiled model starts (``again``: the same call, run
        again after StepAgain)."""
        self.step += not again
        self.ran = []
        if not again:
            self.room_needs = {}

    def end_step(self) -> str | None:
        """The top-level call returned: replay the runs it made against their plans (each
        run's own peak plus what the runs before it hold). A compile whose run exceeded its
        budget is planned again before its next run, counting the runs this step made (at most
        MAX_REPLANS times). Returns a message for a warning if a run exceeded its budget."""
        ran, self.ran = self.ran, []
        held, worst = 0, {}
        before: dict[Compile, int] = {}  # runs of each compile so far
        for c in ran:
            plan = c.plan
            need = plan.predicted_peak_bytes - plan.others_held_bytes + held
            over = need - plan.budget_bytes
            if over > 0 and over > worst.get(c, (0,))[0]:
                mine = before.get(c, 0)
                worst[c] = (over, need, (mine, held - mine * c.held_bytes))
            before[c] = before.get(c, 0) + 1
            held += c.held_bytes
        if not worst:
            return None
        again = []
        for c, (_, _, terms) in worst.items():
            if c.recompile is not None and c.replans < MAX_REPLANS:
                c.replan, c.replans = terms, c.replans + 1
                again.append(c)
        c, (over, need, _) = max(worst.items(), key=lambda kv: kv[1][0])
        runs = sum(1 for d in ran if d is c)
        what = (
            f"graphremat: this step ran its compiled regions in a way their plans did not "
            f"foresee (a region planned for {c.runs} run(s) per step ran {runs} times, with "
            f"other regions between its runs, or in another order): with what the earlier runs "
            f"hold, a run peaked at {need} bytes (predicted), {over} over its budget "
            f"{c.plan.budget_bytes}. "
        )
        if len(again) == len(worst):
            return what + (
                f"graphremat plans {len(again)} region(s) again, before their next run, for the "
                "runs this step made."
            )
        return what + (
            "The budget is NOT a promise for this step. Remove the graph break (fullgraph=True "
            f"shows where), or lower the budget by {over} bytes."
        )

    def tracked(self, fn: Callable, compile_: Compile, recompile: Callable) -> Callable:
        """``fn`` (a compiled region), noting each run in the current step's ledger, and
        compiled again by ``recompile(inputs)`` before a run if end_step asked for it."""
        compile_.impl, compile_.recompile = fn, recompile

        @functools.wraps(fn)
        def run(*args):
            boxed = len(args) == 1 and isinstance(args[0], list)
            inputs = list(args[0]) if boxed else list(args)
            if any(isinstance(a, P.FakeTensor) for a in inputs):
                # a run while compiling (DDP's optimizer propagates fake tensors through the
                # compiled pieces): not part of a step
                return compile_.impl(*args)
            # (a compile that asked for room is planned again after the regions that make it)
            waits = any(d.refresh for d, _ in compile_.earlier)
            if compile_.replan is not None or (compile_.refresh and not waits):
                compile_.refresh = False  # (a compile may ask for room again: make_room)
                try:
                    compile_.impl = compile_.recompile(inputs)
                finally:
                    compile_.replan = None
            self.ran.append(compile_)
            return compile_.impl(*args)

        return run


#: times one compile is planned again for the runs a step made (Regions.end_step)
MAX_REPLANS = 3


def runs_per_step(model: torch.nn.Module | None, codes: list | None) -> int:
    """How many times per step the frame whose code Dynamo traced first in ``codes`` runs, as
    the model's structure predicts: the number of the model's modules whose class's
    ``forward`` is that code (or the code a resume function after a graph break continues);
    1 for any other frame."""
    if model is None or not codes:
        return 1
    code = _original_code(codes[0])
    count = sum(1 for m in model.modules() if getattr(type(m).forward, "__code__", None) is code)
    return max(1, count)


def _original_code(code):
    """The function a Dynamo resume function (after a graph break) continues, else ``code``."""
    for _ in range(100):
        meta = P.ContinueExecutionCache.generated_code_metadata.get(code)
        if meta is None or meta.code is code:
            return code
        code = meta.code
    return code


def current_region_key() -> object:
    """Dynamo's frame id of the graph being compiled (None outside a Dynamo compile); under
    DistributedDataParallel, ``(frame id, bucket)``: Dynamo's DDPOptimizer splits one frame's
    graph at gradient-bucket boundaries and compiles the pieces in forward order, each a region."""
    compile_id = P.CompileContext.current_compile_id()
    if compile_id is None:
        return None
    tracing = P.TracingContext.try_get()
    ddp = getattr(tracing, "ddp_optimizer_ctx", None)
    # curr_bucket counts the pieces compiled so far in this frame (-1 before the first)
    return compile_id.frame_id if ddp is None else (compile_id.frame_id, ddp.curr_bucket)
