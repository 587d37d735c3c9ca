"""measure_peak_memory against hand-computed answers on CPU, and smoke tests of tests/models.py."""

from __future__ import annotations

import math

import pytest
import torch
from models import MODEL_FACTORIES
from torch import nn

from graphremat.measure import measure_peak_memory, measure_step_peak

F32 = 4
KIB = 1024


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def param_bytes(model: nn.Module) -> int:
    return sum(nbytes(p) for p in model.parameters())


def input_bytes(inputs: tuple[torch.Tensor, ...]) -> int:
    return sum(nbytes(t) for t in inputs)


# --- hand-computed answers -------------------------------------------------------------------


def test_nothing_allocated_nothing_reachable_is_zero():
    assert measure_peak_memory(lambda: None) == 0


def test_alloc_free_sequence_gives_peak_of_live_bytes():
    def fn():
        a = torch.empty(256, 256)  # 256 KiB live
        b = torch.empty(128, 256)  # 384 KiB live
        del a  # 128 KiB live
        c = torch.empty(512, 256)  # 640 KiB live: the peak
        del b, c

    assert measure_peak_memory(fn) == 640 * KIB


def test_allocation_returned_by_fn_is_counted():
    assert measure_peak_memory(lambda: torch.empty(1000)) == 1000 * F32


def test_fn_that_only_reads_args_peaks_at_their_bytes():
    x, y, out = torch.randn(64, 64), torch.randn(64, 64), torch.empty(64, 64)
    assert measure_peak_memory(lambda a, b, o: torch.add(a, b, out=o), x, y, out) == 3 * nbytes(x)


def test_kwargs_and_nested_containers_are_counted():
    x, y = torch.randn(100), torch.randn(50)
    assert measure_peak_memory(lambda d, *, k: None, {"a": [x]}, k=y) == nbytes(x) + nbytes(y)


def test_views_are_not_double_counted():
    x = torch.randn(32, 32)
    assert measure_peak_memory(lambda *a: None, x, x[:4], x.t(), x.view(-1)) == nbytes(x)


def test_a_small_view_counts_its_whole_storage():
    x = torch.randn(1024)
    assert measure_peak_memory(lambda v: None, x[:2]) == nbytes(x)


def test_same_tensor_passed_twice_counts_once():
    x = torch.randn(77)
    assert measure_peak_memory(lambda a, b: None, x, x) == nbytes(x)


def test_module_parameters_and_existing_grads_are_counted():
    lin = nn.Linear(64, 32)
    for p in lin.parameters():
        p.grad = torch.zeros_like(p)
    expected = 2 * (64 * 32 + 32) * F32
    assert measure_peak_memory(lambda m: None, lin) == expected  # module as argument
    assert measure_peak_memory(lin.zero_grad, set_to_none=False) == expected  # bound method


def test_module_called_as_fn_counts_params_input_and_output():
    lin, x = nn.Linear(64, 32), torch.randn(16, 64)
    assert measure_peak_memory(lin, x) == (64 * 32 + 32) * F32 + nbytes(x) + 16 * 32 * F32


def test_buffers_are_counted():
    bn = nn.BatchNorm1d(8)  # weight, bias, running_mean, running_var (fp32) + num_batches (int64)
    assert measure_peak_memory(lambda m: None, bn) == 4 * 8 * F32 + 8


def test_parameter_shared_by_two_modules_counts_once():
    a, b = nn.Linear(16, 16, bias=False), nn.Linear(16, 16, bias=False)
    b.weight = a.weight
    assert measure_peak_memory(lambda m1, m2: None, a, b) == 16 * 16 * F32


def test_closure_tensors_are_not_counted():
    x = torch.randn(100)
    assert measure_peak_memory(lambda: x.zero_()) == 0  # in-place on a closure tensor


def test_python_scalars_are_wrapped_into_small_tensors():
    # x.add_(1): the int 1 becomes an int64 0-dim tensor (8 B), cast to fp32 (4 B) inside add_.
    x = torch.randn(100)
    assert measure_peak_memory(lambda t: t.add_(1), x) == nbytes(x) + 8 + 4


# --- training steps --------------------------------------------------------------------------


def test_eager_step_peak_is_at_least_state_and_repeatable():
    model, inputs = MODEL_FACTORIES["mlp"]()
    model(*inputs).backward()  # warm up
    first = measure_step_peak(model, *inputs)
    second = measure_step_peak(model, *inputs)
    assert first >= param_bytes(model) + input_bytes(inputs)
    assert first == second


def test_step_peak_ignores_grads_left_by_an_earlier_step():
    model, inputs = MODEL_FACTORIES["resnet"]()
    fresh = measure_step_peak(model, *inputs)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert measure_step_peak(model, *inputs) == fresh


def test_step_peak_with_loss_fn():
    model, x = nn.Linear(32, 8), torch.randn(128, 32)
    peak = measure_step_peak(model, x, loss_fn=lambda out: out.pow(2).mean())
    assert peak >= 2 * param_bytes(model) + nbytes(x) + 128 * 8 * F32  # params, grads, x, out
    assert all(p.grad is not None for p in model.parameters())


# --- model zoo -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODEL_FACTORIES))
def test_model_factory(name):
    model, inputs = MODEL_FACTORIES[name]()
    assert model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert all(t.device.type == "cpu" for t in inputs)

    loss = model(*inputs)
    assert loss.dim() == 0 and math.isfinite(loss.item())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no grad for {missing}"

    peak = measure_step_peak(model, *inputs)
    assert peak >= 2 * (param_bytes(model) + input_bytes(inputs)), "activations must dominate"


def test_factories_are_deterministic():
    for name, factory in MODEL_FACTORIES.items():
        (m1, in1), (m2, in2) = factory(), factory()
        assert all(torch.equal(a, b) for a, b in zip(in1, in2, strict=True)), name
        assert all(
            torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters(), strict=True)
        ), name
