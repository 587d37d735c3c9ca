"""Budget parsing: bytes as int, strings like "1.5GiB" / "800MB" / "800 MiB", or a fraction of
the unconstrained peak in (0, 1]."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import BudgetError

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")
ACCEPTED = (
    'a positive int of bytes (6_000_000_000), a string with a unit ("1.5GiB", "800MB", '
    '"800 MiB"; units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), or a float fraction in (0, 1] '
    "of the unconstrained peak (0.5)"
)


@dataclass(frozen=True, slots=True)
class Budget:
    """A parsed budget: either absolute ``nbytes`` or a ``fraction`` of the unconstrained peak."""

    nbytes: int | None = None
    fraction: float | None = None

    def resolve(self, unconstrained_peak_bytes: int) -> int:
        if self.nbytes is not None:
            return self.nbytes
        assert self.fraction is not None
        return int(math.floor(self.fraction * unconstrained_peak_bytes))

    def __str__(self) -> str:
        if self.nbytes is not None:
            return format_bytes(self.nbytes)
        return f"{self.fraction:g} of the unconstrained peak"


def parse_budget(budget: object) -> Budget:
    """Parse a user budget; raise :class:`BudgetError` naming the accepted forms otherwise."""
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, bool) or budget is None:
        raise BudgetError(f"budget={budget!r} is not a budget; give {ACCEPTED}")
    if isinstance(budget, int):
        if budget <= 0:
            raise BudgetError(f"budget={budget} bytes must be positive; give {ACCEPTED}")
        return Budget(nbytes=int(budget))
    if isinstance(budget, float):
        if not math.isfinite(budget) or budget <= 0:
            raise BudgetError(f"budget={budget!r} must be finite and positive; give {ACCEPTED}")
        if budget <= 1.0:
            return Budget(fraction=float(budget))
        if budget.is_integer():
            return Budget(nbytes=int(budget))
        raise BudgetError(
            f"budget={budget!r}: a float must be a fraction in (0, 1] (or a whole number of "
            f"bytes); give {ACCEPTED}"
        )
    if isinstance(budget, str):
        match = _PATTERN.match(budget)
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise BudgetError(f"cannot parse budget {budget!r}; give {ACCEPTED}")
        value = float(match.group(1)) * _UNITS[unit]
        if not math.isfinite(value):
            raise BudgetError(f"budget {budget!r} is too large to count in bytes; give {ACCEPTED}")
        if not unit and value <= 1:  # "0.5" is a fraction typed as a string, not half a byte
            raise BudgetError(
                f"budget {budget!r}: a string without a unit counts bytes; for a fraction of the "
                f"unconstrained peak pass the float {match.group(1)} (no quotes); give {ACCEPTED}"
            )
        if value < 1:
            raise BudgetError(f"budget {budget!r} is below one byte; give {ACCEPTED}")
        return Budget(nbytes=int(value))
    raise BudgetError(f"budget of type {type(budget).__name__} is not supported; give {ACCEPTED}")


def format_bytes(nbytes: float) -> str:
    """Human-readable binary size: 1536 -> '1.50 KiB'."""
    n = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
