"""Exact information-theoretic model of the paper's theory (REFERENCE section 2).

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

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import entr, rel_entr
from tqdm.auto import tqdm

Method = Literal["exact", "monte_carlo"]
Weighting = Literal["linear", "position", "uniform"]

METHODS = ("exact", "monte_carlo")
WEIGHTINGS = ("linear", "position", "uniform")
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
_SUM_TOL = 1e-8
_ROUND_DECIMALS = 12


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    return entr(p).sum(axis=axis)


def _row_entropy(p: np.ndarray) -> np.ndarray:
    """(n,) entropies of the rows of a (n, M) array; ~3x faster than ``entr`` for the Monte Carlo hot loop."""
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    logp[p == 0] = 0.0
    return -np.einsum("nm,nm->n", p, logp)


def _as_distribution(name: str, value: object, shape_hint: str) -> np.ndarray:
    """Validate rows of ``value`` as probability distributions; return float64, renormalised to sum exactly 1."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0 or arr.size == 0:
        raise ValueError(
            f"VisualMarkovSource: {name} must be a non-empty array of shape {shape_hint}, got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"VisualMarkovSource: {name} contains NaN or inf")
    rows = arr.reshape(-1, arr.shape[-1])
    for i, row in enumerate(rows):
        where = name if arr.ndim == 1 else f"{name} row {i}"
        if row.min() < 0:
            raise ValueError(f"VisualMarkovSource: {where} has a negative entry {row.min():.3g}")
        if abs(row.sum() - 1.0) > _SUM_TOL:
            raise ValueError(f"VisualMarkovSource: {where} sums to {row.sum():.10g}, must sum to 1")
    return arr / arr.sum(axis=-1, keepdims=True)


@dataclass(frozen=True, eq=False)
class VisualMarkovSource:
    """An image latent ``V`` and text tokens that mix text-only Markov transitions with image-dependent emissions.

    Args:
        prior: (K,) distribution of ``V``.
        initial: (M,) text-only distribution of ``Y_1``.
        transition: (M, M) row-stochastic, ``transition[a, b] = p_text(Y_t = b | Y_t-1 = a)``.
        emission: (K, M) row-stochastic, ``emission[v, b] = p_image(Y_t = b | V = v)``.
        alpha: weight of the image in [0, 1]; a scalar, or a 1-D array with one value per position (its length
            caps the T the source can produce).
    """

    prior: np.ndarray
    initial: np.ndarray
    transition: np.ndarray
    emission: np.ndarray
    alpha: float | np.ndarray = 0.5

    def __post_init__(self) -> None:
        prior = _as_distribution("prior", self.prior, "(K,)")
        initial = _as_distribution("initial", self.initial, "(M,)")
        transition = _as_distribution("transition", self.transition, "(M, M)")
        emission = _as_distribution("emission", self.emission, "(K, M)")
        if prior.ndim != 1 or initial.ndim != 1:
            raise ValueError(
                f"VisualMarkovSource: prior and initial must be 1-D, got {prior.shape} and {initial.shape}"
            )
        K, M = prior.shape[0], initial.shape[0]
        if transition.shape != (M, M):
            raise ValueError(
                f"VisualMarkovSource: transition must be (M, M) = {(M, M)}, got {transition.shape}"
            )
        if emission.shape != (K, M):
            raise ValueError(f"VisualMarkovSource: emission must be (K, M) = {(K, M)}, got {emission.shape}")
        alpha = np.asarray(self.alpha, dtype=np.float64)
        if alpha.ndim > 1 or alpha.size == 0:
            raise ValueError(
                f"VisualMarkovSource: alpha must be a scalar or a non-empty 1-D array, got {alpha.shape}"
            )
        if not np.all(np.isfinite(alpha)) or alpha.min() < 0 or alpha.max() > 1:
            bad = alpha[~((alpha >= 0) & (alpha <= 1))].ravel()[:3]
            raise ValueError(f"VisualMarkovSource: alpha must lie in [0, 1], got {bad.tolist()}")
        for name, arr in (
            ("prior", prior),
            ("initial", initial),
            ("transition", transition),
            ("emission", emission),
        ):
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "alpha", float(alpha) if alpha.ndim == 0 else alpha)

    @property
    def K(self) -> int:
        """Number of image values."""
        return self.prior.shape[0]

    @property
    def M(self) -> int:
        """Vocabulary size."""
        return self.initial.shape[0]

    @property
    def max_length(self) -> int | None:
        """Longest text the source defines (None for a scalar alpha)."""
        return None if np.ndim(self.alpha) == 0 else len(self.alpha)

    def alphas(self, T: int) -> np.ndarray:
        """(T,) image weight per position t = 1..T."""
        _check_length(T)
        if np.ndim(self.alpha) == 0:
            return np.full(T, float(self.alpha))
        if len(self.alpha) < T:
            raise ValueError(
                f"VisualMarkovSource: alpha has {len(self.alpha)} positions but T={T} was requested"
            )
        return np.asarray(self.alpha[:T])

    def entropy_vision(self) -> float:
        """H(V) in nats."""
        return float(_entropy(self.prior))

    def kernel(self, alpha: float, prev: np.ndarray) -> np.ndarray:
        """(S, K, M) next-token distributions ``p(y_t | v, y_t-1 = prev)``; ``prev = -1`` means t = 1."""
        prev = np.asarray(prev)
        text = np.where(prev[:, None] < 0, self.initial[None, :], self.transition[np.maximum(prev, 0)])
        return (1.0 - alpha) * text[:, None, :] + alpha * self.emission[None, :, :]

    def sample(self, n: int, T: int, seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` independent (image, text) pairs.

        Returns:
            ``(v, y)``: v (n,) int64 in [0, K), y (n, T) int64 in [0, M).
        """
        rng = np.random.default_rng(seed)
        alphas = self.alphas(T)
        v = _RowSampler(self.prior[None, :]).draw(np.zeros(n, dtype=np.int64), rng)
        first, text, image = (
            _RowSampler(self.initial[None, :]),
            _RowSampler(self.transition),
            _RowSampler(self.emission),
        )
        y = np.empty((n, T), dtype=np.int64)
        for t in range(T):
            from_image = rng.random(n) < alphas[t]
            from_text = (
                first.draw(np.zeros(n, dtype=np.int64), rng) if t == 0 else text.draw(y[:, t - 1], rng)
            )
            y[:, t] = np.where(from_image, image.draw(v, rng), from_text)
        return v, y

    def predictive(self, y: np.ndarray, v: np.ndarray | None = None) -> np.ndarray:
        """Next-token distributions along given texts.

        Args:
            y: (n, T) token ids.
            v: (n,) image values, or None to condition on the text prefix only (exact forward filtering).

        Returns:
            (n, T, M): ``p(y_t = . | v, y_t-1)`` if ``v`` is given, else ``p(y_t = . | y_<t)``.
        """
        y = np.asarray(y, dtype=np.int64)
        n, T = y.shape
        alphas = self.alphas(T)
        out = np.empty((n, T, self.M))
        post = np.repeat(self.prior[None], n, 0)
        prev = np.full(n, -1)
        rows = np.arange(n)
        for t in range(T):
            kern = self.kernel(alphas[t], prev)  # (n, K, M)
            if v is None:
                out[:, t] = np.einsum("nk,nkm->nm", post, kern)
                post = post * kern[rows, :, y[:, t]]
                post /= post.sum(axis=1, keepdims=True)
            else:
                out[:, t] = kern[rows, np.asarray(v)]
            prev = y[:, t]
        return out

    @classmethod
    def random(
        cls,
        K: int,
        M: int,
        alpha: float | np.ndarray = 0.5,
        *,
        seed: int = 0,
        text_concentration: float = 1.0,
        image_concentration: float = 0.3,
        uniform_prior: bool = True,
    ) -> VisualMarkovSource:
        """A random source: Dirichlet rows (small concentration = peaked rows, i.e. informative tokens)."""
        if K < 1 or M < 1:
            raise ValueError(f"VisualMarkovSource.random: K and M must be >= 1, got K={K}, M={M}")
        rng = np.random.default_rng(seed)
        prior = np.full(K, 1.0 / K) if uniform_prior else rng.dirichlet(np.ones(K))
        return cls(
            prior=prior,
            initial=rng.dirichlet(np.full(M, text_concentration)),
            transition=rng.dirichlet(np.full(M, text_concentration), size=M),
            emission=rng.dirichlet(np.full(M, image_concentration), size=K),
            alpha=alpha,
        )


class _RowSampler:
    """Categorical draws from chosen rows of a row-stochastic table in O(log) per draw.

    The rows' CDFs are offset by their row index and flattened into one non-decreasing array, so a single
    ``searchsorted`` serves every sample whatever its row.
    """

    def __init__(self, table: np.ndarray) -> None:
        rows, self.M = table.shape
        cdf = np.cumsum(table, axis=1)
        self.total = cdf[:, -1]
        self.flat = (cdf + np.arange(rows)[:, None]).ravel()

    def draw(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rows + rng.random(len(rows)) * self.total[rows]
        idx = np.searchsorted(self.flat, u, side="right") - rows * self.M
        return np.clip(idx, 0, self.M - 1)


def _check_length(T: int) -> None:
    if not isinstance(T, int | np.integer) or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")


def _conditional_entropy_table(source: VisualMarkovSource, alpha: float, rows: np.ndarray) -> np.ndarray:
    """(len(rows), K) entropies ``H(p(. | v, y_t-1 = row))`` in nats, chunked to bound memory."""
    out = np.empty((len(rows), source.K))
    chunk = max(1, 2_000_000 // (source.K * source.M))
    for start in range(0, len(rows), chunk):
        out[start : start + chunk] = _entropy(source.kernel(alpha, rows[start : start + chunk]))
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
            h_markov = prior @ _entropy(new)
        else:
            new = (1.0 - a) * (marg @ source.transition) + a * source.emission
            if table is None or table_alpha != a:
                table, table_alpha = _conditional_entropy_table(source, a, all_rows), a  # (M, K)
            h_markov = float(np.sum(prior[:, None] * marg * table.T))
        token = prior @ new
        cols["H_token"][t] = _entropy(token)
        cols["H_token_given_vision"][t] = prior @ _entropy(new)
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
        sums["h_pred"] += wc @ _entropy(pred)
        sums["i_cond"] += wc @ (p * kl).sum(axis=1)
        sums["h_after"] += wc @ (pred * _entropy(child, axis=1)).sum(axis=1)
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
    h_first = _entropy(source.kernel(alphas[0], np.array([-1]))[0])  # (K,)
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
            h_pred = _row_entropy(pred)
            h_cond = (post * h_table).sum(axis=1)
            tok = y[:, t]
            like = (1.0 - a) * (source.initial[tok] if t == 0 else source.transition[prev, tok])
            post = post * (like[:, None] + a * source.emission[:, tok].T)
            post /= post.sum(axis=1, keepdims=True)
            i_cond = h_pred - h_cond
            values = {
                "I_vision_given_prefix": i_cond,
                "E_H_vision_after": _entropy(post),
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
    _check_length(T)
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


# ---------------------------------------------------------------------------------------------------------------
# The paper's quantities, derived from a profile (all pandas in, pandas out; nats).
# ---------------------------------------------------------------------------------------------------------------


def _ratio(num: pd.Series | np.ndarray, den: pd.Series | np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (a share of nothing is undefined, not zero)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _require(profile: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in profile.columns]
    if missing:
        raise ValueError(f"profile lacks columns {missing}; build it with information_profile()")


def chain_rule_residuals(profile: pd.DataFrame) -> pd.DataFrame:
    """Residuals of the identities, per position (all ~0 up to rounding for an exact profile).

    Columns:
        ``visual_first`` = I(Y_t;V,Y_<t) - I(V;Y_t) - I(Y_t;Y_<t|V);
        ``text_first`` = I(Y_t;V,Y_<t) - I(Y_t;Y_<t) - I(V;Y_t|Y_<t);
        ``entropy_gap`` = H(Y_t|Y_<t) - H(Y_t|V,Y_<t) - I(V;Y_t|Y_<t);
        ``token_chain`` = sum_{s<=t} I(V;Y_s|Y_<s) - I(V;Y_1..t);
        ``sum_bound_slack`` = H(V) - I(V;Y_1..t) (must be >= 0: the bound, not a residual).
    In the exact profile each term comes from a different computation (KL forms, entropy recursions, posterior
    entropies), so these are genuine checks; in a Monte Carlo profile ``text_first`` and ``entropy_gap`` are
    zero by construction and ``token_chain`` is a difference of two estimates.
    """
    _require(profile, *PROFILE_COLUMNS)
    p = profile
    return pd.DataFrame(
        {
            "t": p["t"],
            "visual_first": p["I_joint"] - p["I_vision"] - p["I_text_given_vision"],
            "text_first": p["I_joint"] - p["I_text"] - p["I_vision_given_prefix"],
            "entropy_gap": p["H_token_given_prefix"]
            - p["H_token_given_vision_prefix"]
            - p["I_vision_given_prefix"],
            "token_chain": p["I_vision_given_prefix"].cumsum() - p["I_vision_cumulative"],
            "sum_bound_slack": p["H_vision"] - p["I_vision_cumulative"],
        }
    )


def alignment_shares(profile: pd.DataFrame) -> pd.DataFrame:
    """How much of cross-entropy's implicit objective ``I(Y_t; V, Y_<t)`` is visual, per token and cumulatively.

    Columns (shares are NaN where the objective is 0):
        ``t``;
        ``visual_share_conditional`` = I(V;Y_t|Y_<t) / I(Y_t;V,Y_<t): the image's share at position t once the
            prefix is known (what cross-entropy at t gains from the image; what image-ablation probes measure);
        ``visual_share_marginal`` = I(V;Y_t) / I(Y_t;V,Y_<t): the visual term of the visual-first chain rule;
        ``cumulative_visual_share_conditional`` = I(V;Y_1..t) / sum_{s<=t} I(Y_s;V,Y_<s)
            (= sum_{s<=t} I(V;Y_s|Y_<s) / sum_{s<=t} I(Y_s;V,Y_<s) by the chain rule): the visual share of a length-t text's whole objective; its
            numerator is bounded by H(V), so it decays at least like 1/t when the per-token objective stays
            bounded away from 0;
        ``cumulative_visual_share_marginal``: the same with I(V;Y_s) (does not decay for a stationary source);
        ``visual_to_prefix_entropy`` = I(V;Y_t) / H(Y_<t): Theorem 3.3's ratio (NaN at t = 1).
    """
    _require(profile, *PROFILE_COLUMNS)
    p = profile
    return pd.DataFrame(
        {
            "t": p["t"],
            "visual_share_conditional": _ratio(p["I_vision_given_prefix"], p["I_joint"]),
            "visual_share_marginal": _ratio(p["I_vision"], p["I_joint"]),
            "cumulative_visual_share_conditional": _ratio(p["I_vision_cumulative"], p["I_joint"].cumsum()),
            "cumulative_visual_share_marginal": _ratio(p["I_vision"].cumsum(), p["I_joint"].cumsum()),
            "visual_to_prefix_entropy": _ratio(p["I_vision"], p["H_prefix"]),
        }
    )


def vista_weights(T: int, weighting: Weighting = "linear") -> np.ndarray:
    """(T,) VISTA's per-position weights: ``t/T`` ("linear", the paper), ``t`` ("position"), ``1`` ("uniform")."""
    _check_length(T)
    t = np.arange(1, T + 1, dtype=np.float64)
    if weighting == "linear":
        return t / T
    if weighting == "position":
        return t
    if weighting == "uniform":
        return np.ones(T)
    raise ValueError(f"weighting={weighting!r}; expected one of {WEIGHTINGS}")


def vista_weighted_signal(
    profile: pd.DataFrame, weighting: Weighting = "linear", T: int | None = None
) -> pd.DataFrame:
    """Per-position alignment signal of VISTA's explicit term vs the visual signal inside cross-entropy.

    VISTA maximises (a surrogate of) ``(1/T) sum_t w_t I(V; Y_t)``: every position is tied to the image directly,
    with weights growing in t. Cross-entropy's visual signal at position t is ``I(V; Y_t | Y_<t)``.

    Args:
        profile: from :func:`information_profile` (its first ``T`` rows are used).
        weighting: see :func:`vista_weights`.
        T: text length the weights are normalised to (default: the profile's length).

    Returns:
        DataFrame with ``t``, ``weight`` (w_t), ``vista_signal`` = w_t I(V;Y_t), ``ce_visual_signal`` =
        I(V;Y_t|Y_<t), ``vista_to_ce`` = their ratio (NaN where CE's signal is 0).
    """
    _require(profile, "t", "I_vision", "I_vision_given_prefix")
    T = len(profile) if T is None else T
    if T > len(profile):
        raise ValueError(f"vista_weighted_signal: T={T} exceeds the profile's {len(profile)} positions")
    p = profile.iloc[:T]
    w = vista_weights(T, weighting)
    signal = w * p["I_vision"].to_numpy()
    ce = p["I_vision_given_prefix"].to_numpy()
    return pd.DataFrame(
        {
            "t": p["t"].to_numpy(),
            "weight": w,
            "vista_signal": signal,
            "ce_visual_signal": ce,
            "vista_to_ce": _ratio(signal, ce),
        }
    )


def objective_by_length(profile: pd.DataFrame, weightings: tuple[str, ...] = WEIGHTINGS) -> pd.DataFrame:
    """Per text length T = 1..len(profile): cross-entropy's visual signal vs VISTA's, per token of text.

    Columns:
        ``T``;
        ``ce_visual_per_token`` = I(V;Y_1..T) / T = (1/T) sum_t I(V;Y_t|Y_<t) (the profile's
            ``I_vision_cumulative``, divided by T): the image's contribution to the
            per-token cross-entropy objective; ``ce_visual_bound`` = H(V) / T bounds it (Lemma 3.2 with the sum
            bound), so it vanishes as T grows (Theorem 3.3);
        ``ce_visual_share`` = I(V;Y_1..T) / sum_t I(Y_t;V,Y_<t);
        ``vista_signal_<weighting>`` = (1/T) sum_t w_t^(T) I(V;Y_t) for each weighting: does not vanish (the
            linear weighting tends to half the stationary I(V;Y_t); "position" grows like T).
    """
    _require(profile, *PROFILE_COLUMNS)
    T = np.arange(1, len(profile) + 1, dtype=np.float64)
    # I(V; Y_1..T) = sum_t I(V;Y_t|Y_<t) (equal in the exact profile); in a Monte Carlo profile the direct
    # estimate H(V) - E H(V|Y_1..T) is the lower-variance one and respects the bound H(V) by construction.
    cum_visual = profile["I_vision_cumulative"].to_numpy()
    out = {
        "T": T.astype(np.int64),
        "ce_visual_per_token": cum_visual / T,
        "ce_visual_bound": profile["H_vision"].to_numpy() / T,
        "ce_visual_share": _ratio(cum_visual, profile["I_joint"].cumsum()),
    }
    i_vision = profile["I_vision"].to_numpy()
    t = T
    cum_i, cum_ti = np.cumsum(i_vision), np.cumsum(t * i_vision)
    for weighting in weightings:
        if weighting == "linear":
            out["vista_signal_linear"] = cum_ti / T**2
        elif weighting == "position":
            out["vista_signal_position"] = cum_ti / T
        elif weighting == "uniform":
            out["vista_signal_uniform"] = cum_i / T
        else:
            raise ValueError(f"weighting={weighting!r}; expected one of {WEIGHTINGS}")
    return pd.DataFrame(out)


def lemma_checks(profile: pd.DataFrame) -> pd.DataFrame:
    """The three statements of the theory, evaluated per position t (nats).

    Columns:
        ``t``; ``H_prefix`` = H(Y_<t);
        ``H_prefix_given_vision`` = H(Y_<t | V) = sum_{s<t} H(Y_s|V,Y_<s) <= H(Y_<t);
        ``H_prefix_linear_bound`` = (t - 1) * min_s H(Y_s|V,Y_<s) <= H(Y_<t|V): Lemma 3.1 (linear growth);
        ``visual_term`` = I(V;Y_t); ``visual_bound`` = min(H(V), H(Y_t)) >= it: Lemma 3.2;
        ``ratio`` = I(V;Y_t) / H(Y_<t) and ``ratio_bound`` = H(V) / H_prefix_linear_bound: Theorem 3.3
        (both -> 0; NaN at t = 1 or where the bound is 0).
    """
    _require(profile, *PROFILE_COLUMNS)
    h_cond = profile["H_token_given_vision_prefix"].to_numpy()
    t = profile["t"].to_numpy()
    given_vision = np.concatenate([[0.0], np.cumsum(h_cond)[:-1]])
    linear = (t - 1) * h_cond.min()
    return pd.DataFrame(
        {
            "t": t,
            "H_prefix": profile["H_prefix"].to_numpy(),
            "H_prefix_given_vision": given_vision,
            "H_prefix_linear_bound": linear,
            "visual_term": profile["I_vision"].to_numpy(),
            "visual_bound": np.minimum(profile["H_vision"], profile["H_token"]).to_numpy(),
            "ratio": _ratio(profile["I_vision"], profile["H_prefix"]),
            "ratio_bound": _ratio(profile["H_vision"], linear),
        }
    )
