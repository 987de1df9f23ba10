"""Tables as Markdown, LaTeX (booktabs) and CSV; the audit as Markdown; the relative-gains bar chart."""

from __future__ import annotations

import re

import pandas as pd

from analysis.markdown import GAP, format_mean_sd, markdown_table
from analysis.tables.build import AVG, TABLE_TITLES, Table
from analysis.tables.columns import PARTIAL_MARK
from analysis.tables.results import UNKNOWN_VARIANT


def render_audit_markdown(audit: pd.DataFrame) -> str:
    """The audit as a Markdown table plus a one-line verdict."""
    header = ["table", "model", "printed", "recomputed (mean relative gain %)", "diff", "reproduced",
              "other formulas that fit"]  # fmt: skip
    rows = []
    for r in audit.itertuples():
        others = ", ".join(f for f in r.formulas_reproducing.split(", ") if f and f != "mean_relative_gain")
        rows.append([TABLE_TITLES.get(r.table, r.table), r.model, f"{r.printed:.2f}", f"{r.mean_relative_gain:.2f}",
                     f"{r.diff:+.2f}", "yes" if r.reproduced else "no", others or "-"])  # fmt: skip
    lines = markdown_table(header, rows)
    ok = audit[audit.reproduced]
    lines.append("")
    lines.append(f"{len(ok)} of {len(audit)} printed averages are reproduced by the mean relative gain: "
                 + (", ".join(f"{TABLE_TITLES.get(t, t)} {m}" for t, m in zip(ok.table, ok.model)) or "none") + ".")  # fmt: skip
    return "\n".join(lines) + "\n"


def format_cell(
    mean: float, std: float, n: int, decimals: int, signed: bool = False, latex: bool = False
) -> str:
    """``"61.20"``, ``"61.20±0.35"`` (n > 1 seeds), ``"+0.12"`` (signed) or the gap mark for NaN."""
    return format_mean_sd(mean, std if n > 1 else None, decimals, signed=signed,
                          pm=r"$\pm$" if latex else "±", gap="--" if latex else GAP)  # fmt: skip


def _full_seeds(table: Table) -> int:
    """The most seeds any benchmark cell of the table has (cells with fewer say so)."""
    return int(table.n.drop(columns=AVG).to_numpy().max(initial=0))


def _cells(table: Table, latex: bool = False) -> list[list[str]]:
    full = _full_seeds(table)
    out = []
    for (_, variant), label in zip(table.rows, table.labels):
        cells = []
        for col in [*table.columns, AVG]:
            if col == AVG and variant in ("baseline", UNKNOWN_VARIANT):
                cells.append("-")
                continue
            m, s, k = table.mean.at[label, col], table.std.at[label, col], int(table.n.at[label, col])
            cell = format_cell(m, s, k, table.decimals.get(col, 2), table.signed, latex)
            if pd.notna(m):
                cell += "*" if col == AVG and label in table.partial_avg else ""
                cell += (
                    (r"$^\ddagger$" if latex else PARTIAL_MARK) if (label, col) in table.partial_cells else ""
                )
                cell += f" (n={k})" if 0 < k < full and not table.signed else ""
            cells.append(cell)
        out.append(cells)
    return out


def _footnotes(table: Table) -> list[str]:
    notes = []
    if table.signed:
        notes.append("Cells: our mean over seeds minus the paper's value.")
    elif _full_seeds(table) > 1:
        notes.append("Cells: mean±std over seeds (sample std).")
    if table.mean.drop(columns=AVG).isna().to_numpy().any():
        notes.append(f"{GAP}: no result for this benchmark.")
    if table.partial_avg:
        notes.append("*: averaged over the benchmarks present in both the row and its baseline.")
    if table.partial_cells:
        notes.append(f"{PARTIAL_MARK}: evaluated on part of the benchmark (an lmms-eval --limit run).")
    counts = table.n.drop(columns=AVG).to_numpy()
    if not table.signed and ((counts > 0) & (counts < _full_seeds(table))).any():
        notes.append(f"(n=k): from k seeds, fewer than the table's other cells ({_full_seeds(table)}).")
    return notes


def render_markdown(table: Table) -> str:
    """The table in the paper's layout as GitHub Markdown (title line, header, one line per row, notes)."""
    header = ["model", *table.columns, AVG]
    rows = [[label, *cells] for label, cells in zip(table.labels, _cells(table))]
    lines = [f"**{table.title}**", "", *markdown_table(header, rows)]
    notes = _footnotes(table)
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _tex(text: str) -> str:
    return re.sub(r"([&%_#$])", r"\\\1", text)


def render_latex(table: Table) -> str:
    """The table as a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    header = ["Model", *table.columns, AVG]
    lines = [r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]  # fmt: skip
    last_family = None
    for (family, _), label, cells in zip(table.rows, table.labels, _cells(table, latex=True)):
        if last_family is not None and family != last_family:
            lines.append(r"\midrule")
        last_family = family
        lines.append(" & ".join([_tex(label), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """Machine-readable: model, family, variant, then per column its mean, std and number of seeds."""
    frame = pd.DataFrame({"model": table.labels, "family": [r[0] for r in table.rows],
                          "variant": [r[1] for r in table.rows]})  # fmt: skip
    for col in [*table.columns, AVG]:
        frame[col] = table.mean[col].to_numpy()
        frame[f"{col} std"] = table.std[col].to_numpy()
        frame[f"{col} n"] = table.n[col].to_numpy()
    return frame.to_csv(index=False, float_format="%.6g")


FAMILY_HATCHES = ("", "///", "...", "xxx", "\\\\\\", "+++")  # first family plain, the others hatched


def plot_relative_gains(gains: pd.DataFrame, ax=None):
    """Bar chart of ``relative_gains`` output: one bar per (benchmark, model). Returns the matplotlib Axes.

    A bar has its training variant's colour (:func:`analysis.palette.variant_palette`, the colour the variant has in
    every other figure); models of the same variant in different families are told apart by hatching.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Patch

    from analysis.palette import variant_palette

    data = gains.dropna(subset=["gain_pct"])
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.55 * gains["column"].nunique() + 2), 3.6))
    models = list(dict.fromkeys(data["model"]))
    variant_of = dict(zip(data["model"], data["variant"] if "variant" in data else data["model"]))
    family_of = dict(zip(data["model"], data["family"] if "family" in data else [""] * len(data)))
    colours = variant_palette(variant_of[m] for m in models)
    palette = {m: colours[variant_of[m]] for m in models}
    families = list(dict.fromkeys(family_of[m] for m in models))
    hatch = {m: FAMILY_HATCHES[families.index(family_of[m]) % len(FAMILY_HATCHES)] for m in models}
    sns.barplot(data=data, x="column", y="gain_pct", hue="model", hue_order=models, palette=palette, saturation=1,
                ax=ax)  # fmt: skip
    for container, model in zip(ax.containers, models):
        for bar in container:
            bar.set_hatch(hatch[model])
            bar.set_edgecolor("white")  # the hatch's colour
            bar.set_linewidth(0)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("relative gain over baseline (%)")
    ax.tick_params(axis="x", rotation=60)
    handles = [
        Patch(facecolor=palette[m], hatch=hatch[m], edgecolor="white", linewidth=0, label=m) for m in models
    ]
    ax.legend(handles=handles, fontsize=8, frameon=False)
    return ax
