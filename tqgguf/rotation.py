"""Seeded random orthogonal transforms that C, CUDA and Python all rebuild from a seed.

The generator is SplitMix64 (docs/rotation.md writes it out); nothing here
depends on numpy's random state, so any language can reproduce it.

- ``hadamard(n, seed)``: randomized Hadamard, (1/sqrt n) * H_n * diag(s), s = +-1 from
  the seed; n must be a power of two (Sylvester H_n, H[i, j] = (-1)^popcount(i & j)).
- ``haar(n, seed)``: a Haar-distributed orthogonal matrix for any n: the Q factor,
  with positive diag(R), of a Gaussian matrix drawn from the seed (Box-Muller).
- ``group_rotation(n, seed)``: what a group of n channels gets: Hadamard where n is a
  power of two, Haar otherwise.
- ``head_transform(d, seed, outliers)``: the d x d transform applied to one K or V head
  in the graph: gather the outlier channels and the rest, rotate each group on its
  own, and lay the result out in the TQ block order (see blocks.py).
"""

from __future__ import annotations

import math

import numpy as np

from . import blocks

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SUBSEED_STEP = 0xD1B54A32D192ED03


class SplitMix64:
    """Sebastiano Vigna's SplitMix64: 64-bit state, one add and a mix per output."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + GOLDEN) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def sign(self) -> float:
        """+1 or -1 from the top bit."""
        return -1.0 if self.next() >> 63 else 1.0

    def uniform(self) -> float:
        """A double strictly inside (0, 1): the top 53 bits, centred in their cell."""
        return ((self.next() >> 11) + 0.5) * (1.0 / (1 << 53))


def subseed(seed: int, tag: int) -> int:
    """An independent seed for the tag-th child of ``seed``."""
    return SplitMix64((seed + (tag + 1) * SUBSEED_STEP) & MASK64).next()


def layer_seeds(master: int, n_layer: int) -> tuple[list[int], list[int]]:
    """Per-layer seeds for K (tags 2l) and V (tags 2l+1)."""
    return ([subseed(master, 2 * l) for l in range(n_layer)],
            [subseed(master, 2 * l + 1) for l in range(n_layer)])


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def sylvester(n: int) -> np.ndarray:
    i = np.arange(n)
    bits = np.bitwise_and.outer(i, i)
    parity = np.zeros_like(bits)
    while bits.any():
        parity ^= bits & 1
        bits >>= 1
    return np.where(parity == 1, -1.0, 1.0)


def hadamard(n: int, seed: int) -> np.ndarray:
    if not is_power_of_two(n):
        raise ValueError(f"randomized Hadamard needs a power-of-two size, got {n}")
    rng = SplitMix64(seed)
    signs = np.array([rng.sign() for _ in range(n)])
    return sylvester(n) * signs[None, :] / math.sqrt(n)


def gaussian_matrix(n: int, seed: int) -> np.ndarray:
    """n x n standard normals, row-major, Box-Muller pairs (cos first, then sin)."""
    rng = SplitMix64(seed)
    count = n * n
    out = np.empty(count + 1)
    for i in range(0, count, 2):
        u1, u2 = rng.uniform(), rng.uniform()
        r = math.sqrt(-2.0 * math.log(u1))
        out[i] = r * math.cos(2.0 * math.pi * u2)
        out[i + 1] = r * math.sin(2.0 * math.pi * u2)
    return out[:count].reshape(n, n)


def haar(n: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(gaussian_matrix(n, seed))
    return q * np.sign(np.diag(r))[None, :]


def group_rotation(n: int, seed: int) -> np.ndarray:
    # Hadamard where it exists: lower attention error than a dense Haar matrix (docs/ablation.md table 3)
    return hadamard(n, seed) if is_power_of_two(n) else haar(n, seed)


def head_seeds(layer_seed: int, head: int) -> tuple[int, int]:
    """Seeds of the outlier-group and rest-group rotations of one KV head."""
    return subseed(layer_seed, 2 * head), subseed(layer_seed, 2 * head + 1)


def head_transform(d: int, layer_seed: int, head: int, outliers) -> np.ndarray:
    """The orthogonal d x d matrix T with y = T x for one KV head (float64).

    ``outliers`` are the d/4 channels (sorted) that go to the high-precision slots.
    Row r of T is the output position r: in TQ block r // 64, slot r % 64; slots
    below ``blocks.HI`` take the next outlier-group coordinate, the others the next
    rest-group coordinate.
    """
    blocks.check_head_dim(d)
    outliers = np.asarray(outliers, dtype=np.int64)
    n_hi = d // blocks.BLOCK * blocks.HI
    if outliers.shape != (n_hi,) or np.any(np.diff(outliers) <= 0) or \
            outliers.min() < 0 or outliers.max() >= d:
        raise ValueError(f"need {n_hi} sorted, distinct outlier channels in [0, {d})")
    rest = np.setdiff1d(np.arange(d), outliers)
    seed_hi, seed_lo = head_seeds(layer_seed, head)
    r_hi = group_rotation(n_hi, seed_hi)
    r_lo = group_rotation(d - n_hi, seed_lo)
    t = np.zeros((d, d))
    hi_rows, lo_rows = blocks.slot_rows(d)
    t[np.ix_(hi_rows, outliers)] = r_hi
    t[np.ix_(lo_rows, rest)] = r_lo
    return t
