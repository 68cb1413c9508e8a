"""The TQ block formats, as numbers. cpp/tq.h declares the same structs; tests tie the two.

A TQ block holds BLOCK = 64 consecutive values of a transformed K or V row. Its first
HI = 16 slots hold outlier-group coordinates, the other LO = 48 the rest group. Each
group is normalised on its own and quantized with the Lloyd-Max codebook for a
coordinate of a unit vector in R^16 (resp. R^48); each keeps one f16 scale.

    type    hi bits  lo bits  bytes  bits/value (every head size)
    tq2_5   3        2        22     2.75
    tq3_5   4        3        30     3.75

Codes wider than two bits are split into planes so no code straddles a byte
(docs/format.md): a 2-bit plane of n codes stores code i in byte i % (n/4) at bit
2 * (i // (n/4)); a 1-bit plane in byte i % (n/8) at bit i // (n/8); a 4-bit plane
in byte i % (n/2), low nibble first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 64
HI = 16
LO = BLOCK - HI
SCALE_BYTES = 2  # one f16 scale per group


@dataclass(frozen=True)
class Layout:
    name: str
    hi_bits: int
    lo_bits: int

    @property
    def nbytes(self) -> int:
        return 2 * SCALE_BYTES + (HI * self.hi_bits + LO * self.lo_bits) // 8

    @property
    def bits_per_value(self) -> float:
        return self.nbytes * 8 / BLOCK


TYPES = {
    "tq2_5": Layout("tq2_5", hi_bits=3, lo_bits=2),
    "tq3_5": Layout("tq3_5", hi_bits=4, lo_bits=3),
}


def layout(name: str) -> Layout:
    try:
        return TYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown TQ cache type {name!r} (known: {', '.join(TYPES)})") from None


def check_head_dim(d: int) -> None:
    if d <= 0 or d % BLOCK:
        raise ValueError(f"head size {d} is not supported: TQ types need a multiple of {BLOCK}")


def slot_rows(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Output positions of the outlier-group and rest-group coordinates in a head of size d."""
    r = np.arange(d)
    hi = r % BLOCK < HI
    return r[hi], r[~hi]


# ---- bit planes (the reference packing; cpp/tq.c does the same) ---------------------

def pack_plane(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack codes of 1, 2 or 4 bits into bytes, value i at byte i % (n*bits/8)."""
    n = len(codes)
    per_byte = 8 // bits
    nbytes = n // per_byte
    out = np.zeros(nbytes, dtype=np.uint8)
    for s in range(per_byte):
        out |= (codes[s * nbytes:(s + 1) * nbytes].astype(np.uint8) & ((1 << bits) - 1)) << (bits * s)
    return out


def unpack_plane(data: np.ndarray, bits: int, n: int) -> np.ndarray:
    per_byte = 8 // bits
    return np.concatenate([(data >> (bits * s)) & ((1 << bits) - 1) for s in range(per_byte)])[:n]


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Codes of 2, 3 or 4 bits as planes: 3 bits are a 2-bit plane then a 1-bit plane."""
    if bits == 3:
        return pack_plane(codes & 3, 2).tobytes() + pack_plane(codes >> 2, 1).tobytes()
    return pack_plane(codes, bits).tobytes()


def unpack_codes(data: bytes, bits: int, n: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 3:
        low = unpack_plane(raw[: n // 4], 2, n)
        high = unpack_plane(raw[n // 4:], 1, n)
        return low | (high << 2)
    return unpack_plane(raw, bits, n)
