"""``python -m graphremat.bench``, run in-process through ``main(argv)``: the scale benchmark on a
1-layer GPT, the literature benchmark on VGG16 (skipped where ../shared/literature-graphs is
absent, as in a clean clone). The files they write are read back, and every plan in the JSON is
replayed here by the evaluator, independently of the benchmark's own check."""

from __future__ import annotations

import json
import pathlib

import pytest
from graphremat.solvers.cpsat import min_peak
from graphremat.solvers.problem import evaluate, save_all_set

from graphremat import bench
from graphremat.cli import main as cli_main

# activations dominate the parameters: 0.8 of the save-all peak fits, 0.6 does not
TINY = "--layers 1 --hidden 32 --heads 2 --seq 64 --batch 8 --vocab 64".split()
GRAPHS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "literature-graphs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    """Run the scale benchmark once; return its exit code, output dir and captured problem."""
    out = tmp_path_factory.mktemp("bench") / "new"  # created by the command
    captured = []
    real = bench.capture_gpt

    def spy(*args, **kwargs):
        captured.append(real(*args, **kwargs))
        return captured[-1]

    mp = pytest.MonkeyPatch()
    mp.setattr(bench, "capture_gpt", spy)
    try:
        argv = ["scale", *TINY, "--time-limit", "5", "--budgets", "0.8", "0.6", "--out", str(out)]
        code = bench.main(argv)  # progress bars on, as by default
    finally:
        mp.undo()
    return code, out, captured[0][0]


def assert_png(path: pathlib.Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 500
    assert pixels.std() > 0.05  # something is drawn


def test_scale_writes_table_json_and_plot(scale_run, capsys):
    code, out, _ = scale_run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["scale.json", "scale.md", "scale.png"]
    table = (out / "scale.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 0.")]
    assert [r.split("|")[1].strip() for r in rows] == ["0.8", "0.6"]
    assert "infeasible (proven)" in rows[1]
    assert_png(out / "scale.png")


def test_scale_plans_replay_within_their_budgets(scale_run):
    _, out, problem = scale_run
    doc = json.loads((out / "scale.json").read_text())
    assert doc["fx_nodes"] > doc["problem_nodes"] > doc["decisions"] > 0
    full = evaluate(problem, save_all_set(problem)).peak_bytes
    assert doc["save_all_peak_bytes"] == full
    fits, fails = doc["rows"]
    for row in (fits, fails):
        assert row["budget_bytes"] == int(row["budget_frac"] * full)
    # a plan: replayed here, it fits, costs the objective, and the bound is below it
    assert fits["status"] == "optimal" and fits["gap_pct"] == 0
    ev = evaluate(problem, fits["saved"])
    assert ev.valid and ev.peak_bytes == fits["peak_bytes"] <= fits["budget_bytes"]
    assert ev.cost == fits["objective"] >= fits["bound"]
    assert fits["first_cost"] >= fits["objective"]  # the greedy plan is no better
    # "infeasible": the smallest peak of any plan of the class is above the budget
    assert fails["status"] == "infeasible" and fails["saved"] == []
    assert min_peak(problem, time_limit_s=10).lower_bound_bytes > fails["budget_bytes"]


@pytest.mark.skipif(
    not GRAPHS.is_dir(), reason=f"no literature graphs at {GRAPHS} (not part of this repository)"
)
def test_literature_matches_the_published_vgg16_results(tmp_path, capsys):
    argv = ["literature", "--graphs-dir", str(GRAPHS), "--graphs", "VGG16"]
    argv += ["--budgets", "0.9", "0.8", "--time-limit", "10", "--out", str(tmp_path)]
    assert bench.main([*argv, "--name", "vgg", "--no-progress"]) == 0
    assert "| VGG16 | 45 | 90% | 1.968 % |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "vgg.json").read_text())
    at90, at80 = rows
    # the published optimum (both exact models agree) and the published proof of infeasibility
    assert round(at90["overhead_pct"], 3) == 1.968 and at90["peak_bytes"] <= at90["budget_bytes"]
    assert at90["status"] == "optimal (any schedule)"
    assert at90["vs_best"] == "matched proven optimum"
    assert at80["status"] == "infeasible (any schedule)" and "overhead_pct" not in at80
    assert at80["vs_best"] == "matched proven infeasibility"
    assert "| VGG16 | 45 | 80% | - |" in (tmp_path / "vgg.md").read_text()
    assert_png(tmp_path / "vgg.png")


@pytest.mark.skipif(not GRAPHS.is_dir(), reason=f"no literature graphs at {GRAPHS}")
def test_literature_with_three_copies_per_value(tmp_path, capsys):
    """rl100 at 80 %: the C=2 optimum is 2.296 %; with a second recomputation allowed the plan
    is no worse, and its row says which class its proofs are for."""
    argv = ["literature", "--graphs-dir", str(GRAPHS), "--graphs", "rl100", "--budgets", "0.8"]
    argv += ["--copies", "3", "--time-limit", "20", "--out", str(tmp_path), "--no-progress"]
    assert bench.main(argv) == 0
    capsys.readouterr()
    (row,) = json.loads((tmp_path / "literature.json").read_text())
    assert row["copies"] == 3 and row["peak_bytes"] <= row["budget_bytes"]
    assert round(row["overhead_pct"], 3) <= 2.296
    assert "C=2" not in row["status"]


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["literature", "--graphs-dir", "/no/such/dir"], "--graphs-dir"),
        (["literature", "--copies", "1"], "--copies"),
        (["scale", "--budgets", "0.8", "1.5"], "--budgets"),
        (["scale", "--layers", "0"], "--layers"),
        (["scale", "--hidden", "30", "--heads", "4"], "--hidden 30 is not a multiple of --heads"),
        (["scale", "--time-limit", "-1"], "--time-limit"),
        (["nosuch"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_naming_the_flag(argv, names, capsys):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err


@pytest.mark.skipif(not GRAPHS.is_dir(), reason=f"no literature graphs at {GRAPHS}")
def test_unknown_graph_lists_the_available_ones(capsys):
    argv = ["literature", "--graphs-dir", str(GRAPHS), "--graphs", "VGG61"]
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert "--graphs" in err and "VGG61" in err and "'VGG16'" in err


def test_graphremat_bench_delegates_to_the_benchmarks(capsys):
    assert cli_main(["bench", "literature", "--graphs-dir", "/no/such/dir"]) == 2
    assert "graphremat bench literature: error: --graphs-dir" in capsys.readouterr().err
    assert cli_main(["--help"]) == 0
    assert "bench" in capsys.readouterr().out
