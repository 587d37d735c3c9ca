"""Capture the AOTAutograd joint graph of a model's training step (for unit tests)."""

from __future__ import annotations

import torch

from graphremat import _private as P


def joint_graph(model, *inputs):
    """Return ``(joint GraphModule, num_fwd_outputs)`` for ``model(*inputs).backward()``."""
    got = {}

    def partition(joint, joint_inputs, **kwargs):
        got["joint"] = joint
        got["num_fwd_outputs"] = kwargs["num_fwd_outputs"]
        return P.default_partition(joint, joint_inputs, **kwargs)

    backend = P.aot_autograd(
        fw_compiler=P.boxed_nop, bw_compiler=P.boxed_nop, partition_fn=partition
    )
    torch._dynamo.reset()
    torch.compile(model, backend=backend)(*inputs).backward()
    torch._dynamo.reset()
    return got["joint"], got["num_fwd_outputs"]
