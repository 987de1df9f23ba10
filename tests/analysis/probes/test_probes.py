"""Probes recover ground truth: exact theory source, a blind model, self-swaps, a planted task; bootstrap CIs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.probes import (
    BLANK,
    MASKED,
    OWN,
    Condition,
    ExactScorer,
    HFScorer,
    ablation_probe,
    alignment_probe,
    attention_probe,
    kl_probe,
    swap_probe,
)
from analysis.probes.aggregate import (
    add_length_buckets,
    bootstrap_mean_ci,
    bootstrap_mean_cis,
    combine,
    curve,
    paired_difference,
)
from analysis.probes.planted import colour_word, planted_samples, planted_tokenizer, train_planted
from analysis.probes.plots import plot_curves, save_figure
from analysis.probes.swap import draw_contrast_indices, swap_scores
from analysis.theory import VisualMarkovSource, information_profile
from vista.tiny import TinyLlavaSpec, build_tiny_llava

T_EXACT = 6
N_EXACT = 1500


# ---- exact theory source ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exact():
    source = VisualMarkovSource.random(K=4, M=3, alpha=0.5, seed=1)
    scorer = ExactScorer(source)
    samples = scorer.samples(N_EXACT, T_EXACT, seed=0)
    truth = information_profile(source, T_EXACT, method="exact")["I_vision_given_prefix"].to_numpy()
    return source, scorer, samples, truth


def _per_position(df: pd.DataFrame, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over samples, per position 1..T."""
    part = df[df.variant == variant].groupby("position")["value"]
    return part.mean().to_numpy(), (part.std() / np.sqrt(part.count())).to_numpy()


def test_exact_scorer_text_only_kl_is_conditional_mi(exact):
    """E over samples of KL(p(.|v,y<t) || p(.|y<t)) is I(V; Y_t | Y_<t) by definition: checks the scorer."""
    _, scorer, samples, truth = exact
    df = kl_probe(scorer, samples, counterfactuals=["masked"])
    mean, se = _per_position(df, "masked")
    assert np.all(np.abs(mean - truth) < 4 * se + 1e-3), (mean, truth, se)


def test_swap_approaches_exact_conditional_mi_and_respects_bound(exact):
    source, scorer, samples, truth = exact
    errors = {}
    for k in (1, 4, 32):
        df = swap_probe(scorer, samples, num_swaps=k, seed=k, samples_per_call=512)
        assert df["value"].max() <= math.log(k + 1) + 1e-12
        assert (df["bound"] == math.log(k + 1)).all()
        mean, se = _per_position(df, "posterior")
        errors[k] = np.abs(mean - truth).mean()  # mean over positions: less noisy than the max
        if k == 32:
            assert np.all(np.abs(mean - truth) < 4 * se + 0.01), (mean, truth, se)
    assert errors[32] < errors[1] / 3, errors  # approaches the truth as K grows
    assert errors[1] > 0.02  # ... from a clearly biased start (so the comparison has teeth)


def test_uniform_swap_converges_to_the_prior_mixture_contrast(exact):
    """The literal formula (contrast images from the marginal) converges to E log p(y|v,y<)/sum_v' p(v')p(y|v',y<),
    which exceeds I(V;Y_t|Y_<t) once the prefix reveals the image: measured here, documented in swap.py."""
    source, scorer, samples, truth = exact
    y = np.stack([s.input_ids.numpy() for s in samples])
    v = np.array([s.image for s in samples])
    rows = np.arange(len(y))[:, None], np.arange(T_EXACT)[None, :]
    gold = np.stack([source.predictive(y, np.full(len(y), k))[(*rows, y)] for k in range(source.K)])
    limit = np.log(gold[v, np.arange(len(y))]) - np.log(np.einsum("k,knt->nt", source.prior, gold))
    df = swap_probe(scorer, samples, num_swaps=32, seed=3, samples_per_call=512)
    mean, se = _per_position(df, "uniform")
    assert np.all(np.abs(mean - limit.mean(0)) < 4 * se + 0.02), (mean, limit.mean(0))
    assert limit.mean(0)[-1] > truth[-1] + 0.05  # the overestimate is real on this source


def test_swap_scores_algebra():
    logp = torch.log(torch.tensor([[0.5, 0.2], [0.5, 0.2], [0.5, 0.2]], dtype=torch.float64))
    for values in swap_scores(logp).values():  # contrast images scoring like the own image: zero
        assert torch.allclose(values, torch.zeros(2, dtype=torch.float64))
    logp = torch.tensor([[0.0, 0.0], [-50.0, -50.0]], dtype=torch.float64)
    for values in swap_scores(logp).values():  # K=1, contrast hopeless: the bound log 2
        assert torch.allclose(values, torch.full((2,), math.log(2), dtype=torch.float64), atol=1e-12)


def test_exact_self_swap_is_zero(exact):
    _, scorer, samples, _ = exact
    few = samples[:50]
    df = swap_probe(scorer, few, contrast=[[s.image] * 3 for s in few])
    assert df["value"].abs().max() < 1e-12


# ---- transformers models --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted():
    torch.manual_seed(0)
    model, processor, losses = train_planted(steps=120, seed=0)
    samples = planted_samples(processor, 24, seed=7)
    return model, processor, losses, samples


@pytest.fixture(scope="module")
def blind():
    """A random tiny LLaVA whose projector output is zero: the LM never sees image content."""
    model, processor = build_tiny_llava(TinyLlavaSpec(), tokenizer=planted_tokenizer(), seed=3)
    with torch.no_grad():
        model.model.multi_modal_projector.linear_2.weight.zero_()
        model.model.multi_modal_projector.linear_2.bias.zero_()
    return HFScorer(model.eval(), processor, batch_size=8), planted_samples(processor, 12, seed=11)


def test_blind_model_image_dependence_probes_are_zero(blind):
    scorer, samples = blind
    swap = swap_probe(scorer, samples, num_swaps=4)
    ablation = ablation_probe(scorer, samples, variants=["blank"])
    kl = kl_probe(scorer, samples, counterfactuals=["blank", "swap"], num_swaps=3)
    for df in (swap, ablation, kl):
        assert len(df) and df["value"].abs().max() < 1e-5, df.groupby("variant")["value"].agg(["min", "max"])


def test_blind_model_masked_ablation_ignores_image_content(blind):
    """Masking image tokens out of attention changes a blind model too (the tokens take attention mass), but the
    change cannot depend on which image it is."""
    scorer, samples = blind
    shuffled = [
        type(s)(s.sample_id, s.input_ids, s.supervised, samples[-1 - i].image) for i, s in enumerate(samples)
    ]
    a = ablation_probe(scorer, samples, variants=["masked"])["value"].to_numpy()
    b = ablation_probe(scorer, shuffled, variants=["masked"])["value"].to_numpy()
    assert np.abs(a).max() > 1e-4  # not trivially zero
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_hf_self_swap_is_zero(planted):
    model, processor, _, samples = planted
    scorer = HFScorer(model, processor)
    df = swap_probe(scorer, samples[:6], contrast=[[s.image] * 4 for s in samples[:6]])
    assert df["value"].abs().max() < 1e-6


def test_planted_tokens_that_need_the_image_score_higher(planted):
    model, processor, losses, samples = planted
    assert np.mean(losses[-10:]) < 0.1, losses[-10:]  # the model learned the task
    scorer = HFScorer(model, processor)
    frames = [
        swap_probe(scorer, samples, num_swaps=7),
        ablation_probe(scorer, samples),
        kl_probe(scorer, samples, num_swaps=4),
    ]
    df = pd.concat(frames, ignore_index=True)
    df = df[df.supervised].assign(needs_image=lambda d: d.token.map(colour_word))
    swap = df[(df.probe == "swap") & (df.variant == "uniform")]
    assert swap.groupby("sample_id")["needs_image"].sum().eq(1).all()  # one colour token per answer
    means = df.groupby(["probe", "variant", "needs_image"])["value"].mean().unstack()
    assert (means[True] > 0.5).all() and (means[False].abs() < 0.05).all(), means
    assert df[df.probe == "swap"]["value"].max() <= math.log(8) + 1e-9


def test_planted_swap_matches_a_perfect_colour_reader(planted):
    """A model that reads the colour perfectly scores log(K+1) - log(1 + #contrast images of the same colour)."""
    model, processor, _, samples = planted
    k = 7
    df = swap_probe(HFScorer(model, processor), samples, num_swaps=k, seed=5)
    colours = np.array([s.meta["colour"] for s in samples])
    same = (colours[draw_contrast_indices(len(samples), k, seed=5)] == colours[:, None]).sum(1)
    ideal = pd.Series(math.log(k + 1) - np.log1p(same), index=[s.sample_id for s in samples])
    got = df[(df.variant == "uniform") & df.token.map(colour_word)].set_index("sample_id")["value"]
    assert np.abs(got - ideal[got.index]).max() < 0.1, pd.DataFrame({"got": got, "ideal": ideal})


def test_hf_scorer_positions_and_conditions(planted):
    model, processor, _, samples = planted
    scorer = HFScorer(model, processor, batch_size=5)
    table = scorer.text_positions(samples[0])
    tokens = [processor.tokenizer.decode([i]) for i in samples[0].input_ids.tolist()]
    assert "<image>" not in set(table["token"]) and list(table["token"]) == [
        t for t in tokens[1:] if t != "<image>"
    ]
    # batching and padding do not change scores: one sample alone vs inside a padded batch
    alone = scorer.token_log_probs(samples[:1], OWN)[0]
    batched = scorer.token_log_probs(samples[:7], OWN)[0]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=0)
    # the gold log-probs are the model's own cross-entropy terms
    ids = samples[0].input_ids[None]
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=samples[0].image[None]).logits[0]
    ref = torch.log_softmax(logits.double(), -1)[:-1].gather(1, ids[0, 1:, None]).squeeze(1)
    torch.testing.assert_close(alone, ref[ids[0, 1:] != model.config.image_token_id], atol=1e-5, rtol=0)
    # with the image tokens masked out of attention, the image content cannot matter (the model does use it)
    shuffled = [
        type(s)(s.sample_id, s.input_ids, s.supervised, samples[-1 - i].image) for i, s in enumerate(samples)
    ]
    for a, b in zip(scorer.token_log_probs(samples, MASKED), scorer.token_log_probs(shuffled, MASKED)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for cond in (MASKED, BLANK, Condition.other([s.image for s in samples[:3]])):
        full = scorer.next_token_log_probs(samples[:3], cond)
        assert all(torch.allclose(f.exp().sum(-1), torch.ones(len(f), dtype=torch.float64)) for f in full)


def test_attention_masses_are_fractions_that_sum(planted):
    model, processor, _, samples = planted
    df = attention_probe(HFScorer(model, processor), samples[:8])
    assert df["value"].between(-1e-6, 1 + 1e-6).all()  # float32 softmax rows sum to 1 up to rounding
    wide = df.pivot_table(index=["sample_id", "position", "layer"], columns="variant", values="value")
    np.testing.assert_allclose(wide["image"] + wide["text"], 1.0, atol=1e-6)
    assert (wide["first"] <= wide["text"] + 1e-12).all()
    assert set(df["layer"]) == set(range(model.config.text_config.num_hidden_layers))
    colour = df[df.token.map(colour_word) & (df.variant == "image")]["value"].mean()
    template = df[df.supervised & ~df.token.map(colour_word) & (df.variant == "image")]["value"].mean()
    assert colour > template  # the colour token's predicting query looks at the image more


def test_alignment_matches_direct_computation(planted):
    model, processor, _, samples = planted
    scorer = HFScorer(model, processor)
    df = alignment_probe(scorer, samples[:3])
    s = samples[1]
    with torch.no_grad():
        hidden = model.model(input_ids=s.input_ids[None], pixel_values=s.image[None]).last_hidden_state[0]
        embeds = model.get_input_embeddings()(s.input_ids)
    last_image = int((s.input_ids == model.config.image_token_id).nonzero().max())
    pos = scorer.scored_positions(s)
    h, e = hidden[last_image].double(), embeds[pos].double()
    got = df[(df.sample_id == s.sample_id)].pivot_table(
        index="abs_position", columns="variant", values="value"
    )
    np.testing.assert_allclose(got["l2"].to_numpy(), (e - h).pow(2).mean(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(
        got["cosine"].to_numpy(), torch.cosine_similarity(e, h[None]).numpy(), atol=1e-5
    )


# ---- aggregation and plots ------------------------------------------------------------------------------------
def test_bootstrap_ci_covers_truth_at_nominal_rate():
    rng = np.random.default_rng(0)
    reps, n, level = 300, 40, 0.9
    df = pd.DataFrame(
        {
            "rep": np.repeat(np.arange(reps), n),
            "sample_id": np.tile(np.arange(n), reps),
            "value": rng.normal(2.0, 1.5, size=reps * n),
            "probe": "synthetic",
            "variant": "normal",
        }
    )
    summary = curve(df, x="rep", level=level, n_resamples=500)
    coverage = ((summary.ci_low <= 2.0) & (2.0 <= summary.ci_high)).mean()
    assert abs(coverage - level) < 0.06, coverage  # 3 binomial SE at 300 replicates
    assert ((summary.ci_low <= summary["mean"]) & (summary["mean"] <= summary.ci_high)).all()
    mean, low, high = bootstrap_mean_ci(np.full(5, 3.0))
    assert mean == low == high == 3.0


def test_batched_bootstrap_gives_the_per_group_intervals():
    """curve's vectorised bootstrap (one scipy call per group size) against one call per group: the same means and
    the same fallbacks (empty, one value, no spread, NaN), intervals equal up to floating-point ties in BCa's bias
    correction (scipy resamples a batch with the indices each group would get alone)."""
    rng = np.random.default_rng(3)
    groups = [rng.normal(size=n) for n in (2, 3, 5, 5, 5, 9, 16, 16, 40)]
    groups += [rng.exponential(size=16) ** 3, np.array([]), np.array([1.5]), np.full(6, 2.0)]
    groups += [np.array([np.nan, 1.0, 2.0, 4.0]), rng.integers(0, 2, size=12).astype(float)]
    batched = np.array(bootstrap_mean_cis(groups, n_resamples=400))
    alone = np.array([bootstrap_mean_ci(g, n_resamples=400) for g in groups])
    np.testing.assert_array_equal(batched[:, 0], alone[:, 0])
    np.testing.assert_array_equal(np.isnan(batched), np.isnan(alone))
    width = alone[:, 2] - alone[:, 1]
    close = np.abs(batched[:, 1:] - alone[:, 1:]).max(axis=1) <= 0.02 * np.where(width > 0, width, 1) + 1e-12
    assert close[np.isfinite(width)].all(), (batched, alone)


def test_curves_buckets_and_figure(exact, tmp_path):
    _, scorer, samples, _ = exact
    short = scorer.samples(60, 3, seed=1, id_prefix="short")
    df_a = swap_probe(scorer, samples[:60] + short, num_swaps=4)
    df_b = ablation_probe(scorer, samples[:60] + short)
    both = combine({"baseline": df_a, "vista": pd.concat([df_a, df_b])})
    by_pos = curve(both, n_resamples=200)
    assert set(by_pos.checkpoint) == {"baseline", "vista"}
    assert (by_pos.groupby(["checkpoint", "probe", "variant"]).size() == T_EXACT).all()
    diff = paired_difference(both, "baseline")
    assert set(diff.checkpoint) == {"vista - baseline"} and set(diff.probe) == {"swap"}  # only shared rows
    assert len(diff) == len(df_a) and (diff["value"] == 0).all()
    bucketed = add_length_buckets(both, edges=[0, 3, 6])
    assert list(bucketed.length_bucket.cat.categories) == ["1-3", "4-6"]
    by_len = curve(bucketed, x="length_bucket", n_resamples=200)
    assert (by_len.n == 60).all()
    path = save_figure(plot_curves(by_pos, x="position"), tmp_path / "curves.png")
    assert path.stat().st_size > 5000
    json.dumps(by_len.astype(str).to_dict("records"))  # serialisable summary


# ---- command line -----------------------------------------------------------------------------------------------
def test_cli_two_checkpoints(planted, tmp_path, capsys):
    from analysis.probes.planted import COLOURS, planted_image
    from vista.cli import main

    model, processor, _, _ = planted
    checkpoint = tmp_path / "ckpt"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    run = {"template": "vicuna_v1", "variant": "baseline", "config": {"data": {"max_length": 256}}}
    (checkpoint / "vista_run.json").write_text(json.dumps(run))
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        colour = list(COLOURS)[i % 4]
        planted_image(colour, 32, rng).save(data / f"{i}.png")
        conv = [{"from": "human", "value": "<image>\nWhat colour is the square?"},
                {"from": "gpt", "value": f"The square is {colour}."}]  # fmt: skip
        records.append({"id": f"r{i}", "image": f"{i}.png", "conversations": conv})
    records.append(
        {
            "id": "text",
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}],
        }
    )
    records.append({"id": "gone", "image": "missing.png", "conversations": records[0]["conversations"]})
    (data / "val.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    args = ["probe", "--checkpoint", str(checkpoint), "--checkpoint", str(checkpoint), "--label", "base",
            "--label", "again", "--data", str(data), "--out", str(out), "--probes", "swap,attention",
            "--num-swaps", "3", "--bootstrap", "100"]  # fmt: skip
    assert main(args) == 0
    rows = pd.read_parquet(out / "probes.parquet")
    assert set(rows.checkpoint) == {"base", "again"} and set(rows.probe) == {"swap", "attention"}
    assert rows.sample_id.nunique() == 6
    report = json.loads((out / "probe_run.json").read_text())
    assert report["checkpoints"]["base"]["skipped"] == {"text_only": 1, "image_missing": 1}
    assert {
        "swap_by_position.png",
        "attention_by_layer.png",
        "swap_difference_by_answer_position.png",
    } <= set(report["figures"])
    diff = pd.read_csv(out / "summary_difference_by_answer_position.csv")
    assert set(diff.checkpoint) == {"again - base"} and (diff["mean"].abs() < 1e-9).all()
    both = rows.pivot_table(index=["sample_id", "position", "probe", "variant", "layer"], columns="checkpoint",
                            values="value", dropna=False)  # fmt: skip
    np.testing.assert_allclose(both["base"], both["again"], atol=1e-9)  # same model, same contrasts
    colour = rows[(rows.probe == "swap") & rows.token.map(colour_word)]["value"]
    assert colour.mean() > 0.5


def test_only_the_attention_probe_loads_eager_attention():
    from analysis.probes.runner import attention_backend

    assert attention_backend(["ablation", "swap", "kl", "alignment"]) == "sdpa"
    assert attention_backend(["ablation", "attention"]) == "eager"
