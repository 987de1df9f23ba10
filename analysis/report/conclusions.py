"""What the report's numbers support: one sentence per comparison, read from the collected metrics."""

from __future__ import annotations

import math

from analysis.markdown import format_mean_sd
from analysis.report.stats import ALPHA, p_digits


def _distinct(a: float, b: float, decimals: int = 3) -> tuple[str, str]:
    """``a`` and ``b`` with ``decimals`` decimals, more if they would print equal although they differ."""
    for more in range(0, 6):
        x, y = f"{a:.{decimals + more}f}", f"{b:.{decimals + more}f}"
        if x != y or a == b:
            break
    return x, y


def _rises(names: list[str], values: list[float]) -> list[str]:
    """One phrase per run of consecutive rises: "rises from 0.315 (139-231 tokens) to 0.371 (232-362 tokens)";
    "rises again" when the values fell before the run, "to its peak" when the run ends at the maximum."""
    peak = max(range(len(values)), key=values.__getitem__)
    phrases, i = [], 1
    while i < len(values):
        if values[i] <= values[i - 1]:
            i += 1
            continue
        start = i - 1
        while i < len(values) and values[i] > values[i - 1]:
            i += 1
        end = i - 1
        low, high = _distinct(values[start], values[end])
        verb = "rises" if start == 0 else "rises again"
        top = "its peak " if end == peak else ""
        phrases.append(f"{verb} from {low} ({names[start]} tokens) to {top}{high} ({names[end]} tokens)")
    return phrases


def length_trend(by_length: dict[str, float]) -> str:
    """One honest sentence on the image's contribution by text-length bucket (buckets in increasing length).

    "Falls" is claimed only when every bucket is at or below the one before; otherwise the sentence names every
    stretch where it rises (and the peak, when that is not the first bucket).
    """
    names, values = list(by_length), list(by_length.values())
    caveat = (
        "(in held-out data length goes with record type; the world_len_* benchmarks hold the question fixed)"
    )
    span = f"from {values[0]:.3f} nats ({names[0]} tokens) to {values[-1]:.3f} ({names[-1]} tokens)"
    if all(b <= a for a, b in zip(values, values[1:])) and values[-1] < values[0]:
        return f"the image's contribution to image words falls monotonically {span}, as the paper's decay predicts {caveat}."
    if values[-1] < values[0]:
        rises = _rises(names, values)
        listed = rises[0] if len(rises) == 1 else ", ".join(rises[:-1]) + " and " + rises[-1]
        return (
            f"the image's contribution to image words goes {span} but not monotonically: it {listed}, so length "
            f"alone does not order it {caveat}."
        )
    return f"the image's contribution to image words does not fall with text length ({span}) {caveat}."


def _p_equals(p: float) -> str:
    """``p = 0.128``, ``p = 0.04998`` (never "0.050" for a p below 0.05: :func:`p_digits`) or ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p_digits(p, ALPHA, 3)}"


def conclusions(metrics: dict) -> list[str]:
    lines = ["## What these numbers support, and what they do not", ""]
    diffs = metrics.get("paired_differences", {})
    for variant, per_bench in diffs.items():
        overall = per_bench.get("mean of benchmarks", {})
        if not overall.get("n"):
            continue
        direction = "above" if overall["mean"] > 0 else "below" if overall["mean"] < 0 else "equal to"
        if overall["n"] > 1 and not math.isnan(overall.get("p", math.nan)):
            verdict = (
                f"paired t-test {_p_equals(overall['p'])} (n = {overall['n']} seeds), 95% "
                f"interval of the mean difference [{overall['ci_low']:+.2f}, {overall['ci_high']:+.2f}] points: "
                + ("different from zero at the 5% level" if overall["significant"]
                   else "not distinguishable from seed-to-seed variation at the 5% level")
            )  # fmt: skip
        elif overall.get("zero_variance"):
            verdict = (
                f"the same difference in every one of the {overall['n']} paired seeds (sd = 0), so the paired "
                "t-test is undefined: a constant difference, not an absent one, with no seed-to-seed variation to "
                "test it against"
            )
        else:
            verdict = "no test possible"
        lines.append(
            f"- {variant} vs baseline, mean over the local benchmarks: {overall['mean']:+.2f} points "
            f"({direction} the baseline; sd {format_mean_sd(overall.get('sd', math.nan))} over {overall['n']} paired seeds); "
            f"{verdict}."
        )
        if overall["n"] < 3:
            lines.append(
                f"  With {overall['n']} seed(s) no claim about the sign of this difference is warranted."
            )
    for model, parts in metrics.get("probes", {}).items():
        image, other = parts.get("ablation/blank/image word"), parts.get("ablation/blank/other word")
        if image and other and image["n"] and other["n"]:
            relation = "above" if image["mean"] > other["mean"] else "not above"
            lines.append(
                f"- {model}: the image raises the log-probability of image words by {image['mean']:.3f} nats on "
                f"average vs {other['mean']:.3f} for other answer words ({relation}; blank-image ablation)."
            )
    for model, by_length in metrics.get("probes_by_length", {}).items():
        lines.append(f"- {model}: {length_trend(by_length)}")
    theory = metrics.get("theory")
    if theory:
        lines.append(
            f"- The theory ({theory['method_text']}) reproduces the paper's mechanism on its generative source: the "
            f"visual share per token drops from {theory['share_first']:.3f} to {theory['share_last']:.3f} along "
            "the text."
        )
    lines += [
        "- Scale: these are tiny models on a synthetic world trained for minutes on a CPU. They test that the "
        "pipeline, the loss and the analyses behave as specified; they do not estimate the effect of VISTA on "
        "LLaVA-1.5-7B or TinyLLaVA-3B, whose benchmark numbers come only from GPU runs (see the tables section of "
        "the README).",
        "",
    ]
    return lines
