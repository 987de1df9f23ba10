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
        lines.append(f"*{figure.parent.name}*")
        lines.append("")
    return lines


_METHOD_NAMES = {"ksg": "KSG", "gaussian": "Gaussian (linear, bias-corrected)"}


def describe_settings(settings: dict) -> str:
    """The estimator settings of one ``mi/<run>/summary.json`` (its ``settings``) as one sentence fragment."""
    methods = []
    for method in settings.get("methods", []):
        if method == "ksg":
            methods.append(f"KSG (k = {settings.get('k')} nearest neighbours, Kraskov et al. 2004)")
        elif method in _METHOD_NAMES:
            methods.append(_METHOD_NAMES[method])
        else:
            methods.append(
                f"{method} ({settings.get('critic')} critic, {settings.get('steps')} steps, batch "
                f"{settings.get('batch_size')}, held-out fraction {settings.get('eval_fraction')})"
            )
    pca = settings.get("pca_dim")
    prep = [
        "z-scored" if settings.get("standardize") else "not standardised",
        f"each side projected to at most {pca} principal components" if pca else "no PCA",
        f"jitter {settings.get('jitter', 0):g} x column std",
        f"seed {settings.get('seed')}",
    ]
    limit = settings.get("max_samples")
    return (
        f"{', '.join(methods) or 'no method recorded'}; {', '.join(prep)}; "
        f"{f'at most {limit}' if limit else 'all'} samples of `{Path(str(settings.get('data', '?'))).name}`, "
        f"positions {settings.get('positions')} up to {settings.get('max_position')}, each estimated when reached "
        f"by at least {settings.get('min_samples')} samples"
    )


def _mi_disclosure(results: Path) -> list[str]:
    """How the MI was estimated (quoted from each ``mi/<run>/summary.json``), on what, and why an estimate can be
    negative."""
    runs, described, unrecorded = [], {}, []
    for path in sorted((results / "mi").glob("*/summary.json")):
        name = path.parent.name
        labels = parse_run_name(name) or {}
        summary = json.loads(path.read_text())
        seed = f"training seed {labels['seed']}" if "seed" in labels else "training seed unknown"
        runs.append(f"{labels.get('variant', name)} ({seed}): {summary.get('samples')} samples")
        if isinstance(summary.get("settings"), dict):
            described.setdefault(describe_settings(summary["settings"]), []).append(name)
        else:
            unrecorded.append(name)
    if len(described) == 1 and not unrecorded:
        how = f"Estimators and settings (from `mi/*/summary.json`): {next(iter(described))}."
    else:
        how = " ".join(
            f"Settings of {', '.join(names)} (from summary.json): {text}."
            for text, names in described.items()
        )
        if unrecorded:
            how += (
                f" The settings of {', '.join(unrecorded)} were not recorded (summary.json written by an older "
                "`vista mi checkpoint`; rerun the `mi` stage)."
            )
    bands = (
        "the figures' bands are approximate 95% intervals, ± 1.96 standard errors"
        if not unrecorded
        else "the figures' bands are approximate 95% intervals (± 1.96 standard errors), except in figures written "
        "before the settings were recorded, whose bands are ± 1 standard error"
    )
    return [
        f"**MI settings:** {'; '.join(runs) or 'no mi/*/summary.json'}. {how} True MI is never negative, but these "
        "estimates can be: KSG is a difference of digamma averages whose bias and sampling error at these sample "
        'sizes are of the order of the small MI measured here, so an estimate below 0 means "no dependence '
        'detected", not negative information. Judge each position by its interval (`stderr` in '
        f"`mi/*/mi_by_position.csv`; {bands}).",
        "",
    ]
