"""Measure the real peak memory of one call (a training step), to check plans against.

Input: a callable and its arguments. Output: an int, the peak of live tensor bytes on the device
the step runs on, while the call runs.

The peak is ``baseline + max(0, peak of the running allocation delta)``:

* **delta** — on CPU, the ``[memory]`` allocation (+nbytes) and free (-nbytes) events that
  ``torch.profiler.profile(profile_memory=True)`` records, summed in time order. On CUDA,
  ``max_memory_allocated() - memory_allocated()`` taken around the call, after
  ``reset_peak_memory_stats()``. Both count allocator requests, so op internals (workspaces,
  a scalar backed by a large buffer) are included.
* **baseline** — tensors alive before the call that the call can see: the distinct storages
  (``untyped_storage().nbytes()``, each storage once, so views and repeated arguments are not
  double counted) of the tensor leaves of ``args``/``kwargs`` (``torch.utils._pytree``), and, for
  every ``nn.Module`` among ``fn``, ``fn.__self__`` (bound methods) and the arguments' leaves, its
  parameters, buffers, and their existing ``.grad``. Tensors reached only through a closure or a
  global are *not* counted: pass them as arguments (or pass the module) to have them counted.

Invariants: the call runs exactly once, is not warmed up (run the step once before measuring:
compilation allocates), and runs under no ``TorchDispatchMode`` (which would make Dynamo fall back
to eager). Device choice: CUDA if any baseline tensor is on a CUDA device (the first one found),
else CPU; the baseline counts tensors on that device only.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.utils import _pytree as pytree

from . import _private as P
from .errors import GraphRematError
from .regions import local_part

log = logging.getLogger("graphremat")

_MEMORY_EVENT = "[memory]"  # torch.autograd.profiler_util.MEMORY_EVENT_NAME
# The device types the profiler itself counts as CPU memory (torch/autograd/profiler.py).
_CPU_LIKE = (DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP)


def _modules(fn: Callable[..., Any], leaves: Iterable[Any]) -> list[nn.Module]:
    """The modules whose state the call can see: fn, its bound ``__self__``, module arguments."""
    candidates = [fn, getattr(fn, "__self__", None), *leaves]
    found: dict[int, nn.Module] = {}
    for c in candidates:
        if isinstance(c, nn.Module):
            found.setdefault(id(c), c)
    return list(found.values())


def _reachable_tensors(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    leaves = pytree.tree_leaves((args, kwargs))
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            yield leaf
    for module in _modules(fn, leaves):
        for t in (*module.parameters(), *module.buffers()):
            yield t
            if t.grad is not None:
                yield t.grad


def _baseline_bytes(tensors: Iterable[torch.Tensor], device: torch.device) -> int:
    """Bytes of the distinct storages on ``device`` among ``tensors`` (views count once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        t = local_part(t)  # an FSDP2 parameter (DTensor): this process's shard
        if t.device != device or t.is_meta:
            continue
        try:
            storage = t.untyped_storage()
            if storage.nbytes() == 0 or storage.data_ptr() in seen:
                continue
        except RuntimeError:  # no data behind it on this process (e.g. a freed FSDP2 buffer)
            continue
        ptr = storage.data_ptr()
        seen.add(ptr)
        total += storage.nbytes()
    return total


def _pick_device(tensors: list[torch.Tensor]) -> torch.device:
    for t in tensors:
        if t.device.type == "cuda":
            return t.device
    return torch.device("cpu")


def _cpu_delta_peak(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[int, int]:
    """Run fn under the profiler; return (peak, final) of the running sum of CPU memory events.

    Reads the raw kineto events: ``prof.events()`` keeps only the ``[memory]`` events that fall
    outside every op (the others are folded into the ops' ``cpu_memory_usage``), so summing it
    misses nearly every allocation.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as p:
        fn(*args, **kwargs)
    result = p.profiler.kineto_results
    if result is None:
        raise GraphRematError(
            "torch.profiler returned no kineto results; measure_peak_memory needs a torch build "
            "with the kineto profiler (torch 2.13 CPU/CUDA wheels have it)."
        )
    events = [
        e for e in result.events() if e.name() == _MEMORY_EVENT and e.device_type() in _CPU_LIKE
    ]
    events.sort(key=lambda e: e.start_ns())  # stable: same-time events keep their recorded order
    running = peak = 0
    low = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
        low = min(low, running)
    if low < 0:
        log.debug("measure: the call freed %d bytes allocated before it started", -low)
    return peak, running


def _cuda_delta_peak(
    fn: Callable[..., Any], args: tuple, kwargs: dict, device: torch.device
) -> tuple[int, int]:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn(*args, **kwargs)
    torch.cuda.synchronize(device)
    return (
        torch.cuda.max_memory_allocated(device) - before,
        torch.cuda.memory_allocated(device) - before,
    )


def measure_peak_memory(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Peak live tensor bytes while ``fn(*args, **kwargs)`` runs once, baseline included.

    Returns ``baseline + max(0, delta peak)``, where the baseline is the bytes of the distinct
    storages alive before the call and reachable from it: tensor leaves of ``args``/``kwargs``,
    and the parameters, buffers and existing ``.grad`` of every ``nn.Module`` among ``fn``,
    ``fn.__self__`` and the argument leaves (closures and globals are not searched), and the delta
    peak is the highest running sum of allocations minus frees during the call (profiler memory
    events on CPU, ``max_memory_allocated`` on CUDA). The call is not warmed up: run it once first.
    """
    if not callable(fn):
        raise TypeError(
            f"measure_peak_memory(fn, *args) needs a callable first, got {type(fn).__name__}; "
            "e.g. measure_peak_memory(lambda: step(model, x))"
        )
    tensors = list(_reachable_tensors(fn, args, kwargs))
    device = _pick_device(tensors)
    baseline = _baseline_bytes(tensors, device)
    before = {
        P.StorageWeakRef(t.untyped_storage()): t.untyped_storage().nbytes()
        for t in tensors
        if t.device == device and not t.is_meta
    }
    del tensors
    if device.type == "cuda":
        delta_peak, delta_end = _cuda_delta_peak(fn, args, kwargs, device)
    else:
        delta_peak, delta_end = _cpu_delta_peak(fn, args, kwargs)
        freed = sum(n for ref, n in before.items() if ref.expired())
        if freed:
            warnings.warn(
                f"measure_peak_memory: the call freed {freed} bytes of tensors that were alive "
                "before it (e.g. .grad set to None by zero_grad). The CPU profiler does not see "
                "frees of memory allocated before it started, so the peak may be overcounted by "
                "up to that much: free them before measuring (model.zero_grad(set_to_none=True)).",
                RuntimeWarning,
                stacklevel=2,
            )
    peak = baseline + max(0, delta_peak)
    log.debug(
        "measure: %s peak %d bytes = baseline %d + delta peak %d (delta at end %d)",
        *(device, peak, baseline, delta_peak, delta_end),
    )
    return peak


def _step(model: nn.Module, loss_fn: Callable[[Any], torch.Tensor] | None, *inputs: Any) -> None:
    out = model(*inputs)
    (out if loss_fn is None else loss_fn(out)).backward()


def measure_step_peak(
    model: nn.Module, *inputs: Any, loss_fn: Callable[[Any], torch.Tensor] | None = None
) -> int:
    """Peak bytes of one training step ``model(*inputs)`` (+ ``loss_fn``) then ``.backward()``.

    Sets every parameter's ``.grad`` to None first, so the baseline is parameters + buffers +
    inputs and the gradients are counted as they are created. With ``loss_fn=None`` the model's
    forward must return a scalar loss. Not warmed up: run the (compiled) step once before
    measuring, since compilation allocates.
    """
    for p in model.parameters():
        p.grad = None
    return measure_peak_memory(_step, model, loss_fn, *inputs)
