"""PyTorch's own partitioner under activation_memory_budget, run and costed the way the sweep
and the benchmark compare graphremat with it."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from graphremat.measure import measure_step_peak
from graphremat.pytorch_baseline import aot_eager_backend, knob_config, run_pytorch_knob


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(8, 4)

    def forward(self, x, y):
        return F.cross_entropy(self.head(self.body(x).mean(dim=(2, 3))), y)


class Deep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(64, 64), nn.GELU())])

    def forward(self, x):
        return self.net(x).square().mean()


def test_batchnorm_model_runs_at_every_knob():
    """The knob < 1 partitions of a BatchNorm model run (aot_eager's configuration) and leave
    the caller's model untouched."""
    torch.manual_seed(0)
    model = BNNet().train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for knob in (0.9, 0.3):
        r = run_pytorch_knob(model, (x, y), knob)
        assert r.measured_peak_bytes > 0 and r.recompute_cost_ns >= 0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_a_low_knob_recomputes_more_than_a_high_one():
    torch.manual_seed(0)
    model = Deep()
    x = torch.randn(512, 64)
    high = run_pytorch_knob(model, (x,), 1.0)
    low = run_pytorch_knob(model, (x,), 0.0)
    assert low.recompute_cost_ns > high.recompute_cost_ns
    assert low.recompute_flops > high.recompute_flops == 0  # knob 1.0 recomputes pointwise only
    assert set(high.recomputed) <= set(low.recomputed)


def test_the_exposed_backend_is_the_one_measured():
    """A model compiled with aot_eager_backend() under knob_config runs the program that
    run_pytorch_knob measures (same peak) and computes eager's gradients."""
    torch.manual_seed(0)
    model = Deep()
    x = torch.randn(512, 64)
    expected = run_pytorch_knob(model, (x,), 0.3)
    torch._dynamo.reset()
    eager = copy.deepcopy(model)
    eager(x).backward()
    compiled = torch.compile(model, backend=aot_eager_backend(), dynamic=False, fullgraph=True)
    with knob_config(0.3):
        compiled(x).backward()
        for p, q in zip(model.parameters(), eager.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad)
        assert measure_step_peak(compiled, x) == expected.measured_peak_bytes
