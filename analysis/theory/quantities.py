"""The paper's quantities, derived from an information profile (all pandas in, pandas out; nats).

The profile comes from :func:`analysis.theory.profile.information_profile`; each function here reads its columns
(:data:`~analysis.theory.profile.PROFILE_COLUMNS`) and returns one tidy frame per position or text length.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from analysis.theory.profile import PROFILE_COLUMNS
from analysis.theory.source import check_length

Weighting = Literal["linear", "position", "uniform"]

WEIGHTINGS = ("linear", "position", "uniform")


def _ratio(num: pd.Series | np.ndarray, den: pd.Series | np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (a share of nothing is undefined, not zero)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _require(profile: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in profile.columns]
    if missing:
        raise ValueError(f"profile lacks columns {missing}; build it with information_profile()")


def chain_rule_residuals(profile: pd.DataFrame) -> pd.DataFrame:
    """Residuals of the identities, per position (all ~0 up to rounding for an exact profile).

    Columns:
        ``visual_first`` = I(Y_t;V,Y_<t) - I(V;Y_t) - I(Y_t;Y_<t|V);
        ``text_first`` = I(Y_t;V,Y_<t) - I(Y_t;Y_<t) - I(V;Y_t|Y_<t);
        ``entropy_gap`` = H(Y_t|Y_<t) - H(Y_t|V,Y_<t) - I(V;Y_t|Y_<t);
        ``token_chain`` = sum_{s<=t} I(V;Y_s|Y_<s) - I(V;Y_1..t);
        ``sum_bound_slack`` = H(V) - I(V;Y_1..t) (must be >= 0: the bound, not a residual).
    In the exact profile each term comes from a different computation (KL forms, entropy recursions, posterior
    entropies), so these are genuine checks; in a Monte Carlo profile ``text_first`` and ``entropy_gap`` are
    zero by construction and ``token_chain`` is a difference of two estimates.
    """
    _require(profile, *PROFILE_COLUMNS)
    p = profile
    return pd.DataFrame(
        {
            "t": p["t"],
            "visual_first": p["I_joint"] - p["I_vision"] - p["I_text_given_vision"],
            "text_first": p["I_joint"] - p["I_text"] - p["I_vision_given_prefix"],
            "entropy_gap": p["H_token_given_prefix"]
            - p["H_token_given_vision_prefix"]
            - p["I_vision_given_prefix"],
            "token_chain": p["I_vision_given_prefix"].cumsum() - p["I_vision_cumulative"],
            "sum_bound_slack": p["H_vision"] - p["I_vision_cumulative"],
        }
    )


def alignment_shares(profile: pd.DataFrame) -> pd.DataFrame:
    """How much of cross-entropy's implicit objective ``I(Y_t; V, Y_<t)`` is visual, per token and cumulatively.

    Columns (shares are NaN where the objective is 0):
        ``t``;
        ``visual_share_conditional`` = I(V;Y_t|Y_<t) / I(Y_t;V,Y_<t): the image's share at position t once the
            prefix is known (what cross-entropy at t gains from the image; what image-ablation probes measure);
        ``visual_share_marginal`` = I(V;Y_t) / I(Y_t;V,Y_<t): the visual term of the visual-first chain rule;
        ``cumulative_visual_share_conditional`` = I(V;Y_1..t) / sum_{s<=t} I(Y_s;V,Y_<s)
            (= sum_{s<=t} I(V;Y_s|Y_<s) / sum_{s<=t} I(Y_s;V,Y_<s) by the chain rule): the visual share of a length-t text's whole objective; its
            numerator is bounded by H(V), so it decays at least like 1/t when the per-token objective stays
            bounded away from 0;
        ``cumulative_visual_share_marginal``: the same with I(V;Y_s) (does not decay for a stationary source);
        ``visual_to_prefix_entropy`` = I(V;Y_t) / H(Y_<t): Theorem 3.3's ratio (NaN at t = 1).
    """
    _require(profile, *PROFILE_COLUMNS)
    p = profile
    return pd.DataFrame(
        {
            "t": p["t"],
            "visual_share_conditional": _ratio(p["I_vision_given_prefix"], p["I_joint"]),
            "visual_share_marginal": _ratio(p["I_vision"], p["I_joint"]),
            "cumulative_visual_share_conditional": _ratio(p["I_vision_cumulative"], p["I_joint"].cumsum()),
            "cumulative_visual_share_marginal": _ratio(p["I_vision"].cumsum(), p["I_joint"].cumsum()),
            "visual_to_prefix_entropy": _ratio(p["I_vision"], p["H_prefix"]),
        }
    )


def vista_weights(T: int, weighting: Weighting = "linear") -> np.ndarray:
    """(T,) VISTA's per-position weights: ``t/T`` ("linear", the paper), ``t`` ("position"), ``1`` ("uniform")."""
    check_length(T)
    t = np.arange(1, T + 1, dtype=np.float64)
    if weighting == "linear":
        return t / T
    if weighting == "position":
        return t
    if weighting == "uniform":
        return np.ones(T)
    raise ValueError(f"weighting={weighting!r}; expected one of {WEIGHTINGS}")


def vista_weighted_signal(
    profile: pd.DataFrame, weighting: Weighting = "linear", T: int | None = None
) -> pd.DataFrame:
    """Per-position alignment signal of VISTA's explicit term vs the visual signal inside cross-entropy.

    VISTA maximises (a surrogate of) ``(1/T) sum_t w_t I(V; Y_t)``: every position is tied to the image directly,
    with weights growing in t. Cross-entropy's visual signal at position t is ``I(V; Y_t | Y_<t)``.

    Args:
        profile: from :func:`information_profile` (its first ``T`` rows are used).
        weighting: see :func:`vista_weights`.
        T: text length the weights are normalised to (default: the profile's length).

    Returns:
        DataFrame with ``t``, ``weight`` (w_t), ``vista_signal`` = w_t I(V;Y_t), ``ce_visual_signal`` =
        I(V;Y_t|Y_<t), ``vista_to_ce`` = their ratio (NaN where CE's signal is 0).
    """
    _require(profile, "t", "I_vision", "I_vision_given_prefix")
    T = len(profile) if T is None else T
    if T > len(profile):
        raise ValueError(f"vista_weighted_signal: T={T} exceeds the profile's {len(profile)} positions")
    p = profile.iloc[:T]
    w = vista_weights(T, weighting)
    signal = w * p["I_vision"].to_numpy()
    ce = p["I_vision_given_prefix"].to_numpy()
    return pd.DataFrame(
        {
            "t": p["t"].to_numpy(),
            "weight": w,
            "vista_signal": signal,
            "ce_visual_signal": ce,
            "vista_to_ce": _ratio(signal, ce),
        }
    )


def objective_by_length(profile: pd.DataFrame, weightings: tuple[str, ...] = WEIGHTINGS) -> pd.DataFrame:
    """Per text length T = 1..len(profile): cross-entropy's visual signal vs VISTA's, per token of text.

    Columns:
        ``T``;
        ``ce_visual_per_token`` = I(V;Y_1..T) / T = (1/T) sum_t I(V;Y_t|Y_<t) (the profile's
            ``I_vision_cumulative``, divided by T): the image's contribution to the
            per-token cross-entropy objective; ``ce_visual_bound`` = H(V) / T bounds it (Lemma 3.2 with the sum
            bound), so it vanishes as T grows (Theorem 3.3);
        ``ce_visual_share`` = I(V;Y_1..T) / sum_t I(Y_t;V,Y_<t);
        ``vista_signal_<weighting>`` = (1/T) sum_t w_t^(T) I(V;Y_t) for each weighting: does not vanish (the
            linear weighting tends to half the stationary I(V;Y_t); "position" grows like T).
    """
    _require(profile, *PROFILE_COLUMNS)
    T = np.arange(1, len(profile) + 1, dtype=np.float64)
    # I(V; Y_1..T) = sum_t I(V;Y_t|Y_<t) (equal in the exact profile); in a Monte Carlo profile the direct
    # estimate H(V) - E H(V|Y_1..T) is the lower-variance one and respects the bound H(V) by construction.
    cum_visual = profile["I_vision_cumulative"].to_numpy()
    out = {
        "T": T.astype(np.int64),
        "ce_visual_per_token": cum_visual / T,
        "ce_visual_bound": profile["H_vision"].to_numpy() / T,
        "ce_visual_share": _ratio(cum_visual, profile["I_joint"].cumsum()),
    }
    i_vision = profile["I_vision"].to_numpy()
    t = T
    cum_i, cum_ti = np.cumsum(i_vision), np.cumsum(t * i_vision)
    for weighting in weightings:
        if weighting == "linear":
            out["vista_signal_linear"] = cum_ti / T**2
        elif weighting == "position":
            out["vista_signal_position"] = cum_ti / T
        elif weighting == "uniform":
            out["vista_signal_uniform"] = cum_i / T
        else:
            raise ValueError(f"weighting={weighting!r}; expected one of {WEIGHTINGS}")
    return pd.DataFrame(out)


def lemma_checks(profile: pd.DataFrame) -> pd.DataFrame:
    """The three statements of the theory, evaluated per position t (nats).

    Columns:
        ``t``; ``H_prefix`` = H(Y_<t);
        ``H_prefix_given_vision`` = H(Y_<t | V) = sum_{s<t} H(Y_s|V,Y_<s) <= H(Y_<t);
        ``H_prefix_linear_bound`` = (t - 1) * min_s H(Y_s|V,Y_<s) <= H(Y_<t|V): Lemma 3.1 (linear growth);
        ``visual_term`` = I(V;Y_t); ``visual_bound`` = min(H(V), H(Y_t)) >= it: Lemma 3.2;
        ``ratio`` = I(V;Y_t) / H(Y_<t) and ``ratio_bound`` = H(V) / H_prefix_linear_bound: Theorem 3.3
        (both -> 0; NaN at t = 1 or where the bound is 0).
    """
    _require(profile, *PROFILE_COLUMNS)
    h_cond = profile["H_token_given_vision_prefix"].to_numpy()
    t = profile["t"].to_numpy()
    given_vision = np.concatenate([[0.0], np.cumsum(h_cond)[:-1]])
    linear = (t - 1) * h_cond.min()
    return pd.DataFrame(
        {
            "t": t,
            "H_prefix": profile["H_prefix"].to_numpy(),
            "H_prefix_given_vision": given_vision,
            "H_prefix_linear_bound": linear,
            "visual_term": profile["I_vision"].to_numpy(),
            "visual_bound": np.minimum(profile["H_vision"], profile["H_token"]).to_numpy(),
            "ratio": _ratio(profile["I_vision"], profile["H_prefix"]),
            "ratio_bound": _ratio(profile["H_vision"], linear),
        }
    )
