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
};

// A plane of n codes of `bits` bits keeps code i in byte i % (n*bits/8) at bit bits*(i / that).
// Slot j of the outlier group (HI) or of the rest; the group is a template argument, so every
// division here is by a constant (run-time ones cost the TQ->f16 conversion half its time).
template <ggml_type T, bool HI>
static __host__ __device__ __forceinline__ tq_slot tq_slot_in_group(int j) {
    using L = tq_layout<T>;
    if constexpr (HI) {
        constexpr int nb = TQ_HI * L::hi_a_bits / 8;
        return { L::hi_a + j % nb, L::hi_a_bits * (j / nb), (1 << L::hi_a_bits) - 1,
                 L::hi_b < 0 ? -1 : L::hi_b + j % (TQ_HI / 8), j / (TQ_HI / 8) };
    } else {
        constexpr int nb = TQ_LO * L::lo_a_bits / 8;
        return { L::lo_a + j % nb, L::lo_a_bits * (j / nb), (1 << L::lo_a_bits) - 1,
                 L::lo_b < 0 ? -1 : L::lo_b + j % (TQ_LO / 8), j / (TQ_LO / 8) };
    }
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

// ---- programmatic dependent launch ----------------------------------------------------
//
// The TQ kernels launch as upstream's do (ggml_cuda_kernel_launch): on Hopper a kernel may
// start while the one before it still runs, and waits in ggml_cuda_pdl_sync() before it reads
// or writes anything another kernel touches. Before that point it may only read what no
// kernel writes: its arguments and the model's transforms T. Each also calls
// ggml_cuda_pdl_lc() first thing, so that the kernel after it can start just as early.

// Rows 0..31 of T (D columns, at `rows`) on their way into L2, lane l fetching row l: what the
// warp's product will read, fetched while the kernel still waits for the one before it.
template <int D>
static __device__ __forceinline__ void tq_prefetch_rows_l2(const half * rows, const int lane) {
    const char * r = (const char *) (rows + lane * D);
#pragma unroll
    for (int i = 0; i < D * (int) sizeof(half); i += 128) {
        asm volatile("prefetch.global.L2 [%0];" :: "l"(r + i));
    }
}

// ---- per-head transforms: a warp's 32 rows of T x ------------------------------------------
//
// Lane l takes D/32 consecutive columns of each of the 32 rows (one coalesced load per row, all
// independent), so the 32 row sums end up spread over the lanes; a transposing reduction
// (16 + 8 + 4 + 2 + 1 shuffles instead of 32 x 5) leaves row l's sum in lane l.

template <int E> struct tq_lane_vec;
template <> struct tq_lane_vec<2> { using type = float2; };
template <> struct tq_lane_vec<4> { using type = float4; };
template <> struct tq_lane_vec<8> { struct type { float4 a, b; }; };

template <int E>
static __device__ __forceinline__ void tq_load_lane(const float * p, float (&v)[E]) {
    const typename tq_lane_vec<E>::type w = *(const typename tq_lane_vec<E>::type *) p;
    memcpy(v, &w, sizeof(v));
}

// The lane's E consecutive f16 elements of a row of T (E = 2, 4, 8: 4, 8, 16 bytes, aligned), as floats.
template <int E>
static __device__ __forceinline__ void tq_load_lane_f16(const half * p, float (&v)[E]) {
    half2 w[E / 2];
    if constexpr (E == 2) {
        *(float *) w = *(const float *) p;
    } else if constexpr (E == 4) {
        *(float2 *) w = *(const float2 *) p;
    } else {
        *(float4 *) w = *(const float4 *) p;
    }
#pragma unroll
    for (int i = 0; i < E / 2; ++i) {
        const float2 f = __half22float2(w[i]);
        v[2 * i] = f.x;
        v[2 * i + 1] = f.y;
    }
}

// One step of the transposing reduction: after the step of offset O, value i of a lane is row
// (its lane bits above O) * 2O + i, summed over the lanes that differ from it in bit O and below.
template <int O>
static __device__ __forceinline__ void tq_transpose_reduce(float (&s)[32], const int lane) {
    const bool upper = lane & O;
#pragma unroll
    for (int i = 0; i < O; ++i) {
        const float send = upper ? s[i] : s[i + O];
        const float keep = upper ? s[i + O] : s[i];
        s[i] = keep + __shfl_xor_sync(0xffffffff, send, O);
    }
}

// Rows 0..31 of T (D columns, row-major f16, at `rows`) times x (rounded to f16), where xl holds the lane's D/32
// consecutive elements of x (columns lane * D/32 ...): lane l returns row l's product.
template <int D>
static __device__ __forceinline__ float tq_warp_rows_dot(const half * rows, const float (&xl)[D / 32], const int lane) {
    constexpr int E = D / 32;
    float xh[E]; // x rounded to f16, as the CPU's f16 product rounds it: both then quantize the same rows
#pragma unroll
    for (int e = 0; e < E; ++e) {
        xh[e] = __half2float(__float2half_rn(xl[e]));
    }
    float s[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) {
        float tv[E];
        tq_load_lane_f16<E>(rows + i * D + lane * E, tv);
        s[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < E; ++e) {
            s[i] = fmaf(tv[e], xh[e], s[i]);
        }
    }
    tq_transpose_reduce<16>(s, lane);
    tq_transpose_reduce<8>(s, lane);
    tq_transpose_reduce<4>(s, lane);
    tq_transpose_reduce<2>(s, lane);
    tq_transpose_reduce<1>(s, lane);
    return s[0];
}

// ---- quantization: one warp per block ------------------------------------------------
//
// The arithmetic of tq_quantize_group in tq.c (double sums, float y = v * inv, the same
// boundary search, the scale s = ||v|| / ||c[codes]||), with the sums taken across the warp:
// only their order differs from the C core's, which moves a double in its last bits and
// practically never the f16 scale or a code.

static __device__ __forceinline__ double tq_warp_sum(double x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        x += __shfl_xor_sync(0xffffffff, x, o);
    }
    return x;
}

static __device__ __forceinline__ int tq_code_of(float y, const tq_codebook & cb) {
    const int nb = (1 << cb.bits) - 1;
    int q = 0;
    while (q < nb && cb.bnd[q] < y) {
        ++q;
    }
    return q;
}

// Scale of a group from its sums: ||v|| / ||c[codes]||, the reconstruction keeps the length.
static __device__ __forceinline__ uint16_t tq_group_scale(double ss, double cs) {
    const double nrm = sqrt(ss);
    if (!(nrm > 0.0) || !isfinite(nrm)) {
        return 0;
    }
    return __half_as_ushort(__float2half_rn((float) (nrm / sqrt(cs))));
}

// Byte o (4 <= o < bytes) of a block from its 64 codes (slot order): plane bytes gather
// code i of a plane from byte i % nbytes at bit bits * (i / nbytes).
template <ggml_type T>
static __device__ __forceinline__ uint8_t tq_plane_byte(const uint8_t * codes, int o) {
    using L = tq_layout<T>;
    struct plane { int off, n, bits, first, shift; }; // `shift`: which bits of the code
    const plane planes[4] = {
        { L::hi_a, TQ_HI, L::hi_a_bits, 0, 0 },
        { L::hi_b, TQ_HI, 1, 0, 2 },
        { L::lo_a, TQ_LO, L::lo_a_bits, TQ_HI, 0 },
        { L::lo_b, TQ_LO, 1, TQ_HI, 2 },
    };
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const plane & pl = planes[k];
        const int nbytes = pl.n * pl.bits / 8;
        if (pl.off >= 0 && o >= pl.off && o < pl.off + nbytes) {
            const int j = o - pl.off;
            uint8_t b = 0;
            for (int s = 0; s < 8 / pl.bits; ++s) {
                b |= (uint8_t) (((codes[pl.first + s * nbytes + j] >> pl.shift) & ((1 << pl.bits) - 1)) << (pl.bits * s));
            }
            return b;
        }
    }
    return 0;
}

// Quantizes the 64 values of one block; lane l holds slots l and l + 32. `codes` is 64 bytes
// of this warp's shared memory. Writes the whole block (lanes 0..bytes-1, a byte each).
template <ggml_type T>
static __device__ __forceinline__ void tq_quantize_block_warp(float v0, float v1, const tq_codebooks & cb,
                                                              uint8_t * codes, uint8_t * blk) {
    const int lane = threadIdx.x % 32;
    const bool hi0 = lane < TQ_HI; // slot lane + 32 is always in the rest group
    const double q0 = (double) v0 * (double) v0, q1 = (double) v1 * (double) v1;
    const double ss_hi = tq_warp_sum(hi0 ? q0 : 0.0);
    const double ss_lo = tq_warp_sum((hi0 ? 0.0 : q0) + q1);
    const double nrm_hi = sqrt(ss_hi), nrm_lo = sqrt(ss_lo);
    const bool ok_hi = nrm_hi > 0.0 && isfinite(nrm_hi), ok_lo = nrm_lo > 0.0 && isfinite(nrm_lo);
    const float inv_hi = ok_hi ? (float) (sqrt((double) TQ_HI) / nrm_hi) : 0.0f;
    const float inv_lo = ok_lo ? (float) (sqrt((double) TQ_LO) / nrm_lo) : 0.0f;

    const tq_codebook & cb0 = hi0 ? cb.hi : cb.lo;
    const bool ok0 = hi0 ? ok_hi : ok_lo;
    const int c0 = ok0 ? tq_code_of(__fmul_rn(v0, hi0 ? inv_hi : inv_lo), cb0) : 0;
    const int c1 = ok_lo ? tq_code_of(__fmul_rn(v1, inv_lo), cb.lo) : 0;
    codes[lane] = (uint8_t) c0;
    codes[lane + 32] = (uint8_t) c1;

    const double e0 = (double) cb0.c[c0], e1 = (double) cb.lo.c[c1];
    const double cs_hi = tq_warp_sum(hi0 ? e0 * e0 : 0.0);
    const double cs_lo = tq_warp_sum((hi0 ? 0.0 : e0 * e0) + e1 * e1);
    const uint16_t d_hi = tq_group_scale(ss_hi, cs_hi);
    const uint16_t d_lo = tq_group_scale(ss_lo, cs_lo);
    __syncwarp();

    if (lane < tq_layout<T>::bytes) {
        uint8_t b;
        switch (lane) {
            case 0:  b = (uint8_t) d_hi;        break;
            case 1:  b = (uint8_t) (d_hi >> 8); break;
            case 2:  b = (uint8_t) d_lo;        break;
            case 3:  b = (uint8_t) (d_lo >> 8); break;
            default: b = tq_plane_byte<T>(codes, lane); break;
        }
        blk[lane] = b;
    }
    __syncwarp();
}
