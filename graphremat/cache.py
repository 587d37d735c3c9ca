"""Solved plans on disk, as plain JSON (never pickle), so that compiling the same model again
skips the solves.

Key: SHA-256 of the solver's problem (graph, sizes, costs: :meth:`RematProblem.fingerprint`),
the budget in bytes, the options that change a plan (solver, time limit, seed, workers, codegen,
cost model), graphremat's and torch's versions and the plan format version. An entry is only a
suggestion: the planner re-emits the program from its saved set and replays it
(:mod:`graphremat.simulate`) before using it; a corrupt, mismatched or stale entry is ignored
with a warning and the plan is solved again.

Location: ``Options.cache`` (a directory), else ``$GRAPHREMAT_CACHE_DIR``, else
``~/.cache/graphremat``. ``cache=False`` turns it off. Solvers passed as callables are not
cached (they have no stable identity).

Op times measured for ``cost_model="measured"`` are kept beside the plans
(``times-<key>.json``, keyed by the problem under roofline costs, the device and torch's thread
count), so a model compiled again on the same machine gets the same costs, and so the same plan
from the cache, without timing its ops again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

from . import __version__
from .errors import PlanFormatError
from .report import PLAN_FORMAT_VERSION, Plan

log = logging.getLogger("graphremat")

ENV_VAR = "GRAPHREMAT_CACHE_DIR"


def cache_dir(setting: bool | str) -> Path | None:
    """The directory plans are cached in, or None when caching is off."""
    if setting is False:
        return None
    if isinstance(setting, str):
        return Path(setting).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/graphremat").expanduser()


@functools.cache
def code_digest() -> str:
    """A hash of graphremat's own source (the package and its solvers): a development build
    keeps its version number while capture, solvers and rewrite change, and a plan made by
    other code must not be taken for this code's (it is re-checked, but may no longer emit)."""
    from . import solvers  # (installed as graphremat.solvers from the solvers/ folder)

    h = hashlib.sha256()
    for package in (Path(__file__), Path(solvers.__file__)):
        root = package.resolve().parent
        for path in sorted(root.glob("*.py")):
            h.update(f"{root.name}/{path.name}".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def plan_key(problem_fingerprint: str, budget_bytes: int, options) -> str | None:
    """The cache key of a plan, or None when it must not be cached (callable solver)."""
    if not isinstance(options.solver, str):
        return None
    doc = [
        PLAN_FORMAT_VERSION,
        __version__,
        code_digest(),
        torch.__version__,
        problem_fingerprint,
        int(budget_bytes),
        options.solver,
        float(options.time_limit_s),
        options.seed,
        options.num_workers,
        options.codegen,
        options.cost_model,
        str(options.calibrate),
        options.max_recomputes,
        options.stock_cap,
    ]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def load(directory: Path, key: str) -> Plan | None:
    """The cached plan for ``key``, or None (missing; unreadable or corrupt: with a warning)."""
    path = directory / f"{key}.json"
    if not path.exists():
        return None
    try:
        return Plan.from_json(path)
    except PlanFormatError as e:
        warnings.warn(
            f"graphremat: ignoring a corrupt plan cache entry ({e}); solving again",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _write(directory: Path, name: str, text: str) -> None:
    """Write atomically (temp file + rename); a cache that cannot be written only logs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, directory / name)
    except OSError as e:
        log.warning("graphremat: could not write the plan cache in %s: %s", directory, str(e))


def store(directory: Path, key: str, plan: Plan) -> None:
    _write(directory, f"{key}.json", plan.to_json(indent=None))


def load_min_peak(directory: Path, fingerprint: str) -> dict | None:
    """The stored smallest-peak plan of a problem: ``{"peak_bytes", "lower_bound_bytes",
    "optimal", "saved", "time_limit_s"}``, or None. The caller re-evaluates ``saved``."""
    path = directory / f"minpeak-{fingerprint}.json"
    return _read_json(
        path,
        "graphremat.minpeak",
        f"graphremat: ignoring a corrupt min-peak cache entry {path.name}",
        lambda doc: (
            isinstance(doc.get("saved"), list)
            and all(isinstance(v, str) for v in doc["saved"])
            and all(_is_count(doc.get(k)) for k in ("peak_bytes", "lower_bound_bytes"))
            and isinstance(doc.get("optimal"), bool)
            and isinstance(doc.get("time_limit_s"), (int, float))
        ),
    )


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_json(path: Path, fmt: str, warning: str, valid) -> dict | None:
    """The JSON object in ``path`` if it names the format ``fmt`` and ``valid(doc)`` holds,
    else None: missing silently, unreadable or invalid with ``warning`` (attributed to the
    caller's caller)."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        ok = isinstance(doc, dict) and doc.get("format") == fmt and bool(valid(doc))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if ok:
        return doc
    warnings.warn(warning, RuntimeWarning, stacklevel=4)
    return None


def store_min_peak(directory: Path, fingerprint: str, result, time_limit_s: float) -> None:
    doc = {
        "format": "graphremat.minpeak",
        "peak_bytes": int(result.peak_bytes),
        "lower_bound_bytes": int(result.lower_bound_bytes),
        "optimal": bool(result.optimal),
        "saved": sorted(result.saved),
        "time_limit_s": float(time_limit_s),
    }
    _write(directory, f"minpeak-{fingerprint}.json", json.dumps(doc))


def times_key(problem_fingerprint: str, device: str) -> str:
    """The cache key of measured op times (cost_model="measured"): the problem under the
    roofline costs, the device (e.g. ``"cpu"`` or a GPU's name) and torch's intra-op threads."""
    doc = [
        __version__,
        code_digest(),
        torch.__version__,
        problem_fingerprint,
        device,
        torch.get_num_threads(),
    ]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def load_times(directory: Path, key: str) -> dict[str, int] | None:
    """Stored op times ``{FX node name: ns}``, or None (missing; corrupt: with a warning)."""
    path = directory / f"times-{key}.json"
    doc = _read_json(
        path,
        "graphremat.times",
        f"graphremat: ignoring a corrupt op-time cache entry {path.name}; timing again",
        lambda doc: (
            isinstance(doc.get("times_ns"), dict)
            and all(isinstance(k, str) and _is_count(v) for k, v in doc["times_ns"].items())
        ),
    )
    return None if doc is None else doc["times_ns"]


def store_times(directory: Path, key: str, times: dict[str, int]) -> None:
    doc = {"format": "graphremat.times", "times_ns": {k: int(v) for k, v in times.items()}}
    _write(directory, f"times-{key}.json", json.dumps(doc))
