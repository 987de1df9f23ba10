"""The one Markdown-table helper and the one mean ± sd formatter (``vista tables`` and ``vista report``)."""

from __future__ import annotations

import math

import numpy as np

from analysis.markdown import GAP, format_mean_sd, markdown_table, table_row
from analysis.tables import format_cell


def test_mean_sd_cells():
    assert format_mean_sd(61.2, 0.354) == "61.20 ± 0.35"
    assert format_mean_sd(61.2, math.nan) == format_mean_sd(61.2) == "61.20"  # no sd: the mean alone
    assert format_mean_sd(np.float64(0.1234), decimals=3) == "0.123"
    assert format_mean_sd(0.12, 0.5, signed=True, pm="±") == "+0.12±0.50"
    assert format_mean_sd(math.nan, 1.0) == format_mean_sd(None) == GAP  # a missing value is never a number


def test_paper_cells_use_the_same_formatter():
    assert format_cell(61.2, 0.354, 3, 2) == "61.20±0.35"
    assert format_cell(61.2, 0.354, 1, 2) == "61.20"  # one seed: no sd
    assert format_cell(61.2, 0.354, 3, 1, latex=True) == r"61.2$\pm$0.4"
    assert format_cell(math.nan, 0.1, 3, 2, latex=True) == "--" and format_cell(math.nan, 0.1, 3, 2) == GAP


def test_markdown_table_lines():
    assert markdown_table(["a", "b"], [(1, "x"), ("2", 3.5)]) == [
        "| a | b |",
        "|---|---|",
        "| 1 | x |",
        "| 2 | 3.5 |",
    ]
    assert markdown_table(["only"]) == ["| only |", "|---|"]
    assert table_row(["v", GAP]) == "| v | — |"
