"""Markdown tables and mean ± sd cells: the one formatter of each for ``vista tables`` and ``vista report``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

GAP = "—"  # a cell without a value (never printed as 0)


def table_row(cells: Sequence[object]) -> str:
    """One Markdown table line: ``| a | b | c |`` (cells as ``str``)."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]] = ()) -> list[str]:
    """Lines of a GitHub Markdown table: the header, the ``|---|`` separator, then one line per row.

    Callers that build rows in a loop take the first two lines (``markdown_table(header)``) and add
    :func:`table_row` lines.
    """
    return [table_row(header), "|" + "---|" * len(header), *(table_row(row) for row in rows)]


def format_mean_sd(
    mean: float | None,
    sd: float | None = None,
    decimals: int = 2,
    *,
    signed: bool = False,
    pm: str = " ± ",
    gap: str = GAP,
) -> str:
    """``"61.20 ± 0.35"``: a mean and its sd at ``decimals`` digits; the mean alone when ``sd`` is None or NaN.

    ``signed``: ``"+0.12"`` for differences. ``pm``: the separator (``"±"`` in the paper-style tables,
    ``r"$\\pm$"`` in LaTeX). A missing mean (None or NaN) is ``gap``, never a number.
    """
    if mean is None or pd.isna(mean):
        return gap
    text = f"{mean:+.{decimals}f}" if signed else f"{mean:.{decimals}f}"
    if sd is not None and not pd.isna(sd):
        text += f"{pm}{sd:.{decimals}f}"
    return text
