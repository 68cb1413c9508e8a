// Device-side reading and writing of TQ blocks (docs/format.md): the CUDA twin of cpp/tq.c.
//
// A block is 64 values: 16 outlier-group slots then 48 rest-group slots, each group an f16
// scale and one Lloyd-Max code per value. 3- and 4-bit codes are bit planes, so a code is a
// few shifts of whole bytes and never straddles one. The byte offsets below are those of
// block_tq2_5 / block_tq3_5 in tq.h; static_asserts in tq-cuda.cu hold them to it.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

#include "ggml.h"
#include "tq.h"

// Offsets and widths of one type's planes. A code is A | B << 2, B the optional 1-bit plane.
template <ggml_type T> struct tq_layout;

template <> struct tq_layout<GGML_TYPE_TQ2_5> {
    static constexpr int bytes = 22;
    // hi: 2-bit plane of 4 bytes at 4, 1-bit plane of 2 bytes at 8; lo: 2-bit plane of 12 bytes at 10
    static constexpr int hi_a = 4, hi_a_bits = 2, hi_b = 8;
    static constexpr int lo_a = 10, lo_a_bits = 2, lo_b = -1;
};

template <> struct tq_layout<GGML_TYPE_TQ3_5> {
    static constexpr int bytes = 30;
    // hi: 4-bit plane of 8 bytes at 4; lo: 2-bit plane of 12 bytes at 12, 1-bit plane of 6 bytes at 24
    static constexpr int hi_a = 4, hi_a_bits = 4, hi_b = -1;
    static constexpr int lo_a = 12, lo_a_bits = 2, lo_b = 24;
};

// Where the code of one slot lives: plane A byte and shift, plane B byte and shift (or none).
struct tq_slot {
    int a_off, a_shift, a_mask;
    int b_off, b_shift; // b_off < 0: no 1-bit plane
    int hi;             // 1: outlier group (scale at byte 0, codebook hi), 0: rest (byte 2, lo)
};

// A plane of n codes of `bits` bits keeps code i in byte i % (n*bits/8) at bit bits*(i / that).
template <ggml_type T>
static __host__ __device__ __forceinline__ tq_slot tq_slot_of(int s) {
    using L = tq_layout<T>;
    tq_slot r;
    if (s < TQ_HI) {
        const int nb = TQ_HI * L::hi_a_bits / 8;
        r = { L::hi_a + s % nb, L::hi_a_bits * (s / nb), (1 << L::hi_a_bits) - 1,
              L::hi_b < 0 ? -1 : L::hi_b + s % (TQ_HI / 8), s / (TQ_HI / 8), 1 };
    } else {
        const int i = s - TQ_HI, nb = TQ_LO * L::lo_a_bits / 8;
        r = { L::lo_a + i % nb, L::lo_a_bits * (i / nb), (1 << L::lo_a_bits) - 1,
              L::lo_b < 0 ? -1 : L::lo_b + i % (TQ_LO / 8), i / (TQ_LO / 8), 0 };
    }
    return r;
}

static __device__ __forceinline__ int tq_code_at(const uint8_t * blk, const tq_slot & q) {
    int c = (blk[q.a_off] >> q.a_shift) & q.a_mask;
    if (q.b_off >= 0) {
        c |= ((blk[q.b_off] >> q.b_shift) & 1) << 2;
    }
    return c;
}

static __device__ __forceinline__ float tq_scale_at(const uint8_t * blk, int hi) {
    const uint16_t h = (uint16_t) blk[hi ? 0 : 2] | ((uint16_t) blk[hi ? 1 : 3] << 8);
    return __half2float(__ushort_as_half(h));
}

// Codebooks as the kernels see them: centroids (times sqrt(group size)), hi then lo.
struct tq_lut {
    float c[2][16];
};

// The 64 values of block b of a row, unscaled codebook lookups from `lut` (shared memory)
// times the group scales. Fully unrolled: every shift is a constant.
template <ggml_type T>
static __device__ __forceinline__ void tq_block_values(const uint8_t * blk, const float (*lut)[16], float * out) {
    const float d_hi = tq_scale_at(blk, 1), d_lo = tq_scale_at(blk, 0);
#pragma unroll
    for (int s = 0; s < TQ_BLOCK; ++s) {
        const tq_slot q = tq_slot_of<T>(s);
        out[s] = (q.hi ? d_hi : d_lo) * lut[q.hi ? 0 : 1][tq_code_at(blk, q)];
    }
}

// ---- quantization (the same arithmetic as tq_quantize_group in tq.c) ---------------

// Codes and f16 scale of one group of n values; doubles and no contraction, like the C core.
template <int n>
static __device__ __forceinline__ uint16_t tq_quantize_group(const float * v, const tq_codebook & cb, int rule, uint8_t * codes) {
    double ss = 0.0;
#pragma unroll
    for (int i = 0; i < n; ++i) {
        ss = __dadd_rn(ss, __dmul_rn((double) v[i], (double) v[i]));
    }
    const double nrm = sqrt(ss);
    if (!(nrm > 0.0) || !isfinite(nrm)) {
#pragma unroll
        for (int i = 0; i < n; ++i) {
            codes[i] = 0;
        }
        return 0;
    }
    const float inv = (float) (sqrt((double) n) / nrm);
    const int nb = (1 << cb.bits) - 1;
    double cs = 0.0, vc = 0.0;
#pragma unroll
    for (int i = 0; i < n; ++i) {
        const float y = __fmul_rn(v[i], inv);
        int q = 0;
        while (q < nb && cb.bnd[q] < y) {
            ++q;
        }
        codes[i] = (uint8_t) q;
        cs = __dadd_rn(cs, __dmul_rn((double) cb.c[q], (double) cb.c[q]));
        vc = __dadd_rn(vc, __dmul_rn((double) v[i], (double) cb.c[q]));
    }
    float scale;
    switch (rule) {
        case TQ_SCALE_PLAIN: scale = (float) (nrm / sqrt((double) n)); break;
        case TQ_SCALE_LSQ:   scale = (float) (vc / cs); break;
        default:             scale = (float) (nrm / sqrt(cs)); break;
    }
    return __half_as_ushort(__float2half_rn(scale));
}

// Writes the planes of n codes of `bits` bits at `out` (bits 1, 2 or 4).
template <int n, int bits>
static __device__ __forceinline__ void tq_pack(const uint8_t * codes, uint8_t * out) {
    constexpr int per_byte = 8 / bits, nbytes = n / per_byte;
#pragma unroll
    for (int j = 0; j < nbytes; ++j) {
        uint8_t b = 0;
#pragma unroll
        for (int s = 0; s < per_byte; ++s) {
            b |= (uint8_t) ((codes[s * nbytes + j] & ((1 << bits) - 1)) << (bits * s));
        }
        out[j] = b;
    }
}

// Quantizes group `hi` (1: the 16 outlier slots, 0: the 48 others) of one block.
template <ggml_type T>
static __device__ __forceinline__ void tq_quantize_half_block(const float * v, const tq_codebooks & cb, int hi, uint8_t * blk) {
    using L = tq_layout<T>;
    uint8_t codes[TQ_LO];
    if (hi) {
        const uint16_t d = tq_quantize_group<TQ_HI>(v, cb.hi, cb.rule, codes);
        blk[0] = (uint8_t) d;
        blk[1] = (uint8_t) (d >> 8);
        tq_pack<TQ_HI, L::hi_a_bits>(codes, blk + L::hi_a);
        if (L::hi_b >= 0) {
            uint8_t top[TQ_HI];
#pragma unroll
            for (int i = 0; i < TQ_HI; ++i) {
                top[i] = codes[i] >> 2;
            }
            tq_pack<TQ_HI, 1>(top, blk + (L::hi_b < 0 ? 0 : L::hi_b));
        }
    } else {
        const uint16_t d = tq_quantize_group<TQ_LO>(v, cb.lo, cb.rule, codes);
        blk[2] = (uint8_t) d;
        blk[3] = (uint8_t) (d >> 8);
        tq_pack<TQ_LO, L::lo_a_bits>(codes, blk + L::lo_a);
        if (L::lo_b >= 0) {
            uint8_t top[TQ_LO];
#pragma unroll
            for (int i = 0; i < TQ_LO; ++i) {
                top[i] = codes[i] >> 2;
            }
            tq_pack<TQ_LO, 1>(top, blk + (L::lo_b < 0 ? 0 : L::lo_b));
        }
    }
}
