"""analysis.probes.decay: the world's length split as probe data, per-variant decay curves, and their figure."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.probes.decay import (
    by_position,
    by_preceding_words,
    length_split_json,
    plot_decay,
    probe_length_split,
    seed_means,
    slope_per_100_words,
)
from analysis.probes.planted import planted_tokenizer
from vista.tiny import TinyLlavaSpec, build_tiny_llava
from vista.world.benchmarks import LENGTHS, length_rows, write_parquet


@pytest.fixture(scope="module")
def length_split(tmp_path_factory):
    """The real world_len_<N> parquet files (3 questions each), as `vista data synth` writes them."""
    bench = tmp_path_factory.mktemp("benchmarks")
    for name, rows in length_rows(3, seed=0, image_size=32, seen=set()).items():
        write_parquet(rows, bench / "data" / f"{name}.parquet")
    return bench


def test_length_split_json_keeps_the_same_questions_behind_each_length(length_split, tmp_path):
    path = length_split_json(length_split, tmp_path / "split", questions=2)
    records = json.loads(path.read_text())
    assert len(records) == 2 * len(LENGTHS)
    by_id = {r["id"]: r for r in records}
    short, long = by_id["len0-1"]["conversations"], by_id["len300-1"]["conversations"]
    assert short[1] == long[1]  # same answer
    question = short[0]["value"].split("\n")[1]
    assert long[0]["value"].startswith("<image>\n") and f"\n{question}\n" in long[0]["value"]
    assert len(long[0]["value"].split()) > 250 > 20 > len(short[0]["value"].split())
    assert (tmp_path / "split" / "images" / "len300-1.png").read_bytes() == (
        tmp_path / "split" / "images" / "len0-1.png"
    ).read_bytes()


def test_length_split_json_names_a_missing_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="no world_len_"):
        length_split_json(tmp_path, tmp_path / "out")


def test_a_model_blind_to_the_image_shows_zero_contribution_at_every_length(length_split, tmp_path):
    """Ground truth: with a zero projector the image cannot change any prediction (blank-image ablation = 0)."""
    model, processor = build_tiny_llava(TinyLlavaSpec(), tokenizer=planted_tokenizer(), seed=3)
    with torch.no_grad():
        model.model.multi_modal_projector.linear_2.weight.zero_()
        model.model.multi_modal_projector.linear_2.bias.zero_()
    checkpoint = tmp_path / "tiny__baseline__seed1" / "finetune"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    (checkpoint / "vista_run.json").write_text(json.dumps({"template": "vicuna_v1", "variant": "baseline"}))
    path = length_split_json(length_split, tmp_path / "split", questions=2)
    checkpoints = pd.DataFrame([{"variant": "baseline", "seed": 1, "path": checkpoint}])
    rows, info = probe_length_split(checkpoints, path, cache=tmp_path / "cache")
    (stored,) = (tmp_path / "cache").glob("*.parquet")
    written = stored.stat().st_mtime_ns
    again, _ = probe_length_split(checkpoints, path, cache=tmp_path / "cache")  # read back, not probed
    assert stored.stat().st_mtime_ns == written
    pd.testing.assert_frame_equal(rows, again)
    assert (
        len(list((tmp_path / "cache").glob("tiny__baseline__seed1__ablation-blank__length_split_q2.*"))) == 2
    )
    assert info["baseline seed 1"]["probed"] == 2 * len(LENGTHS)
    assert set(rows["preceding_words"]) == set(LENGTHS) and set(rows["question"]) == {"0", "1"}
    curves = by_preceding_words(rows, n_resamples=50)
    assert list(curves["preceding_words"]) == list(LENGTHS)
    assert np.allclose(curves["mean"], 0, atol=1e-9) and (curves["n"] == 2).all()


def _planted_rows(slopes: dict[str, float], questions: int = 40, seeds: int = 3) -> pd.DataFrame:
    """Answer-token rows whose contribution falls linearly with N at a known slope (nats per word) per variant."""
    rng = random.Random(0)
    rows = []
    for variant, slope in slopes.items():
        for seed in range(1, seeds + 1):
            for q in range(questions):
                offset = rng.gauss(0, 0.2)  # a question's own difficulty, shared across N and seeds
                for n in LENGTHS:
                    value = 1.0 + slope * n + offset + rng.gauss(0, 0.05)
                    rows.append(dict(probe="ablation", variant="blank", supervised=True, run_variant=variant,
                                     seed=seed, preceding_words=n, question=str(q), value=value))  # fmt: skip
    return pd.DataFrame(rows)


def test_planted_decay_is_recovered_per_variant_with_intervals_that_cover_it():
    rows = _planted_rows({"baseline": -0.002, "vista": 0.0})
    curves = by_preceding_words(rows, n_resamples=300)
    slopes = slope_per_100_words(curves)
    assert slopes["baseline"] == pytest.approx(-0.2, abs=0.02) and slopes["vista"] == pytest.approx(
        0, abs=0.02
    )
    truth = 1.0 + np.where(curves["run_variant"] == "baseline", -0.002, 0.0) * curves["preceding_words"]
    covered = (curves["ci_low"] - 0.1 <= truth) & (truth <= curves["ci_high"] + 0.1)
    assert covered.all() and (curves["n"] == 40).all()
    assert len(seed_means(rows)) == 2 * 3 * len(LENGTHS)
    fig = plot_decay(curves, x="preceding_words", hue="run_variant", xlabel="preceding words",
                     ylabel="nats", title="t")  # fmt: skip
    (ax,) = fig.axes
    legend = ax.get_legend()
    fig.canvas.draw()
    inside = ax.get_window_extent()
    assert legend.get_window_extent().x0 >= inside.x1  # the legend does not cover the curves
    assert [t.get_text() for t in legend.get_texts()] == ["baseline", "vista"]


def test_by_position_bins_answer_tokens_and_drops_thin_bins():
    rows = pd.DataFrame(
        {
            "checkpoint": "vista",
            "probe": "ablation",
            "variant": "blank",
            "supervised": True,
            "sample_id": [f"s{i}" for i in range(30)] + ["late"],
            "position": list(range(30)) + [200],
            "value": [1.0] * 16 + [0.5] * 14 + [9.0],
        }
    )
    out = by_position(rows, bin_width=16, min_samples=5, n_resamples=50)
    assert list(out["position_bin"]) == [0, 16] and list(out["mean"]) == [1.0, 0.5]
