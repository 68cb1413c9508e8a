"""The numpy reference of TurboQuant: the definitions the C core and the kernels are tested against.

Two levels:

1. Vector quantizers from the paper, for studies and ablations:
   ``MSEQuantizer`` (TurboQuant_mse: rotate, keep the norm, Lloyd-Max each coordinate)
   and ``ProdQuantizer`` (TurboQuant_prod: b-1 bits of mse plus a 1-bit QJL sketch of
   the residual, with the paper's unbiased inner-product estimator), and
   ``SplitQuantizer`` (outlier channels and the rest, each its own mse instance).

2. The TQ block formats (blocks.py) bit for bit: ``quantize_blocks`` / ``dequantize_blocks``
   over already-transformed rows. Arithmetic follows cpp/tq.c step by step (a sequential
   float64 sum of squares, a float32 scale, float32 products, strict ``<`` against
   float32 midpoints, round-to-nearest-even f16), so the bytes agree exactly.
"""

from __future__ import annotations

import math

import numpy as np

from . import blocks, codebook, rotation

# ---- 1. vector quantizers ----------------------------------------------------------


def _nearest(v: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.searchsorted(codebook.boundaries(c), v, side="left")


class MSEQuantizer:
    """TurboQuant_mse over vectors of size d with rotation ``rot`` (d x d orthogonal).

    ``norm_correction``: store ||x|| / ||x_hat_unit|| instead of ||x||, so that the
    reconstruction has exactly the input's length (it does not lower the MSE: the
    plain norm is already right on average, by the centroid condition).
    """

    def __init__(self, d: int, bits: int, rot: np.ndarray | None = None, norm_correction: bool = True):
        self.d, self.bits = d, bits
        self.rot = np.eye(d) if rot is None else rot
        self.c = codebook.centroids(d, bits)
        self.norm_correction = norm_correction

    def quantize(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        norm = np.linalg.norm(x, axis=1)
        unit = (x @ self.rot.T) / np.where(norm > 0, norm, 1.0)[:, None]
        codes = _nearest(unit, self.c)
        if self.norm_correction:
            qn = np.linalg.norm(self.c[codes], axis=1)
            norm = norm / np.where(qn > 0, qn, 1.0)
        return codes, norm

    def dequantize(self, codes: np.ndarray, norm: np.ndarray) -> np.ndarray:
        return (self.c[codes] * norm[:, None]) @ self.rot


class ProdQuantizer:
    """TurboQuant_prod: (bits-1)-bit mse, then sign(S r) and ||r|| for the residual r.

    ``inner(y, state)`` returns the unbiased estimate of <y, x>:
    <y, x_mse> + ||r|| * sqrt(pi/2) / d * <S y, sign(S r)>.
    """

    def __init__(self, d: int, bits: int, rot: np.ndarray | None = None, seed: int = 0):
        if bits < 2:
            raise ValueError("TurboQuant_prod needs at least 2 bits (1 for mse, 1 for QJL)")
        self.mse = MSEQuantizer(d, bits - 1, rot, norm_correction=False)
        self.d = d
        self.sketch = rotation.gaussian_matrix(d, seed)

    def quantize(self, x: np.ndarray):
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        codes, norm = self.mse.quantize(x)
        base = self.mse.dequantize(codes, norm)
        resid = x - base
        return base, np.sign(resid @ self.sketch.T), np.linalg.norm(resid, axis=1)

    def inner(self, y: np.ndarray, state) -> np.ndarray:
        base, signs, rnorm = state
        y = np.atleast_2d(y)
        qjl = (signs @ (self.sketch @ y.T)) * (rnorm * math.sqrt(math.pi / 2) / self.d)[:, None]
        return base @ y.T + qjl


class SplitQuantizer:
    """Outlier channels and the rest, each rotated and quantized as its own mse instance."""

    def __init__(self, d: int, outliers, hi_bits: int, lo_bits: int, seed: int = 0, norm_correction=True):
        self.outliers = np.asarray(outliers)
        self.rest = np.setdiff1d(np.arange(d), self.outliers)
        seed_hi, seed_lo = rotation.subseed(seed, 0), rotation.subseed(seed, 1)
        n_hi, n_lo = len(self.outliers), len(self.rest)
        self.hi = MSEQuantizer(n_hi, hi_bits, rotation.group_rotation(n_hi, seed_hi), norm_correction)
        self.lo = MSEQuantizer(n_lo, lo_bits, rotation.group_rotation(n_lo, seed_lo), norm_correction)
        self.d = d
        self.bits = (n_hi * hi_bits + n_lo * lo_bits) / d

    def roundtrip(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = np.empty_like(x)
        out[:, self.outliers] = self.hi.dequantize(*self.hi.quantize(x[:, self.outliers]))
        out[:, self.rest] = self.lo.dequantize(*self.lo.quantize(x[:, self.rest]))
        return out


# ---- 2. the TQ block formats, bit for bit ------------------------------------------


def codebooks_for(type_name: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 codebooks (times sqrt of the group size) of the hi and lo groups of a type."""
    lay = blocks.layout(type_name)
    return codebook.scaled_f32(blocks.HI, lay.hi_bits), codebook.scaled_f32(blocks.LO, lay.lo_bits)


def _f32_boundaries(c: np.ndarray) -> np.ndarray:
    c = c.astype(np.float32)
    return ((c[1:] + c[:-1]) * np.float32(0.5)).astype(np.float32)


def quantize_group(v: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.float16]:
    """Codes and f16 scale of one group, exactly as tq_quantize_group in cpp/tq.c: the nearest
    centroid of each value of the normalised group, and s = ||v|| / ||c[codes]|| so that the
    reconstruction s * c[code] keeps the group's length (docs/ablation.md weighs other scales)."""
    v = v.astype(np.float32)
    n = len(v)
    ss = np.cumsum(v.astype(np.float64) ** 2)[-1]  # cumsum: a sequential sum, like the C loop
    nrm = math.sqrt(ss)
    if not (nrm > 0 and math.isfinite(nrm)):
        return np.zeros(n, dtype=np.uint8), np.float16(0)
    inv = np.float32(math.sqrt(n) / nrm)
    y = (v * inv).astype(np.float32)
    codes = np.searchsorted(_f32_boundaries(c), y, side="left").astype(np.uint8)
    cs = np.cumsum(c.astype(np.float64)[codes] ** 2)[-1]
    return codes, np.float16(np.float32(nrm / math.sqrt(cs)))


def quantize_blocks(row: np.ndarray, type_name: str, cb=None) -> bytes:
    """Quantize a transformed row (length a multiple of 64) into TQ blocks."""
    lay = blocks.layout(type_name)
    c_hi, c_lo = cb if cb is not None else codebooks_for(type_name)
    row = np.asarray(row, dtype=np.float32)
    if row.ndim != 1 or len(row) % blocks.BLOCK:
        raise ValueError(f"row length must be a multiple of {blocks.BLOCK}")
    out = bytearray()
    for b in range(len(row) // blocks.BLOCK):
        blk = row[b * blocks.BLOCK:(b + 1) * blocks.BLOCK]
        q_hi, s_hi = quantize_group(blk[: blocks.HI], c_hi)
        q_lo, s_lo = quantize_group(blk[blocks.HI:], c_lo)
        out += np.array([s_hi, s_lo], dtype=np.float16).tobytes()
        out += blocks.pack_codes(q_hi, lay.hi_bits) + blocks.pack_codes(q_lo, lay.lo_bits)
    return bytes(out)


def dequantize_blocks(data: bytes, type_name: str, cb=None) -> np.ndarray:
    lay = blocks.layout(type_name)
    c_hi, c_lo = cb if cb is not None else codebooks_for(type_name)
    if len(data) % lay.nbytes:
        raise ValueError(f"{type_name} data must be a multiple of {lay.nbytes} bytes")
    out = []
    hi_bytes = blocks.HI * lay.hi_bits // 8
    for b in range(len(data) // lay.nbytes):
        blk = data[b * lay.nbytes:(b + 1) * lay.nbytes]
        s_hi, s_lo = np.frombuffer(blk[:4], dtype=np.float16).astype(np.float32)
        q_hi = blocks.unpack_codes(blk[4:4 + hi_bytes], lay.hi_bits, blocks.HI)
        q_lo = blocks.unpack_codes(blk[4 + hi_bytes:], lay.lo_bits, blocks.LO)
        out.append(np.float32(s_hi) * c_hi[q_hi])
        out.append(np.float32(s_lo) * c_lo[q_lo])
    return np.concatenate(out).astype(np.float32)
