"""Options, errors and fallbacks of the public API (small models, codegen="eager")."""

import copy
import warnings

import pytest
import torch
from e2e import assert_matches, reference, train_step
from graphremat.solvers import SolveResult, SolveStatus
from models import make_gpt
from torch import nn

import graphremat


class Small(nn.Module):
    def __init__(self, depth=8):
        super().__init__()
        layers = [nn.Linear(16, 128)]
        for _ in range(depth - 1):
            layers += [nn.Tanh(), nn.Linear(128, 128)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).square().mean()


@pytest.fixture
def small():
    torch.manual_seed(0)
    return Small(), (torch.randn(512, 16),)


def _no_plan_solver(problem, budget_bytes, **_):
    return SolveResult("timeout-stub", SolveStatus.UNKNOWN)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"solver": "gurobi"}, "cpsat"),
        ({"codegen": "tvm"}, "inductor"),
        ({"time_limit_s": 0}, "positive"),
        ({"time_limit_s": float("nan")}, "positive"),
        ({"time_limit_s": "10"}, "positive"),
        ({"fallback": "silently"}, "pytorch"),
        ({"num_workers": 0}, "num_workers"),
        ({"calibrate": "sometimes"}, "calibrate"),
    ],
)
def test_bad_options_raise_config_error(small, kwargs, fragment):
    model, _ = small
    with pytest.raises(graphremat.ConfigError, match=fragment):
        graphremat.compile(model, budget=0.5, **kwargs)


def test_unknown_option_names_the_accepted_ones():
    with pytest.raises(graphremat.ConfigError, match="time_limit_s"):
        graphremat.Options.make(0.5, time_limit=3)


def test_infeasible_budget_is_raised_as_itself_with_the_minimum(small):
    model, inputs = small
    plan = graphremat.plan(model, *inputs, budget=1.0)
    cmodel = graphremat.compile(copy.deepcopy(model), budget=plan.fixed_bytes, codegen="eager")
    with pytest.raises(graphremat.InfeasibleBudget) as info:
        cmodel(*inputs)
    assert info.value.min_feasible_bytes == plan.min_feasible_bytes
    # and the minimum it names does work
    mine = copy.deepcopy(model)
    cm = graphremat.compile(mine, budget=info.value.min_feasible_bytes, codegen="eager")
    assert_matches(reference(model, inputs), mine, train_step(cm, inputs))


def test_solver_without_plan_fails_clearly_or_falls_back_with_a_warning(small):
    model, inputs = small
    plan = graphremat.plan(model, *inputs, budget=1.0)
    cm = graphremat.compile(
        copy.deepcopy(model),
        budget=plan.min_feasible_bytes,
        codegen="eager",
        solver=_no_plan_solver,
    )
    # the smallest-peak plan fits, so graphremat uses it rather than failing
    cm(*inputs).backward()
    assert cm.graphremat_plans[-1].solver == "cpsat(min-peak)"
    tight = plan.min_feasible_bytes - 1
    cm = graphremat.compile(
        copy.deepcopy(model), budget=tight, codegen="eager", solver=_no_plan_solver
    )
    with pytest.raises(graphremat.InfeasibleBudget):
        cm(*inputs)
    mine = copy.deepcopy(model)
    cm = graphremat.compile(
        mine, budget=tight, codegen="eager", solver=_no_plan_solver, fallback="pytorch"
    )
    with pytest.warns(RuntimeWarning, match="NOT enforced"):
        loss = train_step(cm, inputs)
    assert_matches(reference(model, inputs), mine, loss)
    assert cm.graphremat_plans == []


def test_string_backend_requires_a_budget(small):
    model, inputs = small
    cm = torch.compile(copy.deepcopy(model), backend="graphremat")
    with pytest.raises(Exception) as info:
        cm(*inputs)
    inner = getattr(info.value, "inner_exception", info.value)
    assert isinstance(inner, graphremat.ConfigError) and "budget" in str(inner)


@pytest.mark.parametrize("workers", [1, 2])
def test_plan_is_deterministic(small, workers):
    """Solved twice (not from the plan cache): the same plan, with one worker or several."""
    model, inputs = small
    base = graphremat.plan(model, *inputs, budget=1.0)
    budget = (base.min_feasible_bytes + base.unconstrained_peak_bytes) // 2
    kw = {"budget": budget, "num_workers": workers, "cache": False}
    p1 = graphremat.plan(model, *inputs, **kw)
    p2 = graphremat.plan(model, *inputs, **kw)
    assert p1.recomputed
    assert (p1.saved, p1.recomputed, p1.predicted_peak_bytes) == (
        p2.saved,
        p2.recomputed,
        p2.predicted_peak_bytes,
    )


def test_cost_never_rises_with_the_budget(small):
    model, inputs = small
    base = graphremat.plan(model, *inputs, budget=1.0)
    lo, hi = base.min_feasible_bytes, base.unconstrained_peak_bytes
    costs = []
    for k in range(5):
        p = graphremat.plan(model, *inputs, budget=lo + (hi - lo) * k // 4)
        assert p.predicted_peak_bytes <= p.budget_bytes
        costs.append(p.objective)  # the solver's cost (the roofline plus eager's dispatch)
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    assert base.recomputed == () and base.recompute_flops == 0


def test_eager_plans_count_the_dispatch_of_each_recomputed_op(small):
    """The test GPT at 0.8 of its peak: on the roofline alone (cost_model="roofline-v1") the
    optimum recomputes many small values; counting eager's per-op dispatch (the default under
    codegen="eager") it recomputes fewer, for a little more roofline work. Inductor fuses
    recomputed ops, so there the objective is the roofline at torch's thread count: the
    reported one at two threads, dearer matmuls at one, and nothing for the pointwise ops it
    fuses into their readers."""
    model, inputs = make_gpt()
    kw = {"budget": 0.8, "time_limit_s": 30, "cache": False}
    v1 = graphremat.plan(model, *inputs, cost_model="roofline-v1", **kw)
    v2 = graphremat.plan(model, *inputs, **kw)
    assert v1.status == v2.status == "optimal"
    assert v1.objective == v1.recompute_cost_ns < v2.recompute_cost_ns < v2.objective
    assert len(v2.recomputed) < len(v1.recomputed)
    model, inputs = small
    base = graphremat.plan(model, *inputs, budget=1.0, codegen="inductor")
    budget = (base.min_feasible_bytes + base.unconstrained_peak_bytes) // 2
    fused = graphremat.plan(model, *inputs, budget=budget, codegen="inductor", cache=False)
    assert torch.get_num_threads() == 2  # (conftest) the reported roofline's FLOP rate
    assert fused.recomputed
    # the objective is the reported roofline less the recomputed pointwise ops (free there)
    pointwise = {"aten.tanh.default", "aten.gelu.default", "aten.relu.default"}
    free = [t for t in fused.tensors if t.decision == "recomputed" and t.op in pointwise]
    assert free, [t.op for t in fused.tensors if t.decision == "recomputed"]
    assert fused.objective == fused.recompute_cost_ns - sum(t.cost_ns for t in free)
    # on one thread a matmul takes twice as long: the solver's roofline says so, the report not
    torch.set_num_threads(1)
    try:
        one = graphremat.plan(model, *inputs, budget=budget, codegen="inductor", cache=False)
    finally:
        torch.set_num_threads(2)
    assert any(v.startswith("addmm") for v in one.recomputed)
    assert one.recompute_cost_ns < one.objective


def test_measured_costs_steer_the_plan_and_are_kept_with_the_plans(
    small, monkeypatch, tmp_path, caplog
):
    """cost_model="measured": the solver pays each forward op's time as measured on this machine.
    The times are stored beside the plans and read back instead of timing again; times that
    make the first plan's recomputed ops dear move the plan to other values, at their price; a
    corrupt entry is timed again, with a warning. The compiled model trains like eager, within
    its budget."""
    import json

    import graphremat.calibrate as calibrate
    from graphremat.measure import measure_step_peak

    model, inputs = small
    kw = {"budget": 0.9, "cost_model": "measured", "cache": str(tmp_path)}
    first = graphremat.plan(model, *inputs, **kw)
    assert first.status == "optimal" and first.recomputed
    (entry,) = tmp_path.glob("times-*.json")
    times = json.loads(entry.read_text())["times_ns"]
    assert set(first.recomputed) <= set(times) and min(times.values()) > 0
    assert first.objective >= sum(times[v] for v in first.recomputed)

    def timed_again(gm, *args, **kwargs):
        raise AssertionError("the ops were timed again")

    monkeypatch.setattr(calibrate, "measure_times", timed_again)
    dear = set(first.recomputed)
    made_up = {name: 10**7 if name in dear else 1000 for name in times}
    entry.write_text(json.dumps({"format": "graphremat.times", "times_ns": made_up}))
    with caplog.at_level("WARNING", logger="graphremat"):
        moved = graphremat.plan(model, *inputs, **kw)
    assert not [r for r in caplog.records if r.name == "graphremat"]
    assert moved.status == "optimal" and moved.recomputed
    assert not dear & set(moved.recomputed)
    assert moved.objective % 1000 == 0 and moved.objective < 10**7

    entry.write_text("{not json")
    monkeypatch.setattr(calibrate, "measure_times", lambda gm, *a, **k: made_up)
    with pytest.warns(RuntimeWarning, match="corrupt op-time cache entry"):
        again = graphremat.plan(model, *inputs, **kw)
    assert again.recomputed == moved.recomputed
    assert json.loads(entry.read_text())["times_ns"] == made_up

    monkeypatch.undo()
    mine = copy.deepcopy(model)
    cm = graphremat.compile(mine, budget=0.9, codegen="eager", cost_model="measured", cache=False)
    assert_matches(reference(model, inputs), mine, train_step(cm, inputs))
    (plan,) = cm.graphremat_plans
    assert measure_step_peak(cm, *inputs) <= plan.budget_bytes


def test_no_warning_on_the_happy_path(small):
    model, inputs = small
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        cm = graphremat.compile(copy.deepcopy(model), budget=0.9, codegen="eager")
        cm(*inputs).backward()


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(32, 64), nn.Linear(64, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        torch._dynamo.graph_break()
        return self.b(h).square().mean()


def test_graph_break_plans_each_region_sharing_the_budget():
    """graphremat.compile plans each region with the others' residents (tests/test_graph_breaks.py
    checks the accounting), so there is nothing to warn about."""
    torch.manual_seed(0)
    model, inputs = Broken(), (torch.randn(128, 32),)
    mine = copy.deepcopy(model)
    cm = graphremat.compile(mine, budget=1.0, codegen="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        loss = train_step(cm, inputs)
    first, second = cm.graphremat_plans
    assert second.fixed_bytes > first.fixed_bytes  # the first region's saved values are counted
    assert_matches(reference(model, inputs), mine, loss)


def test_new_input_shape_gets_its_own_plan(small):
    model, (x,) = small
    mine = copy.deepcopy(model)
    cm = graphremat.compile(mine, budget=1.0, codegen="eager")
    train_step(cm, (x,))
    train_step(cm, (x[:128],))  # a recompilation: the new shape is planned on its own
    first, second = cm.graphremat_plans
    assert second.unconstrained_peak_bytes < first.unconstrained_peak_bytes
    assert_matches(reference(model, (x[:128],)), mine, train_step(cm, (x[:128],)))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x).square().mean()


def test_compile_plans_even_past_dynamo_recompile_limit():
    """Other compiles of the same model class count towards Dynamo's recompile limit; past it
    Dynamo would run the step eagerly, without a plan. graphremat lifts the limit."""
    limit = torch._dynamo.config.recompile_limit
    for batch in range(1, limit + 1):  # a new shape each time: a new cache entry
        torch.compile(Tiny(), backend="eager", dynamic=False)(torch.randn(batch, 8))
    cm = graphremat.compile(Tiny(), budget=1.0, codegen="eager")
    cm(torch.randn(limit + 5, 8)).backward()
    assert len(cm.graphremat_plans) == 1


def test_a_step_run_eagerly_after_compiling_warns_that_the_budget_is_not_enforced():
    """Under torch.compiler.set_stance("force_eager") Dynamo runs the model's Python code: no
    plan applies, and the call says so; the limits graphremat lifts come back after each call."""
    limits = torch._dynamo.config.recompile_limit, torch._dynamo.config.accumulated_recompile_limit
    cm = graphremat.compile(Tiny(), budget=1.0, codegen="eager")
    x = torch.randn(4, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cm(x).backward()
    with torch.compiler.set_stance("force_eager"):
        with pytest.warns(RuntimeWarning, match="ran none of graphremat's compiled code"):
            cm(x).backward()
    assert (
        torch._dynamo.config.recompile_limit,
        torch._dynamo.config.accumulated_recompile_limit,
    ) == limits


def test_a_step_dynamo_gave_up_on_warns_that_the_budget_is_not_enforced():
    limit = torch._dynamo.config.recompile_limit
    for batch in range(1, limit + 3):  # past the limit: Dynamo runs Tiny.forward eagerly from now
        torch.compile(Tiny(), backend="eager", dynamic=False)(torch.randn(batch, 8))
    cm = graphremat.compile(Tiny(), budget=1.0, codegen="eager")
    with pytest.warns(RuntimeWarning, match="without a plan"):
        cm(torch.randn(limit + 5, 8)).backward()
    assert not cm.graphremat_plans


class LSTMHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.out = torch.nn.LSTM(8, 16, batch_first=True), torch.nn.Linear(16, 4)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.out(h[:, -1]).square().mean()


def test_a_step_dynamo_cannot_trace_says_so():
    """Dynamo leaves an nn.LSTM to eager: nothing is compiled, and the warning names that
    cause and how to see it (it used to blame only the recompile limit). (With
    torch._dynamo.config.allow_rnn=True, plain torch.compile fails on CPU too: aot_eager's
    runtime asserts on the LSTM's undefined workspace, Inductor raises TypeError.)"""
    cm = graphremat.compile(LSTMHead(), budget=1.0, codegen="eager")
    with pytest.warns(RuntimeWarning, match="without a plan") as seen:
        cm(torch.randn(4, 5, 8)).backward()
    said = str(seen[0].message)
    assert "cannot trace" in said and "nn.LSTM" in said and "TORCH_LOGS=graph_breaks" in said
    assert not cm.graphremat_plans
