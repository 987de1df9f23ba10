"""Figures of the theory. Each function takes pandas frames and returns a matplotlib Figure.

``plot_theory_*`` take a profile from :func:`analysis.theory.profile.information_profile` (``plot_theory_bridge``
the curves of :func:`analysis.theory.bridge.bridge_curves`); plotting libraries are imported inside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


_THEORY_LABELS = {
    "I_vision": "I(V; Y_t)",
    "I_vision_given_prefix": "I(V; Y_t | Y_<t)",
    "I_text": "I(Y_t; Y_<t)",
    "I_text_given_vision": "I(Y_t; Y_<t | V)",
    "I_joint": "I(Y_t; V, Y_<t)",
}


def _theory_axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.0)) -> tuple[Figure, Axes]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _theory_line(ax: Axes, x, y, se=None, **kwargs) -> None:
    """A line with a +-2 standard-error band when ``se`` is given (Monte Carlo profiles)."""
    (line,) = ax.plot(x, y, **kwargs)
    if se is not None:
        ax.fill_between(x, y - 2 * se, y + 2 * se, color=line.get_color(), alpha=0.2, linewidth=0)


def _method_title(title: str, profile: pd.DataFrame) -> str:
    """``title`` plus how the profile was computed: exact, or Monte Carlo with its +-2 standard-error bands."""
    method = profile.attrs.get("method", "")
    if method == "monte_carlo" or any(c.endswith("_se") for c in profile.columns):
        samples = profile.attrs.get("n_samples")
        return f"{title}\nMonte Carlo{f' ({samples} samples)' if samples else ''}; bands: ± 2 standard errors"
    return f"{title} (exact)" if method == "exact" else title


def plot_theory_profile(profile: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Per-position terms of both chain rules of I(Y_t; V, Y_<t), in nats (bands: +-2 se for Monte Carlo)."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = _theory_axes(ax)
    for col, label in _THEORY_LABELS.items():
        se = profile[f"{col}_se"] if f"{col}_se" in profile else None
        style = "--" if col == "I_joint" else "-"
        _theory_line(ax, profile["t"], profile[col], se, label=label, linestyle=style)
    ax.set(
        xlabel="text position t [tokens]",
        ylabel="information [nats]",
        title=_method_title("Information profile", profile),
    )
    ax.legend(fontsize="small")
    return fig


def plot_theory_alignment_decay(profile: pd.DataFrame, axes: tuple[Axes, Axes] | None = None) -> Figure:
    """Cross-entropy's visual signal per token decays with text length T; VISTA's weighted signal does not.

    Left: nats per text token as a function of T: the image's contribution to cross-entropy
    I(V; Y_1..T) / T, its bound H(V) / T, and VISTA's (1/T) sum_t w_t I(V; Y_t) for t/T and uniform weights.
    Right: the visual share of cross-entropy's whole implicit objective, I(V; Y_1..T) / sum_t I(Y_t; V, Y_<t).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from analysis.theory.quantities import objective_by_length

    sns.set_theme(style="whitegrid", context="notebook")
    by_length = objective_by_length(profile, ("linear", "uniform"))
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), layout="constrained")
    else:
        fig = axes[0].figure
    left, right = axes
    T = by_length["T"]
    left.plot(T, by_length["ce_visual_per_token"], label="cross-entropy: I(V; Y_1..T) / T", linewidth=2.5)
    left.plot(T, by_length["ce_visual_bound"], ":", color="gray", label="bound H(V) / T")
    left.plot(
        T, by_length["vista_signal_linear"], label="VISTA t/T: (1/T) sum (t/T) I(V; Y_t)", linewidth=2.5
    )
    left.plot(T, by_length["vista_signal_uniform"], "--", label="VISTA uniform: (1/T) sum I(V; Y_t)")
    top = max(by_length["ce_visual_per_token"].max(), by_length["vista_signal_uniform"].max())
    left.set(
        xlabel="text length T [tokens]",
        ylabel="visual information per text token [nats]",
        ylim=(0, 1.6 * top),
        title="Visual alignment signal per token",
    )
    left.legend(fontsize="small")
    right.plot(T, by_length["ce_visual_share"], linewidth=2.5, color="C0")
    # a Monte Carlo profile estimates the numerator: near T = 1 the estimate may exceed its bound of 1 by its error
    estimated = profile.attrs.get("method") == "monte_carlo"
    right.set(
        xlabel="text length T [tokens]",
        ylabel="I(V; Y_1..T) / Σ_t I(Y_t; V, Y_<t)\n[fraction of 1"
        + ("; Monte Carlo]" if estimated else "]"),
        ylim=(0, 1.1),
        title="Cumulative visual share of cross-entropy's objective",
    )
    return fig


def plot_theory_vista_signal(
    profile: pd.DataFrame, weighting: str = "linear", ax: Axes | None = None
) -> Figure:
    """Per position t at fixed T: cross-entropy's visual signal I(V;Y_t|Y_<t) vs VISTA's w_t I(V;Y_t)."""
    import seaborn as sns

    from analysis.theory.quantities import vista_weighted_signal

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = _theory_axes(ax)
    signal = vista_weighted_signal(profile, weighting)
    se = profile["I_vision_given_prefix_se"] if "I_vision_given_prefix_se" in profile else None
    _theory_line(ax, signal["t"], signal["ce_visual_signal"], se, label="cross-entropy: I(V; Y_t | Y_<t)")
    ax.plot(signal["t"], signal["vista_signal"], label=f"VISTA ({weighting}): w_t I(V; Y_t)")
    ax.set(
        xlabel="text position t [tokens]",
        ylabel="visual signal [nats]",
        title=_method_title(f"Per-position visual signal (T = {len(signal)})", profile),
    )
    ax.legend(fontsize="small")
    return fig


def plot_theory_lemmas(profile: pd.DataFrame, axes: tuple[Axes, Axes] | None = None) -> Figure:
    """Lemma 3.1 (H(Y_<t) grows at least linearly) and Theorem 3.3 (I(V;Y_t) / H(Y_<t) -> 0)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from analysis.theory.quantities import lemma_checks

    sns.set_theme(style="whitegrid", context="notebook")
    checks = lemma_checks(profile)
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), layout="constrained")
    else:
        fig = axes[0].figure
    left, right = axes
    left.plot(checks["t"], checks["H_prefix"], label="H(Y_<t)", linewidth=2.5)
    left.plot(checks["t"], checks["H_prefix_given_vision"], "--", label="H(Y_<t | V)")
    left.plot(
        checks["t"], checks["H_prefix_linear_bound"], ":", color="gray", label="(t-1) min_s H(Y_s | V, Y_<s)"
    )
    left.axhline(
        profile["H_vision"].iloc[0], color="C3", linestyle="-.", label="H(V): bound on all visual terms"
    )
    left.set(
        xlabel="text position t [tokens]",
        ylabel="entropy [nats]",
        title="Lemma 3.1: prefix entropy grows linearly",
    )
    left.legend(fontsize="small")
    later = checks[checks["t"] > 1]
    right.plot(later["t"], later["ratio"], label="I(V; Y_t) / H(Y_<t)", linewidth=2.5)
    right.plot(later["t"], later["ratio_bound"], ":", color="gray", label="H(V) / ((t-1) min H(Y_s|V,Y_<s))")
    right.set(
        xlabel="text position t [tokens]",
        ylabel="ratio [unitless, log scale]",
        yscale="log",
        title="Theorem 3.3: the visual ratio vanishes",
    )
    right.legend(fontsize="small")
    return fig


def plot_theory_bridge(curves: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Trained models' measured per-position visual contribution vs the exact I(V; Y_t | Y_<t).

    Args:
        curves: long frame with columns ``t``, ``nats``, ``curve`` (as :func:`analysis.theory.bridge.bridge_curves`
            returns); the curve named "exact I(V;Y_t|Y_<t)" is drawn as a thick reference line.
    """
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = _theory_axes(ax)
    exact = curves["curve"].str.startswith("exact")
    ax.plot(
        curves.loc[exact, "t"],
        curves.loc[exact, "nats"],
        color="black",
        linewidth=3,
        alpha=0.5,
        label=curves.loc[exact, "curve"].iloc[0] if exact.any() else None,
    )
    sns.lineplot(data=curves[~exact], x="t", y="nats", hue="curve", style="curve", markers=True, ax=ax)
    ax.set(
        xlabel="text position t [tokens]",
        ylabel="visual contribution [nats]",
        title="Measured visual contribution vs exact",
    )
    ax.legend(fontsize="small")
    return fig
