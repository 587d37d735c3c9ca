"""Real models for end-to-end tests: Hugging Face ``transformers`` and awkward hand-written ones.

Each ``make_<name>()`` returns ``(model, inputs)``: an fp32 CPU model in train mode, built under a
fixed ``torch.manual_seed`` from a config object (random weights, no hub access), and its inputs.
Unless a factory says otherwise, ``model(*inputs)`` returns a scalar loss, so a whole training step
is one compiled region. Sizes are tiny (one eager step in a few ms on 2 cores), with enough tokens
or pixels that activations outweigh parameters and 0.6 of the no-remat peak is feasible.

* ``hf_gpt2``: ``GPT2LMHeadModel`` (2 layers, d=64, eager attention, dropout 0.1, the LM head tied
  to the token embedding).
* ``hf_bert``: ``BertForMaskedLM`` (2 layers, d=64, SDPA attention, dropout 0.1; position and
  token-type ids come from registered buffers; 1 token in 4 is labelled).
* ``hf_llama``: ``LlamaForCausalLM`` (2 layers, d=64, grouped-query attention 4/2 heads, RoPE,
  RMSNorm, SwiGLU, SDPA attention).
* ``inplace_mlp``: ``ReLU(inplace=True)``, an in-place residual ``+=`` and an in-place ``mul_``.
* ``tied_lm``: an embedding and an output head sharing one weight.
* ``two_head_tuple`` / ``two_head_dict``: forward returns a tuple / a dict of tensors; the loss
  is taken outside the model by :func:`two_head_loss`.
* ``non_tensor_args``: ``forward(x, targets, scale: float, residual: bool)``.
* ``buffers``: fixed normalisation buffers read in forward, a step counter and a running mean
  updated in place.
* ``unused_buffer``: a large registered buffer the forward never reads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

SEED = 0
VOCAB = 128
BATCH, SEQ = 16, 32

Factory = Callable[[], tuple[nn.Module, tuple]]


def gelu_trunk(d_in: int, width: int, depth: int) -> nn.Sequential:
    """``depth`` x (Linear, GELU), the first from ``d_in`` to ``width``: activations to save."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), nn.GELU()]
    return nn.Sequential(*layers)


# --- Hugging Face ----------------------------------------------------------------------------


class LossOf(nn.Module):
    """``hf_model(input_ids=..., labels=...).loss``: a Hugging Face model whose forward returns
    the scalar loss (not a ``ModelOutput``)."""

    def __init__(self, hf_model: PreTrainedModel) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, labels=labels).loss


def _tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, SEQ))


def make_hf_gpt2() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Inputs: input_ids (16, 32) int64, labels = input_ids (shifted inside the model)."""
    torch.manual_seed(SEED)
    config = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=SEQ,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config)
    # GPT2LMHeadModel's class name names no loss, so transformers would log a warning from
    # inside the step on every call: a graph break that splits the step into two regions
    model.loss_type = "ForCausalLM"
    ids = _tokens()
    return LossOf(model).train(), (ids, ids.clone())


def make_hf_bert() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Inputs: input_ids (16, 32) int64, labels (16, 32) int64, -100 (ignored) but every 4th."""
    torch.manual_seed(SEED)
    config = BertConfig(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=SEQ,
        pad_token_id=0,
        attn_implementation="sdpa",
    )
    model = BertForMaskedLM(config)
    ids = _tokens()
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]
    return LossOf(model).train(), (ids, labels)


def make_hf_llama() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Inputs: input_ids (16, 32) int64, labels = input_ids (shifted inside the model)."""
    torch.manual_seed(SEED)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=SEQ,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config)
    ids = _tokens()
    return LossOf(model).train(), (ids, ids.clone())


# --- in-place ops ----------------------------------------------------------------------------


class InplaceBlock(nn.Module):
    """A residual block with ``ReLU(inplace=True)``, an in-place scale (``mul_``) and an in-place
    residual add (``+=``) on the second layer's output."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(self.relu(self.fc1(x)))
        out.mul_(0.5)
        out += x
        return self.relu(out)


class InplaceMLP(nn.Module):
    """Linear + ``ReLU(inplace=True)`` stem, 3 :class:`InplaceBlock`, head."""

    def __init__(
        self, d_in: int = 64, width: int = 256, num_blocks: int = 3, num_classes: int = 16
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(InplaceBlock(width) for _ in range(num_blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(self.blocks(self.stem(x))), targets)


def make_inplace_mlp() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Inputs: x (512, 64) fp32, targets (512,) int64."""
    torch.manual_seed(SEED)
    return InplaceMLP().train(), (torch.randn(512, 64), torch.randint(0, 16, (512,)))


# --- weight tying ----------------------------------------------------------------------------


class TiedLM(nn.Module):
    """Embedding -> 4 x (Linear, GELU) -> Linear -> head, with ``head.weight is embed.weight``."""

    def __init__(self, vocab_size: int = VOCAB, d_model: int = 64, width: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.body = nn.Sequential(gelu_trunk(d_model, width, 4), nn.Linear(width, d_model))
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.body(self.embed(ids)))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def make_tied_lm() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Inputs: ids (16, 32) int64, targets (16, 32) int64."""
    torch.manual_seed(SEED)
    return TiedLM().train(), (_tokens(), _tokens())


# --- tuple / dict outputs --------------------------------------------------------------------


class TwoHeadMLP(nn.Module):
    """A 6-layer MLP trunk with a classifier and a feature head; returns ``(logits, features)`` or
    ``{"logits": ..., "features": ...}`` (``as_dict``). No loss inside."""

    def __init__(
        self, d_in: int = 64, width: int = 256, num_classes: int = 16, as_dict: bool = False
    ) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.trunk = gelu_trunk(d_in, width, 6)
        self.classifier = nn.Linear(width, num_classes)
        self.features = nn.Linear(width, 8)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        h = self.trunk(x)
        logits, features = self.classifier(h), self.features(h)
        return {"logits": logits, "features": features} if self.as_dict else (logits, features)


def two_head_loss(
    out: tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor], targets: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy on the logits plus a small penalty on the features (taken outside)."""
    logits, features = (out["logits"], out["features"]) if isinstance(out, dict) else out
    return F.cross_entropy(logits, targets) + 0.01 * features.pow(2).mean()


def _make_two_head(as_dict: bool) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(SEED)
    model = TwoHeadMLP(as_dict=as_dict).train()
    return model, (torch.randn(512, 64), torch.randint(0, 16, (512,)))


def make_two_head_tuple() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``model(x)`` returns a tuple. Inputs: x (512, 64) fp32, targets (512,) int64 (the
    targets are for :func:`two_head_loss`, not the model)."""
    return _make_two_head(as_dict=False)


def make_two_head_dict() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``model(x)`` returns a dict; inputs as for :func:`make_two_head_tuple`."""
    return _make_two_head(as_dict=True)


# --- non-tensor arguments --------------------------------------------------------------------


class ScaledMLP(nn.Module):
    """``forward(x, targets, scale, residual)``: a float that scales the first hidden layer and a
    bool that adds it back after the trunk (Dynamo specialises on both: one graph per value)."""

    def __init__(self, d_in: int = 64, width: int = 256, num_classes: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, width)
        self.trunk = gelu_trunk(width, width, 4)
        self.out = nn.Linear(width, num_classes)

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor, scale: float, residual: bool
    ) -> torch.Tensor:
        h = F.gelu(self.fc1(x)) * scale
        y = self.trunk(h)
        if residual:
            y = y + h
        return F.cross_entropy(self.out(y), targets)


def make_non_tensor_args() -> tuple[nn.Module, tuple]:
    """Inputs: x (512, 64) fp32, targets (512,) int64, scale 0.5, residual True."""
    torch.manual_seed(SEED)
    x, targets = torch.randn(512, 64), torch.randint(0, 16, (512,))
    return ScaledMLP().train(), (x, targets, 0.5, True)


# --- buffers ---------------------------------------------------------------------------------


class BufferedMLP(nn.Module):
    """Normalises its input with fixed buffers (``mean``, non-persistent ``inv_std``), counts its
    steps in an int64 buffer (``num_steps += 1``) and keeps a running mean of its hidden features
    (``running_mean.lerp_``), both updated in place."""

    def __init__(self, d_in: int = 64, width: int = 256, num_classes: int = 16) -> None:
        super().__init__()
        self.register_buffer("mean", torch.linspace(-1.0, 1.0, d_in))
        self.register_buffer("inv_std", torch.linspace(0.5, 2.0, d_in), persistent=False)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("running_mean", torch.zeros(width))
        self.fc1 = nn.Linear(d_in, width)
        self.trunk = gelu_trunk(width, width, 4)
        self.out = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1((x - self.mean) * self.inv_std))
        self.num_steps += 1
        self.running_mean.lerp_(h.detach().mean(dim=0), 0.1)
        return F.cross_entropy(self.out(self.trunk(h)), targets)


def make_buffers() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Inputs: x (512, 64) fp32, targets (512,) int64."""
    torch.manual_seed(SEED)
    return BufferedMLP().train(), (torch.randn(512, 64), torch.randint(0, 16, (512,)))


class UnusedBufferMLP(nn.Module):
    """A 2-layer MLP that also holds a 1 MiB buffer its forward never reads (as a lookup table
    for another mode, or Llama's ``rotary_emb.original_inv_freq``)."""

    def __init__(self, d_in: int = 64, width: int = 256, num_classes: int = 16) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(256, 1024))
        self.fc1 = nn.Linear(d_in, width)
        self.out = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.out(F.gelu(self.fc1(x))), targets)


def make_unused_buffer() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Inputs: x (512, 64) fp32, targets (512,) int64."""
    torch.manual_seed(SEED)
    return UnusedBufferMLP().train(), (torch.randn(512, 64), torch.randint(0, 16, (512,)))


REAL_MODEL_FACTORIES: dict[str, Factory] = {
    "hf_gpt2": make_hf_gpt2,
    "hf_bert": make_hf_bert,
    "hf_llama": make_hf_llama,
    "inplace_mlp": make_inplace_mlp,
    "tied_lm": make_tied_lm,
    "two_head_tuple": make_two_head_tuple,
    "two_head_dict": make_two_head_dict,
    "non_tensor_args": make_non_tensor_args,
    "buffers": make_buffers,
    "unused_buffer": make_unused_buffer,
}
