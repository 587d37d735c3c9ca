"""Bad input to every public entry point: each gives a typed graphremat error (or the standard
TypeError / the user's own exception where that is what a PyTorch user expects) whose message
names the fix or the accepted forms, never a raw trace from inside OR-Tools, FX or Dynamo.

Tiny models (Linear 16->16), so the whole file runs in seconds. Option errors are checked through
``graphremat.compile`` because they must fail at the call, before anything is traced.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
from graphremat.solvers import SolveResult, SolveStatus
from torch import nn

import graphremat

#: what a message must not contain: a stack trace or the path of a library's internals
INTERNALS = ("Traceback", "site-packages", "torch/_dynamo", "torch/fx", "ortools/")


def check(error: BaseException, types, fragment: str) -> None:
    """``error`` is one of ``types`` and its message names ``fragment`` and no internals."""
    assert isinstance(error, types), f"{type(error).__name__}: {error}"
    msg = str(error)
    assert fragment in msg, msg
    for internal in INTERNALS:
        assert internal not in msg, msg


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 16)

    def forward(self, x):
        return self.lin(x).square().mean()


class TwoLayer(nn.Module):
    """Small, yet some activations are worth recomputing (min feasible < unconstrained peak),
    so a budget between the two reaches the solver."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())

    def forward(self, x):
        return self.net(x).square().mean()


@pytest.fixture
def x():
    return torch.randn(8, 16)


@pytest.fixture(scope="module")
def solver_case():
    """(model, inputs, budget) where the budget needs the solver."""
    torch.manual_seed(0)
    model, inputs = TwoLayer(), (torch.randn(64, 16),)
    base = graphremat.plan(model, *inputs, budget=1.0)
    assert base.min_feasible_bytes < base.unconstrained_peak_bytes
    return model, inputs, (base.min_feasible_bytes + base.unconstrained_peak_bytes) // 2


# ------------------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("budget", ["12 parsecs", "", "GiB", "1.5.3GB", "-1GB", "1e400GB"])
def test_unparsable_budget_string_names_the_accepted_forms(budget):
    with pytest.raises(graphremat.BudgetError) as info:
        graphremat.compile(Tiny(), budget=budget)
    check(info.value, ValueError, "GiB")
    assert repr(budget) in str(info.value)


@pytest.mark.parametrize("budget", [0, -1, 0.0, -0.5, math.nan, math.inf, -math.inf])
def test_non_positive_or_non_finite_budget(budget):
    with pytest.raises(graphremat.BudgetError) as info:
        graphremat.compile(Tiny(), budget=budget)
    check(info.value, ValueError, "positive")


def test_fraction_above_one_is_refused_not_read_as_bytes_or_percent():
    # documented: a float is a fraction in (0, 1], or a whole number of bytes; 1.5 is neither
    with pytest.raises(graphremat.BudgetError) as info:
        graphremat.parse_budget(1.5)
    check(info.value, ValueError, "fraction in (0, 1]")
    assert graphremat.parse_budget(1.0) == graphremat.Budget(fraction=1.0)


@pytest.mark.parametrize("budget", ["0.5", "1.0", "1"])
def test_fraction_typed_as_a_string_is_not_read_as_bytes(budget):
    with pytest.raises(graphremat.BudgetError) as info:
        graphremat.parse_budget(budget)
    check(info.value, ValueError, "pass the float")


@pytest.mark.parametrize(
    "budget, fragment",
    [
        ([1], "type list"),
        (None, "None is not a budget"),
        (True, "True is not a budget"),
        (1 + 2j, "type complex"),
        (torch.tensor(0.5), "type Tensor"),
    ],
)
def test_wrong_budget_type(budget, fragment):
    with pytest.raises(graphremat.BudgetError) as info:
        graphremat.compile(Tiny(), budget=budget)
    check(info.value, ValueError, fragment)
    assert "GiB" in str(info.value)


# ------------------------------------------------------------------------------------- solvers


def test_unknown_solver_lists_the_solvers():
    with pytest.raises(graphremat.ConfigError) as info:
        graphremat.compile(Tiny(), budget=0.5, solver="gurobi")
    check(info.value, ValueError, "'gurobi'")
    for name in ("cpsat", "save_all", "recompute_all", "bruteforce"):
        assert name in str(info.value)


@pytest.mark.parametrize("solver", [42, None])
def test_solver_that_is_neither_a_name_nor_callable(solver):
    with pytest.raises(graphremat.ConfigError) as info:
        graphremat.compile(Tiny(), budget=0.5, solver=solver)
    check(info.value, ValueError, "or pass a callable")


def _raising_solver(problem, budget_bytes, **_):
    raise RuntimeError("boom inside my solver")


def _solver_without_options(problem, budget_bytes):
    raise AssertionError("never called: the keyword arguments do not fit")


@pytest.mark.parametrize("entry", ["plan", "compile"])
def test_solver_that_raises_becomes_solver_failed_naming_it(solver_case, entry):
    model, inputs, budget = solver_case
    with pytest.raises(graphremat.SolverFailed) as info:
        if entry == "plan":
            graphremat.plan(model, *inputs, budget=budget, solver=_raising_solver)
        else:
            cm = graphremat.compile(model, budget=budget, solver=_raising_solver, codegen="eager")
            cm(*inputs)
    check(info.value, RuntimeError, "_raising_solver")
    assert "boom inside my solver" in str(info.value)


def test_solver_with_the_wrong_signature_names_the_missing_keyword(solver_case):
    model, inputs, budget = solver_case
    with pytest.raises(graphremat.SolverFailed) as info:
        graphremat.plan(model, *inputs, budget=budget, solver=_solver_without_options)
    check(info.value, RuntimeError, "time_limit_s")


@pytest.mark.parametrize("garbage", [None, {"saved": []}, ("cpsat", "optimal")])
def test_solver_returning_garbage_is_a_solver_failed(solver_case, garbage):
    model, inputs, budget = solver_case

    def solver(problem, budget_bytes, **_):
        return garbage

    with pytest.raises(graphremat.SolverFailed) as info:
        graphremat.plan(model, *inputs, budget=budget, solver=solver)
    check(info.value, RuntimeError, "SolveResult")


def test_a_well_formed_stub_result_is_accepted(solver_case):
    # the contrast to the garbage case: a SolveResult without a plan is handled (min-peak plan)
    model, inputs, budget = solver_case

    def solver(problem, budget_bytes, **_):
        return SolveResult("stub", SolveStatus.UNKNOWN)

    assert graphremat.plan(model, *inputs, budget=budget, solver=solver).budget_bytes == budget


# ------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"time_limit_s": 0}, "positive number of seconds"),
        ({"time_limit_s": -1}, "positive number of seconds"),
        ({"time_limit_s": "10s"}, "positive number of seconds"),
        ({"time_limit_s": math.nan}, "positive number of seconds"),
        ({"time_limit_s": math.inf}, "positive number of seconds"),
        ({"time_limit_s": True}, "positive number of seconds"),
        ({"codegen": "tvm"}, "'inductor', 'eager'"),
        ({"codegen": None}, "'inductor', 'eager'"),
        ({"seed": "0"}, "seed='0' must be an int"),
        ({"seed": 1.5}, "seed=1.5 must be an int"),
        ({"seed": None}, "seed=None must be an int"),
        ({"seed": True}, "seed=True must be an int"),
        ({"seed": 2**40}, "must be an int in [-2**31, 2**31)"),
        ({"num_workers": 0}, "num_workers=0 must be an int in [1, 2**31)"),
        ({"num_workers": 2.0}, "num_workers=2.0 must be an int"),
        ({"num_workers": "2"}, "num_workers='2' must be an int"),
        ({"num_workers": True}, "num_workers=True must be an int"),
        ({"num_workers": 2**31}, "num_workers=2147483648 must be an int in [1, 2**31)"),
        ({"fallback": "eager"}, "(None, 'pytorch')"),
        ({"fallback": "PyTorch"}, "(None, 'pytorch')"),
        ({"fallback": True}, "(None, 'pytorch')"),
        ({"log_progress": "yes"}, "True or False"),
        ({"max_recomputes": 0}, "max_recomputes=0 must be an int in [1, 4]"),
        ({"max_recomputes": 5}, "max_recomputes=5 must be an int in [1, 4]"),
        ({"max_recomputes": 2.0}, "max_recomputes=2.0 must be an int"),
        ({"max_recomputes": True}, "max_recomputes=True must be an int"),
        ({"cost_model": "flops"}, "('roofline-v2', 'roofline-v1', 'measured')"),
        ({"cost_model": "measured"}, "pass codegen='eager'"),
        ({"cost_model": None}, "cost_model=None"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_bad_option_value_is_a_config_error_at_the_call(kwargs, fragment):
    with pytest.raises(graphremat.ConfigError) as info:
        graphremat.compile(Tiny(), budget=0.5, **kwargs)
    check(info.value, ValueError, fragment)


def test_unknown_option_lists_the_accepted_ones(x):
    with pytest.raises(graphremat.ConfigError) as info:
        graphremat.plan(Tiny(), x, budget=0.5, time_limit=3)
    check(info.value, ValueError, "time_limit_s")
    assert "'time_limit'" in str(info.value) and "num_workers" in str(info.value)


def test_unknown_keyword_to_compile_is_pythons_type_error():
    # compile() spells out its keywords, so Python itself refuses the typo, at the call
    with pytest.raises(TypeError, match="'time_limit'"):
        graphremat.compile(Tiny(), budget=0.5, time_limit=3)


def _backend_error(model, x, options) -> BaseException:
    """The error inside Dynamo's BackendCompilerFailed (the string backend cannot unwrap it)."""
    cm = torch.compile(model, backend="graphremat", options=options)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as info:
        cm(x)
    assert "Traceback" not in str(info.value)
    return info.value.inner_exception


@pytest.mark.parametrize(
    "options, error, fragment",
    [
        ({"budget": 0.5, "time_limit": 3}, graphremat.ConfigError, "time_limit_s"),
        ({"budget": "12 parsecs"}, graphremat.BudgetError, "GiB"),
        ({"budget": 0.5, "codegen": "tvm"}, graphremat.ConfigError, "inductor"),
    ],
)
def test_string_backend_options_are_checked(x, options, error, fragment):
    check(_backend_error(Tiny(), x, options), error, fragment)


def test_string_backend_options_must_be_a_dict(x):
    check(_backend_error(Tiny(), x, [("budget", 0.5)]), graphremat.ConfigError, "must be a dict")


# --------------------------------------------------------------------------- models and inputs


@pytest.mark.parametrize("entry", ["plan", "compile"])
def test_non_callable_model(x, entry):
    with pytest.raises(graphremat.GraphRematError) as info:
        if entry == "plan":
            graphremat.plan(42, x, budget=0.5)
        else:
            graphremat.compile(42, budget=0.5)
    check(info.value, graphremat.GraphRematError, "nn.Module or a callable, not int")


class UserBug(Exception):
    pass


class RaisingForward(Tiny):
    def forward(self, x):
        h = self.lin(x)
        raise UserBug(f"my forward is broken ({tuple(h.shape)})")


@pytest.mark.parametrize("entry", ["plan", "compile"])
def test_users_own_exception_propagates_as_itself(x, entry):
    with pytest.raises(UserBug, match=r"my forward is broken \(\(8, 16\)\)") as info:
        if entry == "plan":
            graphremat.plan(RaisingForward(), x, budget=0.5)
        else:
            graphremat.compile(RaisingForward(), budget=0.5, codegen="eager")(x)
    assert info.traceback[-1].name == "forward"  # raised from the user's own line
    assert info.traceback[-1].path.name == "test_bad_input.py"


class ReturnsString(Tiny):
    def forward(self, x):
        self.lin(x)
        return "loss"


class ReturnsNone(Tiny):
    def forward(self, x):
        self.lin(x).sum()


@pytest.mark.parametrize("model_cls", [ReturnsString, ReturnsNone])
def test_forward_returning_no_tensor(x, model_cls):
    with pytest.raises(graphremat.UnsupportedGraph) as info:
        graphremat.plan(model_cls(), x, budget=0.5)
    check(info.value, graphremat.GraphRematError, "the forward returns a tensor")


def _frozen():
    return Tiny().requires_grad_(False)


def _frozen_eval():
    return Tiny().eval().requires_grad_(False)


@pytest.mark.parametrize("make", [_frozen, _frozen_eval])
def test_no_training_graph_is_said_plainly(x, make):
    with pytest.raises(graphremat.UnsupportedGraph) as info:
        graphremat.plan(make(), x, budget=0.5)
    check(info.value, graphremat.GraphRematError, "no training graph was captured")
    assert "require grad" in str(info.value)


def test_planning_under_no_grad_says_grad_mode(x):
    with torch.no_grad(), pytest.raises(graphremat.UnsupportedGraph) as info:
        graphremat.plan(Tiny(), x, budget=0.5)
    check(info.value, graphremat.GraphRematError, "grad mode is enabled")


class SparseEmbedding(nn.Module):
    """nn.Embedding(sparse=True): its weight's gradient is a sparse COO tensor."""

    def __init__(self):
        super().__init__()
        self.emb, self.lin = nn.Embedding(100, 16, sparse=True), nn.Linear(16, 4)

    def forward(self, idx):
        return self.lin(torch.relu(self.emb(idx))).square().mean()


@pytest.mark.parametrize("entry", ["plan", "compile"])
def test_a_sparse_gradient_names_the_dense_fix(entry):
    """It used to surface as NotImplementedError "Cannot access storage of SparseTensorImpl"
    from inside the partitioner."""
    idx = torch.randint(0, 100, (32, 8))
    with pytest.raises(graphremat.UnsupportedGraph) as info:
        if entry == "plan":
            graphremat.plan(SparseEmbedding(), idx, budget=1.0)
        else:
            graphremat.compile(SparseEmbedding(), budget=1.0, codegen="eager")(idx)
    check(info.value, graphremat.GraphRematError, "sparse_coo")
    assert "sparse=False" in str(info.value) and "fallback='pytorch'" in str(info.value)
    assert "self.emb(idx)" in str(info.value)  # the user's line


def test_a_sparse_gradient_falls_back_when_asked():
    """fallback="pytorch": one warning, which says why, and eager's (sparse) gradients; not
    the warning for a step that Dynamo did not compile."""
    torch.manual_seed(0)
    model, idx = SparseEmbedding(), torch.randint(0, 100, (32, 8))
    ref = copy.deepcopy(model)
    ref(idx).backward()
    cm = graphremat.compile(model, budget=1.0, codegen="eager", fallback="pytorch")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cm(idx).backward()
    said = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1 and "sparse_coo" in said[0] and "falling back" in said[0], said
    assert model.emb.weight.grad.is_sparse
    torch.testing.assert_close(model.emb.weight.grad.to_dense(), ref.emb.weight.grad.to_dense())
    torch.testing.assert_close(model.lin.weight.grad, ref.lin.weight.grad)


@pytest.mark.parametrize("entry", ["plan", "compile"])
def test_inputs_on_another_device_than_the_parameters(entry):
    x_meta = torch.randn(8, 16, device="meta")
    with pytest.raises(graphremat.UnsupportedGraph) as info:
        if entry == "plan":
            graphremat.plan(Tiny(), x_meta, budget=0.5)
        else:
            graphremat.compile(Tiny(), budget=0.5, codegen="eager")(x_meta)
    check(info.value, graphremat.GraphRematError, "several devices (cpu, meta)")
    assert "model.to(device)" in str(info.value)


# ------------------------------------------------------------------------------------ plan JSON


@pytest.fixture(scope="module")
def plan_json():
    torch.manual_seed(0)
    return graphremat.plan(Tiny(), torch.randn(8, 16), budget=1.0).to_json()


def _tampered(text: str) -> str:
    doc = json.loads(text)
    doc["plan"]["budget_bytes"] += 1
    return json.dumps(doc)


def _other_version(text: str) -> str:
    doc = json.loads(text)
    doc["version"] = 999
    return json.dumps(doc)


@pytest.mark.parametrize(
    "corrupt, what, fix",
    [
        (lambda t: t[: len(t) // 2], "may be truncated", "Re-create it with Plan.to_json()"),
        (_tampered, "SHA-256 mismatch", "re-create it with Plan.to_json()"),
        (_other_version, "version 999", "Re-solve the plan with this version"),
        (lambda t: "{}", "not a graphremat plan", "'graphremat.plan'"),
    ],
    ids=["truncated", "tampered", "version", "not-a-plan"],
)
def test_corrupted_plan_json(plan_json, corrupt, what, fix):
    assert graphremat.Plan.from_json(plan_json).budget_bytes > 0  # the original loads
    with pytest.raises(graphremat.PlanFormatError) as info:
        graphremat.Plan.from_json(corrupt(plan_json))
    check(info.value, ValueError, what)
    assert fix in str(info.value)


@pytest.mark.parametrize("as_path", [str, lambda p: p])
def test_plan_from_a_missing_file(tmp_path, as_path):
    missing = tmp_path / "nowhere" / "plan.json"
    with pytest.raises(graphremat.PlanFormatError) as info:
        graphremat.Plan.from_json(as_path(missing))
    check(info.value, ValueError, f"cannot read plan file {str(missing)!r}")


@pytest.mark.parametrize("source", [42, b"{}", {"plan": {}}])
def test_plan_from_something_that_is_neither_text_nor_path(source):
    with pytest.raises(graphremat.PlanFormatError) as info:
        graphremat.Plan.from_json(source)
    check(info.value, ValueError, "expected JSON text or a path")


# ------------------------------------------------------------------------- measure and sweep


@pytest.mark.parametrize("fn", [42, None])
def test_measure_peak_memory_of_a_non_callable(fn, x):
    with pytest.raises(TypeError, match="needs a callable first"):
        graphremat.measure_peak_memory(fn, x)


@pytest.mark.parametrize("bad", ["12 parsecs", 1.5, None])
def test_sweep_refuses_a_bad_budget_before_solving(monkeypatch, x, bad):
    def no_solving(*args, **kwargs):
        raise AssertionError("sweep started planning before checking its budgets")

    monkeypatch.setattr("graphremat.api.plan", no_solving)
    with pytest.raises(graphremat.BudgetError) as info:
        graphremat.sweep(Tiny(), x, budgets=[1.0, bad, 0.5])
    check(info.value, ValueError, repr(bad))


def test_meta_device_model_is_refused_not_planned_as_forward_only():
    """Under torch.compile a 'meta' model's joint graph has no gradient outputs; planning it
    would silently return an empty plan."""
    from models import MLP

    with torch.device("meta"):
        model = MLP(depth=4)
        x, y = torch.randn(64, 64), torch.randint(0, 16, (64,))
    with pytest.raises(graphremat.UnsupportedGraph) as info:
        graphremat.plan(model, x, y, budget=0.5)
    check(info.value, graphremat.GraphRematError, "build the model on 'cpu' or 'cuda'")
