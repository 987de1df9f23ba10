"""Markdown table lines and mean ± sd cells of the report."""

from __future__ import annotations

import math


def table_header(columns: list[str]) -> list[str]:
    """The first two lines of a Markdown table."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def fmt(mean: float, sd: float | None = None, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = f"{mean:.{digits}f}"
    if sd is not None and not math.isnan(sd):
        text += f" ± {sd:.{digits}f}"
    return text
