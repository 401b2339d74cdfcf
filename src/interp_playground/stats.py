"""Plain statistics used by the summary and by judge agreement: seeded bootstrap CIs and ranks.

Nothing here knows about runs, rows or judges: values in, numbers out. Each bootstrap draws from a
random stream made by :func:`rng_for` from a seed and names, so an interval depends only on its
own inputs. No torch is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .io import stable_hash

CI_LEVEL = 0.95

# Bound on the size of one (resamples x rows) index block, to keep memory flat for large runs.
_BOOTSTRAP_BLOCK = 2_000_000


def rng_for(seed: int, *parts: Any) -> np.random.Generator:
    """A random stream determined by ``seed`` and ``parts`` alone."""
    return np.random.default_rng([int(seed), int(stable_hash(list(parts)), 16)])


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    n_bootstrap: int,
    rng: np.random.Generator,
    level: float = CI_LEVEL,
) -> tuple[float | None, float | None]:
    """Percentile-bootstrap CI of the mean of ``values`` (``(None, None)`` when it is undefined)."""
    arr = np.asarray(values, dtype=float)
    n = arr.size
    if n == 0 or n_bootstrap <= 0:
        return None, None
    block = max(1, _BOOTSTRAP_BLOCK // n)
    means = np.empty(n_bootstrap, dtype=float)
    for start in range(0, n_bootstrap, block):
        stop = min(n_bootstrap, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = arr[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_diff_ci(
    values: Sequence[float] | np.ndarray,
    reference: Sequence[float] | np.ndarray,
    n_bootstrap: int,
    rng: np.random.Generator,
    level: float = CI_LEVEL,
) -> tuple[float | None, float | None]:
    """Percentile-bootstrap CI of ``mean(values) - mean(reference)``, the two groups resampled
    independently (``(None, None)`` when either is empty or ``n_bootstrap`` is 0)."""
    a, b = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    if a.size == 0 or b.size == 0 or n_bootstrap <= 0:
        return None, None
    diffs = np.empty(n_bootstrap, dtype=float)
    block = max(1, _BOOTSTRAP_BLOCK // max(a.size, b.size))
    for start in range(0, n_bootstrap, block):
        stop = min(n_bootstrap, start + block)
        ia = rng.integers(0, a.size, size=(stop - start, a.size))
        ib = rng.integers(0, b.size, size=(stop - start, b.size))
        diffs[start:stop] = a[ia].mean(axis=1) - b[ib].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(diffs, [tail, 1.0 - tail])
    return float(lo), float(hi)


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span.

    ``[10, 20, 20, 40] -> [1.0, 2.5, 2.5, 4.0]``.
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2.0 + 1.0  # mean of the 1-based ranks start+1 .. end+1
        for i in order[start:end + 1]:
            ranks[i] = rank
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float],
             labels: tuple[str, str] = ("x", "y")) -> tuple[float | None, str | None]:
    """Spearman's rank correlation of paired samples, with average ranks for ties.

    Returns:
        ``(rho, None)``, or ``(None, reason)`` when rho is undefined: fewer than two pairs, or one
        side's values all equal (zero rank variance; the reason names that side by ``labels``).
    """
    if len(x) != len(y):
        raise ValueError("spearman needs paired samples of equal length")
    n = len(x)
    if n < 2:
        return None, f"fewer than 2 pairs ({n})"
    rx, ry = average_ranks(x), average_ranks(y)
    mean = (n + 1) / 2.0  # the mean rank, ties or not
    sxy = sum((a - mean) * (b - mean) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mean) ** 2 for a in rx)
    syy = sum((b - mean) ** 2 for b in ry)
    if sxx == 0.0 and syy == 0.0:
        return None, f"both {labels[0]} and {labels[1]} gave every pair the same value (zero variance)"
    if sxx == 0.0:
        return None, f"{labels[0]} gave every pair the same value (zero variance)"
    if syy == 0.0:
        return None, f"{labels[1]} gave every pair the same value (zero variance)"
    rho = sxy / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, rho)), None


__all__ = ["CI_LEVEL", "average_ranks", "bootstrap_diff_ci", "bootstrap_mean_ci", "rng_for", "spearman"]
