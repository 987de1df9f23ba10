"""REPORT.md's MI section: the settings it states are quoted from each run's ``mi/<run>/summary.json``, never
assumed to be ``vista mi checkpoint``'s defaults."""

from __future__ import annotations

import json

import pandas as pd

from analysis.report.mi import mi_section

SETTINGS = {
    "run": "tiny__vista__seed1/finetune",
    "data": "results/tiny/data/heldout.json",
    "max_samples": 256,
    "min_samples": 20,
    "max_position": 32,
    "positions": "after-image",
    "methods": ["ksg", "gaussian"],
    "standardize": True,
    "pca_dim": 8,
    "jitter": 1e-6,
    "seed": 0,
    "k": 3,
}


def write_run(results, name: str, summary: dict) -> None:
    folder = results / "mi" / name
    folder.mkdir(parents=True)
    rows = [
        {"target": "e_t", "position": t, "method": m, "mi": 0.1 * t, "stderr": 0.05, "n_samples": 200}
        for t in (1, 2)
        for m in ("ksg", "gaussian")
    ]
    pd.DataFrame(rows).to_csv(folder / "mi_by_position.csv", index=False)
    (folder / "summary.json").write_text(json.dumps(summary))


def test_mi_section_quotes_the_recorded_settings(tmp_path):
    for name in ("tiny__baseline__seed1", "tiny__vista__seed1"):
        write_run(tmp_path, name, {"samples": 200, "no_image": 0, "settings": SETTINGS})
    text = "\n".join(mi_section(tmp_path, {}))
    assert "defaults" not in text
    expected = (
        "Estimators and settings (from `mi/*/summary.json`): KSG (k = 3 nearest neighbours, Kraskov et al. 2004), "
        "Gaussian (linear, bias-corrected); z-scored, each side projected to at most 8 principal components, "
        "jitter 1e-06 x column std, seed 0; at most 256 samples of `heldout.json`, positions after-image up to 32, "
        "each estimated when reached by at least 20 samples."
    )
    assert expected in text
    assert "baseline (training seed 1): 200 samples; vista (training seed 1): 200 samples" in text
    assert "approximate 95% intervals, ± 1.96 standard errors" in text


def test_mi_section_names_runs_whose_settings_differ_or_were_not_recorded(tmp_path):
    write_run(
        tmp_path, "tiny__baseline__seed1", {"samples": 200, "no_image": 0}
    )  # written by an older vista mi
    write_run(
        tmp_path, "tiny__vista__seed1", {"samples": 200, "settings": SETTINGS | {"jitter": 0.0, "k": 5}}
    )
    text = "\n".join(mi_section(tmp_path, {}))
    assert "defaults" not in text
    assert "Settings of tiny__vista__seed1 (from summary.json): KSG (k = 5" in text and "jitter 0 x" in text
    assert "The settings of tiny__baseline__seed1 were not recorded" in text
    assert "whose bands are ± 1 standard error" in text
