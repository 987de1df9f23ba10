"""analysis.theory.bridge: measured per-position visual contribution of trained models vs the exact curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from analysis.theory import VisualMarkovSource, information_profile
from analysis.theory.bridge import BridgeConfig, bridge_curves, measure_visual_contribution, run_bridge


class _OracleModel(nn.Module):
    """Returns the source's own next-token log-probabilities: a Bayes-optimal image model."""

    def __init__(self, source: VisualMarkovSource) -> None:
        super().__init__()
        self.source = source

    def forward(self, image, tokens):
        y = tokens.numpy()
        probs = self.source.predictive(y, image.numpy())
        return torch.from_numpy(np.log(probs)), None, None


def test_measurement_recovers_exact_information_for_the_bayes_model():
    """Without training: the swap divergence of the true model equals I(V;Y_t|Y_<t) up to sampling error."""
    source = VisualMarkovSource.random(3, 4, 0.8, seed=0, image_concentration=0.2)
    exact = information_profile(source, 6)
    v, y = source.sample(3000, 6, seed=1)
    measured = measure_visual_contribution(_OracleModel(source), source, v, y, v, image_is_true=True)
    np.testing.assert_allclose(measured["swap"], exact["I_vision_given_prefix"], atol=0.01)
    np.testing.assert_allclose(measured["ce"], exact["H_token_given_vision_prefix"], atol=0.02)
    # shown an image independent of the text, the same oracle is far from the prefix-only entropy: a
    # measurement that ignored which image was shown would not see this
    shuffled = np.random.default_rng(2).integers(0, 3, size=len(v))
    wrong = measure_visual_contribution(_OracleModel(source), source, v, y, shuffled, image_is_true=False)
    assert np.all(wrong["ce"] > exact["H_token_given_prefix"] + 0.05)


@pytest.fixture(scope="module")
def bridge():
    config = BridgeConfig(steps=150, batch_size=128, hidden=32, layers=1, eval_samples=2000)
    return run_bridge(config)


def test_image_model_tracks_the_exact_curve(bridge):
    pp = bridge.per_position
    exact = pp["I_vision_given_prefix"].to_numpy()
    assert exact[0] > 0.2 and exact[-1] < 0.05  # the source has a clearly decaying curve to track
    swap = pp["swap_image_ce"].to_numpy()
    assert np.max(np.abs(swap - exact)) < 0.04
    assert swap[0] > 4 * swap[-1]  # the measured contribution decays like the exact one
    assert np.max(np.abs(pp["ce_gap_image_ce"] - pp["I_vision_given_prefix"])) < 0.05
    assert np.max(pp["ce_image_ce"] - pp["H_token_given_vision_prefix"]) < 0.05


def test_shuffled_image_model_has_no_visual_contribution(bridge):
    pp = bridge.per_position
    assert pp["swap_shuffled_ce"].abs().max() < 0.01
    assert np.max(pp["ce_shuffled_ce"] - pp["H_token_given_prefix"]) < 0.05


def test_vista_variant_optimises_its_term(bridge):
    row = bridge.summary.set_index("variant").loc["image_ce_vista"]
    assert np.isfinite(row.vista_first) and row.vista_final < 0.5 * row.vista_first
    assert row.ce_excess_max < 0.1
    curves = bridge_curves(bridge)
    assert set(curves.columns) == {"t", "curve", "nats"} and curves["nats"].notna().all()
