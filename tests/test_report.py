"""The plan report: per-tensor records, lifetimes, text/HTML, and the JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphremat
from graphremat.report import Plan


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 64)
        self.fc4 = nn.Linear(64, 64)
        self.out = nn.Linear(64, 8)

    def forward(self, x, y):
        h = torch.relu(self.fc1(x))
        h = torch.tanh(self.fc2(h))
        h = torch.relu(self.fc3(h))
        h = torch.tanh(self.fc4(h))
        return F.cross_entropy(self.out(h), y)


@pytest.fixture(scope="module")
def plan() -> Plan:
    torch.manual_seed(0)
    x, y = torch.randn(4096, 32), torch.randint(0, 8, (4096,))
    return graphremat.plan(Tiny(), x, y, budget=0.9, time_limit_s=5, calibrate=False)


def test_records_match_the_decisions(plan):
    by = {d: {t.name for t in plan.tensors if t.decision == d} for d in ("saved", "recomputed")}
    assert by["saved"] == set(plan.saved)
    assert by["recomputed"] == set(plan.recomputed) and plan.recomputed
    assert sum(t.nbytes for t in plan.tensors if t.decision == "saved") == plan.saved_bytes
    assert sum(t.flops for t in plan.tensors if t.decision == "recomputed") == plan.recompute_flops
    for t in plan.tensors:
        if t.dtype == "float32" and t.shape:
            assert t.nbytes == 4 * torch.Size(t.shape).numel(), t


def test_explain_names_source_lines(plan):
    text = plan.explain()
    assert "saved (" in text and "recomputed (" in text
    # every recomputed value is listed with its shape and the user's line that made it
    for t in plan.tensors:
        if t.decision == "recomputed":
            assert t.name in text and "x".join(map(str, t.shape)) in text
    assert "test_report.py:" in text and "in forward:" in text
    assert "self.fc1(x)" in text or "self.fc2(h)" in text


def test_summary_and_html(plan):
    s = plan.summary()
    for word in ("budget", "predicted peak", "unconstrained peak", "min feasible", "gap"):
        assert word in s
    assert f"{plan.overhead:.1%} of the step" in s and 0 < plan.overhead < 1
    h = plan._repr_html_()
    assert "<table>" in h and all(t in h for t in plan.recomputed)


def test_lifetimes_rebuild_the_timeline(plan):
    """Independent check of the simulator's bookkeeping: summing the storage lifetimes that cover
    a step gives the step's live bytes (no workspace: calibrate=False)."""
    n = len(plan.timeline)
    live = [plan.fixed_bytes] * n
    for _, nbytes, first, last in plan.lifetimes:
        assert 0 <= first <= last < n
        for i in range(first, last + 1):
            live[i] += nbytes
    assert live == [b for _, _, b in plan.timeline]
    assert max(live) == plan.predicted_peak_bytes
    assert max(b for _, _, b in plan.unconstrained_timeline) == plan.unconstrained_peak_bytes


def test_json_round_trip(plan, tmp_path):
    assert Plan.from_json(plan.to_json()) == plan
    path = tmp_path / "plan.json"
    plan.to_json(path)
    assert Plan.from_json(path) == plan
    assert Plan.from_json(str(path)) == plan
    doc = json.loads(path.read_text())
    assert doc["format"] == "graphremat.plan" and len(doc["sha256"]) == 64


def _resign(doc: dict) -> str:
    from graphremat.report import _digest

    doc["sha256"] = _digest(doc["plan"])
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda s, d: s[: len(s) // 2], "truncated"),
        (lambda s, d: "", "not valid JSON"),
        (lambda s, d: "[1, 2]", "not a graphremat plan"),
        (lambda s, d: s.replace('"budget_bytes": ', '"budget_bytes": 1'), "modified"),
        (lambda s, d: json.dumps({**d, "version": 99}), "version 99"),
        (lambda s, d: _resign({**d, "plan": {**d["plan"], "gap": "small"}}), "field 'gap'"),
        (lambda s, d: _resign({**d, "plan": {**d["plan"], "budget_bytes": 1}}), "inconsistent"),
        (
            lambda s, d: _resign(
                {**d, "plan": {k: v for k, v in d["plan"].items() if k != "saved"}}
            ),
            "missing fields ['saved']",
        ),
        (
            lambda s, d: _resign({**d, "plan": {**d["plan"], "tensors": [["x", "lost"]]}}),
            "field 'tensors'",
        ),
    ],
)
def test_bad_json_is_refused_clearly(plan, tmp_path, corrupt, message):
    text = plan.to_json()
    bad = corrupt(text, json.loads(text))
    path = tmp_path / "bad.json"
    path.write_text(bad)
    with pytest.raises(graphremat.PlanFormatError, match=message.replace("[", r"\[")):
        Plan.from_json(path)


def test_missing_file(tmp_path):
    with pytest.raises(graphremat.PlanFormatError, match="cannot read plan file"):
        Plan.from_json(tmp_path / "nope.json")
