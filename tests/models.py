"""A small model zoo for end-to-end tests.

Each ``make_<name>()`` returns ``(model, inputs)``: an fp32 CPU model in train mode whose
``forward(*inputs)`` returns a scalar loss (so a whole training step is one compiled region), and
its inputs, all built under a fixed ``torch.manual_seed``. Sizes are chosen so that activations
dominate parameters (large batch or spatial size, narrow layers) — a budget of half the no-remat
peak is then plausible — while one eager forward+backward stays well under 0.2 s on 2 cores.
No ``F.mse_loss`` (on CPU it returns a scalar backed by a large buffer, DESIGN.md §5b).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from graphremat.bench import GPT as BenchGPT
from graphremat.zoo import MLP, ResNet, UNet

__all__ = ["GPT", "MLP", "MODEL_FACTORIES", "ResNet", "UNet"]

SEED = 0

Factory = Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]


# --- mlp -------------------------------------------------------------------------------------


def make_mlp() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """16 Linear layers (alternating ReLU/GELU), cross-entropy.

    Inputs: x (1024, 64) fp32, targets (1024,) int64.
    """
    torch.manual_seed(SEED)
    model = MLP().train()
    x = torch.randn(1024, 64)
    targets = torch.randint(0, 16, (1024,))
    return model, (x, targets)


# --- gpt -------------------------------------------------------------------------------------


class GPT(BenchGPT):
    """The GPT of graphremat.bench (pre-LN, matmul + masked-softmax attention, GELU MLP, dropout,
    untied head; ``forward(idx, targets)`` returns the loss), with the tests' defaults."""

    def __init__(
        self,
        vocab_size: int = 128,
        max_len: int = 128,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        p_drop: float = 0.1,
    ) -> None:
        super().__init__(vocab_size, max_len, d_model, num_heads, num_layers, p_drop)


def make_gpt() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """2-layer pre-LN GPT (d=64, 4 heads, vocab 128, context 32, matmul+softmax attention,
    dropout 0.1). Many short sequences: per-token activations dominate the attention matrices.

    Inputs: idx (64, 32) int64 token ids, targets (64, 32) int64.
    """
    torch.manual_seed(SEED)
    model = GPT(max_len=32).train()
    idx = torch.randint(0, 128, (64, 32))
    targets = torch.randint(0, 128, (64, 32))
    return model, (idx, targets)


# --- resnet ----------------------------------------------------------------------------------


def make_resnet() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Conv stem + 8 basic blocks as ResNet-18 has (BatchNorm, in-place ReLU; 6 at 32x32, then a
    strided one with a 1x1 downsample and one more at 16x16), GAP, head.

    Depth matters for the test: with 3 blocks the backward's working set (a block's values, its
    gradients and conv workspace) is ~60 % of the no-remat peak, so no plan of graphremat's
    schedule class reaches 0.5 (proven minimum 0.643); with 8 blocks the minimum is ~0.45.

    Inputs: x (16, 3, 32, 32) fp32, labels (16,) int64.
    """
    torch.manual_seed(SEED)
    model = ResNet().train()
    x = torch.randn(16, 3, 32, 32)
    labels = torch.randint(0, 10, (16,))
    return model, (x, labels)


# --- unet ------------------------------------------------------------------------------------


def make_unet() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """3-level U-Net (2x conv+BN+ReLU per level, max-pool, ConvTranspose2d up, cat long skips),
    squared error.

    With BatchNorm each level's activations outweigh the backward's working set (the widest
    concatenation, its gradient and conv workspace). Without it (plain conv+ReLU, as in the 2015
    paper) no rematerialization schedule reaches 0.5 of the no-remat peak here: the exact
    unrestricted Checkmate optimum is 0.613.

    Inputs: x (8, 3, 64, 64) fp32, target (8, 3, 64, 64) fp32.
    """
    torch.manual_seed(SEED)
    model = UNet().train()
    x = torch.randn(8, 3, 64, 64)
    target = torch.randn(8, 3, 64, 64)
    return model, (x, target)


# --- dropout_mlp -----------------------------------------------------------------------------


class DropoutMLP(nn.Module):
    def __init__(self, d_in: int = 128, width: int = 256, num_classes: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, width),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.net(x), targets)


def make_dropout_mlp() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """3 Linear layers with Dropout(0.5) between them, cross-entropy (RNG-correctness tests).

    Inputs: x (2048, 128) fp32, targets (2048,) int64.
    """
    torch.manual_seed(SEED)
    model = DropoutMLP().train()
    x = torch.randn(2048, 128)
    targets = torch.randint(0, 16, (2048,))
    return model, (x, targets)


MODEL_FACTORIES: dict[str, Factory] = {
    "mlp": make_mlp,
    "gpt": make_gpt,
    "resnet": make_resnet,
    "unet": make_unet,
    "dropout_mlp": make_dropout_mlp,
}
