"""The generative source of the paper's theory: an image latent ``V`` and text ``Y_1 .. Y_T`` (REFERENCE section 2).

    V   ~ prior                                                  (K values)
    Y_1 ~ (1 - alpha_1) * initial          + alpha_1 * emission[V]
    Y_t ~ (1 - alpha_t) * transition[Y_t-1] + alpha_t * emission[V]   (vocabulary of M tokens)

Given ``V`` the text is a Markov chain; without ``V`` it is not (the posterior over ``V`` carries the whole
prefix). Its information profile is :func:`analysis.theory.profile.information_profile`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import entr

_SUM_TOL = 1e-8


def entropy_nats(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    return entr(p).sum(axis=axis)


def row_entropy(p: np.ndarray) -> np.ndarray:
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
        check_length(T)
        if np.ndim(self.alpha) == 0:
            return np.full(T, float(self.alpha))
        if len(self.alpha) < T:
            raise ValueError(
                f"VisualMarkovSource: alpha has {len(self.alpha)} positions but T={T} was requested"
            )
        return np.asarray(self.alpha[:T])

    def entropy_vision(self) -> float:
        """H(V) in nats."""
        return float(entropy_nats(self.prior))

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


def check_length(T: int) -> None:
    if not isinstance(T, int | np.integer) or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
