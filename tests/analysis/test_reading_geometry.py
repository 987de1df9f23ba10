"""analysis.reading_geometry: the variance share and the LM-head cosine on planted data, and its CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.reading_geometry import first_patch_of_cell, main, variance_share, word_cosine


def test_variance_share_matches_the_planted_ratio():
    # two balanced classes at +-a on dimension 0, unit noise on D dimensions: share = a^2 / (a^2 + D)
    rng = np.random.default_rng(0)
    n, d, a = 20000, 4, 2.0
    labels = np.array(["x", "y"] * (n // 2))
    features = rng.normal(size=(n, d))
    features[:, 0] += np.where(labels == "x", a, -a)
    assert variance_share(features, labels) == pytest.approx(a**2 / (a**2 + d), abs=0.01)


def test_variance_share_extremes_and_errors():
    points = np.array([[0.0, 1.0], [0.0, 1.0], [3.0, -1.0]])
    assert variance_share(points, ["p", "p", "q"]) == pytest.approx(1.0)
    noise = np.random.default_rng(1).normal(size=(4000, 3))
    assert variance_share(noise, ["p", "q"] * 2000) < 0.01
    with pytest.raises(ValueError, match="two classes"):
        variance_share(points, ["p", "p", "p"])
    with pytest.raises(ValueError, match="must be"):
        variance_share(points, ["p", "q"])


def test_word_cosine_tells_parallel_from_distinct_rows():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(200, 16, generator=generator)
    common = torch.randn(16, generator=generator) * 10
    weight[:3] = common + 0.01 * torch.randn(3, 16, generator=generator)  # three nearly identical words
    assert word_cosine(weight, [0, 1, 2]) > 0.99
    weight[3:6] = torch.eye(16)[:3] * 10  # three orthogonal words
    assert abs(word_cosine(weight, [3, 4, 5])) < 0.1


def test_first_patch_of_cell():
    # 4 patches per side, 2x2 grid: each cell is 2x2 patches; cell (1, 1) starts at patch row 2, column 2
    assert [first_patch_of_cell(r, c, 4) for r in (0, 1) for c in (0, 1)] == [0, 2, 8, 10]


def test_cli_reports_a_missing_world_clearly(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path), "--world", str(tmp_path)]) == 2
    assert "pretrain.jsonl is missing" in capsys.readouterr().err


def test_caption_reading_reports_missing_heldout_scenes(tmp_path):
    from analysis.reading_geometry import caption_reading

    with pytest.raises(FileNotFoundError, match="heldout.jsonl is missing"):
        caption_reading(tmp_path, tmp_path, n_scenes=5)
