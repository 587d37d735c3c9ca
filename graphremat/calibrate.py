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
"""

from __future__ import annotations

import logging

import torch
import torch.fx as fx

from . import _private as P

log = logging.getLogger("graphremat")

META_KEY = "graphremat_workspace_bytes"
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


def graph_total_bytes(gm: fx.GraphModule) -> int:
    total = 0
    for n in gm.graph.nodes:
        val = n.meta.get("val")
        for v in val if isinstance(val, (tuple, list)) else [val]:
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total


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
