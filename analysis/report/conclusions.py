"""What the report's numbers support: one sentence per comparison, read from the collected metrics."""

from __future__ import annotations

import math

from analysis.markdown import format_mean_sd


def length_trend(by_length: dict[str, float]) -> str:
    """One honest sentence on the image's contribution by text-length bucket (buckets in increasing length).

    "Falls" is claimed only when every bucket is at or below the one before; otherwise the sentence names the peak.
    """
    names, values = list(by_length), list(by_length.values())
    caveat = (
        "(in held-out data length goes with record type; the world_len_* benchmarks hold the question fixed)"
    )
    span = f"from {values[0]:.3f} nats ({names[0]} tokens) to {values[-1]:.3f} ({names[-1]} tokens)"
    if all(b <= a for a, b in zip(values, values[1:])) and values[-1] < values[0]:
        return f"the image's contribution to image words falls monotonically {span}, as the paper's decay predicts {caveat}."
    peak = max(range(len(values)), key=values.__getitem__)
    if values[-1] < values[0]:
        return (
            f"the image's contribution to image words goes {span} but not monotonically: it peaks at "
            f"{values[peak]:.3f} ({names[peak]} tokens), so length alone does not order it {caveat}."
        )
    return f"the image's contribution to image words does not fall with text length ({span}) {caveat}."


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
                f"paired t-test p = {overall['p']:.3f} (n = {overall['n']} seeds), 95% interval of the mean "
                f"difference [{overall['ci_low']:+.2f}, {overall['ci_high']:+.2f}] points: "
                + ("different from zero at the 5% level" if overall["significant"]
                   else "not distinguishable from seed-to-seed variation at the 5% level")
            )  # fmt: skip
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
