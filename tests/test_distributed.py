"""Distributed data parallelism: DDP and FSDP2 with graphremat.compile, 2 ranks, gloo on CPU.

Each test starts two processes of tests/dist_worker.py (torchrun's environment: MASTER_ADDR,
MASTER_PORT, WORLD_SIZE, RANK) and checks what they wrote: gradients against a plain eager run
of the same wrapper and seeds, the same plans on every rank, the measured peak per rank against
the budget, and collectives never recomputed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("dist_worker.py")
WORLD_SIZE = 2
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _excerpt(out: str) -> str:
    """The end of a rank's output, and, where it hung, the start of the stack dump that
    dist_worker.py's faulthandler printed (most recent call first)."""
    hung = out.find("Timeout (")
    head = out[hung : hung + 6000] + "\n...\n" if hung >= 0 else ""
    return head + out[-4000:]


#: gloo transport failures: a scenario that hits one is run once more (PyTorch's own tests
#: retry on the last, torch.testing._internal.common_utils.retry_on_connect_failures). Seen
#: once in CI: rank 0's plan broadcast raised 'Connection closed by peer' while rank 1 waited
#: in the same broadcast; the scenario then passed 18 times in a row, 12 of them beside two
#: busy-looping processes. A real bug that kills a rank fails both attempts.
TRANSPORT_ERRORS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Address already in use",
)


def run_ranks(scenario: str, out_dir: Path, timeout_s: float = TIMEOUT_S) -> list[dict]:
    """Run ``scenario`` on 2 ranks (killed after ``timeout_s``); return each rank's results
    (rank order). Once more, with a warning, if a rank failed on a gloo transport error."""
    for attempt in (1, 2):
        run_dir = out_dir / f"attempt{attempt}"
        run_dir.mkdir(parents=True)
        failed = _run_once(scenario, run_dir, timeout_s)
        transport = [e for e in TRANSPORT_ERRORS if any(e in out for _, _, out in failed)]
        if not (failed and transport and attempt == 1):
            break
        warnings.warn(
            f"{scenario}: gloo transport error ({transport[0]}) on the first attempt; running "
            "the scenario again",
            RuntimeWarning,
            stacklevel=2,
        )
    assert not failed, "\n".join(f"rank {r} exited {rc}:\n{_excerpt(out)}" for r, rc, out in failed)
    return [torch.load(run_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


def _run_once(
    scenario: str, out_dir: Path, timeout_s: float = TIMEOUT_S
) -> list[tuple[int, int, str]]:
    """Start both ranks and wait for them (killed after ``timeout_s``); each failed rank's
    (rank, exit code, whole output)."""
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(WORLD_SIZE),
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "GRAPHREMAT_TEST_DUMP_AFTER_S": str(timeout_s - 20),
    }
    # each rank writes to its own file: a pipe read one rank at a time can fill up (64 KiB)
    # and block the other rank's writes while the first waits for it in a collective
    logs = [out_dir / f"rank{rank}.log" for rank in range(WORLD_SIZE)]
    procs = []
    for rank, log in enumerate(logs):
        with open(log, "w") as sink:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), scenario, str(out_dir)],
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = [log.read_text(errors="replace") for log in logs]
    return [
        (r, p.returncode, out)
        for r, (p, out) in enumerate(zip(procs, outputs, strict=True))
        if p.returncode != 0
    ]


def test_a_gloo_transport_error_runs_the_scenario_once_more(tmp_path):
    """The harness: a scenario that fails as a transport error would on its first attempt
    passes on the second, with a warning; one that fails on both is a test failure."""
    with pytest.warns(RuntimeWarning, match="running the scenario again"):
        results = run_ranks("transport_once", tmp_path / "once")
    assert [r["attempts"] for r in results] == [2, 2]
    with pytest.warns(RuntimeWarning), pytest.raises(AssertionError, match="closed by peer"):
        run_ranks("transport_always", tmp_path / "always")


def assert_same_plans(per_rank: list[list[dict]]) -> None:
    first, *others = per_rank
    for rank, plans in enumerate(others, start=1):
        assert plans == first, f"rank {rank}'s plans differ from rank 0's"


def assert_grads_match(result: dict) -> None:
    torch.testing.assert_close(result["loss"], result["ref_loss"])
    assert result["grads"].keys() == result["ref_grads"].keys()
    for name, grad in result["grads"].items():
        torch.testing.assert_close(
            grad, result["ref_grads"][name], msg=lambda m, name=name: f"grad {name}: {m}"
        )


def _is_collective(op: str) -> bool:
    return op.startswith("_c10d_functional.")


def test_ddp_buckets_share_the_budget(tmp_path):
    """DDP(model), then graphremat.compile: Dynamo's DDPOptimizer splits the step at the two
    gradient buckets; each bucket is a region planned with the other's residents."""
    results = run_ranks("ddp", tmp_path)
    assert_same_plans([r["plans"] for r in results])
    for r in results:
        assert_grads_match(r)
        first, second = r["plans"]
        assert second["recomputed"]  # the budget made the second region recompute
        # residents: parameters, gradients and DDP's gradient buckets (a third copy), less the
        # region's own parameters and gradients, plus its own parameters and its input
        total, own0 = r["params_bytes"], r["first_bucket_params_bytes"]
        own1 = total - own0
        assert r["resident_bytes"] == 3 * total
        assert first["fixed_bytes"] == 3 * total - own0 + r["input_bytes"]
        # ... and, for the second region, what the first one holds for its backward (its
        # saved values and its input)
        assert first["held_bytes"] == first["saved_bytes"] + r["input_bytes"]
        assert second["fixed_bytes"] == (3 * total - own1 + r["input_bytes"] + first["held_bytes"])
        # DDP's buckets are allocated before the step: the measured peak does not see them
        assert r["peak"] <= r["budget"] - total, (r["peak"], r["budget"], total)


def test_ddp_buckets_make_room_before_the_first_step_runs(tmp_path):
    """Below the second bucket's smallest peak beside the first bucket's plan made without it:
    DDPOptimizer compiles both buckets before either runs, so the first is planned again, with
    room for the second, before its first run, and the second after it; the same plans on
    both ranks, DDP's gradients, and the step within the budget."""
    results = run_ranks("ddp_room", tmp_path)
    assert_same_plans([r["plans"] for r in results])
    for r in results:
        assert_grads_match(r)
        assert len(r["warnings"]) == 1 and "have not run yet" in r["warnings"][0]
        old, _, room, second = r["plans"]
        assert room["later_room_bytes"] > 0 and room["saved_bytes"] < old["saved_bytes"]
        assert second["budget_bytes"] == r["budget"]
        assert r["peak"] <= r["budget"] - r["params_bytes"], (r["peak"], r["budget"])


def test_fsdp2_gradients_and_identical_plans(tmp_path):
    """fully_shard per block and at the root, then graphremat.compile: FSDP2's hooks run
    outside the compiled regions (Dynamo does not trace them), so its all-gathers and
    reduce-scatters are never in a plan."""
    results = run_ranks("fsdp2", tmp_path)
    assert_same_plans([r["plans"] for r in results])
    for r in results:
        assert_grads_match(r)
        assert r["plans"]
        # one compiled block graph runs for every block: its plans count the other blocks'
        # runs and FSDP2's buffers (a model of them: measured peaks vary by up to 0.8 MB from
        # run to run with the collectives' timing), hence the warning; the step fits
        assert any("under FSDP2 the budget is not a strict promise" in w for w in r["warnings"])
        assert not any("did not foresee" in w for w in r["warnings"])
        blocks = [p for p in r["plans"] if p["runs_per_step"] == 3]
        assert blocks and any(p["recomputed"] for p in blocks)
        assert r["peak"] <= max(p["predicted_peak_bytes"] for p in r["plans"]) <= r["budget"]
        # counting one block's run alone would have promised far less than the step needs
        alone = max(p["predicted_peak_bytes"] - p["others_held_bytes"] for p in blocks)
        assert r["peak"] > alone
        for plan in r["plans"]:
            assert not any(_is_collective(op) for _, op, _, _ in plan["tensors"])


def test_plan_broadcasts_under_the_python_dispatcher_do_not_deadlock(tmp_path):
    """graphremat's plan broadcast runs inside the partitioner, under the Python dispatcher a
    compile turns on. There, gloo's broadcast took the GIL back while enqueueing and its worker
    thread, freeing the previous broadcast's tensors under the queue's lock, waited for the
    GIL: a deadlock, seen in the FSDP2 scenario in 1 of 319 runs (both ranks in the plan
    broadcast) and within 2,500 broadcasts in this loop. Each rank gets all of rank 0's."""
    from dist_worker import BROADCASTS

    results = run_ranks("broadcasts", tmp_path, timeout_s=90)
    for r in results:
        assert r["received"] == list(range(BROADCASTS))
        assert r["from"] == [0]


@pytest.fixture(scope="module")
def plan_results(tmp_path_factory) -> list[dict]:
    return run_ranks("plans", tmp_path_factory.mktemp("plans"))


def test_collectives_in_the_graph_are_saved_never_recomputed(plan_results):
    """A functional all_reduce inside the compiled graph: the plan recomputes other values but
    keeps the collective's result (its wait_tensor) saved, as not recomputable."""
    assert_same_plans([[r["collective"]] for r in plan_results])
    plan = plan_results[0]["collective"]
    assert plan["recomputed"]
    records = {name: (op, decision, note) for name, op, decision, note in plan["tensors"]}
    collectives = {n: rec for n, rec in records.items() if _is_collective(rec[0])}
    assert any(op == "_c10d_functional.wait_tensor.default" for op, _, _ in collectives.values())
    for name, (_, decision, note) in collectives.items():
        assert decision != "recomputed", name
        if decision == "saved":
            assert "is a collective" in note, (name, note)
    assert not set(plan["recomputed"]) & set(collectives)


def test_rank0_plan_is_every_rank_plan(plan_results):
    """Ranks whose own solvers would disagree (cpsat on rank 0, recompute-all elsewhere) end
    up with rank 0's plan; rank 0's solver error is raised on every rank."""
    assert_same_plans([[r["differing"]] for r in plan_results])
    assert plan_results[1]["differing"]["solver"] == plan_results[0]["differing"]["solver"]
    assert plan_results[0]["differing"]["solver"].startswith("cpsat")
    errors = [r["error"] for r in plan_results]
    assert errors[0] is not None and errors[0][0] == "SolverFailed"
    assert "rank 0's solver failed" in errors[0][1]
    assert errors[1] == errors[0]
