#!/usr/bin/env python3
"""Shared-memory passes of the decode loop's loads from staged tiles, by a model of its indices.

    python3 tools/gpu/stage-banks.py

With staged tiles (tq_fa_stages in cpp/cuda/tq-fattn.cuh) each warp's 32 K and V rows sit in
shared memory, row k at k * stride, and the decode's byte loads read them there:
  K phase  lane (g, t) reads quarter t of block b of rows 16h + g and 16h + g + 8;
  V phase  lane (g, t) reads quarter g % 4 of block g / 4 of rows 16kk + 2t + (r & 1) + 8(r >> 1)
           (head 128: one quarter per row).
The byte offsets inside a quarter mirror tq_quarter<T>::load. For each load instruction this
counts the passes a warp needs (the most distinct 32-bit words on one of the 32 banks; lanes on
one word share it) and prints, per row stride, the passes over the loads of one tile. The
kernel's stride (tq_fa_stage_stride) is the row's bytes, padded to 48 for TQ2_5. Keep this in
step with those functions when they change.
"""

BLOCK_BYTES = {"tq2_5": 22, "tq3_5": 30}
ROW_BYTES = {t: 2 * b for t, b in BLOCK_BYTES.items()}  # head 128: two 64-value blocks


def quarter_offsets(t):
    """Byte offsets one quarter q's loads read, each a function of q (tq_quarter<T>::load)."""
    if t == "tq2_5":  # scales at 0, 2; outlier planes at 4 (+q) and 8 (+q&1); rest plane at 10 (+3q+m)
        fixed = [lambda q: 0, lambda q: 2, lambda q: 4 + q, lambda q: 8 + (q & 1)]
        return fixed + [(lambda m: lambda q: 10 + 3 * q + m)(m) for m in range(3)]
    fixed = [lambda q: 0, lambda q: 2, lambda q: 4 + 2 * q]  # scales; the outlier nibbles' u16 at 4 + 2q
    rest = []
    for m in range(3):
        rest += [(lambda m: lambda q: 12 + 3 * q + m)(m), (lambda m: lambda q: 24 + (3 * q + m) % 6)(m)]
    return fixed + rest


def passes(addrs):
    banks = {}
    for a in addrs:
        banks.setdefault((a // 4) % 32, set()).add(a // 4)
    return max(len(words) for words in banks.values())


def tile_passes(t, stride):
    bb, offs = BLOCK_BYTES[t], quarter_offsets(t)
    k = v = n = 0
    for f in offs:
        for h in range(2):
            for half in range(2):
                for b in range(2):
                    k += passes([(16 * h + g + 8 * half) * stride + b * bb + f(q) for g in range(8) for q in range(4)])
        for kk in range(2):
            for r in range(4):
                v += passes([(16 * kk + 2 * q + (r & 1) + 8 * (r >> 1)) * stride + (g // 4) * bb + f(g % 4)
                             for g in range(8) for q in range(4)])
        n += 8
    return k, v, n


def main():
    for t in ("tq2_5", "tq3_5"):
        print(f"{t}: row {ROW_BYTES[t]} bytes; passes per tile, K phase / V phase (loads per phase)")
        for stride in range(ROW_BYTES[t], ROW_BYTES[t] + 24, 4):
            k, v, n = tile_passes(t, stride)
            print(f"  stride {stride:3d}: {k:4d} / {v:4d}  ({n}; {k / n:.2f} / {v / n:.2f} per load)")


if __name__ == "__main__":
    main()
