"""The mutual-information section: MI between the image state and text representations per position."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from scipy import stats

from analysis.markdown import markdown_table
from vista.run_metadata import parse_run_name


def mi_section(results: Path, metrics: dict) -> list[str]:
    tables = []
    for path in sorted((results / "mi").glob("*/mi_by_position.csv")):
        labels = parse_run_name(path.parent.name) or {"variant": path.parent.name}
        tables.append(pd.read_csv(path).assign(model=labels["variant"]))
    if not tables:
        return []
    table = pd.concat(tables, ignore_index=True)
    table = table[table["mi"].notna()]
    if "stderr" not in table:
        table = table.assign(stderr=math.nan)
    z = stats.norm.ppf(0.975)
    table = table.assign(
        below=(table["mi"] + z * table["stderr"]) < 0, above=(table["mi"] - z * table["stderr"]) > 0
    )
    summary = (
        table.groupby(["model", "target", "method"], sort=False)
        .agg(mean=("mi", "mean"), min=("mi", "min"), max=("mi", "max"), positions=("mi", "count"),
             above_zero=("above", "sum"), negative=("mi", lambda v: int((v < 0).sum())),
             below_zero=("below", "sum"), samples=("n_samples", "max"))
        .reset_index()
    )  # fmt: skip
    metrics["mi"] = summary.to_dict(orient="records")
    lines = ["## Mutual information between the image state and text representations", ""]
    lines.append(
        "I(h_v; e_t) and I(h_v; h_t) across held-out samples, estimated per text position t, in nats. Columns: "
        "mean, min and max of the estimates over positions; `positions`: positions with an estimate (reached by "
        "at least `--min-samples` samples); `above_zero` / `below_zero`: positions whose 95% interval "
        "(estimate ± 1.96 standard errors) lies entirely above / below 0; `negative`: positions whose point "
        "estimate is below 0; `samples`: held-out samples at the first position."
    )
    lines.append("")
    rows = [
        [f"{v:.4f}" if isinstance(v, float) else v for v in row] for row in summary.itertuples(index=False)
    ]
    lines += markdown_table(list(summary.columns), rows)
    lines.append("")
    lines += _mi_disclosure(results)
    for figure in sorted((results / "mi").glob("*/mi_by_position.png"))[:3]:
        lines.append(f"![MI {figure.parent.name}](mi/{figure.parent.name}/{figure.name})")
    lines.append("")
    return lines


def _mi_disclosure(results: Path) -> list[str]:
    """How the MI was estimated, on what, and why an estimate can be negative."""
    runs = []
    for path in sorted((results / "mi").glob("*/summary.json")):
        labels = parse_run_name(path.parent.name) or {}
        counts = json.loads(path.read_text())
        seed = f"training seed {labels['seed']}" if "seed" in labels else "training seed unknown"
        runs.append(f"{labels.get('variant', path.parent.name)} ({seed}): {counts.get('samples')} samples")
    return [
        f"**MI settings:** {'; '.join(runs) or 'see mi/*/summary.json'}. Estimators: KSG (k-nearest neighbours) "
        "and a Gaussian (linear) estimate, on z-scored states projected to their leading principal components "
        "(`vista mi checkpoint` defaults; see `mi/*/summary.json`). True MI is never negative, but these "
        "estimates can be: KSG is a difference of digamma averages whose bias and sampling error at these sample "
        'sizes are of the order of the small MI measured here, so an estimate below 0 means "no dependence '
        'detected", not negative information. Judge each position by its interval (`stderr` in '
        "`mi/*/mi_by_position.csv`; the figures' bands are ± 1 standard error).",
        "",
    ]
