"""analysis.theory against ground truth: brute-force enumeration of every (V, Y_1..T) on small sources."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.special import entr

from analysis.theory import (
    PROFILE_COLUMNS,
    VisualMarkovSource,
    alignment_shares,
    chain_rule_residuals,
    information_profile,
    lemma_checks,
    objective_by_length,
    vista_weighted_signal,
    vista_weights,
)


def _joint_table(source: VisualMarkovSource, T: int) -> np.ndarray:
    """p(v, y_1, .., y_T) as a (K, M, ..., M) array, by multiplying out every sequence (no recursions)."""
    alphas = source.alphas(T)
    joint = np.zeros((source.K,) + (source.M,) * T)
    for seq in itertools.product(range(source.M), repeat=T):
        for v in range(source.K):
            p, prev = source.prior[v], None
            for t, y in enumerate(seq):
                text = source.initial if prev is None else source.transition[prev]
                p *= (1 - alphas[t]) * text[y] + alphas[t] * source.emission[v, y]
                prev = y
            joint[(v, *seq)] = p
    return joint


def brute_force_profile(source: VisualMarkovSource, T: int) -> pd.DataFrame:
    """Every column by definition, from entropies of marginals of the full joint table (axis 0 = V, t = Y_t)."""
    joint = _joint_table(source, T)

    def h(*axes: int) -> float:
        if not axes:
            return 0.0
        drop = tuple(a for a in range(T + 1) if a not in axes)
        return float(entr(joint.sum(axis=drop)).sum())

    rows = []
    for t in range(1, T + 1):
        pre = tuple(range(1, t))
        rows.append(
            {
                "H_vision": h(0),
                "H_token": h(t),
                "H_token_given_vision": h(0, t) - h(0),
                "H_token_given_prefix": h(*pre, t) - h(*pre),
                "H_token_given_vision_prefix": h(0, *pre, t) - h(0, *pre),
                "H_prefix": h(*pre),
                "I_vision": h(0) + h(t) - h(0, t),
                "I_vision_given_prefix": h(0, *pre) + h(*pre, t) - h(*pre) - h(0, *pre, t),
                "I_text": h(t) + h(*pre) - h(*pre, t),
                "I_text_given_vision": h(0, t) + h(0, *pre) - h(0) - h(0, *pre, t),
                "I_joint": h(t) + h(0, *pre) - h(0, *pre, t),
                "I_vision_cumulative": h(0) + h(*range(1, t + 1)) - h(*range(0, t + 1)),
            }
        )
    return pd.DataFrame(rows)


SMALL = [
    # K, M, T, alpha, random prior
    (3, 3, 5, 0.4, True),
    (2, 4, 4, np.array([0.1, 0.9, 0.5, 0.3]), True),
    (4, 2, 7, 0.7, False),
    (2, 3, 5, 1.0, True),
]


@pytest.mark.parametrize("K,M,T,alpha,random_prior", SMALL)
def test_exact_equals_brute_force(K, M, T, alpha, random_prior):
    source = VisualMarkovSource.random(K, M, alpha, seed=K * 10 + M, uniform_prior=not random_prior)
    exact = information_profile(source, T, "exact")
    truth = brute_force_profile(source, T)
    assert list(exact.columns) == list(PROFILE_COLUMNS)
    for col in truth.columns:
        np.testing.assert_allclose(
            exact[col].to_numpy(), truth[col].to_numpy(), rtol=0, atol=1e-10, err_msg=col
        )
    assert exact["I_vision_given_prefix"].max() > 1e-3  # the source is not degenerate


def test_exact_handles_zero_probabilities():
    """Deterministic text transitions and sparse emissions: zero-probability branches must not produce NaN."""
    source = VisualMarkovSource(
        prior=[0.5, 0.25, 0.25],
        initial=[1.0, 0.0, 0.0],
        transition=[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.5]],
        emission=[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]],
        alpha=0.5,
    )
    exact = information_profile(source, 5)
    truth = brute_force_profile(source, 5)
    assert not exact.isna().any().any()
    for col in truth.columns:
        np.testing.assert_allclose(exact[col], truth[col], rtol=0, atol=1e-10, err_msg=col)


def test_identities_hold_for_exact_profile_at_longer_T():
    source = VisualMarkovSource.random(2, 2, 0.3, seed=5)
    profile = information_profile(source, 48)
    residuals = chain_rule_residuals(profile)
    for col in ("visual_first", "text_first", "entropy_gap", "token_chain"):
        assert residuals[col].abs().max() < 1e-10, col
    assert (residuals["sum_bound_slack"] >= -1e-12).all()
    assert profile["I_vision_given_prefix"].sum() <= profile["H_vision"].iloc[0] + 1e-12
    # H(Y_<t) is the chain-rule sum; conditioning reduces entropy
    assert (profile["H_token_given_prefix"] <= profile["H_token"] + 1e-12).all()
    assert (profile["H_token_given_vision_prefix"] <= profile["H_token_given_prefix"] + 1e-12).all()


def test_monte_carlo_agrees_with_exact_within_its_standard_errors():
    source = VisualMarkovSource.random(3, 3, 0.4, seed=2)
    T = 10
    exact = information_profile(source, T, "exact")
    mc = information_profile(source, T, "monte_carlo", n_samples=4000, seed=3)
    for col in ("H_token_given_prefix", "I_vision_given_prefix", "H_prefix", "I_vision_cumulative", "I_text"):
        se = mc[f"{col}_se"].to_numpy()
        err = np.abs(mc[col].to_numpy() - exact[col].to_numpy())
        assert np.all(err <= 4.5 * se + 1e-12), (col, err.max(), se.max())
        assert 0 < se[1:].max() < 0.02  # the errors are reported and informative
    # what the recursions give exactly stays exact in both methods
    for col in ("H_token", "H_token_given_vision", "I_vision", "H_token_given_vision_prefix", "I_joint"):
        np.testing.assert_allclose(mc[col], exact[col], rtol=0, atol=1e-12)
        assert (mc[f"{col}_se"] == 0).all()
    residuals = chain_rule_residuals(mc)
    # two estimates of I(V; Y_1..t) from the same samples; the std of a sum is at most the sum of the stds
    token_chain_se = np.cumsum(mc["I_vision_given_prefix_se"]) + mc["I_vision_cumulative_se"]
    assert np.all(residuals["token_chain"].abs() <= 4.5 * token_chain_se)


def test_monte_carlo_with_per_position_alpha():
    alpha = np.array([0.9, 0.1, 0.5, 0.0, 0.7, 0.3])
    source = VisualMarkovSource.random(3, 3, alpha, seed=8)
    exact = information_profile(source, 6)
    mc = information_profile(source, 6, "monte_carlo", n_samples=3000, seed=4)
    for col in ("I_vision_given_prefix", "H_token_given_prefix", "I_vision_cumulative"):
        err = np.abs(mc[col] - exact[col])
        assert np.all(err <= 4.5 * mc[f"{col}_se"] + 1e-12), col
    np.testing.assert_allclose(mc["I_vision_given_prefix"].iloc[3], 0.0, atol=1e-12)


def test_monte_carlo_standard_errors_are_calibrated():
    """Across independent seeds, z-scores of the estimate against exact have roughly unit spread."""
    source = VisualMarkovSource.random(2, 3, 0.5, seed=7)
    exact = information_profile(source, 6)
    z = []
    for seed in range(20):
        mc = information_profile(source, 6, "monte_carlo", n_samples=300, seed=seed)
        z.append(
            ((mc["I_vision_given_prefix"] - exact["I_vision_given_prefix"]) / mc["I_vision_given_prefix_se"])[
                1:
            ]
        )
    z = np.concatenate(z)
    assert abs(z.mean()) < 0.35 and 0.7 < z.std() < 1.35


def test_alpha_zero_gives_zero_visual_information():
    source = VisualMarkovSource.random(4, 3, 0.0, seed=1)
    for method in ("exact", "monte_carlo"):
        profile = information_profile(source, 6, method, n_samples=200)
        for col in ("I_vision", "I_vision_given_prefix", "I_vision_cumulative"):
            assert profile[col].abs().max() < 1e-12, (method, col)
    per_position = VisualMarkovSource.random(3, 3, np.array([0.5, 0.0, 0.0, 0.5]), seed=1)
    profile = information_profile(per_position, 4)
    # alpha_t = 0 removes the image from position t given the prefix (I(V;Y_t) itself stays > 0 through Y_t-1)
    assert profile["I_vision_given_prefix"].iloc[1:3].abs().max() < 1e-12
    assert profile["I_vision_given_prefix"].iloc[[0, 3]].min() > 1e-3


def test_decay_and_non_decay_story():
    """The visual share of cross-entropy's objective decays with T; VISTA's linear-weighted signal does not."""
    source = VisualMarkovSource.random(2, 2, 0.3, seed=5)
    profile = information_profile(source, 64)
    by_length = objective_by_length(profile)
    assert (by_length["ce_visual_per_token"] <= by_length["ce_visual_bound"] + 1e-12).all()
    assert by_length["ce_visual_per_token"].iloc[-1] < 0.3 * by_length["ce_visual_per_token"].iloc[7]
    assert by_length["ce_visual_share"].iloc[-1] < by_length["ce_visual_share"].iloc[7]
    vista = by_length["vista_signal_linear"]
    assert vista.iloc[-1] > 0.9 * vista.iloc[15]
    checks = lemma_checks(profile)
    assert (checks["H_prefix_linear_bound"] <= checks["H_prefix"] + 1e-12).all()
    assert (checks["visual_term"] <= checks["visual_bound"] + 1e-12).all()
    assert checks["ratio"].iloc[-1] < checks["ratio"].iloc[4] / 8
    shares = alignment_shares(profile)
    assert shares["visual_share_conditional"].iloc[-1] < shares["visual_share_conditional"].iloc[1]
    signal = vista_weighted_signal(profile, "linear")
    np.testing.assert_allclose(signal["weight"], np.arange(1, 65) / 64)
    assert signal["vista_signal"].iloc[-1] > signal["ce_visual_signal"].iloc[-1]


def test_vista_weights():
    np.testing.assert_allclose(vista_weights(4, "linear"), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(vista_weights(3, "position"), [1, 2, 3])
    np.testing.assert_allclose(vista_weights(2, "uniform"), [1, 1])
    with pytest.raises(ValueError, match="weighting"):
        vista_weights(3, "quadratic")


def test_sampler_matches_source():
    source = VisualMarkovSource.random(2, 3, 0.4, seed=4)
    v, y = source.sample(100_000, 2, seed=0)
    mask = v == 1
    counts = np.zeros((3, 3))
    np.add.at(counts, (y[mask, 0], y[mask, 1]), 1)
    first = 0.6 * source.initial + 0.4 * source.emission[1]
    step = 0.6 * source.transition + 0.4 * source.emission[1][None, :]
    np.testing.assert_allclose(counts / counts.sum(), first[:, None] * step, atol=0.01)
    # predictive(): forward filtering equals the brute-force conditional p(y_2 | y_1)
    joint = _joint_table(source, 2).sum(axis=0)
    pred = source.predictive(np.array([[2, 0]]))[0, 1]
    np.testing.assert_allclose(pred, joint[2] / joint[2].sum(), atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(prior=[0.5, 0.6]), "prior sums to 1.1"),
        (dict(prior=[1.2, -0.2]), "prior has a negative entry"),
        (dict(transition=[[0.5, 0.5], [0.2, 0.7]]), "transition row 1 sums to 0.9"),
        (dict(emission=[[0.5, 0.5]]), r"emission must be \(K, M\)"),
        (dict(transition=[[1.0, 0.0, 0.0]] * 3), r"transition must be \(M, M\)"),
        (dict(initial=[np.nan, 1.0]), "initial contains NaN"),
        (dict(alpha=1.5), r"alpha must lie in \[0, 1\]"),
        (dict(alpha=[[0.1]]), "alpha must be a scalar or a non-empty 1-D array"),
    ],
)
def test_invalid_parameters_raise_clear_errors(kwargs, match):
    base = dict(
        prior=[0.5, 0.5],
        initial=[0.5, 0.5],
        transition=[[0.9, 0.1], [0.1, 0.9]],
        emission=[[0.8, 0.2], [0.3, 0.7]],
        alpha=0.5,
    )
    with pytest.raises(ValueError, match=match):
        VisualMarkovSource(**{**base, **kwargs})


def test_invalid_profile_requests_raise_clear_errors():
    source = VisualMarkovSource.random(2, 2, np.array([0.5, 0.5]), seed=0)
    with pytest.raises(ValueError, match="alpha has 2 positions but T=3"):
        information_profile(source, 3)
    with pytest.raises(ValueError, match="T must be a positive integer"):
        information_profile(source, 0)
    with pytest.raises(ValueError, match="method="):
        information_profile(source, 2, "enumerate")
    big = VisualMarkovSource.random(3, 4, 0.3, seed=0)
    with pytest.raises(ValueError, match="exceed max_states=50.*monte_carlo"):
        information_profile(big, 8, max_states=50)
    with pytest.raises(ValueError, match="lacks columns"):
        alignment_shares(pd.DataFrame({"t": [1]}))


def test_cli_writes_profile_and_rejects_bad_parameters(tmp_path):
    import json

    from vista.cli import main

    out = tmp_path / "theory"
    assert (
        main(
            [
                "theory",
                "--K",
                "2",
                "--M",
                "2",
                "--T",
                "12",
                "--alpha",
                "0.5",
                "--out",
                str(out),
                "--no-figures",
            ]
        )
        == 0
    )
    profile = pd.read_csv(out / "profile.csv")
    assert list(profile.columns) == list(PROFILE_COLUMNS) and len(profile) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "exact" and summary["max_abs_chain_rule_residual"] < 1e-10
    assert summary["I_vision_all_text"] <= summary["H_vision"]
    assert main(["theory", "--alpha", "1.5", "--T", "4", "--out", str(out)]) == 2
