"""The Plan: what graphremat decided for one compiled region, what it promises, and why.

A :class:`Plan` is plain data (numbers, strings, tuples) so that it renders as text
(:meth:`Plan.summary`, :meth:`Plan.explain`), as HTML in Jupyter, as plots
(:mod:`graphremat.plot`), and round-trips through JSON (:meth:`Plan.to_json`,
:meth:`Plan.from_json`; validated on load, a modified or truncated file raises
:class:`~graphremat.errors.PlanFormatError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import os
from dataclasses import dataclass, field

from .budget import format_bytes
from .errors import PlanFormatError

#: what :meth:`Plan.to_json` writes in ``"format"``; files of another format are refused
PLAN_FORMAT = "graphremat.plan"
#: bumped whenever a field changes meaning; older or newer files are refused on load
PLAN_FORMAT_VERSION = 1

#: decisions a forward value can get
DECISIONS = ("saved", "recomputed", "forward-only")


@dataclass(frozen=True, slots=True)
class TensorRecord:
    """One forward value of the joint graph and what the plan does with it.

    ``decision``: ``"saved"`` (kept from the forward for the backward; ``note`` says why when it
    cannot be recomputed), ``"recomputed"`` (freed after its last forward use, computed again in
    the backward), ``"forward-only"`` (the backward never needs it).
    ``source``: the user's source line that created it (from ``node.meta["stack_trace"]``), or "".
    """

    name: str
    decision: str
    op: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    flops: int
    cost_ns: int
    source: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision {self.decision!r} is not one of {DECISIONS}")
        if self.nbytes < 0 or self.flops < 0 or self.cost_ns < 0:
            raise ValueError(f"{self.name}: negative size or cost")


@dataclass(frozen=True, slots=True)
class Plan:
    """A solved rematerialization plan for one compiled region (one joint graph).

    Peaks count every tensor byte live during the step: parameters, buffers, inputs, gradients,
    saved and transient values. ``predicted_peak_bytes`` comes from replaying the emitted forward
    and backward modules (:mod:`graphremat.simulate`) and is <= ``budget_bytes``.

    ``timeline``: ``(phase, FX node, live bytes)`` per executed op of this plan;
    ``unconstrained_timeline`` the same without rematerialization. ``lifetimes``:
    ``(FX node, bytes, first step, last step)`` per storage, steps indexing ``timeline``.
    ``tensors``: every forward value with its decision (see :class:`TensorRecord`);
    ``dag_edges``: data edges between those values (for drawing the solved graph).

    ``recompute_cost_ns`` and ``step_cost_ns`` are roofline estimates (FLOPs and bytes moved);
    ``objective`` and ``bound`` are in the solver's cost, which under ``codegen="eager"`` also
    counts each recomputed op's dispatch, or is the ops' measured time (Options.cost_model).
    """

    budget_bytes: int
    predicted_peak_bytes: int
    unconstrained_peak_bytes: int
    min_feasible_bytes: int
    recompute_flops: int
    recompute_cost_ns: int
    saved: tuple[str, ...]
    recomputed: tuple[str, ...]
    status: str
    gap: float
    solver: str
    solve_time_s: float
    objective: float
    bound: float
    model_peak_bytes: int
    num_joint_nodes: int
    num_problem_nodes: int
    num_candidates: int
    fixed_bytes: int
    codegen: str
    timeline: tuple[tuple[str, str, int], ...] = field(default=(), repr=False)
    saved_bytes: int = 0
    min_feasible_proven: bool = False  # False: the smallest peak found in the time limit
    step_cost_ns: int = 0  # estimated cost of the whole step without recomputation
    unconstrained_timeline: tuple[tuple[str, str, int], ...] = field(default=(), repr=False)
    lifetimes: tuple[tuple[str, int, int, int], ...] = field(default=(), repr=False)
    tensors: tuple[TensorRecord, ...] = field(default=(), repr=False)
    dag_edges: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    from_cache: bool = False  # loaded from the plan cache (and re-checked by the simulator)
    # with max_recomputes > 1: the CopyPlan (graphremat.solvers.multi) as JSON: saved values'
    # last backward steps and each recomputation's steps; empty for the once-class
    copies: dict = field(default_factory=dict, repr=False)
    # a region that runs several times per step (graphremat.regions): its runs per step, the
    # bytes one run holds from its forward to its backward (saved values and activation
    # inputs), and the bytes that other runs and earlier regions hold in predicted_peak_bytes
    runs_per_step: int = 1
    held_bytes: int = 0
    others_held_bytes: int = 0
    # room kept for later regions of the step (graph breaks, graphremat.regions): the most
    # bytes one run may keep for its backward, and the bytes the timeline's "(later regions)"
    # entry, between the forward and the backward, counts for them; 0 if none
    held_cap_bytes: int = 0
    later_room_bytes: int = 0
    # the peak of stock torch.compile's plan (PyTorch's own partition of this graph) in
    # graphremat's model, which bounds the plan under Options.stock_cap; 0 if not known
    stock_peak_bytes: int = 0

    def __post_init__(self) -> None:
        if self.predicted_peak_bytes > self.budget_bytes:
            raise ValueError(
                f"predicted peak {self.predicted_peak_bytes} exceeds the budget {self.budget_bytes}"
            )
        if min(self.budget_bytes, self.predicted_peak_bytes, self.min_feasible_bytes) < 0:
            raise ValueError("negative byte count")
        if set(self.saved) & set(self.recomputed) and not self.copies:
            raise ValueError("a value cannot be both saved and recomputed")
        if not self.gap >= 0:
            raise ValueError(f"gap {self.gap!r} must be >= 0")

    # ------------------------------------------------------------------ text
    @property
    def num_recomputations(self) -> int:
        """How many times values are recomputed (more than len(recomputed) in a copy plan)."""
        if not self.copies:
            return len(self.recomputed)
        return sum(len(cs) for cs in self.copies["copies"].values())

    @property
    def overhead(self) -> float:
        """Estimated recompute time as a fraction of the step's (roofline estimate)."""
        return self.recompute_cost_ns / self.step_cost_ns if self.step_cost_ns else 0.0

    def summary(self) -> str:
        """Budget, peaks, recompute cost and overhead, solver status and gap, sizes."""
        frac = self.predicted_peak_bytes / max(self.unconstrained_peak_bytes, 1)
        lines = [
            f"graphremat plan ({self.codegen}, solver {self.solver}: {self.status}, "
            f"gap {self.gap:.2%}, {self.solve_time_s:.2f} s"
            + (", from the plan cache)" if self.from_cache else ")"),
            f"  budget               {format_bytes(self.budget_bytes)}",
            f"  predicted peak       {format_bytes(self.predicted_peak_bytes)} "
            f"({frac:.1%} of unconstrained)",
            f"  unconstrained peak   {format_bytes(self.unconstrained_peak_bytes)}",
            *(
                [f"  stock torch.compile  {format_bytes(self.stock_peak_bytes)} (PyTorch's plan)"]
                if self.stock_peak_bytes
                else []
            ),
            f"  min feasible budget  {format_bytes(self.min_feasible_bytes)}"
            + (" (proven)" if self.min_feasible_proven else " (best found, not proven)"),
            f"  resident (params, inputs) {format_bytes(self.fixed_bytes)}",
            f"  saved for backward   {len(self.saved)} values, {format_bytes(self.saved_bytes)}",
            *(
                [
                    f"  runs per step        {self.runs_per_step} (the other runs hold "
                    f"{format_bytes(self.held_bytes)} each)"
                ]
                if self.runs_per_step > 1
                else []
            ),
            *(
                [
                    f"  room for later regions {format_bytes(self.later_room_bytes)} (this "
                    f"region keeps at most {format_bytes(self.held_cap_bytes)} per run)"
                ]
                if self.later_room_bytes
                else []
            ),
            f"  recomputed           {len(self.recomputed)} values"
            + (f" ({self.num_recomputations} recomputations)" if self.copies else "")
            + ", "
            f"{self.recompute_flops:,} FLOPs, ~{self.recompute_cost_ns / 1e6:.3f} ms est. "
            f"({self.overhead:.1%} of the step)",
            f"  joint graph          {self.num_joint_nodes} FX nodes, "
            f"{self.num_problem_nodes} storages, {self.num_candidates} decisions",
        ]
        return "\n".join(lines)

    def explain(self, include: tuple[str, ...] = ("saved", "recomputed")) -> str:
        """Every saved and recomputed tensor: bytes, shape, dtype, op and the user's source line.

        ``include`` picks decisions (see :class:`TensorRecord`), e.g. ``("forward-only",)``.
        """
        if not self.tensors:
            return "(this plan carries no per-tensor records)"
        out = []
        for decision in include:
            recs = [t for t in self.tensors if t.decision == decision]
            total = sum(t.nbytes for t in recs)
            out.append(f"{decision} ({len(recs)} values, {format_bytes(total)}):")
            for t in recs:
                shape = "x".join(map(str, t.shape)) or "scalar"
                line = f"  {t.name:<28} {format_bytes(t.nbytes):>11}  {shape:<18} {t.dtype:<9}"
                line += f" {t.op}"
                if decision == "recomputed":
                    line += f"  [{t.flops:,} FLOPs]"
                if t.note:
                    line += f"  ({t.note})"
                out.append(line)
                if t.source:
                    out.append(f"      at {t.source}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        rows = []
        for t in self.tensors:
            if t.decision not in ("saved", "recomputed"):
                continue
            colour = "#d9ead3" if t.decision == "saved" else "#fce5cd"
            rows.append(
                f"<tr style='background:{colour}'><td>{html.escape(t.decision)}</td>"
                f"<td><code>{html.escape(t.name)}</code></td>"
                f"<td style='text-align:right'>{html.escape(format_bytes(t.nbytes))}</td>"
                f"<td>{html.escape(str(list(t.shape)))}</td><td>{html.escape(t.op)}</td>"
                f"<td>{html.escape(t.source)}</td></tr>"
            )
        table = ""
        if rows:
            table = (
                "<details><summary>saved and recomputed tensors</summary>"
                "<table><tr><th>decision</th><th>value</th><th>bytes</th><th>shape</th>"
                "<th>op</th><th>source</th></tr>" + "".join(rows) + "</table></details>"
            )
        return "<pre>" + html.escape(self.summary()) + "</pre>" + table

    # ------------------------------------------------------------------ plots
    def plot_timeline(self, ax=None, **kwargs):
        """Memory over the step with the budget line (see :func:`graphremat.plot.plot_timeline`)."""
        from .plot import plot_timeline

        return plot_timeline(self, ax=ax, **kwargs)

    def plot_schedule(self, ax=None, **kwargs):
        """Which value is resident or recomputed at which step (Checkmate-style)."""
        from .plot import plot_schedule

        return plot_schedule(self, ax=ax, **kwargs)

    def plot_graph(self, ax=None, **kwargs):
        """The solved forward graph, coloured saved / recomputed / forward-only."""
        from .plot import plot_graph

        return plot_graph(self, ax=ax, **kwargs)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """Plain, JSON-ready data (no checksum; see :meth:`to_json`)."""
        data = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "tensors":
                value = [_record_to_list(t) for t in value]
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            data[f.name] = value
        return data

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int | None = 1) -> str:
        """The plan as JSON (with format, version and a SHA-256 of the content); also written to
        ``path`` if given."""
        payload = self.to_dict()
        doc = {
            "format": PLAN_FORMAT,
            "version": PLAN_FORMAT_VERSION,
            "sha256": _digest(payload),
            "plan": payload,
        }
        text = json.dumps(doc, indent=indent, allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> Plan:
        """Load a plan written by :meth:`to_json`, from its text or a file path.

        Raises :class:`~graphremat.errors.PlanFormatError` when the text is not valid JSON
        (e.g. truncated), is not a graphremat plan, has another format version, was modified
        after it was written (checksum), or holds fields of the wrong type.
        """
        text, where = _read_source(source)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanFormatError(
                f"{where} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                f"the file may be truncated. Re-create it with Plan.to_json()."
            ) from e
        if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
            raise PlanFormatError(f"{where} is not a graphremat plan (no format {PLAN_FORMAT!r})")
        if doc.get("version") != PLAN_FORMAT_VERSION:
            raise PlanFormatError(
                f"{where} has plan format version {doc.get('version')!r}; this graphremat reads "
                f"version {PLAN_FORMAT_VERSION}. Re-solve the plan with this version."
            )
        payload = doc.get("plan")
        if not isinstance(payload, dict):
            raise PlanFormatError(f"{where} has no 'plan' object")
        if doc.get("sha256") != _digest(payload):
            raise PlanFormatError(
                f"{where} was modified after it was written (SHA-256 mismatch); "
                f"re-create it with Plan.to_json() instead of editing it"
            )
        return cls._from_payload(payload, where)

    @classmethod
    def _from_payload(cls, payload: dict, where: str) -> Plan:
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - payload.keys())
        unknown = sorted(payload.keys() - names)
        if missing or unknown:
            raise PlanFormatError(f"{where}: missing fields {missing}, unknown fields {unknown}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in payload:
                continue
            try:
                kwargs[f.name] = _FIELD_TYPES[f.name](payload[f.name])
            except (TypeError, ValueError) as e:
                raise PlanFormatError(f"{where}: field {f.name!r}: {e}") from e
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise PlanFormatError(f"{where}: inconsistent plan: {e}") from e


# ---------------------------------------------------------------------- JSON helpers


def _digest(payload: dict) -> str:
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def _read_source(source: str | os.PathLike) -> tuple[str, str]:
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and not source.lstrip().startswith(("{", "["))
    ):
        path = os.fspath(source)
        try:
            with open(path, encoding="utf-8") as f:
                return f.read(), f"plan file {path!r}"
        except OSError as e:
            raise PlanFormatError(f"cannot read plan file {path!r}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise PlanFormatError(f"plan file {path!r} is not UTF-8 text") from e
    if not isinstance(source, str):
        raise PlanFormatError(f"expected JSON text or a path, got {type(source).__name__}")
    return source, "the plan JSON"


def _int(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _float(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)


def _str(v) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _bool(v) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true/false, got {v!r}")
    return v


def _list(v) -> list:
    if not isinstance(v, list):
        raise TypeError(f"expected a list, got {type(v).__name__}")
    return v


def _rows(*kinds):
    def conv(v) -> tuple:
        out = []
        for row in _list(v):
            row = _list(row)
            if len(row) != len(kinds):
                raise ValueError(f"expected rows of {len(kinds)} items, got {row!r}")
            out.append(tuple(k(x) for k, x in zip(kinds, row, strict=True)))
        return tuple(out)

    return conv


_RECORD_FIELDS = [f.name for f in dataclasses.fields(TensorRecord)]


def _record_to_list(t: TensorRecord) -> list:
    return [list(t.shape) if k == "shape" else getattr(t, k) for k in _RECORD_FIELDS]


def _records(v) -> tuple[TensorRecord, ...]:
    kinds = {
        "name": _str,
        "decision": _str,
        "op": _str,
        "shape": lambda s: tuple(_int(x) for x in _list(s)),
        "dtype": _str,
        "nbytes": _int,
        "flops": _int,
        "cost_ns": _int,
        "source": _str,
        "note": _str,
    }
    rows = _rows(*(kinds[k] for k in _RECORD_FIELDS))(v)
    return tuple(TensorRecord(*row) for row in rows)


def _copies(value) -> dict:
    if not isinstance(value, dict) or (value and set(value) != {"save_end", "copies"}):
        raise TypeError("expected {} or an object with 'save_end' and 'copies'")
    from .solvers.multi import CopyPlan

    return CopyPlan.from_json(value).to_json() if value else {}


_FIELD_TYPES = {
    "budget_bytes": _int,
    "predicted_peak_bytes": _int,
    "unconstrained_peak_bytes": _int,
    "min_feasible_bytes": _int,
    "recompute_flops": _int,
    "recompute_cost_ns": _int,
    "saved": lambda v: tuple(_str(x) for x in _list(v)),
    "recomputed": lambda v: tuple(_str(x) for x in _list(v)),
    "status": _str,
    "gap": _float,
    "solver": _str,
    "solve_time_s": _float,
    "objective": _float,
    "bound": _float,
    "model_peak_bytes": _int,
    "num_joint_nodes": _int,
    "num_problem_nodes": _int,
    "num_candidates": _int,
    "fixed_bytes": _int,
    "codegen": _str,
    "timeline": _rows(_str, _str, _int),
    "saved_bytes": _int,
    "min_feasible_proven": _bool,
    "step_cost_ns": _int,
    "unconstrained_timeline": _rows(_str, _str, _int),
    "lifetimes": _rows(_str, _int, _int, _int),
    "tensors": _records,
    "dag_edges": _rows(_str, _str),
    "from_cache": _bool,
    "copies": _copies,
    "runs_per_step": _int,
    "held_bytes": _int,
    "others_held_bytes": _int,
    "held_cap_bytes": _int,
    "later_room_bytes": _int,
    "stock_peak_bytes": _int,
}
