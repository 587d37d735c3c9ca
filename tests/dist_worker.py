"""One rank of a tests/test_distributed.py scenario: ``python dist_worker.py SCENARIO OUT_DIR``.

Started twice by the test with torchrun's environment (MASTER_ADDR, MASTER_PORT, WORLD_SIZE,
RANK); joins a gloo process group on CPU, runs the scenario and writes what the test checks to
``OUT_DIR/rank{RANK}.pt`` (``torch.save`` of plain data: gradients, plan summaries, peaks).
"""

from __future__ import annotations

import copy
import faulthandler
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

import graphremat
from graphremat.measure import measure_peak_memory
from graphremat.regions import model_resident_bytes
from graphremat.report import Plan

WIDTH = 256
BATCH = 512


class Deep(nn.Module):
    """Eight Linear+GELU layers and a head, returning the loss. Each layer's parameters are
    256 KiB, so DDP with ``bucket_cap_mb=1`` makes two buckets: two compiled regions."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(8))
        self.head = nn.Linear(WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.gelu(layer(x))
        return self.head(x).square().mean()


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(x)))


class Residual(nn.Module):
    """Three residual blocks and a head (the FSDP2 model: one ``fully_shard`` per block). The
    blocks are called one by one, not in a loop: Dynamo then compiles the head too (a graph
    break inside a loop makes it run the whole frame eagerly)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(3))
        self.head = nn.Linear(WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks[0](x)
        x = self.blocks[1](x)
        x = self.blocks[2](x)
        return self.head(x).square().mean()


class AllReduced(nn.Module):
    """A functional collective inside the compiled graph: its output is needed by the backward."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = (
            nn.Linear(WIDTH, WIDTH),
            nn.Linear(WIDTH, WIDTH),
            nn.Linear(WIDTH, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x).sin()
        total = funcol.all_reduce(h.detach(), "sum", dist.group.WORLD)
        return self.c(self.b(h * total).sin()).square().mean()


def step(model, x: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss = model(x)
    loss.backward()
    return loss.detach()


def summary(plan: Plan) -> dict:
    """What must be identical on every rank, and what the test inspects."""
    return {
        "saved": plan.saved,
        "recomputed": plan.recomputed,
        "budget_bytes": plan.budget_bytes,
        "predicted_peak_bytes": plan.predicted_peak_bytes,
        "fixed_bytes": plan.fixed_bytes,
        "saved_bytes": plan.saved_bytes,
        "held_bytes": plan.held_bytes,
        "runs_per_step": plan.runs_per_step,
        "others_held_bytes": plan.others_held_bytes,
        "min_feasible_bytes": plan.min_feasible_bytes,
        "later_room_bytes": plan.later_room_bytes,
        "unconstrained_peak_bytes": plan.unconstrained_peak_bytes,
        "status": plan.status,
        "solver": plan.solver,
        "tensors": [(t.name, t.op, t.decision, t.note) for t in plan.tensors],
    }


def local_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each parameter's gradient as this rank holds it (a DTensor's full tensor)."""
    return {
        n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
        for n, p in model.named_parameters()
    }


def ddp(rank: int, room: bool = False) -> dict:
    """``room``: a budget below the second region's smallest peak beside the first region's
    plan made without it (the first region is planned again with room for it)."""
    torch.manual_seed(0)
    model = Deep()
    torch.manual_seed(100 + rank)  # each rank its own data
    x = torch.randn(BATCH, WIDTH)
    ref = DDP(copy.deepcopy(model), bucket_cap_mb=1)
    step(ref, x)
    # the budget: between the second region's smallest peak and its peak without remat
    probe = graphremat.compile(
        DDP(copy.deepcopy(model), bucket_cap_mb=1), budget=10**9, codegen="eager", time_limit_s=2
    )
    step(probe, x)
    first, second = probe.graphremat_plans
    budget = (second.min_feasible_bytes + second.unconstrained_peak_bytes) // 2
    if room:
        budget = second.min_feasible_bytes - first.saved_bytes // 2
    mine = DDP(copy.deepcopy(model), bucket_cap_mb=1)
    cmodel = graphremat.compile(mine, budget=budget, codegen="eager", time_limit_s=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = step(cmodel, x)
    grads = local_grads(mine.module)
    step(cmodel, x)  # DDP rebuilds its buckets in the second step: measure the third
    mine.zero_grad(set_to_none=True)
    peak = measure_peak_memory(lambda *_: step(cmodel, x), mine, x)
    params = [p.nbytes for p in model.parameters()]
    return {
        "loss": loss,
        "ref_loss": step(ref, x),
        "grads": grads,
        "ref_grads": local_grads(ref.module),
        "plans": [summary(p) for p in cmodel.graphremat_plans],
        "budget": budget,
        "peak": peak,
        "params_bytes": sum(params),
        "first_bucket_params_bytes": sum(params[:8]),  # layers 0-3: weight and bias each
        "input_bytes": x.nbytes,
        "resident_bytes": model_resident_bytes(mine),
        "warnings": [str(w.message) for w in caught if "graphremat" in str(w.message)],
    }


def fsdp2(rank: int) -> dict:
    torch.manual_seed(0)
    model = Residual()
    torch.manual_seed(100 + rank)
    x = torch.randn(BATCH, WIDTH)

    def shard(m: Residual) -> Residual:
        for block in m.blocks:
            fully_shard(block)
        return fully_shard(m)

    ref = shard(copy.deepcopy(model))
    ref_loss = step(ref, x)
    # the budget: between the block graph's smallest peak and its peak without remat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = graphremat.compile(
            shard(copy.deepcopy(model)), budget=10**9, codegen="eager", time_limit_s=2
        )
        step(probe, x)
    # (the head's region, after every block's run, has nothing to recompute: its minimum is
    # the floor; the blocks' graph must recompute below its peak without remat)
    block = probe.graphremat_plans[1]  # blocks 1 and 2 (block 0's input needs no gradient)
    floor = max(p.min_feasible_bytes for p in probe.graphremat_plans)
    budget = (floor + block.unconstrained_peak_bytes) // 2
    mine = shard(copy.deepcopy(model))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cmodel = graphremat.compile(mine, budget=budget, codegen="eager", time_limit_s=2)
        loss = step(cmodel, x)
    grads = local_grads(mine)
    mine.zero_grad(set_to_none=False)
    return {
        "loss": loss,
        "ref_loss": ref_loss,
        "grads": grads,
        "ref_grads": local_grads(ref),
        "plans": [summary(p) for p in cmodel.graphremat_plans],
        "warnings": [str(w.message) for w in caught],
        "budget": budget,
        "peak": measure_peak_memory(lambda *_: step(cmodel, x), mine, x),
    }


def plans(rank: int) -> dict:
    """Plan-only: a collective inside the graph; rank-dependent solvers; an error on rank 0."""
    torch.manual_seed(0)
    model = AllReduced()
    torch.manual_seed(100 + rank)
    x = torch.randn(BATCH, WIDTH)
    collective = graphremat.plan(model, x, budget=0.9, time_limit_s=2)

    # a solver that answers differently on each rank: rank 0's answer must win everywhere
    ranked = graphremat.solvers.get_solver("cpsat" if rank == 0 else "recompute_all")
    differing = graphremat.plan(model, x, budget=0.95, solver=ranked, cache=False)

    def failing(problem, budget_bytes, **kwargs):
        if rank == 0:
            raise RuntimeError("rank 0's solver failed")
        return graphremat.solvers.get_solver("cpsat")(problem, budget_bytes, **kwargs)

    try:
        graphremat.plan(model, x, budget=0.9, solver=failing, cache=False)
        error = None
    except graphremat.GraphRematError as e:
        error = (type(e).__name__, str(e))
    return {
        "collective": summary(collective),
        "differing": summary(differing),
        "error": error,
    }


#: plan broadcasts in the ``broadcasts`` scenario: gloo deadlocked within 0-2,500 of them (4
#: runs) before graphremat left the Python dispatcher around its broadcast
BROADCASTS = 10_000


def broadcasts(rank: int) -> dict:
    """graphremat's plan broadcast, many times, under the Python dispatcher that a compile turns
    on (AOTAutograd runs the partitioner under it; the FSDP2 scenario hung there)."""
    from torch._dispatch.python import enable_python_dispatcher

    from graphremat.planner import _broadcast_from_rank0

    got = []
    with enable_python_dispatcher():
        for i in range(BROADCASTS):
            got.append(_broadcast_from_rank0({"i": i, "rank": rank} if rank == 0 else None))
    return {"received": [g["i"] for g in got], "from": sorted({g["rank"] for g in got})}


def transport(rank: int, out_dir: Path, times: int) -> dict:
    """The test harness's own check: fail as a gloo transport error would, on the first
    ``times`` attempts (counted by marker files beside the attempt's directory)."""
    dist.barrier()
    marker = out_dir.parent / f"transport-rank{rank}-{out_dir.name}"
    seen = len(list(out_dir.parent.glob(f"transport-rank{rank}-*")))
    marker.touch()
    if seen < times:
        print("RuntimeError: [gloo/transport/tcp/pair.cc] Connection closed by peer", flush=True)
        sys.exit(1)
    return {"rank": rank, "attempts": seen + 1}


SCENARIOS = {
    "ddp": ddp,
    "ddp_room": lambda rank: ddp(rank, room=True),
    "fsdp2": fsdp2,
    "plans": plans,
    "broadcasts": broadcasts,
}
DIR_SCENARIOS = {  # these also take the output directory
    "transport_once": lambda rank, out_dir: transport(rank, out_dir, times=1),
    "transport_always": lambda rank, out_dir: transport(rank, out_dir, times=2),
}


def main() -> None:
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    # a rank that hangs prints every thread's stack before the test kills it
    faulthandler.dump_traceback_later(float(os.environ["GRAPHREMAT_TEST_DUMP_AFTER_S"]), exit=True)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        if scenario in DIR_SCENARIOS:
            result = DIR_SCENARIOS[scenario](rank, out_dir)
        else:
            result = SCENARIOS[scenario](rank)
    finally:
        dist.destroy_process_group()
    torch.save(result, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
