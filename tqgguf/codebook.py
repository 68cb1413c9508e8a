"""Lloyd-Max codebooks for one coordinate of a uniformly random unit vector.

If u is uniform on the sphere S^(d-1), each coordinate x = u_i has density

    f_d(x) = (1 - x^2)^((d-3)/2) / B(1/2, (d-1)/2)      on [-1, 1]

(equivalently (1+x)/2 ~ Beta((d-1)/2, (d-1)/2)); it tends to N(0, 1/d). A random
rotation gives every vector's normalised coordinates this law, so one scalar
codebook per (d, bits) serves all of them. The Lloyd-Max codebook is the
MSE-optimal one: centroids are the conditional means of their cells, cell
boundaries are midpoints between neighbouring centroids.

Everything here is on the unit-sphere scale; the GGUF stores centroids times
sqrt(d) (see metadata.py), where they are of order one for every d.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import betainc, betaln

MIN_DIM = 3  # d = 2 gives the arcsine law, whose density is unbounded at +-1
MAX_DIM = 4096
MAX_BITS = 8


def _check(d: int, bits: int) -> None:
    if not MIN_DIM <= d <= MAX_DIM:
        raise ValueError(f"codebook dimension must be in [{MIN_DIM}, {MAX_DIM}], got {d}")
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"codebook bits must be in [1, {MAX_BITS}], got {bits}")


def density(x: np.ndarray, d: int) -> np.ndarray:
    """f_d(x), the exact density of one coordinate of a uniform unit vector in R^d."""
    k = (d - 3) / 2
    x = np.asarray(x, dtype=np.float64)
    inside = np.abs(x) < 1
    out = np.zeros_like(x)
    out[inside] = np.exp(k * np.log1p(-x[inside] ** 2) - betaln(0.5, k + 1))
    return out


def cdf(x: np.ndarray, d: int) -> np.ndarray:
    """P(X <= x) for the coordinate law f_d."""
    a = (d - 1) / 2
    return betainc(a, a, np.clip((1 + np.asarray(x, dtype=np.float64)) / 2, 0.0, 1.0))


def _partial_first_moment(x: np.ndarray, d: int) -> np.ndarray:
    """Integral of t * f_d(t) from -1 to x, in closed form: -(1-x^2)^((d-1)/2) / ((d-1) B)."""
    k1 = (d - 1) / 2
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    with np.errstate(divide="ignore"):
        return -np.exp(k1 * np.log1p(-(x ** 2)) - betaln(0.5, k1)) / (2 * k1)


def _cell_stats(boundaries: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Probability mass and first moment of each cell between consecutive boundaries."""
    edges = np.concatenate([[-1.0], boundaries, [1.0]])
    mass = np.diff(cdf(edges, d))
    moment = np.diff(_partial_first_moment(edges, d))
    return mass, moment


@functools.lru_cache(maxsize=None)
def _lloyd_max(d: int, bits: int) -> tuple[float, ...]:
    levels = 1 << bits
    # Start from the Gaussian N(0, 1/d) quantiles of the cell midpoints: already close.
    from scipy.stats import norm

    c = norm.ppf((np.arange(levels) + 0.5) / levels) / math.sqrt(d)
    for _ in range(20000):
        t = (c[1:] + c[:-1]) / 2
        mass, moment = _cell_stats(t, d)
        new = moment / mass
        new = (new - new[::-1]) / 2  # the law is symmetric; keep the codebook exactly so
        if np.max(np.abs(new - c)) < 1e-15:
            c = new
            break
        c = new
    return tuple(float(v) for v in c)


def centroids(d: int, bits: int) -> np.ndarray:
    """The 2^bits sorted Lloyd-Max centroids for f_d, on the unit-sphere scale (float64)."""
    _check(d, bits)
    return np.array(_lloyd_max(d, bits))


def boundaries(c: np.ndarray) -> np.ndarray:
    """Decision thresholds of a sorted codebook: midpoints of neighbours."""
    c = np.asarray(c)
    return (c[1:] + c[:-1]) / 2


def distortion(d: int, bits: int) -> float:
    """Per-coordinate MSE E[(x - q(x))^2] of the Lloyd-Max quantizer under f_d.

    With centroids at conditional means, E[(x-q)^2] = E[x^2] - sum_i P_i c_i^2 and E[x^2] = 1/d.
    """
    c = centroids(d, bits)
    mass, _ = _cell_stats(boundaries(c), d)
    return float(1.0 / d - np.sum(mass * c * c))


def normalised_distortion(d: int, bits: int) -> float:
    """d * D(b): the MSE of quantizing a whole unit vector, the paper's D_mse(b)."""
    return d * distortion(d, bits)


def scaled_f32(d: int, bits: int) -> np.ndarray:
    """Centroids times sqrt(d) as float32: what the GGUF stores and the C core uses."""
    return (centroids(d, bits) * math.sqrt(d)).astype(np.float32)
