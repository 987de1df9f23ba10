"""The theory section: the visual information per token of the generative source (``vista theory``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd


def theory_section(results: Path, metrics: dict) -> list[str]:
    path = results / "theory" / "profile.csv"
    if not path.is_file():
        return []
    profile = pd.read_csv(path)
    total_visual = float(profile["I_vision_given_prefix"].sum())
    first, last = profile.iloc[0], profile.iloc[-1]
    share_first = float(first["I_vision_given_prefix"] / first["H_token_given_prefix"])
    share_last = float(last["I_vision_given_prefix"] / last["H_token_given_prefix"])
    summary_path = results / "theory" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    monte_carlo = summary.get("method") == "monte_carlo" or "I_vision_given_prefix_se" in profile
    se_total = float(last["I_vision_cumulative_se"]) if "I_vision_cumulative_se" in profile else math.nan
    se_first = float(first.get("I_vision_given_prefix_se", math.nan))
    se_last = float(last.get("I_vision_given_prefix_se", math.nan))
    if monte_carlo:
        samples = summary.get("n_samples")
        method_text = f"Monte Carlo estimate{f' from {samples} sampled sequences' if samples else ''}"
    else:
        method_text = "exact enumeration"
    params = ", ".join(f"{k} = {summary[k]}" for k in ("K", "M", "T", "alpha", "seed") if k in summary)
    metrics["theory"] = {"T": int(last["t"]) if "t" in profile else len(profile), "sum_I_vision_given_prefix": total_visual,
                         "share_first": share_first, "share_last": share_last, "method": summary.get("method"),
                         "method_text": method_text, "se_total": se_total}  # fmt: skip
    lines = ["## Theory (on the generative source)", ""]
    lines.append(
        f"Method: **{method_text}** (`vista theory`, {params or 'see theory/summary.json'}). "
        + (
            "The exact method enumerates every (last token, posterior) prefix state; at these parameters there "
            "are too many, so `--method auto` fell back to Monte Carlo: every number below is an estimate, "
            "± its standard error, and the figures' bands are ± 2 standard errors."
            if monte_carlo
            else "The numbers below are exact (no sampling error)."
        )
    )
    lines.append("")
    pm = lambda se: f" ± {se:.4f}" if monte_carlo and not math.isnan(se) else ""  # noqa: E731
    lines.append(
        f"Over T = {metrics['theory']['T']} tokens the visual information the cross-entropy objective can use, "
        f"sum_t I(V; Y_t | Y_<t) = I(V; Y_1..T), totals {total_visual:.4f}{pm(se_total)} nats (bounded by "
        f"H(V)). The per-token visual share I(V;Y_t|Y_<t) / H(Y_t|Y_<t) falls from {share_first:.4f} at t = 1 "
        f"(I = {float(first['I_vision_given_prefix']):.4f}{pm(se_first)} nats) to {share_last:.4f} at t = T "
        f"(I = {float(last['I_vision_given_prefix']):.4f}{pm(se_last)} nats)."
    )
    lines.append("")
    for figure in sorted((results / "theory").glob("*.png"))[:3]:
        lines.append(f"![{figure.stem}](theory/{figure.name})")
    lines.append("")
    return lines
