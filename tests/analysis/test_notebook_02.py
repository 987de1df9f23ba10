"""notebooks/02_visual_contribution.ipynb executes with small settings against a small results folder."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import torch
from notebook_utils import NOTEBOOKS, execute, outputs, parameters_cell

from analysis.probes import ExactScorer, ablation_probe, swap_probe
from analysis.probes.aggregate import combine
from analysis.probes.planted import planted_tokenizer
from analysis.theory import VisualMarkovSource
from vista.tiny import TinyLlavaSpec, build_tiny_llava
from vista.world.benchmarks import length_rows, write_parquet

NOTEBOOK = NOTEBOOKS / "02_visual_contribution.ipynb"
SMALL = """SOURCE = dict(K=4, M=3, alpha=0.5, seed=1)
T = 6
N_EXACT = 300
NUM_SWAPS = (1, 8)
PLANTED_STEPS = 80
N_PLANTED = 12
SEED = 0
RESULTS = {results!r}
LENGTH_QUESTIONS = 2
MEASURE = ("ablation", "blank")
POSITION_BIN = 2
DEVICE = "cpu"
INTERACTIVE = False"""


def _fake_results(results: Path) -> int:
    """A results folder as run_all.sh lays it out, small: probe rows, one trained checkpoint, the length split.

    The probe rows come from the exact source for two 'checkpoints'; the checkpoint is a tiny LLaVA whose projector
    outputs zero, so the image cannot change its answers (its contribution is exactly 0 at every length).
    """
    scorer = ExactScorer(VisualMarkovSource.random(K=3, M=3, alpha=0.4, seed=2))
    samples = scorer.samples(40, 5, seed=0) + scorer.samples(40, 3, seed=1, id_prefix="short")
    rows = combine(
        {"baseline": swap_probe(scorer, samples, num_swaps=3), "vista": ablation_probe(scorer, samples)}
    )
    (results / "probes").mkdir(parents=True)
    rows.to_parquet(results / "probes" / "probes.parquet", index=False)
    for name, records in length_rows(2, seed=0, image_size=32, seen=set()).items():
        write_parquet(records, results / "data" / "benchmarks" / "data" / f"{name}.parquet")
    model, processor = build_tiny_llava(TinyLlavaSpec(), tokenizer=planted_tokenizer(), seed=3)
    with torch.no_grad():
        model.model.multi_modal_projector.linear_2.weight.zero_()
        model.model.multi_modal_projector.linear_2.bias.zero_()
    checkpoint = results / "runs" / "tiny__baseline__seed1" / "finetune"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    (checkpoint / "vista_run.json").write_text(json.dumps({"template": "vicuna_v1", "variant": "baseline"}))
    return len(rows)


def test_notebook_executes_with_small_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    n_rows = _fake_results(tmp_path / "results")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters_cell(nb).source = SMALL.format(results=str(tmp_path / "results"))
    text, images = outputs(execute(nb, NOTEBOOK.parent))
    assert "Probed 1 checkpoints (variant: seeds {'baseline': [1]})" in text
    assert "**baseline**: 0.000 nats" in text and "slope +0.000 nats per 100 words" in text
    assert f"Read {n_rows} rows for checkpoints ['baseline', 'vista']" in text
    assert "no ('ablation', 'blank') rows, showing" in text  # the exact source has no blank image
    assert "posterior-weighted swap probe is within" in text
    assert "a perfect colour reader with the same contrast images" in text
    assert images == 4  # decay vs preceding words, decay vs position, exact-source curves, planted curves
