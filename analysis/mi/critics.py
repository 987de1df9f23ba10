"""Variational lower bounds on MI with a small torch MLP critic: InfoNCE, MINE (Donsker-Varadhan with a
moving-average gradient correction), NWJ and SMILE (DV with the partition term clipped, JS-trained critic).

The critic is trained on a train split and the bound evaluated on a held-out split (see
:func:`analysis.mi.estimate.estimate_mi` for what the bounds measure and where they fail). Sources: InfoNCE (van den
Oord et al. 2018), MINE (Belghazi et al. 2018), NWJ (Nguyen, Wainwright and Jordan 2010), SMILE (Song and Ermon
2020); the bounds as written in Poole et al. 2019, "On variational bounds of mutual information".

A constant critic scores exactly 0 nats on every bound here (NWJ with ``f = 1``), so a held-out value below 0 means
the trained critic is worse than no critic on new pairs: it overfit its training pairs. A little of that is the
known small-sample bias (-0.19 nats at I = 0 with d = 5, 2,500 training samples; -0.01 to -0.03 nats with 1,000);
a value below ``-FLOOR_NATS`` beyond its 95% interval is not, and says nothing about the MI: it is flagged
(``details["below_floor"]``) and ``vista mi`` warns (:func:`critic_warning`). Measured on a tiny checkpoint's states
(``vista mi checkpoint``, PCA 8, true MI ~0.1-0.3 nats by KSG): 40 samples (20 training pairs), InfoNCE gave
-12.8 nats at 50 steps and -84 at 500 (the training bound rose to ~1.9 of its log 20 = 3.0 cap: memorised); with
200 samples, -5.8 at 50 steps and -121 at 500. More steps make it worse, not better: it is overfitting, not
undertraining. Critic inputs are standardised with the training split's column statistics (an invertible map,
MI unchanged); before that, PCA scores with std ~5 made the same critic overfit faster (-12.8 vs -3.5 nats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from analysis.mi.estimators import CRITIC_METHODS, MIEstimate

FLOOR_NATS = 0.25
FLOOR_Z = 1.96
"""A held-out bound whose ``value + FLOOR_Z * stderr`` is below ``-FLOOR_NATS`` is flagged ``below_floor``: further
below 0 (a constant critic's score) than the overfitting bias of a critic that learnt something (module docstring)."""


def _mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden if layers else d_in, d_out))
    return nn.Sequential(*mods)


class SeparableCritic(nn.Module):
    """``f(x, y) = g(x) . h(y)``: all B x B pair scores from 2B network evaluations."""

    def __init__(self, dx: int, dy: int, hidden: int = 64, layers: int = 2, embed: int = 32) -> None:
        super().__init__()
        self.g, self.h = _mlp(dx, hidden, layers, embed), _mlp(dy, hidden, layers, embed)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """``x`` (B, dx), ``y`` (B', dy) -> scores (B, B') with ``[i, j] = f(x_i, y_j)``."""
        return self.g(x) @ self.h(y).T


class ConcatCritic(nn.Module):
    """``f(x, y) = MLP([x, y])``: more expressive, B^2 network evaluations per batch."""

    def __init__(self, dx: int, dy: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.net = _mlp(dx + dy, hidden, layers, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        b, b2 = x.shape[0], y.shape[0]
        pairs = torch.cat([x[:, None, :].expand(b, b2, -1), y[None, :, :].expand(b, b2, -1)], dim=-1)
        return self.net(pairs).squeeze(-1)


def _offdiag(scores: Tensor) -> Tensor:
    b = scores.shape[0]
    return scores.masked_select(~torch.eye(b, dtype=torch.bool, device=scores.device))


def _log_mean_exp(v: Tensor) -> Tensor:
    return torch.logsumexp(v, dim=0) - math.log(v.numel())


def infonce_bound(scores: Tensor) -> Tensor:
    """``mean_i [f_ii - log mean_j exp f_ij]``; at most ``log B``."""
    return (scores.diag() - torch.logsumexp(scores, dim=1)).mean() + math.log(scores.shape[0])


def nwj_bound(scores: Tensor) -> Tensor:
    """``E_p[f] - E_q[exp(f - 1)]`` (Nguyen-Wainwright-Jordan), product-of-marginals pairs = off-diagonal."""
    return scores.diag().mean() - torch.exp(_log_mean_exp(_offdiag(scores)) - 1.0)


def dv_bound(scores: Tensor, clip: float | None = None) -> Tensor:
    """Donsker-Varadhan ``E_p[f] - log E_q[exp f]``; SMILE clips ``f`` to ``[-clip, clip]`` in the second term."""
    neg = _offdiag(scores)
    if clip is not None:
        neg = neg.clamp(-clip, clip)
    return scores.diag().mean() - _log_mean_exp(neg)


def js_objective(scores: Tensor) -> Tensor:
    """The f-GAN Jensen-Shannon objective ``E_p[-softplus(-f)] - E_q[softplus(f)]`` used to train SMILE."""
    return -nn.functional.softplus(-scores.diag()).mean() - nn.functional.softplus(_offdiag(scores)).mean()


def _row_terms(method: str, scores: Tensor, clip: float) -> tuple[Tensor, Tensor | None]:
    """Per-row pieces for a delta-method standard error: the bound is ``mean(a) [- log mean(b)]``."""
    b = scores.shape[0]
    diag = scores.diag()
    off = scores.masked_fill(torch.eye(b, dtype=torch.bool), float("nan"))
    if method == "infonce":
        return diag - torch.logsumexp(scores, dim=1) + math.log(b), None
    if method == "nwj":
        return diag - torch.nanmean(torch.exp(off - 1.0), dim=1), None
    if method == "smile":
        off = off.clamp(-clip, clip)
    return diag, torch.nanmean(torch.exp(off), dim=1)


@dataclass
class _MovingAverage:
    """MINE's bias-corrected gradient: divide ``E_q[exp f]`` by a moving average instead of the batch mean."""

    rate: float
    log_value: float | None = None

    def loss(self, scores: Tensor) -> Tensor:
        log_mean = _log_mean_exp(_offdiag(scores))
        lm = float(log_mean.detach())
        if self.log_value is None:
            self.log_value = lm
        else:
            self.log_value = float(
                np.logaddexp(math.log1p(-self.rate) + self.log_value, math.log(self.rate) + lm)
            )
        # value: -(E_p f - E_q e^f / ma); gradient: -(E_p grad f - E_q[e^f grad f] / ma)
        return -(scores.diag().mean() - torch.exp(log_mean - self.log_value))


def critic_mi(
    x: np.ndarray,
    y: np.ndarray,
    method: str,
    *,
    critic: str = "separable",
    hidden: int = 64,
    layers: int = 2,
    embed: int = 32,
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 1e-3,
    eval_fraction: float = 0.5,
    eval_batch_size: int | None = None,
    eval_every: int = 0,
    clip: float = 5.0,
    ma_rate: float = 0.01,
    seed: int = 0,
) -> MIEstimate:
    """Train a critic on a train split and evaluate ``method``'s bound on the held-out split.

    ``x`` (N, d_x), ``y`` (N, d_y). The critic is trained with Adam on random batches of ``batch_size`` pairs
    (positives on the diagonal of the B x B score matrix, the off-diagonal pairs as product-of-marginals
    samples) and evaluated in batches of ``eval_batch_size`` (default 1024 for ``separable``, 256 for
    ``concat``). ``eval_fraction=0`` evaluates on the training samples (optimistic; flagged in ``details``).
    Inputs are standardised with the training split's column means and stds (invertible, MI unchanged).
    Deterministic for a given ``seed`` (split, batches, initialisation); the global torch RNG is untouched.

    Returns an :class:`MIEstimate` in nats whose ``details`` hold ``train_bound`` (mean training bound over the
    last tenth of the steps) and ``below_floor`` (``value + FLOOR_Z * stderr < -FLOOR_NATS``: the critic overfit,
    the value is uninformative; see the module docstring and :func:`critic_warning`).

    Raises:
        ValueError: unknown ``method`` or ``critic``; ``eval_fraction`` outside [0, 1); fewer than 4 train or
            eval samples.
    """
    if method not in CRITIC_METHODS:
        raise ValueError(f"unknown critic method {method!r}; choose from {CRITIC_METHODS}")
    rng = np.random.default_rng(seed)
    train_idx, eval_idx = _split(x.shape[0], eval_fraction, rng)
    x, y = _standardise(x, train_idx), _standardise(y, train_idx)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    bs = min(batch_size, len(train_idx))
    eval_bs = eval_batch_size or (1024 if critic == "separable" else 256)
    net = _make_critic(critic, x.shape[1], y.shape[1], hidden, layers, embed, seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    ma = _MovingAverage(ma_rate)
    curve, eval_curve = np.empty(steps), []
    for step in range(steps):
        idx = torch.as_tensor(rng.choice(train_idx, size=bs, replace=False))
        scores = net(xt[idx], yt[idx])
        loss = _training_loss(method, scores, ma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            curve[step] = float(_bound(method, scores.detach(), clip))
        if eval_every and (step + 1) % eval_every == 0:
            eval_curve.append((step + 1, _evaluate(net, xt, yt, eval_idx, method, eval_bs, clip)[0]))

    value, stderr, cap = _evaluate(net, xt, yt, eval_idx, method, eval_bs, clip)
    details = {
        "critic": critic,
        "steps": steps,
        "batch_size": bs,
        "eval_batch_size": eval_bs,
        "eval_on_train": len(eval_idx) == x.shape[0],
        "train_bound": float(curve[-max(1, steps // 10) :].mean()),
        "below_floor": bool(value + FLOOR_Z * stderr < -FLOOR_NATS),
        "stderr_note": "delta method over evaluation rows; ignores critic fitting",
    }
    if method == "smile":
        details["clip"] = clip
    return MIEstimate(
        value=value,
        method=method,
        n_samples=x.shape[0],
        dim_x=x.shape[1],
        dim_y=y.shape[1],
        stderr=stderr,
        cap=cap,
        n_train=len(train_idx),
        n_eval=len(eval_idx),
        train_curve=curve,
        eval_curve=eval_curve or None,
        details=details,
    )


def critic_warning(rows: list[dict]) -> str | None:
    """One line about the critic estimates among ``rows`` (``MIEstimate.as_row()`` dicts) flagged ``below_floor``,
    or None when there are none."""
    flagged = [r for r in rows if r.get("below_floor") is True or r.get("below_floor") == 1]
    if not flagged:
        return None
    methods = sorted({r["method"] for r in flagged if "method" in r})
    worst = min(flagged, key=lambda r: r["mi"])
    n_critic = sum(1 for r in rows if r.get("method") in CRITIC_METHODS)
    return (
        f"{'/'.join(methods) or 'critic'}: {len(flagged)} of {n_critic} held-out estimates are below -{FLOOR_NATS} "
        f"nats beyond {FLOOR_Z} standard errors (lowest {worst['mi']:.3g} nats; its training bound {worst['train_bound']:.3g} "
        f"nats on {int(worst['n_train'])} training pairs): the critic overfit and these values say nothing about the "
        "MI (column below_floor); use many more samples (thousands) or fewer --steps"
    )


def _standardise(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a`` centred and scaled by the column means and stds of ``a[rows]`` (constant columns: centred only)."""
    std = a[rows].std(axis=0)
    return (a - a[rows].mean(axis=0)) / np.where(std > 0, std, 1.0)


def _split(n: int, eval_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, eval indices)``; both are all samples when ``eval_fraction == 0``."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    perm = rng.permutation(n)
    n_eval = int(round(eval_fraction * n))
    train_idx, eval_idx = (perm[n_eval:], perm[:n_eval]) if n_eval else (perm, perm)
    if min(len(train_idx), len(eval_idx)) < 4:
        raise ValueError(
            f"too few samples for a train/eval split: {len(train_idx)} train, {len(eval_idx)} eval"
        )
    return train_idx, eval_idx


def _make_critic(kind: str, dx: int, dy: int, hidden: int, layers: int, embed: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "separable":
            return SeparableCritic(dx, dy, hidden, layers, embed)
        if kind == "concat":
            return ConcatCritic(dx, dy, hidden, layers)
    raise ValueError(f"unknown critic {kind!r}; choose 'separable' or 'concat'")


def _training_loss(method: str, scores: Tensor, ma: _MovingAverage) -> Tensor:
    """What each method minimises: its own bound, except MINE (corrected gradient) and SMILE (JS objective)."""
    if method == "mine":
        return ma.loss(scores)
    if method == "smile":
        return -js_objective(scores)
    return -(infonce_bound(scores) if method == "infonce" else nwj_bound(scores))


def _bound(method: str, scores: Tensor, clip: float) -> Tensor:
    if method == "infonce":
        return infonce_bound(scores)
    if method == "nwj":
        return nwj_bound(scores)
    return dv_bound(scores, clip if method == "smile" else None)


@torch.no_grad()
def _evaluate(
    net: nn.Module, xt: Tensor, yt: Tensor, idx: np.ndarray, method: str, batch: int, clip: float
) -> tuple[float, float, float | None]:
    """Bound on ``idx`` in near-equal batches, weighted by batch size. Returns ``(value, stderr, cap)``.

    Each batch's InfoNCE is at most ``log B_b``, so the weighted mean is at most ``cap = sum w_b log B_b``.
    """
    chunks = np.array_split(idx, max(1, math.ceil(len(idx) / batch)))
    values, weights, a_all, b_all = [], [], [], []
    for chunk in chunks:
        c = torch.as_tensor(chunk)
        scores = net(xt[c], yt[c])
        values.append(float(_bound(method, scores, clip)))
        weights.append(len(chunk))
        a, b = _row_terms(method, scores, clip)
        a_all.append(a)
        b_all.append(b)
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    value = float(np.dot(w, values))
    a = torch.cat(a_all).double()
    if b_all[0] is None:
        infl = a
    else:
        b = torch.cat(b_all).double()  # type: ignore[arg-type]
        infl = a - b / b.mean()
    stderr = float(infl.std() / math.sqrt(len(infl)))
    cap = float(np.dot(w, np.log(weights))) if method == "infonce" else None
    return value, stderr, cap
