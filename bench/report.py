"""Figures and how they are reported: a readable table and the machine-readable JSON list.

Every figure is a value with a baseline measured in the same run on the same machine, so the
ratio between the two means something even on a shared, noisy machine. The JSON file is a
list of ``{"name", "value", "unit", "baseline_name", "baseline_value", "ratio", "notes"}``
objects, one per figure, with ``ratio == value / baseline_value``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One measured figure and the baseline it is read against."""
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline_value: float
    notes: str = ""

    def __post_init__(self) -> None:
        for label, number in (("value", self.value), ("baseline_value", self.baseline_value)):
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"figure {self.name}: {label} must be finite and positive, got {number}")

    @property
    def ratio(self) -> float:
        """value / baseline_value."""
        return self.value / self.baseline_value

    def as_json(self) -> dict:
        """The figure as one object of the results list (ratio included), keys in the agreed order."""
        return {"name": self.name, "value": self.value, "unit": self.unit, "baseline_name": self.baseline_name,
                "baseline_value": self.baseline_value, "ratio": self.ratio, "notes": self.notes}


def write_json(figures: list[Figure], path: Path) -> None:
    """Write the results list to ``path`` (folders created as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([f.as_json() for f in figures], indent=2) + "\n")


def _number(value: float) -> str:
    """Readable at a glance: thousands separators for big numbers, 3 significant digits for small."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(figures: list[Figure]) -> str:
    """A plain-text table of the figures (a Markdown table, so BENCHMARKS.md can quote it)."""
    rows = [("figure", "value", "unit", "baseline", "baseline value", "ratio")]
    rows += [(f.name, _number(f.value), f.unit, f.baseline_name, _number(f.baseline_value), f"{f.ratio:.3g}")
             for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 4, 5}

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(rows[0]), rule, *(line(r) for r in rows[1:])])
