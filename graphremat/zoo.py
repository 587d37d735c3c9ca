"""A zoo of real architectures at two sizes, for benchmarks and end-to-end tests.

Input: a model name and a size (``"test"`` or ``"full"``). Output: ``(model, inputs)``: an fp32
CPU module in train mode with random weights, built from a config object under
``torch.manual_seed(seed)`` (no hub access, no pretrained weights), and its inputs, such that
``model(*inputs)`` returns the scalar training loss its own library computes (transformers models
are wrapped in :class:`HFLoss`, which passes ``labels=`` and returns ``.loss``).

Invariants, checked by tests/test_zoo.py at the test size:

* ``model(*inputs)`` is one Dynamo graph with no graph breaks (fixed shapes, ``use_cache=False``,
  ``loss_type`` and ``problem_type`` set, SDPA attention), so a whole training step is one
  compiled region;
* the same seed gives the same weights, inputs and loss;
* activations outweigh parameters: :func:`activation_ratio` (bytes autograd saves for the backward
  over parameter + gradient bytes) is > 1 at ``"test"`` and >= 2 at ``"full"``.

``"test"`` is tiny (width ~64, 2 layers; one eager step in a few ms); ``"full"`` is a realistic
shape where rematerialization matters (width 256, 4 layers, 2048 tokens or 8-32 images a step;
one eager fp32 step ~0.3-2 s on one CPU thread). Vocabularies are small (2048) so the LM head does
not dominate. transformers is imported inside the factories only, so ``import graphremat.zoo``
works without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

SIZES = ("test", "full")
FAMILIES = ("decoder", "moe", "encoder", "encoder-decoder", "vision", "synthetic")

Built = tuple[nn.Module, tuple]
#: builds a model and its inputs from its shape (``batch``, ``seq``, ``hidden``, ...)
Factory = Callable[..., Built]


@dataclass(frozen=True, slots=True)
class ZooModel:
    """One zoo entry: ``make(**sizes[size])`` builds the model and its inputs."""

    name: str
    family: str
    description: str
    make: Factory
    sizes: Mapping[str, Mapping[str, int]]

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family {self.family!r} is not one of {FAMILIES}")
        if set(self.sizes) != set(SIZES):
            raise ValueError(f"{self.name}: sizes {sorted(self.sizes)} must be exactly {SIZES}")
        frozen = {s: MappingProxyType(dict(shape)) for s, shape in self.sizes.items()}
        object.__setattr__(self, "sizes", MappingProxyType(frozen))

    def build(self, size: str = "full", *, seed: int = 0) -> Built:
        """``(model, inputs)`` at ``size``: weights, then inputs, drawn after
        ``manual_seed(seed)``."""
        _check_choice("size", size, SIZES)
        torch.manual_seed(seed)
        model, inputs = self.make(**self.sizes[size])
        return model.train(), inputs


def _check_choice(what: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown zoo {what} {value!r}; valid: {', '.join(valid)}")


# --- transformers ------------------------------------------------------------------------------


class HFLoss(nn.Module):
    """``hf(**{input_name: x}, labels=labels).loss``: a transformers model as a module whose forward
    returns the library's own scalar training loss (not a ``ModelOutput``)."""

    def __init__(self, hf_model: nn.Module, input_name: str = "input_ids") -> None:
        super().__init__()
        self.hf = hf_model
        self.input_name = input_name

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.hf(**{self.input_name: x}, labels=labels).loss


def _loss_of(hf_model: nn.Module, loss_type: str, input_name: str = "input_ids") -> HFLoss:
    # set, not guessed from the class name: where that names no loss (GPT2LMHeadModel) it is
    # None, and transformers logs a warning from inside every forward (a graph break)
    hf_model.loss_type = loss_type
    return HFLoss(hf_model, input_name)


def _lm_inputs(batch: int, seq: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and labels = ids (causal LMs shift them inside)."""
    ids = torch.randint(0, vocab, (batch, seq))
    return ids, ids.clone()


def _mlm_inputs(batch: int, seq: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and masked-LM labels: every 4th token labelled, the rest ignored (-100)."""
    ids = torch.randint(0, vocab, (batch, seq))
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]
    return ids, labels


def _image_inputs(batch: int, image: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 3, image, image), torch.randint(0, classes, (batch,))


# every decoder shares these: fixed shapes, no KV cache, SDPA, ids inside the vocabulary
def _decoder_config(seq: int, vocab: int) -> dict:
    return {
        "vocab_size": vocab,
        "max_position_embeddings": seq,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "use_cache": False,
        "attn_implementation": "sdpa",
    }


def make_gpt2(*, batch: int, seq: int, vocab: int, hidden: int, layers: int, heads: int) -> Built:
    """GPT2LMHeadModel: learned positions, pre-LN, GELU MLP 4x, dropout 0.1, tied LM head."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, **_decoder_config(seq, vocab))
    model = GPT2LMHeadModel(config)
    return _loss_of(model, "ForCausalLM"), _lm_inputs(batch, seq, vocab)


def make_llama(
    *, batch: int, seq: int, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int
) -> Built:
    """LlamaForCausalLM: RoPE, RMSNorm, SwiGLU (width 2.75x), grouped-query attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        **_decoder_config(seq, vocab),
    )
    return _loss_of(LlamaForCausalLM(config), "ForCausalLM"), _lm_inputs(batch, seq, vocab)


def make_qwen2(
    *, batch: int, seq: int, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int
) -> Built:
    """Qwen2ForCausalLM: Llama's block plus q/k/v biases, grouped-query attention, tied head."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=True,
        **_decoder_config(seq, vocab),
    )
    return _loss_of(Qwen2ForCausalLM(config), "ForCausalLM"), _lm_inputs(batch, seq, vocab)


def make_mixtral(
    *,
    batch: int,
    seq: int,
    vocab: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    experts: int,
) -> Built:
    """MixtralForCausalLM: top-2 sparse MoE SwiGLU experts, the router's load-balancing loss in
    the loss (``output_router_logits``). The experts run as transformers' ``grouped_mm``: one
    opaque custom op per projection under Dynamo (fp32), so routing stays in one graph."""
    from transformers import MixtralConfig, MixtralForCausalLM
    from transformers.utils.output_capturing import maybe_install_capturing_hooks

    config = MixtralConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        num_local_experts=experts,
        num_experts_per_tok=2,
        output_router_logits=True,
        experts_implementation="grouped_mm",
        **_decoder_config(seq, vocab),
    )
    model = MixtralForCausalLM(config)
    # the router logits of the aux loss are recorded by forward hooks that transformers installs
    # on the first call, under a threading.Lock that Dynamo cannot enter (a graph break): now
    maybe_install_capturing_hooks(model.model)
    return _loss_of(model, "ForCausalLM"), _lm_inputs(batch, seq, vocab)


def make_bert(*, batch: int, seq: int, vocab: int, hidden: int, layers: int, heads: int) -> Built:
    """BertForMaskedLM: post-LN encoder, GELU MLP 4x, dropout 0.1; 1 token in 4 labelled."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        vocab_size=vocab,
        max_position_embeddings=seq,
        pad_token_id=0,
        use_cache=False,
        attn_implementation="sdpa",
    )
    return _loss_of(BertForMaskedLM(config), "ForMaskedLM"), _mlm_inputs(batch, seq, vocab)


def make_t5(
    *, batch: int, seq: int, target_seq: int, vocab: int, hidden: int, layers: int, heads: int
) -> Built:
    """T5ForConditionalGeneration: relative position bias, RMSNorm, ReLU MLP 4x, dropout 0.1;
    decoder inputs are the labels shifted right inside the model."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=vocab,
        d_model=hidden,
        d_kv=hidden // heads,
        d_ff=4 * hidden,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        use_cache=False,
        attn_implementation="sdpa",
    )
    model = _loss_of(T5ForConditionalGeneration(config), "ForConditionalGeneration")
    ids = torch.randint(0, vocab, (batch, seq))
    return model, (ids, torch.randint(2, vocab, (batch, target_seq)))


def make_vit(
    *, batch: int, image: int, patch: int, classes: int, hidden: int, layers: int, heads: int
) -> Built:
    """ViTForImageClassification: patch embedding, CLS token, pre-LN encoder, GELU MLP 4x."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=image,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        num_labels=classes,
        problem_type="single_label_classification",  # else forward sets it: a graph break
        attn_implementation="sdpa",
    )
    model = _loss_of(ViTForImageClassification(config), "ForImageClassification", "pixel_values")
    return model, _image_inputs(batch, image, classes)


def make_convnext(*, batch: int, image: int, classes: int, width: int, blocks: int) -> Built:
    """ConvNextForImageClassification: 4x4 patchify stem, 4 stages (widths w..8w, depths
    (1, 1, blocks, 1)) of 7x7 depthwise conv, LayerNorm, inverted GELU MLP 4x, layer scale."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(
        hidden_sizes=[width, 2 * width, 4 * width, 8 * width],
        depths=[1, 1, blocks, 1],
        image_size=image,
        num_labels=classes,
        problem_type="single_label_classification",
    )
    classifier = ConvNextForImageClassification(config)
    model = _loss_of(classifier, "ForImageClassification", "pixel_values")
    return model, _image_inputs(batch, image, classes)


# --- synthetic: the families of tests/models.py, with a size ----------------------------------


class MLP(nn.Module):
    """``depth`` Linear layers (ReLU and GELU alternating between them), cross-entropy."""

    def __init__(
        self, d_in: int = 64, width: int = 256, depth: int = 16, num_classes: int = 16
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(d_in, width)]
        for i in range(depth - 2):
            layers += [nn.ReLU() if i % 2 == 0 else nn.GELU(), nn.Linear(width, width)]
        layers += [nn.ReLU(), nn.Linear(width, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.net(x), targets)


def make_mlp(*, batch: int, d_in: int, width: int, depth: int) -> Built:
    inputs = torch.randn(batch, d_in), torch.randint(0, 16, (batch,))
    return MLP(d_in, width, depth, 16), inputs


def make_gpt(*, batch: int, seq: int, vocab: int, hidden: int, layers: int, heads: int) -> Built:
    """graphremat.bench's GPT: attention as matmul + masked softmax, so the attention matrices
    are values of the graph."""
    from .bench import GPT

    model = GPT(vocab, seq, hidden, heads, layers)
    return model, (torch.randint(0, vocab, (batch, seq)), torch.randint(0, vocab, (batch, seq)))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv + BatchNorm, in-place ReLU, identity or 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Conv stem, ``blocks[0]`` basic blocks at full resolution, then ``blocks[1]`` at half
    resolution and twice the width (the first strided), global average pool, linear head."""

    def __init__(
        self, width: int = 16, num_classes: int = 10, blocks: tuple[int, int] = (6, 2)
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        layers = [BasicBlock(width, width) for _ in range(blocks[0])]
        layers.append(BasicBlock(width, 2 * width, stride=2))
        layers += [BasicBlock(2 * width, 2 * width) for _ in range(blocks[1] - 1)]
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x))
        return F.cross_entropy(self.head(h.mean(dim=(2, 3))), labels)


def make_resnet(*, batch: int, image: int, width: int, blocks_full: int, blocks_half: int) -> Built:
    model = ResNet(width, 10, (blocks_full, blocks_half))
    return model, _image_inputs(batch, image, 10)


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """Two (3x3 conv, BatchNorm, ReLU): the "DoubleConv" of common PyTorch U-Nets."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """3-level U-Net: double conv per level, max-pool down, ConvTranspose2d up, long skips joined
    with torch.cat, squared-error loss against a target image."""

    def __init__(self, width: int = 8, c_in: int = 3) -> None:
        super().__init__()
        w = width
        self.down1, self.down2 = _double_conv(c_in, w), _double_conv(w, 2 * w)
        self.down3, self.bottleneck = _double_conv(2 * w, 4 * w), _double_conv(4 * w, 8 * w)
        self.pool = nn.MaxPool2d(2)
        self.up3, self.dec3 = nn.ConvTranspose2d(8 * w, 4 * w, 2, 2), _double_conv(8 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2), _double_conv(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, 2), _double_conv(2 * w, w)
        self.out = nn.Conv2d(w, c_in, 1)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        s1 = self.down1(x)
        s2 = self.down2(self.pool(s1))
        s3 = self.down3(self.pool(s2))
        b = self.bottleneck(self.pool(s3))
        d3 = self.dec3(torch.cat([self.up3(b), s3], dim=1))
        d2 = self.dec2(torch.cat([self.up2(d3), s2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), s1], dim=1))
        return (self.out(d1) - target).pow(2).mean()


def make_unet(*, batch: int, image: int, width: int) -> Built:
    x, target = torch.randn(batch, 3, image, image), torch.randn(batch, 3, image, image)
    return UNet(width), (x, target)


# --- the registry ------------------------------------------------------------------------------


#: a small decoder / encoder: one eager step in a few ms
_LM_TEST = {"batch": 8, "seq": 32, "vocab": 256, "hidden": 64, "layers": 2, "heads": 4}
#: GPT-2 small's block at a third of its width and depth, 2048 tokens a step
_LM_FULL = {"batch": 8, "seq": 256, "vocab": 2048, "hidden": 256, "layers": 4, "heads": 4}

_ENTRIES = (
    ZooModel(
        "gpt2",
        "decoder",
        "GPT2LMHeadModel (transformers)",
        make_gpt2,
        {"test": _LM_TEST, "full": _LM_FULL},
    ),
    ZooModel(
        "llama",
        "decoder",
        "LlamaForCausalLM, grouped-query attention (transformers)",
        make_llama,
        {"test": {**_LM_TEST, "kv_heads": 2}, "full": {**_LM_FULL, "heads": 8, "kv_heads": 2}},
    ),
    ZooModel(
        "qwen2",
        "decoder",
        "Qwen2ForCausalLM, grouped-query attention, qkv bias, tied head (transformers)",
        make_qwen2,
        {"test": {**_LM_TEST, "kv_heads": 2}, "full": {**_LM_FULL, "kv_heads": 2}},
    ),
    ZooModel(
        "mixtral",
        "moe",
        "MixtralForCausalLM, top-2 of 4 experts, router aux loss (transformers)",
        make_mixtral,
        {
            "test": {**_LM_TEST, "kv_heads": 2, "experts": 4},
            "full": {**_LM_FULL, "heads": 8, "kv_heads": 2, "experts": 4},
        },
    ),
    ZooModel(
        "bert",
        "encoder",
        "BertForMaskedLM, 1 token in 4 labelled (transformers)",
        make_bert,
        {"test": _LM_TEST, "full": _LM_FULL},
    ),
    ZooModel(
        "t5",
        "encoder-decoder",
        "T5ForConditionalGeneration (transformers)",
        make_t5,
        {"test": {**_LM_TEST, "target_seq": 16}, "full": {**_LM_FULL, "target_seq": 128}},
    ),
    ZooModel(
        "vit",
        "vision",
        "ViTForImageClassification (transformers)",
        make_vit,
        {
            "test": {
                "batch": 8,
                "image": 32,
                "patch": 4,
                "classes": 10,
                "hidden": 64,
                "layers": 2,
                "heads": 4,
            },
            "full": {
                "batch": 16,
                "image": 64,
                "patch": 4,
                "classes": 100,
                "hidden": 256,
                "layers": 4,
                "heads": 4,
            },
        },
    ),
    ZooModel(
        "convnext",
        "vision",
        "ConvNextForImageClassification (transformers)",
        make_convnext,
        {
            "test": {"batch": 8, "image": 64, "classes": 10, "width": 8, "blocks": 1},
            "full": {"batch": 32, "image": 224, "classes": 100, "width": 32, "blocks": 3},
        },
    ),
    ZooModel(
        "mlp",
        "synthetic",
        "Linear stack, ReLU and GELU alternating, cross-entropy",
        make_mlp,
        {
            "test": {"batch": 512, "d_in": 64, "width": 128, "depth": 8},
            "full": {"batch": 2048, "d_in": 256, "width": 512, "depth": 16},
        },
    ),
    ZooModel(
        "gpt",
        "synthetic",
        "graphremat.bench's GPT, attention as matmul + masked softmax",
        make_gpt,
        {"test": {**_LM_TEST, "batch": 16}, "full": _LM_FULL},
    ),
    ZooModel(
        "resnet",
        "synthetic",
        "ResNet of basic blocks, BatchNorm, in-place ReLU",
        make_resnet,
        {
            "test": {"batch": 8, "image": 32, "width": 8, "blocks_full": 2, "blocks_half": 1},
            "full": {"batch": 16, "image": 64, "width": 32, "blocks_full": 6, "blocks_half": 2},
        },
    ),
    ZooModel(
        "unet",
        "synthetic",
        "3-level U-Net, BatchNorm, cat skips, squared error",
        make_unet,
        {
            "test": {"batch": 4, "image": 32, "width": 8},
            "full": {"batch": 12, "image": 128, "width": 16},
        },
    ),
)

ZOO: dict[str, ZooModel] = {entry.name: entry for entry in _ENTRIES}


def names(family: str | None = None) -> list[str]:
    """The zoo's model names, all or one family's, in registry order."""
    if family is not None:
        _check_choice("family", family, FAMILIES)
    return [name for name, entry in ZOO.items() if family in (None, entry.family)]


def build(name: str, size: str = "full", *, seed: int = 0) -> Built:
    """``(model, inputs)`` of zoo model ``name`` at ``size``: ``model(*inputs)`` is the loss."""
    _check_choice("model", name, tuple(ZOO))
    return ZOO[name].build(size, seed=seed)


# --- how much the activations outweigh the model -----------------------------------------------


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    """(data pointer, bytes) of ``t``'s storage; None for tensors without one (sparse, ...)."""
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    return storage.data_ptr(), storage.nbytes()


def saved_activation_bytes(model: nn.Module, inputs: tuple) -> int:
    """Bytes of the distinct storages autograd saves for the backward while ``model(*inputs)``
    runs, other than the model's parameters and buffers and the inputs (alive anyway).

    Runs one forward with grad enabled and no backward (BatchNorm running statistics and other
    in-place buffer updates do happen). Every saved tensor is held until the forward ends, so a
    freed storage's address cannot be reused by a later one and counted once for both.
    """
    state = [*model.parameters(), *model.buffers(), *(x for x in inputs if torch.is_tensor(x))]
    resident = {key[0] for key in map(_storage_key, state) if key is not None}
    saved: dict[int, int] = {}
    held: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key is not None and key[0] not in resident and key[1] > 0:
            saved[key[0]] = key[1]
            held.append(t)
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(*inputs)
    held.clear()
    return sum(saved.values())


def activation_ratio(model: nn.Module, inputs: tuple) -> float:
    """:func:`saved_activation_bytes` over the bytes of the parameters and their gradients
    (each distinct parameter storage once, twice if it requires grad)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        ptr, nbytes = p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()
        seen[ptr] = nbytes * (2 if p.requires_grad else 1)
    state_bytes = sum(seen.values())
    if state_bytes == 0:
        raise ValueError("activation_ratio needs a model with parameters")
    return saved_activation_bytes(model, inputs) / state_bytes
