import math

import pytest

import graphremat
from graphremat.budget import Budget, format_bytes, parse_budget


@pytest.mark.parametrize(
    "text, nbytes",
    [
        ("1.5GiB", int(1.5 * 2**30)),
        ("800MB", 800 * 10**6),
        ("800 MiB", 800 * 2**20),
        ("6GB", 6 * 10**9),
        ("1024", 1024),
        ("2kib", 2048),
        (" 3 TB ", 3 * 10**12),
        ("1e3 B", 1000),
    ],
)
def test_parse_strings(text, nbytes):
    assert parse_budget(text) == Budget(nbytes=nbytes)


def test_parse_int_and_fraction():
    assert parse_budget(6_000_000_000) == Budget(nbytes=6_000_000_000)
    assert parse_budget(0.5) == Budget(fraction=0.5)
    assert parse_budget(1.0) == Budget(fraction=1.0)
    assert parse_budget(2048.0) == Budget(nbytes=2048)


def test_fraction_resolves_against_the_unconstrained_peak():
    assert parse_budget(0.5).resolve(1001) == 500
    assert parse_budget("1KiB").resolve(10**9) == 1024


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "lots",
        "1.5 parsecs",
        "-1GB",
        "GiB",
        0,
        -5,
        0.0,
        -0.5,
        1.5,
        math.nan,
        math.inf,
        None,
        True,
        [1],
        {"b": 1},
        "0.1 B",
    ],
)
def test_bad_budgets_raise_typed_error_naming_the_forms(bad):
    with pytest.raises(graphremat.BudgetError) as info:
        parse_budget(bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, graphremat.GraphRematError)
    assert "GiB" in str(info.value)  # names the accepted forms


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(3 * 2**30) == "3.00 GiB"


def test_infeasible_budget_carries_the_minimum():
    e = graphremat.InfeasibleBudget(1000, 4096)
    assert isinstance(e, ValueError) and isinstance(e, graphremat.GraphRematError)
    assert e.min_feasible_bytes == 4096 and "4096" in str(e)
    assert e.lower_bound_bytes == 4096 and "proven" not in str(e)


def test_an_unproven_minimum_says_what_is_proven():
    """Where the smallest-peak search ran out of time, the error names a budget that fits,
    the proven lower bound, and that more time may find a smaller minimum."""
    e = graphremat.InfeasibleBudget(1000, 4096, lower_bound_bytes=1001)
    assert (e.min_feasible_bytes, e.lower_bound_bytes) == (4096, 1001)
    msg = str(e)
    assert "found to fit" in msg and "4096" in msg and "proven >= 1001 B" in msg
    assert "time_limit_s" in msg
    assert graphremat.InfeasibleBudget(1000, 4096, lower_bound_bytes=9999).lower_bound_bytes == 4096
