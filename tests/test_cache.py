"""The on-disk plan cache: a second compile reuses the plan (re-checked by the simulator), and
corrupt or mismatched entries are ignored with a warning and solved again."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from e2e import assert_matches, reference, train_step
from models import MODEL_FACTORIES

import graphremat


@pytest.fixture
def mlp():
    return MODEL_FACTORIES["mlp"]()


def _plan(model, inputs, cache_dir, **kw):
    kw.setdefault("budget", 0.6)
    return graphremat.plan(model, *inputs, cache=str(cache_dir), time_limit_s=5, **kw)


def _entries(cache_dir):
    return sorted(p for p in cache_dir.glob("*.json") if not p.name.startswith("minpeak-"))


def test_second_plan_comes_from_the_cache(mlp, tmp_path):
    model, inputs = mlp
    first = _plan(model, inputs, tmp_path)
    assert not first.from_cache and len(_entries(tmp_path)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good entry is used silently
        second = _plan(model, inputs, tmp_path)
    assert second.from_cache
    assert second.saved == first.saved and second.recomputed == first.recomputed
    assert second.predicted_peak_bytes == first.predicted_peak_bytes
    assert "from the plan cache" in second.summary()


def test_cache_key_separates_budgets_and_solvers(mlp, tmp_path):
    model, inputs = mlp
    _plan(model, inputs, tmp_path, budget=0.6)
    _plan(model, inputs, tmp_path, budget=0.7)
    assert len(_entries(tmp_path)) == 2
    assert not _plan(model, inputs, tmp_path, budget=0.7, seed=1).from_cache
    assert len(_entries(tmp_path)) == 3


def test_cache_off_writes_nothing(mlp, tmp_path, monkeypatch):
    model, inputs = mlp
    monkeypatch.setenv("GRAPHREMAT_CACHE_DIR", str(tmp_path / "env"))
    graphremat.plan(model, *inputs, budget=0.6, time_limit_s=5, cache=False)
    assert not (tmp_path / "env").exists()
    graphremat.plan(model, *inputs, budget=0.6, time_limit_s=5)  # default: the env directory
    assert len(_entries(tmp_path / "env")) == 1


@pytest.mark.parametrize(
    ("corrupt", "warning"),
    [
        (lambda text: text[: len(text) // 3], "corrupt plan cache entry"),
        (lambda text: text.replace('"saved":', '"saved_":'), "corrupt plan cache entry"),
    ],
)
def test_corrupt_entry_is_ignored_with_a_warning(mlp, tmp_path, corrupt, warning):
    model, inputs = mlp
    first = _plan(model, inputs, tmp_path)
    (entry,) = _entries(tmp_path)
    entry.write_text(corrupt(entry.read_text()))
    with pytest.warns(RuntimeWarning, match=warning):
        again = _plan(model, inputs, tmp_path)
    assert not again.from_cache and again.saved == first.saved
    assert graphremat.Plan.from_json(entry) == again  # rewritten with the fresh plan


def test_entry_that_does_not_replay_is_refused(mlp, tmp_path):
    """A well-formed entry (valid checksum) whose recorded peak the simulator does not reproduce
    is not used: the cache is a suggestion, the replay decides."""
    model, inputs = mlp
    first = _plan(model, inputs, tmp_path)
    (entry,) = _entries(tmp_path)
    from dataclasses import replace

    forged = replace(first, predicted_peak_bytes=first.predicted_peak_bytes - 1)
    forged.to_json(entry)
    with pytest.warns(RuntimeWarning, match="replays to"):
        again = _plan(model, inputs, tmp_path)
    assert not again.from_cache and again.predicted_peak_bytes == first.predicted_peak_bytes


def test_compile_uses_the_cache_and_trains_correctly(mlp, tmp_path):
    model, inputs = mlp
    ref = reference(model, inputs)
    for expect_cached in (False, True):
        mine = copy.deepcopy(model)
        cmodel = graphremat.compile(
            mine, budget=0.6, codegen="eager", time_limit_s=5, cache=str(tmp_path)
        )
        loss = train_step(cmodel, inputs)
        assert_matches(ref, mine, loss)
        assert cmodel.graphremat_plans[-1].from_cache is expect_cached
        torch._dynamo.reset()


def test_min_feasible_budget_stays_feasible_in_a_new_process(mlp, tmp_path, monkeypatch):
    """The smallest-peak plan is stored with the cache: a later plan at that budget, with an
    empty in-memory state, reuses it instead of searching again (possibly less well)."""
    from graphremat import planner

    model, inputs = mlp
    first = _plan(model, inputs, tmp_path, budget=1.0)
    assert len(list(tmp_path.glob("minpeak-*.json"))) == 1
    planner._MIN_PEAK_CACHE.clear()  # as in a new process
    monkeypatch.setattr(planner, "min_peak", lambda *a, **k: pytest.fail("min-peak solved again"))
    p = _plan(model, inputs, tmp_path, budget=first.min_feasible_bytes, solver="save_all")
    assert p.predicted_peak_bytes <= first.min_feasible_bytes


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": "graphremat.minpeak"}'])
def test_corrupt_min_peak_entry_is_ignored(mlp, tmp_path, text):
    from graphremat import planner

    model, inputs = mlp
    _plan(model, inputs, tmp_path, budget=1.0)
    (entry,) = tmp_path.glob("minpeak-*.json")
    entry.write_text(text)
    planner._MIN_PEAK_CACHE.clear()
    with pytest.warns(RuntimeWarning, match="corrupt min-peak cache entry"):
        p = _plan(model, inputs, tmp_path, budget=0.6)
    assert p.predicted_peak_bytes <= p.budget_bytes


def test_entry_that_does_not_emit_is_refused(mlp, tmp_path, monkeypatch):
    """An entry that passes the problem-level check but that this graph's rewrite cannot emit
    (e.g. written by another build of graphremat) is refused with a warning and solved again,
    not raised to the user."""
    from graphremat import planner

    model, inputs = mlp
    first = _plan(model, inputs, tmp_path)
    real, calls = planner.rewrite, []

    def fails_once(joint, capture, saved, **kwargs):
        if set(saved) == set(first.saved):
            calls.append(1)
            if len(calls) == 1:  # the cached plan's replay
                raise graphremat.GraphRematError("internal error: cannot emit this plan")
        return real(joint, capture, saved, **kwargs)

    monkeypatch.setattr(planner, "rewrite", fails_once)
    with pytest.warns(RuntimeWarning, match="does not emit on this graph: internal error"):
        again = _plan(model, inputs, tmp_path)
    assert not again.from_cache and again.saved == first.saved and len(calls) >= 2


def test_cache_key_includes_graphremats_code(mlp, tmp_path, monkeypatch):
    """Plans made by other code (a development build keeps its version number) are not looked
    up: the key hashes graphremat's source."""
    from graphremat import cache

    model, inputs = mlp
    _plan(model, inputs, tmp_path)
    assert _plan(model, inputs, tmp_path).from_cache
    monkeypatch.setattr(cache, "code_digest", lambda: "another build")
    assert not _plan(model, inputs, tmp_path).from_cache
    assert len(_entries(tmp_path)) == 2
