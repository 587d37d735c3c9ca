"""The ``graphremat`` console script: plan or sweep a model's training step from the shell.

Input: ``MODULE:FACTORY`` (a module name or a ``.py`` path, and a callable in it that takes no
required arguments and returns ``(model, inputs)`` where ``model(*inputs)`` is the training loss)
and budgets. Output: the plan or sweep as text on stdout, optional JSON / HTML / markdown / PNG
files, and an exit code: 0 done, 1 unexpected failure, 2 usage error (bad arguments, factory or
budget), 3 graphremat refused (infeasible budget, solver failed, unsupported graph).

Errors are one line on stderr, never a traceback (``--traceback`` shows it). Progress bars go to
stderr and are the CLI's: the library itself stays quiet.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import graphremat
from graphremat.errors import BudgetError, GraphRematError, InfeasibleBudget
from graphremat.planner import COST_MODELS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3

FACTORY_HELP = (
    "MODULE:FACTORY, e.g. mymodels:make_gpt or path/to/models.py:make_gpt. FACTORY is a callable "
    "with no required arguments returning (model, inputs), where model(*inputs) returns the "
    "training loss (a scalar tensor). Returning only a model is not accepted: the inputs fix the "
    "shapes that are planned for."
)
FACTORY_ARG_HELP = "a module name or .py path, and a factory in it returning (model, inputs)"
BUDGET_HELP = (
    'bytes (6000000000), a size with a unit ("2GiB", "800MB"; B, KB, MB, GB, TB, KiB, MiB, GiB, '
    "TiB) or a fraction in (0, 1] of the peak without rematerialization (0.5)"
)


class UsageError(Exception):
    """A bad command line, factory or budget: reported in one line, exit code 2."""


# ---------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphremat",
        description="Plan activation rematerialization for a PyTorch training step under a "
        "memory budget, or sweep budgets against PyTorch's activation_memory_budget.",
        epilog=f"{FACTORY_HELP} Exit codes: 0 done, 1 unexpected failure, 2 usage error, "
        "3 no plan (infeasible budget, solver failed, unsupported graph).",
    )
    parser.add_argument(
        "--version", action="version", version=f"graphremat {graphremat.__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="{plan,sweep,bench}")
    sub.required = True

    p = sub.add_parser(
        "plan",
        help="solve one budget and print the plan",
        description="Capture the training step of FACTORY's model and solve one budget.",
        epilog=FACTORY_HELP,
    )
    p.add_argument("factory", metavar="MODULE:FACTORY", help=FACTORY_ARG_HELP)
    p.add_argument("--budget", required=True, help=BUDGET_HELP)
    p.add_argument(
        "--solver", default="cpsat", help="cpsat (default), save_all, recompute_all, bruteforce"
    )
    p.add_argument(
        "--time-limit",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="solver time limit (default 30)",
    )
    p.add_argument(
        "--max-recomputes",
        type=int,
        default=1,
        metavar="K",
        help="recompute a value up to K times, placed freely (default 1: once, just in time)",
    )
    p.add_argument(
        "--codegen",
        choices=("eager", "inductor"),
        default="eager",
        help="the codegen the plan is made for (default eager)",
    )
    p.add_argument(
        "--cost-model",
        choices=COST_MODELS,
        default=COST_MODELS[0],
        help="roofline-v2 (default: the roofline, CPU FLOPs at torch's thread count, plus, "
        "for eager, each recomputed op's dispatch), roofline-v1 (fixed roofline alone) or "
        "measured (eager only: each op timed on this machine while planning)",
    )
    p.add_argument(
        "--no-stock-cap",
        dest="stock_cap",
        action="store_false",
        help="let a loose budget keep more than stock torch.compile's plan (default: never "
        "plan a peak above it)",
    )
    p.add_argument(
        "--json", metavar="PATH", help="write the plan as JSON (Plan.from_json loads it)"
    )
    p.add_argument("--html", metavar="PATH", help="write the plan as HTML")
    p.add_argument("--plot", metavar="PATH", help="write the memory timeline as a PNG (matplotlib)")
    p.add_argument("--explain", action="store_true", help="list every saved and recomputed tensor")
    _add_common(p)

    s = sub.add_parser(
        "sweep",
        help="solve several budgets and print a table",
        description="Plan FACTORY's model at several budgets; optionally run PyTorch's min-cut "
        "partitioner at several activation_memory_budget values on the same axes.",
        epilog=FACTORY_HELP,
    )
    s.add_argument("factory", metavar="MODULE:FACTORY", help=FACTORY_ARG_HELP)
    s.add_argument(
        "--budgets",
        default="1.0,0.8,0.6,0.5,min",
        metavar="LIST",
        help=f"comma-separated budgets, each {BUDGET_HELP}, or 'min' for the smallest "
        "feasible one (default 1.0,0.8,0.6,0.5,min)",
    )
    s.add_argument(
        "--pytorch-budgets",
        default="",
        metavar="LIST",
        help="comma-separated activation_memory_budget values in [0, 1] for PyTorch's "
        "partitioner (measured by running a step each; default none)",
    )
    s.add_argument(
        "--measure",
        action="store_true",
        help="also run one compiled step per graphremat budget and measure its peak",
    )
    s.add_argument(
        "--time-limit",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="solver time limit per budget (default 10)",
    )
    s.add_argument("--json", metavar="PATH", help="write the sweep as JSON")
    s.add_argument("--md", metavar="PATH", help="write the sweep as a markdown table")
    s.add_argument("--plot", metavar="PATH", help="write budget vs overhead as a PNG (matplotlib)")
    _add_common(s)
    # listed for --help only: main() hands "bench ..." to graphremat.bench before parsing
    sub.add_parser("bench", help="run a benchmark (graphremat bench {scale,literature} --help)")
    return parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--traceback",
        action="store_true",
        help="on an unexpected failure, print the full traceback",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def parse_budget_arg(text: str, *, allow_min: bool = False) -> int | float | str:
    """A budget as the library takes it: int bytes, float fraction, a string with a unit, or
    "min" (sweeps). Validated here so that a typo fails before the model is built."""
    text = text.strip()
    if allow_min and text.lower() == "min":
        return "min"
    value: int | float | str = text
    for convert in (int, float):
        try:
            value = convert(text)
            break
        except ValueError:
            pass
    graphremat.parse_budget(value)  # raises BudgetError naming the accepted forms
    return value


def _budget_list(text: str) -> list[int | float | str]:
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise UsageError(f"--budgets {text!r}: give a comma-separated list such as 1.0,0.6,min")
    return [parse_budget_arg(t, allow_min=True) for t in items]


def _knob_list(text: str) -> list[float]:
    if not text.strip():
        return []
    knobs = []
    for item in text.split(","):
        try:
            k = float(item)
        except ValueError:
            raise UsageError(
                f"--pytorch-budgets: {item.strip()!r} is not a number; give fractions in [0, 1] "
                "such as 0.9,0.5,0.1"
            ) from None
        if not 0 <= k <= 1:
            raise UsageError(f"--pytorch-budgets: {k:g} is outside [0, 1]")
        knobs.append(k)
    return knobs


def _check_outputs(paths: list[str | None], plot: str | None) -> None:
    """Fail before the (slow) solve on an output that cannot be written."""
    for path in (p for p in paths + [plot] if p):
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise UsageError(f"cannot write {path!r}: directory {str(parent)!r} does not exist")
    if plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'graphremat[plot]'")


# ---------------------------------------------------------------------- the factory
def load_factory(spec: str) -> tuple[object, tuple]:
    """Import ``MODULE:FACTORY``, call it, and check it returned ``(model, inputs)``."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"{spec!r} is not MODULE:FACTORY (e.g. mymodels:make or models.py:make); "
            "FACTORY returns (model, inputs)"
        )
    module = _import(module_name)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        found = _callables(module)
        what = "has no attribute" if factory is None else "has a non-callable"
        listing = ", ".join(found) if found else "(none)"
        raise UsageError(f"module {module_name!r} {what} {attr!r}; its callables: {listing}")
    try:
        made = factory()
    except Exception as e:
        raise UsageError(f"factory {spec} raised {_one_line(e)}") from e
    if not (isinstance(made, (tuple, list)) and len(made) == 2):
        raise UsageError(f"factory {spec} must return (model, inputs), got {_describe(made)}")
    model, inputs = made
    if not callable(model):
        raise UsageError(
            f"factory {spec} returned a model that is not callable: {_describe(model)}"
        )
    if not isinstance(inputs, (tuple, list)):
        raise UsageError(
            f"factory {spec} must return inputs as a tuple of arguments (model(*inputs) is the "
            f"loss), got {_describe(inputs)}; wrap a single tensor as (x,)"
        )
    return model, tuple(inputs)


def _import(name: str):
    if name.endswith(".py") or os.sep in name or "/" in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise UsageError(
                f"no such Python file {name!r} (MODULE is a module name or a .py path)"
            )
        mod_name = f"_graphremat_factory_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import {name!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        _prepend_path(str(path.resolve().parent))  # so the file can import its neighbours
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(mod_name, None)
            raise UsageError(f"importing {name!r} failed: {_one_line(e)}") from e
        return module
    _prepend_path(os.getcwd())  # as `python -m` does: modules in the working directory
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise UsageError(
                f"no module named {name!r} (looked on sys.path and in {os.getcwd()!r}); give an "
                "importable module name or a path to a .py file"
            ) from e
        raise UsageError(f"importing module {name!r} failed: {_one_line(e)}") from e
    except Exception as e:
        raise UsageError(f"importing module {name!r} failed: {_one_line(e)}") from e


def _prepend_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _callables(module) -> list[str]:
    """Public callables defined in ``module`` (all public callables if it defines none)."""
    public = {n: v for n, v in vars(module).items() if not n.startswith("_") and callable(v)}
    own = [n for n, v in public.items() if getattr(v, "__module__", None) == module.__name__]
    return sorted(own or public)


def _describe(value: object) -> str:
    text = repr(value).replace("\n", " ")
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


# ---------------------------------------------------------------------- progress
@contextmanager
def solve_progress(limit_s: float, enabled: bool, desc: str = "planning") -> Iterator[None]:
    """A tqdm bar on stderr showing seconds elapsed against the solver's time limit, advanced by
    a background thread while the (blocking) plan call runs."""
    if not enabled:
        yield
        return
    from tqdm import tqdm

    bar = tqdm(
        total=limit_s,
        desc=desc,
        file=sys.stderr,
        leave=False,
        bar_format="{desc}: {bar} {elapsed} (solver time limit {total:g} s)",
    )
    done = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not done.wait(0.25):
            bar.n = min(time.monotonic() - start, limit_s)
            bar.refresh()

    thread = threading.Thread(target=tick, name="graphremat-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()


# ---------------------------------------------------------------------- commands
def run_plan(args: argparse.Namespace) -> int:
    budget = parse_budget_arg(args.budget)
    _check_outputs([args.json, args.html], args.plot)
    model, inputs = load_factory(args.factory)
    with solve_progress(args.time_limit, not args.no_progress):
        plan = graphremat.plan(
            model,
            *inputs,
            budget=budget,
            solver=args.solver,
            time_limit_s=args.time_limit,
            codegen=args.codegen,
            max_recomputes=args.max_recomputes,
            cost_model=args.cost_model,
            stock_cap=args.stock_cap,
        )
    print(plan.summary())
    if args.explain:
        print()
        print(plan.explain())
    if args.json:
        plan.to_json(args.json)
        _wrote(args.json, "plan JSON")
    if args.html:
        Path(args.html).write_text(_html_page("graphremat plan", plan._repr_html_()), "utf-8")
        _wrote(args.html, "plan HTML")
    if args.plot:
        _save_plot(plan.plot_timeline, args.plot)
        _wrote(args.plot, "memory timeline")
    return EXIT_OK


def run_sweep(args: argparse.Namespace) -> int:
    from graphremat.sweeps import sweep

    budgets = _budget_list(args.budgets)
    knobs = _knob_list(args.pytorch_budgets)
    _check_outputs([args.json, args.md], args.plot)
    model, inputs = load_factory(args.factory)
    result = sweep(
        model,
        *inputs,
        budgets=budgets,
        pytorch_budgets=knobs,
        measure=args.measure,
        progress=not args.no_progress,
        time_limit_s=args.time_limit,
        name=args.factory,
    )
    print(result)
    if args.json:
        Path(args.json).write_text(result.to_json(), "utf-8")
        _wrote(args.json, "sweep JSON")
    if args.md:
        head = str(result).splitlines()[0]
        Path(args.md).write_text(f"{head}\n\n{result.table()}\n", "utf-8")
        _wrote(args.md, "sweep table")
    if args.plot:
        _save_plot(result.plot, args.plot)
        _wrote(args.plot, "sweep plot")
    return EXIT_OK


def _html_page(title: str, body: str) -> str:
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def _save_plot(draw: Callable, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = draw()
    ax.figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(ax.figure)


def _wrote(path: str, what: str) -> None:
    print(f"wrote {what} to {path}", file=sys.stderr)


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from graphremat.bench import main as bench_main

        return bench_main(argv[1:], prog="graphremat bench")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help, --version (0) or a usage error (2)
        return EXIT_OK if e.code is None else e.code if isinstance(e.code, int) else EXIT_USAGE
    command = run_plan if args.command == "plan" else run_sweep
    try:
        return command(args)
    except (UsageError, BudgetError) as e:
        return _fail(str(e), EXIT_USAGE)
    except InfeasibleBudget as e:
        return _fail(str(e), EXIT_REFUSED)
    except GraphRematError as e:
        code = EXIT_USAGE if isinstance(e, graphremat.ConfigError) else EXIT_REFUSED
        return _fail(f"{type(e).__name__}: {e}", code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:
        if args.traceback:
            traceback.print_exc()
        hint = "" if args.traceback else " (rerun with --traceback for details)"
        return _fail(f"{args.command} failed: {_one_line(_root_cause(e))}{hint}", EXIT_FAILED)


def _root_cause(e: BaseException) -> BaseException:
    """The innermost exception of a chain (Dynamo wraps the model's own error several times)."""
    seen = {id(e)}
    while (inner := e.__cause__ or e.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        e = inner
    return e


def _fail(message: str, code: int) -> int:
    first = (message.strip().splitlines() or [""])[0]
    print(f"graphremat: error: {first}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
