"""Joint-graph passes graphremat runs before capture (they change the graph in place).

``split_dropout``: ``out, mask = native_dropout(x, p, True)`` becomes ``out = x * mask * scale``
after the dropout, with every use of the old ``out`` reading the new one. The mask (1 byte per
element) still comes from the random op, which is never recomputed; the output -- 4 bytes per
element and often what the backward needs -- becomes an ordinary pointwise value that can be
recomputed from ``x`` and the saved mask, bit for bit what ``native_dropout`` computes. Which
``scale`` that is depends on the kernel: in half precision the CPU kernel multiplies by
``1 / (1 - p)`` rounded to the input's dtype (another device's kernel may not; CUDA's is not
checked here, no GPU). So the scale is found by running
the device's kernel once per (device, dtype, p) on a made-up tensor (``dropout_scale``; the
random number generators are left as they were); a dropout whose output neither candidate
reproduces bit for bit is not split (its output is then saved, never recomputed).

``dropout_outputs_in_forward``: after the rewrite, the forward module reads each such output
from the dropout again (the same values), so only a recomputation in the backward pays for the
multiplies.
"""

from __future__ import annotations

import functools
import logging
import operator

import torch
import torch.fx as fx

from . import _private as P

log = logging.getLogger("graphremat")

_DROPOUT = torch.ops.aten.native_dropout.default
_MUL = torch.ops.aten.mul.Tensor
#: meta key of the ``x * mask * scale`` node that split_dropout made (value: True)
SPLIT_DROPOUT_KEY = "graphremat_split_dropout"


def _fake(fn, *vals):
    mode = next(v.fake_mode for v in vals if hasattr(v, "fake_mode"))
    with mode:
        return fn(*vals)


@functools.cache
def dropout_scale(device: torch.device, dtype: torch.dtype, p: float) -> float | None:
    """The ``scale`` with ``x * mask * scale == native_dropout(x, p, True)[0]`` bit for bit on
    ``device`` for ``dtype`` (``mask``: its second output), tried on a made-up tensor: ``1 / (1 -
    p)``, or that rounded to ``dtype`` (the CPU kernel's scale in half precision); None if neither
    is (the dropout is then not split)."""
    if p >= 1.0:
        return 0.0
    exact = 1.0 / (1.0 - p)
    forked = [device.index or 0] if device.type != "cpu" else []
    try:
        with (
            P.unset_fake_temporarily(),
            torch.no_grad(),
            torch.random.fork_rng(forked, device_type=device.type),
        ):
            rounded = torch.tensor(exact, dtype=dtype).item()
            x = torch.randn(4096, device=device).to(dtype)
            out, mask = _DROPOUT(x, p, True)
            for scale in dict.fromkeys((exact, rounded)):
                if torch.equal(x * mask * scale, out):
                    return scale
    except (RuntimeError, TypeError, ValueError) as e:  # a dtype or device without the kernel
        log.debug("dropout scale on %s for %s, p=%s: %s", device, dtype, p, e)
    return None


def split_dropout(joint: fx.GraphModule) -> int:
    """Rewrite training-mode dropout outputs as ``x * mask * scale``; return how many."""
    graph = joint.graph
    count = 0
    for nd in list(graph.find_nodes(op="call_function", target=_DROPOUT)):
        x, p = nd.args[0], float(nd.args[1])
        train = nd.args[2] if len(nd.args) > 2 else nd.kwargs.get("train")
        if train is False or not isinstance(x, fx.Node):
            continue
        getitems = {u.args[1]: u for u in nd.users if u.target is operator.getitem}
        out = getitems.get(0)
        if out is None or not out.users:
            continue
        x_val = x.meta.get("val")
        if not isinstance(x_val, torch.Tensor) or not hasattr(x_val, "fake_mode"):
            continue
        scale = dropout_scale(x_val.device, x_val.dtype, p)
        if scale is None:
            continue
        mask = getitems.get(1)
        anchor = next(n for n in reversed(graph.nodes) if n in getitems.values())
        if mask is None:
            with graph.inserting_after(anchor):
                mask = anchor = graph.call_function(operator.getitem, (nd, 1))
            mask.meta.update({k: v for k, v in out.meta.items() if k != "val"})
            mask.meta["val"] = nd.meta["val"][1]
        with graph.inserting_after(anchor):
            kept = graph.call_function(_MUL, (x, mask))
        with graph.inserting_after(kept):
            new_out = graph.call_function(_MUL, (kept, scale))
        kept.meta.update({k: v for k, v in out.meta.items() if k != "val"})
        new_out.meta.update({k: v for k, v in out.meta.items() if k != "val"})
        kept.meta["val"] = _fake(_MUL, x_val, mask.meta["val"])
        # the new node takes over the old output's storage identity (downstream views alias it);
        # the dropout's own first output becomes a fresh storage it frees at once
        new_out.meta["val"] = out.meta["val"]
        new_out.meta[SPLIT_DROPOUT_KEY] = True
        vals = list(nd.meta["val"])
        vals[0] = _fake(torch.empty_like, vals[0])
        nd.meta["val"] = tuple(vals)
        out.replace_all_uses_with(new_out)
        graph.erase_node(out)
        count += 1
    if count:
        graph.lint()
        joint.recompile()
    return count


def dropout_outputs_in_forward(fw: fx.GraphModule) -> int:
    """In a forward module made from a graph that :func:`split_dropout` rewrote: each dropout
    output computed there as ``x * mask * scale`` is the dropout's own output again (the same
    values, see the module docstring), so the forward runs neither multiply nor the mask's
    conversion to ``x``'s dtype (on CPU a separate copy): measured, the test GPT's step with
    nothing recomputed ran 60 more aten ops and 4 % slower than PyTorch's. Skipped where the
    forward keeps ``x * mask`` for the backward. Returns how many outputs it rewired."""
    graph = fw.graph
    count = 0
    for out in list(graph.nodes):
        if not out.meta.get(SPLIT_DROPOUT_KEY) or out.target is not _MUL:
            continue
        kept = out.args[0]
        if not (isinstance(kept, fx.Node) and kept.target is _MUL and len(kept.users) == 1):
            continue
        x, mask = kept.args
        if not (
            isinstance(mask, fx.Node) and mask.target is operator.getitem and mask.args[1] == 1
        ):
            continue
        drop = mask.args[0]
        if drop.target is not _DROPOUT or drop.args[0] is not x:
            continue
        # the node becomes the dropout's first output, keeping its name (plans, timelines and
        # the backward's recomputation name the value after it) and its storage identity
        out.target = operator.getitem
        out.args = (drop, 0)
        vals = list(drop.meta["val"])
        vals[0] = out.meta["val"]
        drop.meta["val"] = tuple(vals)
        graph.erase_node(kept)
        count += 1
    if count:
        graph.lint()
        fw.recompile()
    return count
