"""The zoo benchmark (``python -m graphremat.bench zoo``): its statistics, its checkpointing
baselines and one whole run on a test-sized model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from graphremat import zoo
from graphremat.measure import measure_step_peak
from graphremat.zoo_bench import _checkpointed, markdown, ratio_ci


def test_ratio_ci_is_the_median_ratio_and_the_sign_test_order_statistics():
    theirs = [2.0] * 11
    mine = [2.0 * r for r in (5, 1, 9, 3, 11, 7, 2, 10, 4, 8, 6)]
    median, ci = ratio_ci(theirs, mine)
    # P(Binomial(11, 1/2) <= 1) = 0.6 % <= 2.5 % < P(<= 2) = 3.3 %: the 2nd and 10th of 11
    assert median == 6 and ci == (2, 10)
    assert ratio_ci([1.0] * 5, [1.0] * 5)[1] is None  # too few rounds for a 95 % interval
    with pytest.raises(ValueError):
        ratio_ci([1.0, 1.0], [1.0])


@pytest.mark.parametrize("selective", [False, True])
def test_block_checkpointing_baselines_match_eager_and_keep_less(selective):
    model, inputs = zoo.build("gpt2", "test")
    torch.manual_seed(0)
    model(*inputs).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    ckpt = _checkpointed(model, selective)
    torch.manual_seed(0)
    ckpt.zero_grad(set_to_none=True)
    ckpt(*inputs).backward()
    for n, p in ckpt.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=n)
    assert measure_step_peak(ckpt, *inputs) < measure_step_peak(model, *inputs)
    assert _checkpointed(zoo.build("mlp", "test")[0], selective) is None  # no blocks to wrap


def test_a_whole_zoo_run_writes_json_table_and_plot(tmp_path):
    cmd = [sys.executable, "-m", "graphremat.bench", "zoo", "--models", "mlp", "--size", "test"]
    cmd += ["--repeats", "6", "--knobs", "0.5", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (doc,) = json.loads((tmp_path / "zoo.json").read_text())
    cfgs = {c["name"]: c for c in doc["configs"]}
    assert set(cfgs) == {
        "eager",
        "stock",
        "knob-0.5",
        "gr-1.0",
        "gr@stock",
        "gr@knob-0.5",
        "gr-min",
    }
    assert not any("error" in c for c in cfgs.values())
    for c in cfgs.values():
        assert len(c["step_ms"]) == 6 and c["peak_bytes"] > 0
        if c["name"].startswith("gr"):
            assert c["peak_bytes"] <= c["budget_bytes"]
            assert c["peak_bytes"] == c["predicted_bytes"]  # eager codegen: exact
    assert cfgs["gr-1.0"]["peak_bytes"] <= cfgs["stock"]["peak_bytes"]
    assert cfgs["gr-min"]["peak_bytes"] <= cfgs["knob-0.5"]["peak_bytes"]
    pairs = {(p["baseline"], p["graphremat"]): p for p in doc["pairs"]}
    assert set(pairs) == {("stock", "gr-1.0"), ("stock", "gr@stock"), ("knob-0.5", "gr@knob-0.5")}
    assert all(p["ci"][0] <= p["ratio"] <= p["ci"][1] for p in pairs.values())
    table = (tmp_path / "zoo.md").read_text()
    assert table == markdown([doc]) and "| mlp | knob-0.5 |" in table
    assert (tmp_path / "zoo-mlp.png").stat().st_size > 0
    again = tmp_path / "again"
    cmd = [sys.executable, "-m", "graphremat.bench", "zoo", "--from", str(tmp_path / "zoo.json")]
    subprocess.run([*cmd, "--out", str(again)], check=True, capture_output=True, timeout=120)
    assert (again / "zoo.md").read_text() == table  # the table is made from the JSON alone


def test_a_budget_sweep_compiles_every_budget_from_the_minimum_up(tmp_path):
    cmd = [sys.executable, "-m", "graphremat.bench", "zoo", "--models", "mlp", "--size", "test"]
    cmd += ["--sweep", "3", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (doc,) = json.loads((tmp_path / "zoo.json").read_text())
    budgets = [r["budget_bytes"] for r in doc["sweep"]]
    assert budgets == sorted(budgets) and len(set(budgets)) == 3
    assert budgets[0] == doc["min_feasible_bytes"] and budgets[-1] == doc["unconstrained_bytes"]
    assert all(r["peak_bytes"] <= r["budget_bytes"] for r in doc["sweep"])
    assert "| mlp | eager |" in (tmp_path / "zoo.md").read_text()
    assert "| 3 | 0 | 0 |" in (tmp_path / "zoo.md").read_text()


def test_a_bf16_autocast_sweep_meets_its_budgets(tmp_path):
    """--autocast bf16: every step's forward under torch.autocast, plans made under it too; a
    test-size GPT-2 at its minimum and at its peak without remat fits, and keeps less than in
    fp32."""
    import graphremat

    cmd = [sys.executable, "-m", "graphremat.bench", "zoo", "--models", "gpt2", "--size", "test"]
    cmd += ["--sweep", "2", "--autocast", "bf16", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (doc,) = json.loads((tmp_path / "zoo.json").read_text())
    assert doc["autocast"] == "bf16"
    assert all(r["peak_bytes"] <= r["budget_bytes"] for r in doc["sweep"])
    assert "| gpt2 | eager+bf16 | " in (tmp_path / "zoo.md").read_text()
    model, inputs = zoo.build("gpt2", "test")
    fp32 = graphremat.plan(model, *inputs, budget=1.0, codegen="eager", cache=False)
    assert doc["unconstrained_bytes"] < fp32.unconstrained_peak_bytes


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--models", "gtp2"], "unknown model(s) gtp2; the zoo has gpt2"),
        (["--from", "/no"], "/no"),
        (["--sweep", "1"], "--sweep 1: give 0 (off) or at least 2"),
    ],
)
def test_bad_zoo_arguments_are_usage_errors(args, says):
    proc = subprocess.run(
        [sys.executable, "-m", "graphremat.bench", "zoo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr


def test_the_readme_zoo_tables_are_made_from_the_benchmark_json(tmp_path):
    """Every marked table in README.md is what its JSON in benchmarks/results/ makes (so no
    number in them is typed by hand), and a stale one is found."""
    import pathlib
    import re

    from graphremat.zoo_bench import TABLE_MARK, fill_tables

    root = pathlib.Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text("utf-8")
    assert len(TABLE_MARK.findall(text)) >= 2
    assert fill_tables(text, root) == text, "run python benchmarks/zoo_tables.py"
    stale = re.sub(r"\| 0\.00% \|", "| 0.01% |", text, count=1)
    assert stale != text and fill_tables(stale, root) == text
