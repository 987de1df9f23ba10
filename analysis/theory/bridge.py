"""From theory to training: tiny autoregressive models trained on a :class:`VisualMarkovSource`.

Three models with the same architecture (a causal transformer reading ``[image, y_1, .., y_T]`` and predicting
``y_t`` from position ``t - 1``) are trained on fresh samples of the source:

* ``image_ce``: the true image ``V``, cross-entropy;
* ``image_ce_vista``: the true image, cross-entropy + VISTA's term (:func:`vista.loss.vista_loss`: the final-norm
  hidden state at the image position pulled towards the input embeddings of the text tokens, weighted t/T);
* ``shuffled_ce``: an image drawn independently of the text (same input format, no information), cross-entropy.

On held-out samples, each model's per-position visual contribution is measured two ways and compared with the
exact ``I(V; Y_t | Y_<t)`` of the source:

* ``swap``: the image-swap divergence under the model's own posterior,
  ``E_prefix sum_k pi(k) KL(q(.|k, y_<t) || sum_j pi(j) q(.|j, y_<t))`` with ``pi(k) ∝ prior(k) prod_s q(y_s|k, y_<s)``
  (equal to ``I(V; Y_t | Y_<t)`` when ``q`` is the source);
* ``ce_gap``: expected cross-entropy of the shuffled-image model minus that of an image model, both against the
  source's true next-token distributions (``H(Y_t|Y_<t) - H(Y_t|V,Y_<t)`` for Bayes-optimal models).

Observed with the defaults (300 steps; ``vista theory --bridge``): the cross-entropy image model tracks the exact
curve to about 0.01 nats at every position and the shuffled-image model's swap divergence is below 0.001 nats.
The CE + VISTA model (coefficient 1) tracks it from t = 2 on but measures roughly half the exact value at t = 1:
here, as in LLaVA, the hidden state at the last image position is both VISTA's anchor ``h_v`` and the state that
predicts the first text token, and pulling it towards the text embeddings costs that prediction.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from analysis.theory.profile import information_profile
from analysis.theory.source import VisualMarkovSource

VARIANTS = ("image_ce", "image_ce_vista", "shuffled_ce")


@dataclass(frozen=True)
class BridgeConfig:
    """Source, model and training sizes (defaults: 10-30 s on a shared 2-core CPU for all three models)."""

    K: int = 3
    M: int = 4
    T: int = 8
    alpha: float = 0.8
    image_concentration: float = 0.2
    source_seed: int = 0
    hidden: int = 32
    layers: int = 1
    heads: int = 4
    steps: int = 300
    batch_size: int = 128
    lr: float = 3e-3
    vista_coefficient: float = 1.0
    vista_weighting: str = "linear"
    eval_samples: int = 4000
    seed: int = 0
    threads: int = 1  # torch intra-op threads; 1 is fastest for models this small (and on a shared CPU)


class TinyAutoregressive(nn.Module):
    """A pre-norm causal transformer over ``[image, y_1, .., y_T]``; logits at position t-1 predict ``y_t``."""

    def __init__(self, K: int, M: int, T: int, hidden: int, layers: int, heads: int) -> None:
        super().__init__()
        self.image_embed = nn.Embedding(K, hidden)
        self.token_embed = nn.Embedding(M, hidden)
        self.position = nn.Embedding(T + 1, hidden)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=4 * hidden, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, M)

    def forward(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """image (B,) int, tokens (B, T) int -> (logits (B, T, M), hidden (B, T+1, H), input_embeds (B, T+1, H))."""
        embeds = torch.cat([self.image_embed(image)[:, None], self.token_embed(tokens)], dim=1)
        seq = embeds.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(seq, device=tokens.device)
        hidden = self.norm(self.blocks(embeds + self.position.weight[:seq], mask=causal, is_causal=True))
        return self.head(hidden[:, :-1]), hidden, embeds


@dataclass
class BridgeResult:
    """Outputs of :func:`run_bridge`.

    Attributes:
        per_position: one row per t: exact ``I_vision_given_prefix``, ``H_token_given_prefix``,
            ``H_token_given_vision_prefix``; per variant ``swap_<variant>`` and ``ce_<variant>`` (nats);
            ``ce_gap_image_ce`` and ``ce_gap_image_ce_vista``.
        summary: one row per variant: errors against the exact curves, training losses, seconds.
        history: training curves (step, variant, ce, vista).
        config: the configuration used.
    """

    per_position: pd.DataFrame
    summary: pd.DataFrame
    history: pd.DataFrame
    config: BridgeConfig


def _vista_term(hidden: Tensor, embeds: Tensor, config: BridgeConfig):
    from vista.loss import VistaConfig, vista_loss

    batch, seq, _ = hidden.shape
    image_mask = torch.zeros(batch, seq, dtype=torch.bool)
    image_mask[:, 0] = True
    return vista_loss(
        hidden,
        embeds,
        image_mask,
        ~image_mask,
        VistaConfig(weighting=config.vista_weighting, coefficient=config.vista_coefficient),
    )


def train_variant(
    source: VisualMarkovSource, variant: str, config: BridgeConfig
) -> tuple[TinyAutoregressive, list[dict]]:
    """Train one model on fresh samples of ``source`` every step; returns the model and its loss history."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; expected one of {VARIANTS}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    model = TinyAutoregressive(source.K, source.M, config.T, config.hidden, config.layers, config.heads)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.lr, total_steps=config.steps, pct_start=0.1
    )
    history = []
    for step in range(config.steps):
        v, y = source.sample(config.batch_size, config.T, rng)
        if variant == "shuffled_ce":
            v = rng.choice(source.K, size=config.batch_size, p=source.prior)  # independent of the text
        logits, hidden, embeds = model(torch.from_numpy(v), torch.from_numpy(y))
        ce = F.cross_entropy(logits.reshape(-1, source.M), torch.from_numpy(y).reshape(-1))
        loss, vista_value = ce, None
        if variant == "image_ce_vista":
            vista_value = _vista_term(hidden, embeds, config).loss
            loss = ce + vista_value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append(
            {
                "step": step,
                "variant": variant,
                "ce": ce.item(),
                "vista": float("nan") if vista_value is None else vista_value.item(),
            }
        )
    return model.eval(), history


@torch.no_grad()
def _log_probs_all_images(model: TinyAutoregressive, y: np.ndarray, K: int) -> np.ndarray:
    """(n, K, T, M) log q(. | image = k, y_<t) for every candidate image k."""
    tokens = torch.from_numpy(y)
    out = [F.log_softmax(model(torch.full((len(y),), k), tokens)[0], dim=-1) for k in range(K)]
    return torch.stack(out, dim=1).double().numpy()


def measure_visual_contribution(
    model: TinyAutoregressive,
    source: VisualMarkovSource,
    v: np.ndarray,
    y: np.ndarray,
    image: np.ndarray,
    image_is_true: bool,
) -> dict[str, np.ndarray]:
    """Per-position measurements of one model on held-out texts (nats, averaged over samples).

    Args:
        v: (n,) true images; y: (n, T) texts; image: (n,) the image the model is shown.
        image_is_true: whether ``image`` is ``v`` (else it is independent of the text).

    Returns:
        ``swap`` (T,): image-swap divergence under the model's posterior; ``ce`` (T,): expected cross-entropy
        against the source's true next-token distribution given what the model sees (image and prefix, or the
        prefix only when the image is independent of the text).
    """
    n, T = y.shape
    logq = _log_probs_all_images(model, y, source.K)  # (n, K, T, M)
    q = np.exp(logq)
    index = np.broadcast_to(y[:, None, :, None], (n, source.K, T, 1))
    logq_tokens = np.take_along_axis(logq, index, axis=3)[..., 0].transpose(0, 2, 1)  # (n, T, K)
    log_post = np.log(source.prior)[None, None, :] + np.concatenate(
        [np.zeros((n, 1, source.K)), np.cumsum(logq_tokens, axis=1)[:, :-1]], axis=1
    )
    post = np.exp(log_post - log_post.max(axis=2, keepdims=True))
    post /= post.sum(axis=2, keepdims=True)  # (n, T, K) the model's posterior over the image given y_<t
    mix = np.einsum("ntk,nktm->ntm", post, q)
    kl = np.einsum("nktm,nktm->ntk", q, logq - np.log(mix)[:, None])
    swap = np.einsum("ntk,ntk->t", post, kl) / n
    shown = logq[np.arange(n), image]  # (n, T, M)
    truth = source.predictive(y, v if image_is_true else None)
    ce = -(truth * shown).sum(axis=2).mean(axis=0)
    return {"swap": swap, "ce": ce}


def run_bridge(config: BridgeConfig = BridgeConfig(), progress: bool = False) -> BridgeResult:
    """Train the three variants and compare their per-position visual contribution with the exact curve."""
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run_bridge(config, progress)
    finally:
        torch.set_num_threads(previous)


def _run_bridge(config: BridgeConfig, progress: bool) -> BridgeResult:
    source = VisualMarkovSource.random(
        config.K,
        config.M,
        config.alpha,
        seed=config.source_seed,
        image_concentration=config.image_concentration,
    )
    exact = information_profile(source, config.T, "exact")
    rng = np.random.default_rng(config.seed + 12345)
    v, y = source.sample(config.eval_samples, config.T, rng)
    shuffled = rng.choice(source.K, size=config.eval_samples, p=source.prior)
    per_position = exact[
        ["t", "I_vision_given_prefix", "H_token_given_prefix", "H_token_given_vision_prefix"]
    ].copy()
    summary, history = [], []
    for variant in tqdm(VARIANTS, desc="bridge", disable=not progress):
        start = time.perf_counter()
        model, hist = train_variant(source, variant, config)
        seconds = time.perf_counter() - start
        true_image = variant != "shuffled_ce"
        measured = measure_visual_contribution(model, source, v, y, v if true_image else shuffled, true_image)
        per_position[f"swap_{variant}"] = measured["swap"]
        per_position[f"ce_{variant}"] = measured["ce"]
        target = "H_token_given_prefix" if variant == "shuffled_ce" else "H_token_given_vision_prefix"
        swap_target = 0.0 if variant == "shuffled_ce" else per_position["I_vision_given_prefix"]
        tail = pd.DataFrame(hist).tail(max(1, config.steps // 10))
        summary.append(
            {
                "variant": variant,
                "swap_max_abs_error": float(np.max(np.abs(measured["swap"] - swap_target))),
                "ce_excess_max": float(np.max(measured["ce"] - per_position[target])),
                "train_ce_final": float(tail["ce"].mean()),
                "vista_first": float(hist[0]["vista"]),
                "vista_final": float(tail["vista"].mean()),
                "seconds": seconds,
            }
        )
        history.extend(hist)
    for variant in ("image_ce", "image_ce_vista"):
        per_position[f"ce_gap_{variant}"] = per_position["ce_shuffled_ce"] - per_position[f"ce_{variant}"]
        row = next(r for r in summary if r["variant"] == variant)
        row["ce_gap_max_abs_error"] = float(
            np.max(np.abs(per_position[f"ce_gap_{variant}"] - per_position["I_vision_given_prefix"]))
        )
    per_position.attrs["config"] = asdict(config)
    return BridgeResult(per_position, pd.DataFrame(summary), pd.DataFrame(history), config)


def bridge_curves(result: BridgeResult) -> pd.DataFrame:
    """Long frame (t, nats, curve) of the exact curve and every measured curve, for plotting."""
    names = {
        "I_vision_given_prefix": "exact I(V;Y_t|Y_<t)",
        "swap_image_ce": "swap divergence: image, CE",
        "swap_image_ce_vista": "swap divergence: image, CE + VISTA",
        "swap_shuffled_ce": "swap divergence: shuffled image, CE",
        "ce_gap_image_ce": "CE gap: shuffled - image (CE)",
        "ce_gap_image_ce_vista": "CE gap: shuffled - image (CE + VISTA)",
    }
    frame = result.per_position[["t", *names]].rename(columns=names)
    return frame.melt(id_vars="t", var_name="curve", value_name="nats")
