"""Build notebooks/02_visual_contribution.ipynb (run from the repository root).

    .venv/bin/python reproduce/notebooks/make_02_probes.py

The notebook only calls :mod:`analysis.probes` (and :mod:`analysis.theory` for ground truth); edit this script,
not the .ipynb, then store fresh outputs with ``reproduce/notebooks/refresh_outputs.py``. Section 1 reads a run's
results folder (``RESULTS``, else ``$VISTA_RESULTS``, else ``results/tiny``: the trained checkpoints, the world's
``world_len_<N>`` split and the ``probes`` stage's rows) and says how to produce it when absent; sections 2 and 3
always compute a small version live.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbtools import build_notebook, write_notebook

OUT = Path(__file__).resolve().parents[2] / "notebooks" / "02_visual_contribution.ipynb"

CELLS: list[tuple[str, str] | tuple[str, str, list[str]]] = [
    (
        "md",
        r"""# 02 · How much does each text position depend on the image?

The VISTA paper argues that, under plain cross-entropy, the image's contribution to each token's prediction fades
as the text grows (*alignment decay*), and that VISTA's extra alignment loss keeps it up. **Section 1** measures
this in the models trained by `reproduce/run_all.sh`: the image's contribution to the answer behind more and more
preceding text, and along the text positions, per training variant, with 95% bootstrap intervals. Sections 2 and 3
check the probes themselves where the truth is known (the exact source of notebook 01, and a planted task).

The contribution is measured with **probes** that work on any LLaVA-style model:

| probe | value per text position $t$ (nats) |
|---|---|
| image swap | $\log p(x_t\mid v,x_{<t}) - \log \tfrac{1}{K+1}\big(p(x_t\mid v,x_{<t}) + \sum_k p(x_t\mid v_k,x_{<t})\big)$, at most $\log(K+1)$ |
| image ablation | $\log p(x_t\mid v,x_{<t}) - \log p(x_t\mid \text{no image},x_{<t})$: image tokens masked out of attention (CAL) or a blank image |
| KL | $\mathrm{KL}\big(p(\cdot\mid v,x_{<t})\,\|\,p(\cdot\mid \text{counterfactual},x_{<t})\big)$ |
| attention | attention mass on the image tokens, per layer (a complementary signal: attention sinks bias it) |
| alignment | $\tfrac1d\lVert h_v-e_t\rVert^2$ and $\cos(h_v,e_t)$: the quantities the VISTA loss aligns |

The swap probe comes in two variants. **uniform** is the formula above with the contrast images $v_k$ drawn from
the data. **posterior** reweights the contrast images by how well they explain the (supervised) prefix,
$w_k \propto p(x_{<t}\mid v_k)$, which turns the mixture into an estimate of $p(x_t\mid x_{<t})$: it is the one
that estimates $I(V; X_t\mid X_{<t})$. Section 2 shows why the distinction matters.""",
    ),
    (
        "code",
        """# Parameters (small defaults: the notebook runs in well under a minute on 2 CPU cores)
SOURCE = dict(K=4, M=3, alpha=0.5, seed=1)  # the exact source of notebook 01 (image values, vocabulary, image weight)
T = 10                   # text length on the exact source
N_EXACT = 1500           # sampled (image, text) pairs on the exact source
NUM_SWAPS = (1, 4, 32)   # contrast images K for the swap probe
PLANTED_STEPS = 120      # training steps of the tiny LLaVA on the planted task (~5 s)
N_PLANTED = 24           # planted samples to probe
SEED = 0
RESULTS = None           # a run_all.sh results folder; None: $VISTA_RESULTS, else <repo>/results/tiny
LENGTH_QUESTIONS = None   # world_len_<N> questions per N and checkpoint; None: the length-effect stage's (read from its cache), else 24
MEASURE = ("ablation", "blank")  # (probe, variant) of the decay figures: log p(answer|image) - log p(answer|blank)
POSITION_BIN = 16        # text positions (tokens) per bin of the position figures
DEVICE = "cpu"
INTERACTIVE = False      # ipywidgets: pick the measure and the bin width of section 1's figures""",
        ["parameters"],
    ),
    (
        "code",
        """%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import transformers
from IPython.display import Markdown, display

import tempfile
from pathlib import Path

from analysis import length_effect
from analysis.notebook_io import results_folder, shown
from analysis.probes import ExactScorer, HFScorer, kl_probe, swap_probe
from analysis.probes import decay
from analysis.probes.planted import colour_word, planted_samples, train_planted
from analysis.probes.plots import plot_curves
from analysis.probes.runner import run_probes, summarise
from analysis.probes.swap import draw_contrast_indices
from analysis.theory import VisualMarkovSource, information_profile

pd.set_option("display.precision", 4)
torch.set_num_threads(1)  # tiny models: one thread is fastest and shares the machine well
transformers.utils.logging.disable_progress_bar()  # no weight-loading bars in the outputs


def show(fig):
    display(fig)
    plt.close(fig)



RESULTS = results_folder(RESULTS)
display(Markdown(f"Results folder: `{shown(RESULTS)}`"))""",
    ),
    (
        "md",
        r"""## 1. Alignment decay in the trained models

**Versus preceding text.** The synthetic world's `world_len_<N>` split asks the *same* questions about the *same*
images behind $N$ words of image-independent text (the lmms-eval tasks of that name). Every trained checkpoint of
the run (each variant, each seed) is probed on the same questions at each $N$: those of the `length-effect` stage
(`python -m analysis.length_effect`, whose probe rows in `<results>/length_effect/cache/` are read, not recomputed),
or the first `LENGTH_QUESTIONS` (24 if that stage has not run; cached there too). Each question's
value is its answer tokens' contribution, averaged over seeds; the band is a 95% bootstrap interval over questions.
REPORT.md's length-effect table reads the same probe rows but reports the contribution to the whole gold answer
(summed over its tokens, not averaged) with a crossed bootstrap over documents and seeds, so its numbers are
larger than the per-token ones here and its intervals wider.
If the image's contribution fades behind text, the curve falls with $N$; VISTA's claim is that its curves fall less.

**Versus position.** The `probes` stage probed the seed-1 checkpoints on held-out data; the answer tokens are
binned by their text position (bins with fewer than 10 samples are left out).""",
    ),
    (
        "code",
        """checkpoints = decay.trained_checkpoints(RESULTS)
benchmarks = RESULTS / "data" / "benchmarks"
CACHE = RESULTS / length_effect.FOLDER / "cache"  # one parquet per checkpoint and setting, shared with that stage
split_files = decay.length_split_files(benchmarks)
length_rows = None
if checkpoints.empty or not split_files:
    display(Markdown(
        f"**No trained checkpoints or no `world_len_<N>` split under `{shown(RESULTS)}`** ({len(checkpoints)} "
        f"checkpoints, {len(split_files)} length files). Produce both with `bash reproduce/run_all.sh` "
        "(the tiny profile's synthetic world holds the split)."
    ))
else:
    split = None if LENGTH_QUESTIONS else length_effect.probed_split(RESULTS)
    with tempfile.TemporaryDirectory() as tmp:
        if split is None:
            split = decay.length_split_json(benchmarks, Path(tmp), questions=LENGTH_QUESTIONS or 24)
        length_rows, probe_info = decay.probe_length_split(checkpoints, split, MEASURE, device=DEVICE, cache=CACHE)
    probed = sorted({info["probed"] for info in probe_info.values()})
    skipped = {name: info["skipped"] for name, info in probe_info.items() if info["skipped"]}
    display(Markdown(
        f"Probed {len(checkpoints)} checkpoints (variant: seeds {decay.describe_checkpoints(checkpoints)}) on "
        f"{length_rows.question.nunique()} questions at each N in {list(split_files)} (`{split.name}`): {probed} "
        f"samples per checkpoint; skipped: {skipped or 'none'}."
    ))""",
    ),
    (
        "code",
        """def length_figure(measure=MEASURE):
    probe, variant = measure
    curves = decay.by_preceding_words(length_rows, probe, variant, seed=SEED)
    show(decay.plot_decay(
        curves, x="preceding_words", hue="run_variant", legend_title="training variant\\n(95% CI over questions)",
        xlabel="image-independent text before the question (words)",
        ylabel=f"{probe} ({variant}) per answer token (nats)",
        title="The image's contribution to the answer, behind more and more text",
    ))
    return curves


if length_rows is not None:
    length_curves = length_figure()
    display(Markdown("\\n".join(decay.decay_summary(length_curves))))""",
    ),
    (
        "code",
        """if length_rows is not None:
    per_seed = decay.seed_means(length_rows, *MEASURE).pivot(
        index=["run_variant", "seed"], columns="preceding_words", values="value")
    display(Markdown(f"Per seed: mean {MEASURE[0]} ({MEASURE[1]}) per answer token (nats), by preceding words "
                     "(the spread between seeds is the training noise the interval above does not include):"))
    display(per_seed.round(3))""",
    ),
    (
        "code",
        """rows = decay.probe_rows(RESULTS)
if rows is None:
    display(Markdown(f"**No probe rows** (`{shown(RESULTS / 'probes' / 'probes.parquet')}`): run "
                     "`bash reproduce/run_all.sh` (its `probes` stage) or `vista probe ... --out <results>/probes`."))
else:
    measures = decay.available_measures(rows)
    measure = MEASURE if MEASURE in measures else measures[0]
    display(Markdown(
        f"Read {len(rows)} rows for checkpoints {sorted(rows.checkpoint.unique())} from "
        f"`{shown(RESULTS / 'probes')}`" + ("." if measure == MEASURE else f"; no {MEASURE} rows, showing {measure}.")
    ))

    def position_figure(measure=measure, bin_width=POSITION_BIN):
        curves = decay.by_position(rows, *measure, bin_width=bin_width, seed=SEED)
        show(decay.plot_decay(
            curves, x="position_bin", hue="checkpoint", legend_title="training variant\\n(95% CI over samples)",
            xlabel=f"text position of the answer token (tokens; bins of {bin_width})",
            ylabel=f"{measure[0]} ({measure[1]}) (nats)",
            title="The image's contribution along the text (held-out data, seed 1)",
        ))

    position_figure()""",
    ),
    (
        "code",
        """if rows is not None and ("alignment", "cosine") in measures:
    curves = decay.by_position(rows, "alignment", "cosine", bin_width=POSITION_BIN, seed=SEED)
    show(decay.plot_decay(
        curves, x="position_bin", hue="checkpoint", legend_title="training variant\\n(95% CI over samples)",
        xlabel=f"text position of the answer token (tokens; bins of {POSITION_BIN})",
        ylabel="cos(h_v, e_t) (unitless)",
        title="What VISTA aligns: image summary h_v vs text embedding e_t",
    ))""",
    ),
    (
        "code",
        """if INTERACTIVE:
    import ipywidgets as widgets

    if length_rows is not None:
        options = [(f"{p} / {v}", (p, v)) for p, v in decay.available_measures(length_rows)]
        widgets.interact(length_figure, measure=widgets.Dropdown(options=options, value=MEASURE))
    if rows is not None:
        options = [(f"{p} / {v}", (p, v)) for p, v in measures]
        widgets.interact(position_figure, measure=widgets.Dropdown(options=options, value=measure),
                         bin_width=(4, 64, 4))""",
    ),
    (
        "md",
        r"""## 2. Ground truth: the exact source

On the source of notebook 01 ($V$ an image latent, text tokens mixing Markov transitions with image-dependent
emissions), `ExactScorer` gives the exact $p(y_t\mid v, y_{<t})$ and the exact text-only predictive
$p(y_t\mid y_{<t})$. `information_profile` gives the exact $I(V;Y_t\mid Y_{<t})$ per position.""",
    ),
    (
        "code",
        """source = VisualMarkovSource.random(SOURCE["K"], SOURCE["M"], SOURCE["alpha"], seed=SOURCE["seed"])
truth = information_profile(source, T, method="exact")[["t", "I_vision_given_prefix", "I_vision"]]
scorer = ExactScorer(source)
samples = scorer.samples(N_EXACT, T, seed=SEED)
rows = []
for k in NUM_SWAPS:
    df = swap_probe(scorer, samples, num_swaps=k, seed=SEED + k, samples_per_call=256)
    assert df["value"].max() <= np.log(k + 1) + 1e-12  # the bound holds for every token
    rows.append(df.groupby(["variant", "position"])["value"].mean().rename(f"K={k}"))
kl = kl_probe(scorer, samples, counterfactuals=["masked"]).groupby("position")["value"].mean()
table = pd.concat(rows, axis=1).unstack("variant")
table.columns = [f"{variant} {k}" for k, variant in table.columns]
table.insert(0, "exact I(V;Y_t|Y_<t)", truth["I_vision_given_prefix"].to_numpy())
table.insert(1, "mean KL(own || text-only)", kl.to_numpy())
table""",
    ),
    (
        "code",
        """long = table.reset_index(names="position").melt("position", var_name="estimate", value_name="nats")
long["kind"] = np.where(long.estimate.str.startswith("posterior"), "swap: posterior",
               np.where(long.estimate.str.startswith("uniform"), "swap: uniform", "exact / KL"))
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True, layout="constrained")
for ax, kind in zip(axes, ["swap: posterior", "swap: uniform"]):
    part = long[long.kind == kind]
    sns.lineplot(part, x="position", y="nats", hue="estimate", marker="o", ax=ax, palette="crest")
    ax.plot(truth.t, truth.I_vision_given_prefix, "k--", label="exact I(V;Y_t|Y_<t)")
    ax.set(title=f"{kind} estimates vs the exact value", xlabel="text position t (tokens)",
           ylabel="image dependence (nats)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
show(fig)""",
    ),
    (
        "code",
        """k = max(NUM_SWAPS)
gap = (table[f"posterior K={k}"] - table["exact I(V;Y_t|Y_<t)"]).abs().max()
over = (table[f"uniform K={k}"] - table["exact I(V;Y_t|Y_<t)"]).iloc[-1]
display(Markdown(
    f"* With K = {k}, the posterior-weighted swap probe is within **{gap:.3f} nats** of the exact conditional "
    f"mutual information at every position (sampling noise from {N_EXACT} texts included), and it decays with "
    "the position like the truth does: later tokens add less about the image because the prefix already told it.\\n"
    f"* The uniform variant (contrast images straight from the data) overshoots by **{over:.3f} nats** at the "
    "last position: it answers 'how much does this token depend on the image content' against images that the "
    "prefix already rules out, so it does not decay. Both are useful, but only the posterior variant estimates "
    "$I(V;X_t\\\\mid X_{<t})$.\\n"
    "* The mean KL to the exact text-only predictive equals the truth up to sampling noise (it is its definition)."
))""",
    ),
    (
        "md",
        r"""## 3. A planted task: a tiny LLaVA that must look at the image for exactly one token

A tiny LLaVA (CLIP-style tower, 2-layer Llama, built from configs) is trained for a few seconds on
`USER: <image> What colour is the square? ASSISTANT: The square is <colour>.`, where the image is a square of one
of four colours. Only the colour word needs the image; its exact conditional MI is $\log 4 = 1.386$ nats. The other
answer tokens are fixed template words (MI 0).""",
    ),
    (
        "code",
        """model, processor, losses = train_planted(steps=PLANTED_STEPS, seed=SEED)
planted = planted_samples(processor, N_PLANTED, seed=SEED + 7)
hf = HFScorer(model, processor)
rows = run_probes(hf, planted, num_swaps=7, seed=SEED)
rows["needs image"] = rows.token.map(colour_word)
answer = rows[rows.supervised & (rows.probe != "attention")]
overview = answer.groupby(["probe", "variant", "needs image"])["value"].mean().unstack()
display(Markdown(f"Training loss: {losses[0]:.2f} -> {np.mean(losses[-10:]):.4f} nats/token "
                 f"after {PLANTED_STEPS} steps. Mean probe values over answer tokens:"))
overview""",
    ),
    (
        "md",
        r"""Tokens that need the image score far above the template tokens on every image-dependence probe, and
the template tokens score zero up to float error. The swap probe on the colour word cannot reach $\log 4$ with
$K=7$: a perfect colour reader scores $\log 8 - \log(1 + \#\text{contrast images of the same colour})$ (the
finite-$K$ bias of any contrastive estimate).""",
    ),
    (
        "code",
        """colours = np.array([s.meta["colour"] for s in planted])
same = (colours[draw_contrast_indices(len(planted), 7, SEED)] == colours[:, None]).sum(1)
measured = rows[(rows.probe == "swap") & (rows.variant == "uniform") & rows["needs image"]]["value"].mean()
display(Markdown(f"Colour word, swap (uniform), K = 7: measured **{measured:.3f}** nats; a perfect colour reader "
                 f"with the same contrast images: **{np.mean(np.log(8) - np.log1p(same)):.3f}** nats."))""",
    ),
    (
        "code",
        """summary = summarise(rows.drop(columns="needs image"), n_resamples=300)
part = summary["by_answer_position"]
part = part[part.probe.isin(["swap", "ablation", "kl"])].assign(checkpoint="planted tiny LLaVA")
grid = plot_curves(part, x="answer_position", title="planted task: probes by answer position (colour word = 4)")
show(grid.figure)""",
    ),
    (
        "code",
        """att = summary["by_layer"]
display(Markdown("Attention mass on the image tokens, answer tokens, per layer (95% bootstrap CI):"))
att[att.variant == "image"][["layer", "mean", "ci_low", "ci_high", "n"]]""",
    ),
]


def build() -> nbformat.NotebookNode:
    return build_notebook(CELLS)


if __name__ == "__main__":
    write_notebook(build(), OUT)
