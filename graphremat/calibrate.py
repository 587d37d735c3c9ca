"""Calibrate: measure each op's hidden workspace (bytes it allocates beyond its outputs).

Input: a joint graph whose nodes carry FakeTensor ``meta["val"]``. Output: ``{node name: bytes}``
for nodes whose kernel briefly holds more than its outputs (im2col buffers of convolutions, the
clone ``AccumulateGrad``-style ops make, reduction scratch...). The graph is executed once on
real tensors of the recorded shapes (random floats, zero integers: every index stays in range),
values freed after their last use, each op inside a profiler range; the op's workspace is the
peak of its own allocations minus what it still holds at its end.

The numbers feed both the solver's model (``transient_bytes``) and the simulator, so a plan's
prediction covers memory that never appears in the graph. Nothing about the graph is changed
except ``node.meta["graphremat_workspace_bytes"]``.

Also each forward op's wall time (:func:`measure_times`, ``node.meta["graphremat_time_ns"]``),
the solver's costs under ``cost_model="measured"``.
"""

from __future__ import annotations

import functools
import logging
import time

import torch
import torch.fx as fx

from . import _private as P

log = logging.getLogger("graphremat")

META_KEY = "graphremat_workspace_bytes"
TIME_KEY = "graphremat_time_ns"  # measure_times
_RANGE = "graphremat::"


def _materialize(val):
    if isinstance(val, torch.Tensor):
        out = torch.empty_strided(val.shape, val.stride(), dtype=val.dtype, device=val.device)
        if out.is_floating_point() or out.is_complex():
            out.normal_()
        else:
            out.zero_()
        return out
    if isinstance(val, (tuple, list)):
        return type(val)(_materialize(v) for v in val)
    if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        raise ValueError("symbolic shapes")
    return val


def run_peak_bytes(gm: fx.GraphModule) -> int:
    """Peak bytes of one run of ``gm`` that frees each value after its last use (as calibration
    runs it), from the recorded shapes: a value sharing a storage with a live one (a view)
    counts once; op workspace is not known yet and not counted."""
    last_use: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        for a in n.all_input_nodes:
            last_use[a] = n
    dying: dict[fx.Node, list[fx.Node]] = {}
    for a, n in last_use.items():
        dying.setdefault(n, []).append(a)
    holders: dict[object, set[fx.Node]] = {}  # storage -> live nodes holding it
    sizes: dict[object, int] = {}
    held: dict[fx.Node, list[object]] = {}
    live = peak = 0
    for n in gm.graph.nodes:
        val = n.meta.get("val")
        keys = []
        for i, v in enumerate(val if isinstance(val, (tuple, list)) else [val]):
            if not isinstance(v, torch.Tensor):
                continue
            try:
                key = P.StorageWeakRef(v.untyped_storage())
                nbytes = v.untyped_storage().nbytes()
            except Exception:  # no storage to compare (sparse, nested...): its own
                key, nbytes = (n, i), v.numel() * v.element_size()
            if key not in holders:
                holders[key], sizes[key] = set(), nbytes
                live += nbytes
            holders[key].add(n)
            keys.append(key)
        held[n] = keys
        peak = max(peak, live)
        for a in [*dying.get(n, ()), *([n] if n not in last_use else [])]:
            for key in held.pop(a, ()):
                holders[key].discard(a)
                if not holders[key]:
                    live -= sizes.pop(key)
                    del holders[key]
    return peak


def devices(gm: fx.GraphModule) -> set[str]:
    out = set()
    for n in gm.graph.nodes:
        v = n.meta.get("val")
        if isinstance(v, torch.Tensor):
            out.add(v.device.type)
    return out


class _Runner(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, cuda: bool) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.cuda = cuda
        self.cuda_workspace: dict[str, int] = {}

    def run_node(self, n: fx.Node):
        self._node = n
        return super().run_node(n)

    def placeholder(self, target, args, kwargs):
        return _materialize(self._node.meta.get("val"))

    def call_function(self, target, args, kwargs):
        node = self._node
        if not P.is_not_collective(node):
            # run for real, a collective would talk to the other ranks from inside one rank's
            # compile (and hang): it gets made-up outputs and no workspace
            return _materialize(node.meta.get("val"))
        if self.cuda:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            out = target(*args, **kwargs)
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated() - before
            self.cuda_workspace[node.name] = max(
                0, torch.cuda.max_memory_allocated() - before - held
            )
            return out
        with torch.profiler.record_function(_RANGE + node.name):
            return target(*args, **kwargs)


def measure_workspace(gm: fx.GraphModule) -> dict[str, int]:
    """Run ``gm`` once on real tensors and return each op's workspace bytes (0s omitted)."""
    with P.unset_fake_temporarily():  # partitioners run under AOTAutograd's fake mode
        return _measure(gm)


def _measure(gm: fx.GraphModule) -> dict[str, int]:
    devs = devices(gm)
    cuda = "cuda" in devs
    runner = _Runner(gm, cuda)
    if cuda:
        with torch.no_grad():
            runner.run()
        return {k: v for k, v in runner.cuda_workspace.items() if v > 0}
    from torch.profiler import ProfilerActivity, profile

    if P.profiler_enabled():
        # a compile inside a profiled call (a region planned again, a new input shape, inside
        # measure_peak_memory): a second profiler would end the caller's session
        raise RuntimeError(
            "a profiler is already running; the plan counts no workspace for this graph's ops"
        )
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        runner.run()
    ranges, mem = [], []
    for e in prof.profiler.kineto_results.events():
        name = e.name()
        if name == "[memory]":
            mem.append((e.start_ns(), e.nbytes()))
        elif name.startswith(_RANGE):
            start = e.start_ns()
            ranges.append((start, start + e.duration_ns(), name[len(_RANGE) :]))
    mem.sort()
    ranges.sort()
    out: dict[str, int] = {}
    i = 0
    for start, end, name in ranges:
        while i < len(mem) and mem[i][0] < start:
            i += 1
        run = peak = 0
        j = i
        while j < len(mem) and mem[j][0] <= end:
            run += mem[j][1]
            peak = max(peak, run)
            j += 1
        if peak - run > 0:
            out[name] = peak - run
    return out


def annotate_workspace(gm: fx.GraphModule) -> dict[str, int]:
    """Measure and record ``node.meta[META_KEY]``; on failure, log and record nothing."""
    try:
        ws = measure_workspace(gm)
    except Exception as e:  # an op that cannot run on made-up inputs: no calibration
        # (the message, not the exception: a handler that keeps records, as pytest's does,
        # would keep its traceback's frames and every caller's tensors alive)
        log.warning("graphremat: workspace calibration skipped (%s: %s)", type(e).__name__, str(e))
        return {}
    for n in gm.graph.nodes:
        if n.name in ws:
            n.meta[META_KEY] = ws[n.name]
    return ws


#: timed runs per op for ``measure_times`` (after one untimed run); the fastest is kept. An op
#: stops early once its runs add up to TIME_ENOUGH_NS (long ops vary little from run to run), so
#: timing a large model costs about two forward passes, a small one up to six.
TIME_REPEATS = 5
TIME_ENOUGH_NS = 20_000_000


def measure_times(gm: fx.GraphModule, repeats: int = TIME_REPEATS) -> dict[str, int]:
    """Run the forward part of ``gm`` (every op that reads no tangent) on made-up tensors of the
    recorded shapes (as :func:`measure_workspace`) and return each op's wall time in ns: the
    fastest of up to ``repeats`` runs after one untimed run, on the same inputs (so with warm
    caches, as in a training step whose values are small). Includes eager dispatch and, on
    CUDA, the launch (each run is synchronized). Collectives are not run. A value is freed
    after its last forward use, so this holds about the forward's live values, not the saved
    ones."""
    with P.unset_fake_temporarily(), torch.no_grad():
        return _time_forward(gm, repeats)


def _time_forward(gm: fx.GraphModule, repeats: int) -> dict[str, int]:
    nodes = list(gm.graph.nodes)
    backward: set[fx.Node] = set()
    last_use: dict[fx.Node, fx.Node] = {}
    for n in nodes:
        if (n.op == "placeholder" and P._is_tangent(n)) or any(
            a in backward for a in n.all_input_nodes
        ):
            backward.add(n)
        elif n.op != "output":
            for a in n.all_input_nodes:
                last_use[a] = n
    cuda = "cuda" in devices(gm)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    env: dict[fx.Node, object] = {}
    out: dict[str, int] = {}
    for n in nodes:
        if n in backward or n.op == "output":
            continue
        if n.op == "placeholder":
            env[n] = _materialize(n.meta.get("val"))
        elif n.op == "get_attr":
            env[n] = functools.reduce(getattr, n.target.split("."), gm)
        elif n.op == "call_function":
            if not P.is_not_collective(n):
                env[n] = _materialize(n.meta.get("val"))
            else:
                args, kwargs = fx.node.map_arg((n.args, n.kwargs), env.__getitem__)
                env[n] = n.target(*args, **kwargs)
                runs = []
                while len(runs) < repeats and sum(runs) < TIME_ENOUGH_NS:
                    sync()
                    t0 = time.perf_counter_ns()
                    n.target(*args, **kwargs)
                    sync()
                    runs.append(time.perf_counter_ns() - t0)
                out[n.name] = min(runs)
        else:
            raise ValueError(f"cannot time a {n.op!r} node ({n.name})")
        if n not in last_use:  # read by the backward only (or by nothing): not needed here
            env.pop(n, None)
        for a in n.all_input_nodes:
            if last_use.get(a) is n:
                env.pop(a, None)
    return out


def annotate_times(gm: fx.GraphModule) -> dict[str, int]:
    """Measure and record ``node.meta[TIME_KEY]`` (ns); on failure, warn and record nothing
    (the plan's costs are then the roofline's)."""
    try:
        times = measure_times(gm)
    except Exception as e:  # an op that cannot run on made-up inputs: roofline costs
        log.warning(
            "graphremat: op timing skipped, roofline costs used instead (%s: %s)",
            type(e).__name__,
            str(e),
        )
        return {}
    record_times(gm, times)
    return times


def record_times(gm: fx.GraphModule, times: dict[str, int]) -> None:
    """Put ``times`` (ns per FX node name, from :func:`measure_times` or the plan cache) on
    ``gm``'s nodes as ``node.meta[TIME_KEY]``."""
    for n in gm.graph.nodes:
        if n.name in times:
            n.meta[TIME_KEY] = times[n.name]
