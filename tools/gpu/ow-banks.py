#!/usr/bin/env python3
"""Shared-memory passes of the decode kernel's epilogue stores (Ow), by a model of its indices.

    python3 tools/gpu/ow-banks.py

The decode kernel (cpp/cuda/tq-fattn.cuh) ends with each lane (g, t) storing its partial output
O[m][r] to Ow at column 2t + r % 2, dimension tq_v_dim(g, m, r / 2). This mirrors those index
functions (tq_v_dim, tq_quarter<T>::slot, tq_lo_pair_slot) in Python and counts, for each store
instruction, the passes a warp needs: the most distinct words that fall on one of the 32 banks.
It prints the mean over the epilogue's stores for rows of D words and for the padded, swapped
rows of tq_ow_swap. Keep it in step with those functions when they change.
"""

TQ_HI = 16  # outlier slots per 64-value block


def slot(v_type, q, p, e):
    if v_type in ("f16", "q8_0"):
        return 16 * q + 2 * p + e
    if p >= 2:  # tq_lo_pair_slot
        j, h = 3 * q + (p - 2) // 2, (p - 2) % 2
        return TQ_HI + j + 12 * (2 * h + e)
    return q + 4 * (2 * p + e) if v_type == "tq2_5" else 2 * q + p + 8 * e


def v_dim(d_head, v_type, g, i, h):
    if d_head >= 128:
        return (2 * (i // 8) + g // 4) * 64 + slot(v_type, g % 4, i % 8, h)
    return slot(v_type, g % 4, 4 * (g // 4) + i, h)


def mean_passes(d_head, v_type, word):
    m_tiles = (d_head // 128 if d_head >= 128 else 1) * (8 if d_head >= 128 else 4)
    passes = []
    for m in range(m_tiles):
        for r in range(4):
            banks = {}
            for lane in range(32):
                g, t = lane // 4, lane % 4
                w = word(2 * t + r % 2, v_dim(d_head, v_type, g, m, r // 2), d_head)
                banks.setdefault(w % 32, set()).add(w)
            passes.append(max(len(s) for s in banks.values()))
    return sum(passes) / len(passes)


def plain(c, d, d_head):
    return c * d_head + d


def padded_swapped(c, d, d_head):  # TQ_OW_STRIDE, tq_ow_swap
    return c * (d_head + 2) + (d ^ (((d >> 6) & 1) << 4))


if __name__ == "__main__":
    print("D    V      rows of D words  padded + swapped")
    for d_head in (64, 128, 256):
        for v_type in ("tq2_5", "tq3_5", "f16"):
            print(f"{d_head:<4} {v_type:<6} {mean_passes(d_head, v_type, plain):>15.2f}  "
                  f"{mean_passes(d_head, v_type, padded_swapped):>16.2f}")
