"""graphremat.zoo at the test size: every entry builds, is deterministic, returns its library's
loss as one Dynamo graph, and keeps more activation bytes than parameter + gradient bytes; the
activation measure itself is checked on a model whose saved tensors are counted by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from graphremat import zoo

STEP_SEED = 1234


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these models are too small to gain from a second, and on a shared
    machine a second OpenMP thread that is descheduled stalls every op (50x slower steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _loss(model: nn.Module, inputs: tuple) -> torch.Tensor:
    torch.manual_seed(STEP_SEED)  # the same dropout masks in every call
    return model(*inputs)


@pytest.mark.parametrize("name", zoo.names())
def test_builds_a_finite_scalar_loss_with_gradients(name):
    model, inputs = zoo.build(name, "test")
    assert model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    loss = _loss(model, inputs)
    assert loss.shape == () and loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"


@pytest.mark.parametrize("name", zoo.names())
def test_same_seed_same_loss(name):
    first = _loss(*zoo.build(name, "test", seed=0))
    again = _loss(*zoo.build(name, "test", seed=0))
    other = _loss(*zoo.build(name, "test", seed=1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", zoo.names())
def test_one_dynamo_graph(name):
    model, inputs = zoo.build(name, "test")
    explained = torch._dynamo.explain(model)(*inputs)
    reasons = [str(b.reason) for b in explained.break_reasons]
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), reasons


@pytest.mark.parametrize("name", zoo.names())
def test_activations_outweigh_parameters(name):
    assert zoo.activation_ratio(*zoo.build(name, "test")) > 1


# --- the activation measure on a hand-countable model ------------------------------------------


class ReluStack(nn.Module):
    """x -> Linear -> ReLU -> Linear -> ReLU -> sum. Autograd saves: each Linear's input and
    weight, each ReLU's output, nothing for the sum. Less the input x and the weights, that is
    the two ReLU outputs: 2 x (batch, width) fp32."""

    def __init__(self, d_in: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).sum()


def test_activation_ratio_counts_saved_tensors_by_hand():
    batch, d_in, width = 64, 16, 32
    model, x = ReluStack(d_in, width), torch.randn(batch, d_in)
    saved_bytes = 2 * batch * width * 4
    param_bytes = (d_in * width + width + width * width + width) * 4
    assert zoo.saved_activation_bytes(model, (x,)) == saved_bytes
    assert zoo.activation_ratio(model, (x,)) == pytest.approx(saved_bytes / (2 * param_bytes))
    # frozen parameters have no gradient: they count once
    model.net[0].requires_grad_(False)
    frozen_bytes = (d_in * width + width) * 4
    expected = saved_bytes / (2 * param_bytes - frozen_bytes)
    assert zoo.activation_ratio(model, (x,)) == pytest.approx(expected)


def test_activation_ratio_counts_a_view_and_a_tied_weight_once():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8, bias=False)
            self.b = nn.Linear(8, 8, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.a(x))  # saved by ReLU and (as a view) by the mul below
            return (self.b(h) * h.view(-1)[: h.numel()].view_as(h)).sum()

    model, x = Tied(), torch.randn(4, 8)
    # saved besides x and the weight: h (4x8: ReLU's output, b's input, the mul's other factor)
    # and b(h) (4x8, the mul's factor)
    assert zoo.saved_activation_bytes(model, (x,)) == 2 * 4 * 8 * 4
    assert zoo.activation_ratio(model, (x,)) == pytest.approx(2 * 4 * 8 * 4 / (2 * 8 * 8 * 4))


# --- the registry --------------------------------------------------------------------------------


def test_unknown_name_size_or_family_lists_the_valid_ones():
    with pytest.raises(ValueError, match="nope.*gpt2, llama"):
        zoo.build("nope")
    with pytest.raises(ValueError, match="'huge'.*test, full"):
        zoo.build("mlp", "huge")
    with pytest.raises(ValueError, match="'huge'.*test, full"):
        zoo.ZOO["mlp"].build("huge")
    with pytest.raises(ValueError, match="'cnn'.*decoder, moe"):
        zoo.names("cnn")


def test_names_by_family_partition_the_zoo():
    by_family = [name for family in zoo.FAMILIES for name in zoo.names(family)]
    assert sorted(by_family) == sorted(zoo.names()) == sorted(zoo.ZOO)
    assert all(zoo.names(family) for family in zoo.FAMILIES)
    assert zoo.names("moe") == ["mixtral"]


def test_entries_are_validated_and_frozen():
    entry = zoo.ZOO["mlp"]
    with pytest.raises(ValueError, match="family"):
        zoo.ZooModel("x", "cnn", "", entry.make, entry.sizes)
    with pytest.raises(ValueError, match="sizes"):
        zoo.ZooModel("x", "synthetic", "", entry.make, {"test": entry.sizes["test"]})
    with pytest.raises(TypeError):
        entry.sizes["full"]["batch"] = 1  # type: ignore[index]
    # both sizes of an entry name the same dimensions
    for e in zoo.ZOO.values():
        assert set(e.sizes["test"]) == set(e.sizes["full"]), e.name


def test_imports_and_builds_without_transformers():
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "from graphremat import zoo\n"
        "model, inputs = zoo.build('mlp', 'test')\n"
        "assert model(*inputs).ndim == 0\n"
        "try:\n"
        "    zoo.build('gpt2', 'test')\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('gpt2 built without transformers')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.names())
def test_full_size_activations_outweigh_parameters_twice(name):
    """The full size's reason to exist: activations >= 2x parameters + gradients (one forward,
    0.1-2 s each; ``-m "not slow"`` skips them)."""
    assert zoo.activation_ratio(*zoo.build(name, "full")) >= 2
