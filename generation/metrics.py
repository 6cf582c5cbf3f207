"""The statistics of the generator's evaluation: FID, Diversity, and "mean ± interval" over repetitions.

Features are the evaluation embeddings of motions (``generation.motion_features``), (N, F) arrays.

Frechet distance (``frechet_distance``, FID on motion features; Heusel et al. 2017), between
the Gaussian fits N(mu_a, S_a), N(mu_b, S_b) of two feature sets::

    1. mu, S = mean and covariance (ddof = 1) of each set
    2. C     = sqrtm(S_a S_b)                  (scipy.linalg.sqrtm)
    3. FID   = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 C)

    When S_a S_b is singular (fewer samples than features, or a constant feature) sqrtm is
    inaccurate (scipy warns) or not finite: the covariances then get ``EPS`` added to their
    diagonals (S + eps I) and C is computed again, as pytorch-fid does. Rounding gives C small imaginary
    parts even when S_a S_b has a real square root; they are dropped (C's real part is kept).

Diversity (``diversity``), MDM's protocol (Tevet et al. 2023, after Guo et al. 2020)::

    1. i_1..i_P, j_1..j_P = two draws of P = ``pairs`` indices without replacement
    2. Diversity = 1/P sum_k |f_{i_k} - f_{j_k}|

    MDM requires N > P; here a set of N <= P samples uses P = N pairs (each draw is then a
    permutation of the set), so a small test set still gets a value.

Repetitions (``mean_interval``): the MDM evaluation repeats each metric (20 times) and reports
the mean ± the 95% confidence half-width 1.96 s / sqrt(n), s the sample std (ddof = 1).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import linalg

EPS = 1e-6  # added to the covariances' diagonals when S_a S_b is singular
Z95 = 1.96  # the normal's two-sided 95% quantile


def _features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, F) features, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite features")
    return x


def _sqrtm_or_none(m: np.ndarray) -> np.ndarray | None:
    """sqrtm(m), or None when m is singular (scipy's LinAlgWarning) or the root is not finite."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)
        try:
            root = linalg.sqrtm(m)
        except linalg.LinAlgWarning:
            return None
    return root if np.isfinite(root).all() else None


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """(N, F), (M, F) features -> Frechet distance of their Gaussian fits (module docstring).
    Each set needs at least 2 samples (a covariance)."""
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: a has {a.shape[1]}, b has {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each set needs at least 2 samples, got {len(a)} and {len(b)}")
    # 1.
    mu_a, mu_b = a.mean(0), b.mean(0)
    S_a = np.atleast_2d(np.cov(a, rowvar=False))  # (F, F)
    S_b = np.atleast_2d(np.cov(b, rowvar=False))
    # 2.
    C = _sqrtm_or_none(S_a @ S_b)
    if C is None:  # singular product: regularise both covariances
        offset = EPS * np.eye(len(S_a))
        C = linalg.sqrtm((S_a + offset) @ (S_b + offset))
    C = np.real(C)
    # 3.
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(S_a) + np.trace(S_b) - 2 * np.trace(C))


def diversity(features: np.ndarray, pairs: int = 300, *, rng: np.random.Generator) -> float:
    """(N, F) features -> mean L2 distance of ``pairs`` random pairs (MDM's protocol, module
    docstring); with N <= pairs, N pairs. ``rng`` draws the two index sets, first then second."""
    x = _features(features, "features")
    N = len(x)
    if N < 2:
        raise ValueError(f"diversity needs at least 2 samples, got {N}")
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    P = min(int(pairs), N)
    # 1.
    first = rng.choice(N, P, replace=False)
    second = rng.choice(N, P, replace=False)
    # 2.
    return float(np.linalg.norm(x[first] - x[second], axis=1).mean())


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Repetitions of a metric -> (mean, 95% half-width 1.96 std(ddof=1) / sqrt(n)); 0 for one value."""
    v = np.asarray(values, np.float64).reshape(-1)
    if not len(v):
        raise ValueError("mean_interval needs at least one value")
    if len(v) == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(Z95 * v.std(ddof=1) / math.sqrt(len(v)))
