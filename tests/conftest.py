"""Suite-wide setup: the plan cache lives in a fresh directory per test session, as on a fresh
machine (tests that exercise the cache use their own directories)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _fresh_plan_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GRAPHREMAT_CACHE_DIR", str(tmp_path_factory.mktemp("plan-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    """Plans are made for two intra-op threads, as on the 2-core CI machine, whatever this
    machine's core count: roofline-v2 prices FLOPs at torch's thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch: Dynamo's per-code-object recompile limit (8) would
    otherwise make later compiles of the same model class fall back to eager."""
    import torch

    torch._dynamo.reset()
    yield
