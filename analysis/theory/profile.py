"""Exact information-theoretic profile of the paper's theory (REFERENCE section 2).

A generative source of an image latent ``V`` and text ``Y_1 .. Y_T``:

    V   ~ prior                                                  (K values)
    Y_1 ~ (1 - alpha_1) * initial          + alpha_1 * emission[V]
    Y_t ~ (1 - alpha_t) * transition[Y_t-1] + alpha_t * emission[V]   (vocabulary of M tokens)

Given ``V`` the text is a Markov chain; without ``V`` it is not (the posterior over ``V`` carries the whole
prefix). :func:`information_profile` returns, per position, every entropy and mutual information of the paper's
two chain-rule decompositions of the cross-entropy objective, in nats:

    I(Y_t; V, Y_<t) = I(V; Y_t) + I(Y_t; Y_<t | V)          (visual first)
                    = I(Y_t; Y_<t) + I(V; Y_t | Y_<t)        (text first)

What is exact, and for which sizes (``method="exact"``):

* ``H_token``, ``H_token_given_vision``, ``I_vision`` and ``H_token_given_vision_prefix`` use exact recursions of
  the forward marginal ``p(y_t | v)`` (cost ``O(T K M^2)``; no enumeration; any T, M up to a few thousand). With
  a constant alpha the recursion stops once ``p(y_t | v)`` is at its fixed point to 1e-15 (later rows are copies).
* ``H_token_given_prefix``, ``I_vision_given_prefix``, ``I_vision_cumulative`` and ``H_prefix`` need the posterior
  over ``V`` given the whole prefix. They are computed by enumerating prefixes, lumped exactly: two prefixes with
  the same last token and the same posterior over ``V`` have identical futures, so they are merged (weights
  added). Posteriors are compared after rounding to 12 decimals, so merged posteriors agree to ~1e-12 and the
  results move at that level at most (against brute-force enumeration they agree to ~1e-15 in the tests).
  With a constant alpha the number of states is at most the number of (first token, transition-count matrix)
  pairs: polynomial in T (about T^3/6 for M = 2) but growing like T^(M^2 - 1), so the exact method is for small
  M (measured: M = 2, T = 200 in ~8 s; M = 3, T = 20 in ~3 s; M = 4, T = 10 in <1 s). A per-position alpha
  disables most merging, leaving up to M^(t-1) prefixes. Past ``max_states`` it raises and points to
  ``method="monte_carlo"``.

``method="monte_carlo"`` samples ``(V, Y)`` and, for each sampled prefix, computes the prefix-conditional terms
exactly by forward filtering of the posterior over ``V``: ``I(V; Y_t | y_<t)`` (a posterior-weighted divergence)
and ``H(V | y_<=t)``; their sample means are unbiased, with standard errors in ``<column>_se``. Everything the
recursions give exactly stays exact (``_se`` = 0: ``H_token``, ``H_token_given_vision``, ``I_vision``,
``H_token_given_vision_prefix`` and hence ``I_text_given_vision``, ``I_joint``). ``H_token_given_prefix`` is the
exact ``H(Y_t|V,Y_<t)`` plus the sampled ``I(V;Y_t|Y_<t)`` (a control variate) and ``H_prefix`` its chain-rule
sum. Cost: ``O(n T K M)`` plus an ``M x K`` table of conditional entropies (``O(K M^2)``, once for a constant
alpha, per position for a varying one). T = 512, M = 1000, K = 100, n = 1000 takes under a minute on 2 CPU
cores (``reproduce/benchmarks/theory_monte_carlo.py``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import rel_entr
from tqdm.auto import tqdm

from analysis.theory.source import VisualMarkovSource, check_length, entropy_nats, row_entropy

Method = Literal["exact", "monte_carlo"]

METHODS = ("exact", "monte_carlo")
PROFILE_COLUMNS = (
    "t",
    "alpha",
    "H_vision",
    "H_token",
    "H_token_given_vision",
    "H_token_given_prefix",
    "H_token_given_vision_prefix",
    "H_prefix",
    "I_vision",
    "I_vision_given_prefix",
    "I_text",
    "I_text_given_vision",
    "I_joint",
    "I_vision_cumulative",
)
_ROUND_DECIMALS = 12


def _conditional_entropy_table(source: VisualMarkovSource, alpha: float, rows: np.ndarray) -> np.ndarray:
    """(len(rows), K) entropies ``H(p(. | v, y_t-1 = row))`` in nats, chunked to bound memory."""
    out = np.empty((len(rows), source.K))
    chunk = max(1, 2_000_000 // (source.K * source.M))
    for start in range(0, len(rows), chunk):
        out[start : start + chunk] = entropy_nats(source.kernel(alpha, rows[start : start + chunk]))
    return out


def _marginal_profile(source: VisualMarkovSource, T: int) -> dict[str, np.ndarray]:
    """Exact recursions over the forward marginal ``p(y_t | v)``: the columns that need no prefix posterior."""
    alphas, prior = source.alphas(T), source.prior
    cols = {
        k: np.empty(T) for k in ("H_token", "H_token_given_vision", "I_vision", "H_token_given_vision_prefix")
    }
    marg = None  # (K, M) p(y_t-1 | v)
    table, table_alpha = None, None
    all_rows = np.arange(source.M)
    for t in range(T):
        a = alphas[t]
        if marg is None:
            new = source.kernel(a, np.array([-1]))[0]
            h_markov = prior @ entropy_nats(new)
        else:
            new = (1.0 - a) * (marg @ source.transition) + a * source.emission
            if table is None or table_alpha != a:
                table, table_alpha = _conditional_entropy_table(source, a, all_rows), a  # (M, K)
            h_markov = float(np.sum(prior[:, None] * marg * table.T))
        token = prior @ new
        cols["H_token"][t] = entropy_nats(token)
        cols["H_token_given_vision"][t] = prior @ entropy_nats(new)
        cols["I_vision"][t] = prior @ rel_entr(new, token[None, :]).sum(axis=1)
        cols["H_token_given_vision_prefix"][t] = h_markov
        if marg is not None and _at_fixed_point(marg, new, alphas[t:]):
            for col in cols.values():
                col[t + 1 :] = col[t]
            break
        marg = new
    return cols


def _at_fixed_point(old: np.ndarray, new: np.ndarray, alphas_left: np.ndarray) -> bool:
    """True if ``p(y_t | v)`` has converged to machine precision under a constant alpha.

    The step ``d -> (1 - a) d @ transition`` contracts row L1 norms by ``(1 - a)``, so with a row-L1 change
    ``eps`` every later marginal stays within ``eps / a`` of the current one; we stop when that is <= 1e-15.
    """
    a = alphas_left[0]
    if a <= 0 or np.any(alphas_left != a):
        return False
    return float(np.abs(new - old).sum(axis=1).max()) <= 1e-15 * a


def _lumped_step(
    source: VisualMarkovSource, alpha: float, last: np.ndarray, post: np.ndarray, w: np.ndarray
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Expectations at one position over lumped prefix states, and the children states (unmerged)."""
    sums = dict(h_pred=0.0, i_cond=0.0, h_after=0.0)
    children = []
    chunk = max(1, 4_000_000 // (source.K * source.M))
    for s in range(0, len(w), chunk):
        p, wc, lc = post[s : s + chunk], w[s : s + chunk], last[s : s + chunk]
        kern = source.kernel(alpha, lc)  # (S, K, M)
        joint = p[:, :, None] * kern  # p(v, y_t | prefix)
        pred = joint.sum(axis=1)  # (S, M)
        kl = np.where(p > 0, rel_entr(kern, pred[:, None, :]).sum(axis=2), 0.0)  # (S, K)
        with np.errstate(invalid="ignore", divide="ignore"):
            child = np.where(
                pred[:, None, :] > 0, joint / pred[:, None, :], 0.0
            )  # (S, K, M) p(v | prefix, y_t)
        sums["h_pred"] += wc @ entropy_nats(pred)
        sums["i_cond"] += wc @ (p * kl).sum(axis=1)
        sums["h_after"] += wc @ (pred * entropy_nats(child, axis=1)).sum(axis=1)
        idx_s, idx_m = np.nonzero(pred > 0)
        children.append((idx_m, child[idx_s, :, idx_m], wc[idx_s] * pred[idx_s, idx_m]))
    last_new, post_new, w_new = (np.concatenate(parts) for parts in zip(*children))
    return sums, (last_new, post_new, w_new)


def _merge_states(
    last: np.ndarray, post: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge states with the same last token and (to 12 decimals) the same posterior; weights add up."""
    keys = np.column_stack([last.astype(np.float64), np.round(post, _ROUND_DECIMALS)])
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return last[first], post[first], np.bincount(inverse.ravel(), weights=w, minlength=len(first))


def _exact_prefix_profile(
    source: VisualMarkovSource, T: int, max_states: int, progress: bool
) -> dict[str, np.ndarray]:
    alphas = source.alphas(T)
    last, post, w = np.array([-1]), source.prior[None, :].copy(), np.ones(1)
    cols = {k: np.empty(T) for k in ("H_token_given_prefix", "I_vision_given_prefix", "E_H_vision_after")}
    for t in tqdm(range(T), desc="exact profile", disable=not progress):
        sums, (last, post, w) = _lumped_step(source, alphas[t], last, post, w)
        cols["H_token_given_prefix"][t] = sums["h_pred"]
        cols["I_vision_given_prefix"][t] = sums["i_cond"]
        cols["E_H_vision_after"][t] = sums["h_after"]
        if t + 1 < T:
            last, post, w = _merge_states(last, post, w)
            if len(w) > max_states:
                raise ValueError(
                    f"information_profile(method='exact'): {len(w)} distinct (last token, posterior) prefix states "
                    f"at t={t + 1} exceed max_states={max_states} (K={source.K}, M={source.M}, T={T}); "
                    "use method='monte_carlo', a smaller T or M, or raise max_states"
                )
    return cols


def _monte_carlo_prefix_profile(
    source: VisualMarkovSource, T: int, n_samples: int, seed: int, batch_size: int, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-sample exact conditional terms along sampled prefixes; returns (means, standard errors) per column."""
    if n_samples < 2:
        raise ValueError(
            f"information_profile(method='monte_carlo'): n_samples must be >= 2, got {n_samples}"
        )
    alphas, K, M = source.alphas(T), source.K, source.M
    names_all = ("I_vision_given_prefix", "E_H_vision_after", "visual_prefix")
    s1 = {k: np.zeros(T) for k in names_all}
    s2 = {k: np.zeros(T) for k in names_all}
    rng = np.random.default_rng(seed)
    constant = np.ndim(source.alpha) == 0 or np.all(alphas == alphas[0])
    full_table = _conditional_entropy_table(source, alphas[min(1, T - 1)], np.arange(M)) if constant else None
    h_first = entropy_nats(source.kernel(alphas[0], np.array([-1]))[0])  # (K,)
    batches = [min(batch_size, n_samples - s) for s in range(0, n_samples, batch_size)]
    bar = tqdm(total=n_samples * T, desc="monte carlo profile", disable=not progress)
    for n in batches:
        v, y = source.sample(n, T, rng)
        post = np.repeat(source.prior[None, :], n, 0)
        visual_prefix = np.zeros(n)  # running sum_{s<t} I(V; Y_s | y_<s) along each sample
        for t in range(T):
            a = alphas[t]
            if t == 0:
                text_part, h_table = (1.0 - a) * source.initial[None, :], np.broadcast_to(h_first, (n, K))
            else:
                prev = y[:, t - 1]
                text_part = (1.0 - a) * source.transition[prev]
                if full_table is not None:
                    h_table = full_table[prev]
                else:
                    rows, inv = np.unique(prev, return_inverse=True)
                    h_table = _conditional_entropy_table(source, a, rows)[inv.ravel()]
            pred = text_part + a * (post @ source.emission)  # (n, M) p(y_t | y_<t)
            h_pred = row_entropy(pred)
            h_cond = (post * h_table).sum(axis=1)
            tok = y[:, t]
            like = (1.0 - a) * (source.initial[tok] if t == 0 else source.transition[prev, tok])
            post = post * (like[:, None] + a * source.emission[:, tok].T)
            post /= post.sum(axis=1, keepdims=True)
            i_cond = h_pred - h_cond
            values = {
                "I_vision_given_prefix": i_cond,
                "E_H_vision_after": entropy_nats(post),
                "visual_prefix": visual_prefix,
            }
            for k, val in values.items():
                s1[k][t] += val.sum()
                s2[k][t] += np.square(val).sum()
            visual_prefix = visual_prefix + i_cond
            bar.update(n)
    bar.close()
    mean = {k: s1[k] / n_samples for k in names_all}
    var = {
        k: np.maximum(s2[k] / n_samples - mean[k] ** 2, 0.0) * n_samples / (n_samples - 1) for k in names_all
    }
    return mean, {k: np.sqrt(var[k] / n_samples) for k in names_all}


def information_profile(
    source: VisualMarkovSource,
    T: int,
    method: Method = "exact",
    *,
    n_samples: int = 2000,
    seed: int = 0,
    batch_size: int = 1000,
    max_states: int = 2_000_000,
    progress: bool = False,
) -> pd.DataFrame:
    """Per-position entropies and mutual informations of ``source`` for texts of length ``T`` (nats).

    Args:
        source: the generative source.
        T: text length (positions t = 1..T).
        method: "exact" (recursions + exactly lumped prefix enumeration; see the module docstring for sizes) or
            "monte_carlo" (sampled prefixes, exact conditional terms given each prefix, with standard errors).
        n_samples, seed, batch_size: Monte Carlo sample count, seed, and samples processed at once.
        max_states: exact method only; raise when the lumped prefix states exceed this count.
        progress: show a tqdm bar.

    Returns:
        DataFrame with one row per position and the columns of :data:`PROFILE_COLUMNS`: ``t``, ``alpha``,
        ``H_vision`` = H(V), ``H_token`` = H(Y_t), ``H_token_given_vision`` = H(Y_t|V),
        ``H_token_given_prefix`` = H(Y_t|Y_<t), ``H_token_given_vision_prefix`` = H(Y_t|V,Y_<t),
        ``H_prefix`` = H(Y_<t) (0 at t = 1), ``I_vision`` = I(V;Y_t), ``I_vision_given_prefix`` = I(V;Y_t|Y_<t),
        ``I_text`` = I(Y_t;Y_<t), ``I_text_given_vision`` = I(Y_t;Y_<t|V), ``I_joint`` = I(Y_t;V,Y_<t),
        ``I_vision_cumulative`` = I(V;Y_1..t). Monte Carlo adds ``<column>_se`` standard errors.
        ``df.attrs`` holds ``method``, ``K``, ``M``, ``T`` (and ``n_samples``).
    """
    check_length(T)
    if method not in METHODS:
        raise ValueError(f"information_profile: method={method!r}; expected one of {METHODS}")
    h_vision = source.entropy_vision()
    marg = _marginal_profile(source, T)
    se: dict[str, np.ndarray] = {}
    h_cond = marg["H_token_given_vision_prefix"]  # exact recursion: H(Y_t | V, Y_<t) = H(Y_t | V, Y_t-1)
    if method == "exact":
        pref = _exact_prefix_profile(source, T, max_states, progress)
        pref["H_prefix"] = np.concatenate([[0.0], np.cumsum(pref["H_token_given_prefix"])[:-1]])
    else:
        # H(Y_t|Y_<t) = H(Y_t|V,Y_<t) (exact) + I(V;Y_t|Y_<t) (sampled): the exact part acts as a control
        # variate, so the entropy's error is that of the (low-variance, non-negative) information term.
        mean, se = _monte_carlo_prefix_profile(source, T, n_samples, seed, batch_size, progress)
        pref = {
            "I_vision_given_prefix": mean["I_vision_given_prefix"],
            "E_H_vision_after": mean["E_H_vision_after"],
            "H_token_given_prefix": h_cond + mean["I_vision_given_prefix"],
            "H_prefix": np.concatenate([[0.0], np.cumsum(h_cond)[:-1]]) + mean["visual_prefix"],
        }
    df = pd.DataFrame(
        {
            "t": np.arange(1, T + 1),
            "alpha": source.alphas(T),
            "H_vision": h_vision,
            "H_token": marg["H_token"],
            "H_token_given_vision": marg["H_token_given_vision"],
            "H_token_given_prefix": pref["H_token_given_prefix"],
            "H_token_given_vision_prefix": h_cond,
            "H_prefix": pref["H_prefix"],
            "I_vision": marg["I_vision"],
            "I_vision_given_prefix": pref["I_vision_given_prefix"],
            "I_text": marg["H_token"] - pref["H_token_given_prefix"],
            "I_text_given_vision": marg["H_token_given_vision"] - h_cond,
            "I_joint": marg["H_token"] - h_cond,
            "I_vision_cumulative": h_vision - pref["E_H_vision_after"],
        }
    )
    if method == "monte_carlo":
        exact_cols = (
            "H_vision",
            "H_token",
            "H_token_given_vision",
            "H_token_given_vision_prefix",
            "I_vision",
            "I_text_given_vision",
            "I_joint",
        )
        for col in exact_cols:
            df[f"{col}_se"] = 0.0
        for col in ("H_token_given_prefix", "I_vision_given_prefix", "I_text"):
            df[f"{col}_se"] = se["I_vision_given_prefix"]
        df["H_prefix_se"] = se["visual_prefix"]
        df["I_vision_cumulative_se"] = se["E_H_vision_after"]
    df.attrs.update(method=method, K=source.K, M=source.M, T=T)
    if method == "monte_carlo":
        df.attrs["n_samples"] = n_samples
    return df
