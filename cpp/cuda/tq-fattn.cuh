// Flash attention at decode over a KV cache with TQ K and/or V (mixed pairs with f16 / q8_0).
//
// Why a kernel of its own: upstream's vector kernel runs one query head per block, so with
// grouped-query attention every head of a group re-reads and re-decodes the same K/V rows.
// Here a block owns one KV head and a slice of the KV length, and the "columns" it computes
// are all (query token, query head) pairs that read that KV head (at most 8): each K and V
// row is read and decoded once per block, then used by every column.
//
// Both products run on tensor cores (mma m16n8k16, f16 in, f32 accumulate), the columns as the
// 8 of N and keys (K phase) or dimensions (V phase) as the 16 of M, so no row is padding. A
// lane decodes a "quarter" of a block at a time: 16 values as 8 f16 pairs, each pair one
// lookup in a shared table indexed by the two codes' bits as they sit in one plane byte, times
// the group scale. The pairs go straight into mma fragments; the order of dimensions inside a
// k-slice is free as long as Q follows it, so no code is ever moved into dimension order.
//
//   grid  (n_head_kv, n_splits, n_seq)   block 128 threads = 4 warps, each on its own 32-key tiles
//   K phase: S (16 keys x columns) = K Q^T; lane (g, t) decodes quarter t of keys g and g + 8 of
//            each 16-key half: its A fragment; Q's B fragments are fixed for the whole kernel
//   softmax: online, per column; lane (g, t) holds columns 2t, 2t + 1, the 8 lanes g of a t
//            hold a column's 32 keys
//   V phase: O^T (16 dims x columns) += V^T P^T; P's fragments are transposed into B fragments
//            with movmatrix (ggml_cuda_movmatrix); lane (g, t) decodes its dimensions of keys 2t, 2t+1, 2t+8, 2t+9 and
//            pairs them by key: element 0 of pair i is row g of m-tile i, element 1 row g + 8
// Each block merges its warps and writes unnormalized partial outputs and (max, sum) per
// column; a second kernel merges the splits. Extra rows beside the cache (a recent window's K
// and V kept in f32, ggml_tq_flash_attn_set_kv_extra) are one more split, which a small kernel
// of their own scores (k_tq_fattn_extra, tq-fattn.cu).
//
// Architectures: the kernel needs Turing's tensor-core instructions (mma.cuh) and its staged
// tiles Ampere's cp.async; other cards take upstream's path (ggml_cuda_tq_caps_of, tq-cuda.cuh).
#pragma once

#include "tq-cuda.cuh"
#include "tq-device.cuh"
#include "ggml-tq.h"
#include "mma.cuh"

static constexpr int TQ_FA_THREADS = 128;
static constexpr int TQ_FA_TILE    = 128;
static constexpr int TQ_FA_WARPS   = TQ_FA_THREADS / 32;
static constexpr int TQ_FA_MAX_COLS = 8;

struct tq_fa_params {
    const char * Q; const char * K; const char * V; const char * mask;
    float * part;   // [rows][n_splits][D] unnormalized outputs
    float2 * meta;  // [rows][n_splits] (max, sum)
    int n_q, n_head, n_head_kv, n_kv, n_splits, kv_per_split, ncols, gqa;
    int64_t nbq1, nbq2, nbq3, nbk1, nbk2, nbk3, nbv1, nbv2, nbv3, nbm1, nbm3;
    int k_ne3, v_ne3, mask_ne3;
    int k_row_bytes, v_row_bytes; // one head's row of K, of V
    float scale, softcap;
    int stage;          // K and V 4-byte aligned (data and strides): the decode may stage its tiles (tq_fa_stages)
    tq_lut lut_k, lut_v;
    const half * Tq;    // fused Q transform [n_head_kv][D][D] (row i: output i, f16), or null
    const float * qraw; // with Tq: the untransformed Q of the one token, [n_head][D]
    // the first cells' exact K rows (ggml_tq_flash_attn_set_k_exact), f32, scored instead of
    // theirs; null when none
    const char * k_exact; int n_exact, e_ne3;
    int64_t nbe1, nbe2, nbe3;
    // rows after the cache's (ggml_tq_flash_attn_set_kv_extra), f32: scored by a kernel of their
    // own (k_tq_fattn_extra, tq-fattn.cu) as the last split; null when none. With them the
    // decode kernel's splits are n_splits - 1, and n_splits strides part and meta
    const char * k_extra; const char * v_extra; int n_extra, x_ne3;
    int64_t nbxk1, nbxk2, nbxk3, nbxv1, nbxv2, nbxv3;
};

// Column c's query at dimension d, as the attention reads it (c: query token c / gqa, head
// c % gqa of KV head hkv's group); 0 for the padding columns from p.ncols on.
static __device__ __forceinline__ float tq_fa_q(const tq_fa_params & p, int seq, int hkv, int c, int d) {
    if (c >= p.ncols) {
        return 0.0f;
    }
    const int j = c / p.gqa, head = hkv * p.gqa + c % p.gqa;
    return ((const float *) (p.Q + seq * p.nbq3 + head * p.nbq2 + j * p.nbq1))[d];
}

// Launches the decode kernel over as many splits of the KV length as fill the GPU once
// (at most max_splits); returns the number of splits, which p.part / p.meta must hold: with
// extra rows (p.k_extra) one more, the last, which the caller fills (k_tq_fattn_extra).
template <int D, ggml_type TK, ggml_type TV>
int ggml_cuda_tq_fattn_launch(tq_fa_params p, int n_seq, int nsm, int max_splits, cudaStream_t stream);

// The kernels themselves are compiled only in the instance files tq-fattn-k-*.cu.
#ifdef TQ_FA_DEFINE_KERNELS

// ---- tensor cores ---------------------------------------------------------------------------
// C += A B with A 16x16 (row-major), B 16x8 (column-major), f16 in, f32 accumulate: mma.cuh's
// tile product (m16n8k16; two m16n8k8 on Turing), whose tiles hold what the PTX fragments do.
// Lane l = 4g + t holds, as f16 pairs: a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 =
// A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9]; b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]; and
// c[0], c[1] = C[g][2t, 2t+1], c[2], c[3] = C[g+8][2t, 2t+1]. Keys (K phase) and dimensions
// (V phase) are the 16 rows, the at most 8 columns the 8 of N: no row is padding.
static __device__ __forceinline__ void tq_mma_full(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                   uint32_t b0, uint32_t b1) {
    ggml_cuda_mma::tile<16, 8, half2> A;
    ggml_cuda_mma::tile<8, 8, half2>  B;
    ggml_cuda_mma::tile<16, 8, float> C;
    const uint32_t a[4] = { a0, a1, a2, a3 }, b[2] = { b0, b1 };
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        A.x[i] = *(const half2 *) &a[i];
        C.x[i] = c[i];
    }
    B.x[0] = *(const half2 *) &b[0];
    B.x[1] = *(const half2 *) &b[1];
    ggml_cuda_mma::mma(C, A, B);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        c[i] = C.x[i];
    }
}

// An 8x8 matrix of f16 held as lane l = 4g + t having row g, elements 2t, 2t+1, transposed in
// the same layout (lane (g, t) gets column g, rows 2t, 2t+1): mma.cuh's movmatrix.
static __device__ __forceinline__ uint32_t tq_movmatrix_trans(uint32_t x) {
    return (uint32_t) ggml_cuda_movmatrix((int) x);
}

// e^x as a multiply and the SFU's 2^x with results below 2^-126 flushed to 0 (such weights
// change no sum here), whatever the build's -ftz: without it __expf adds a range fix-up to each
// call. (ex2.approx is on every architecture.)
static __device__ __forceinline__ float tq_exp(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x * 1.4426950408889634f));
    return r;
}

static __device__ __forceinline__ uint32_t tq_h2(float lo, float hi) {
    const half2 h = __floats2half2_rn(lo, hi);
    return *(const uint32_t *) &h;
}

// A 32-bit word at a shared-memory address (__cvta_generic_to_shared). The table lookups use
// these: an entry's address is then one multiply-add on the lane's base, where a generic pointer
// costs three instructions (the shared window's base, recomputed under register pressure)
static __device__ __forceinline__ uint32_t tq_lds(uint32_t addr) {
    uint32_t v;
    asm volatile("ld.shared.b32 %0, [%1];" : "=r"(v) : "r"(addr));
    return v;
}

// x & m where the compiler cannot see it: otherwise it turns (x & m) * k + base into a shift, a
// mask and an add, one instruction more than the mask and a multiply-add
template <uint32_t M>
static __device__ __forceinline__ uint32_t tq_and(uint32_t x) {
    uint32_t r;
    asm("and.b32 %0, %1, %2;" : "=r"(r) : "r"(x), "n"(M));
    return r;
}

static __device__ __forceinline__ uint32_t tq_h2_mul(uint32_t x, uint32_t s) {
    const half2 r = __hmul2(*(const half2 *) &x, *(const half2 *) &s);
    return *(const uint32_t *) &r;
}

// A TQ block's two group scales, r.d = outlier scale (bits 0-15) | rest scale (16-31), both f16:
// pairs 0, 1 of a quarter are outliers, 2..7 the rest
static __device__ __forceinline__ void tq_scale_pairs(uint32_t d, uint32_t (&x)[8]) {
    const uint32_t dh = __byte_perm(d, 0, 0x1010), dl = __byte_perm(d, 0, 0x3232);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        x[i] = tq_h2_mul(x[i], i < 2 ? dh : dl);
    }
}

static __device__ __forceinline__ float2 tq_scales(uint32_t d) {
    const half2 h = *(const half2 *) &d;
    return __half22float2(h);
}

// ---- pair tables --------------------------------------------------------------------------
// The shared tables in which a quarter's decode looks up its pairs (filled by tq_pair_tables),
// each entry an f16 pair of centroids. A warp's 32 lookups have random indices: with one entry
// per index several lanes land on one bank and the lookup takes several passes. TQ2_5's tables
// (its lookups are most of the decode loop's) hold copies instead: lane l reads copy l % LO of
// a rest pair and l % HI of an outlier pair; with 32 and 16 copies a rest lookup is one pass
// and an outlier lookup at most two. Head 256 has room for 8 and 4 (48 KB of shared memory).
template <ggml_type T, int D> struct tq_tables { uint32_t unused; }; // f16, q8_0: none
template <int D> struct tq_tables<GGML_TYPE_TQ2_5, D> {
    static constexpr int LO = D >= 256 ? 8 : 32, HI = D >= 256 ? 4 : 16;
    uint32_t hi[0x60][HI]; // outlier pairs (3-bit codes) at tq_pair3_index
    uint32_t lo[16][LO];   // rest pairs (2-bit codes) by the nibble of a plane byte
};
template <int D> struct tq_tables<GGML_TYPE_TQ3_5, D> {
    uint32_t hi[256];  // outlier pairs (4-bit codes): a plane byte is one pair
    uint32_t lo[0x60]; // rest pairs (3-bit codes) at tq_pair3_index
};

// ---- quarters: 16 values of a block as 8 f16 pairs ---------------------------------------
// tq_quarter<T>: load(row, b, q) reads what quarter q (0..3) of block b needs; decode() turns
// it into 8 pairs (half2 bits) with the group scales applied; slot(q, p, e) is the block slot
// (0..63) of element e of pair p. For the TQ types a quarter is 2 outlier-group pairs and 6
// rest-group pairs, each pair two codes of one plane byte (docs/format.md), looked up in a
// shared table (tq_pair_tables) by an index that its plane bytes give in one or two operations.
// Types with two_scales also decode<D, false>() without the scales, which scales() gives as
// floats (outliers', the rest's): the K phase applies them once per key in f32.

// Pairs of 3-bit codes (TQ2_5's outliers, TQ3_5's rest): a 2-bit plane byte a holds the low
// bits of 4 codes at bits 0-1, 2-3, 4-5, 6-7, the 1-bit plane byte b their third bits at bits
// 0, 2, 4, 6. Pair e takes codes 2e, 2e + 1; its table index is their low bits (a nibble) | the
// two third bits at bits 4 and 6: two operations from the plane bytes as they are loaded.
static __device__ __forceinline__ int tq_pair3_index(int a, int b, int e) {
    return e == 0 ? (a & 0xF) | ((b << 4) & 0x50) : (a >> 4) | (b & 0x50);
}

// The entry at tq_pair3_index i: codes ((i & 3) | third bit i.4, ((i >> 2) & 3) | third bit i.6).
static __device__ __forceinline__ uint32_t tq_pair3_entry(const float * c, int i) {
    return tq_h2(c[(i & 3) | ((i >> 2) & 4)], c[((i >> 2) & 3) | ((i >> 4) & 4)]);
}

// The rest-group pairs (both TQ types): 2-bit plane byte j = 3q + m holds rest slots j, j + 12,
// j + 24, j + 36 at bits 0, 2, 4, 6; pair 2 + 2m + h takes the two of nibble h.
static __host__ __device__ __forceinline__ int tq_lo_pair_slot(int q, int p, int e) {
    const int j = 3 * q + (p - 2) / 2, h = (p - 2) % 2;
    return TQ_HI + j + 12 * (2 * h + e);
}

template <ggml_type T> struct tq_quarter;

template <> struct tq_quarter<GGML_TYPE_TQ2_5> {
    using L = tq_layout<GGML_TYPE_TQ2_5>;
    struct raw { uint32_t d; int a, b, l[3]; };
    static __device__ __forceinline__ raw load(const char * row, int blk, int q) {
        const uint8_t * p = (const uint8_t *) row + blk * L::bytes;
        raw r;
        r.d = *(const uint16_t *) p | ((uint32_t) *(const uint16_t *) (p + 2) << 16);
        r.a = p[L::hi_a + q];                      // outlier slots q + 4k at bits 2k
        r.b = p[L::hi_b + (q & 1)] >> (q >> 1);     // their third bits at bits 2k
#pragma unroll
        for (int m = 0; m < 3; ++m) {
            r.l[m] = p[L::lo_a + 3 * q + m];
        }
        return r;
    }
    template <int D, bool SCALED = true>
    static __device__ __forceinline__ void decode(const raw & r, const tq_tables<GGML_TYPE_TQ2_5, D> & tb, uint32_t (&x)[8]) {
        using TB = tq_tables<GGML_TYPE_TQ2_5, D>;
        const int lane = threadIdx.x % 32;
        const uint32_t hi = __cvta_generic_to_shared(&tb.hi[0][lane % TB::HI]);
        const uint32_t lo = __cvta_generic_to_shared(&tb.lo[0][lane % TB::LO]);
        x[0] = tq_lds(hi + tq_pair3_index(r.a, r.b, 0) * (4 * TB::HI));
        x[1] = tq_lds(hi + tq_pair3_index(r.a, r.b, 1) * (4 * TB::HI));
#pragma unroll
        for (int m = 0; m < 3; ++m) { // a plane byte's two nibbles are two pairs
            x[2 + 2 * m] = tq_lds(lo + tq_and<0xF>(r.l[m]) * (4 * TB::LO));
            x[3 + 2 * m] = tq_lds(lo + tq_and<0xF0>(r.l[m]) * (4 * TB::LO / 16));
        }
        if constexpr (SCALED) {
            tq_scale_pairs(r.d, x);
        }
    }
    static constexpr bool two_scales = true;
    static __device__ __forceinline__ float2 scales(const raw & r) { return tq_scales(r.d); }
    static __host__ __device__ __forceinline__ int slot(int q, int p, int e) {
        return p < 2 ? q + 4 * (2 * p + e) : tq_lo_pair_slot(q, p, e);
    }
};

template <> struct tq_quarter<GGML_TYPE_TQ3_5> {
    using L = tq_layout<GGML_TYPE_TQ3_5>;
    struct raw { uint32_t d; int h, a[3], b[3]; };
    static __device__ __forceinline__ raw load(const char * row, int blk, int q) {
        const uint8_t * p = (const uint8_t *) row + blk * L::bytes;
        raw r;
        r.d = *(const uint16_t *) p | ((uint32_t) *(const uint16_t *) (p + 2) << 16);
        r.h = *(const uint16_t *) (p + L::hi_a + 2 * q); // nibble bytes 2q, 2q + 1: slots (j, j + 8)
#pragma unroll
        for (int m = 0; m < 3; ++m) {
            const int j = 3 * q + m;
            r.a[m] = p[L::lo_a + j];
            r.b[m] = p[L::lo_b + j % 6] >> (j / 6); // third bits of rest slots j + 12k at bits 2k
        }
        return r;
    }
    template <int D, bool SCALED = true>
    static __device__ __forceinline__ void decode(const raw & r, const tq_tables<GGML_TYPE_TQ3_5, D> & tb, uint32_t (&x)[8]) {
        const uint32_t hi = __cvta_generic_to_shared(&tb.hi[0]), lo = __cvta_generic_to_shared(&tb.lo[0]);
        x[0] = tq_lds(hi + tq_and<0xFF>(r.h) * 4);
        x[1] = tq_lds(hi + (r.h >> 8) * 4);
#pragma unroll
        for (int m = 0; m < 3; ++m) {
            x[2 + 2 * m] = tq_lds(lo + tq_pair3_index(r.a[m], r.b[m], 0) * 4);
            x[3 + 2 * m] = tq_lds(lo + tq_pair3_index(r.a[m], r.b[m], 1) * 4);
        }
        if constexpr (SCALED) {
            tq_scale_pairs(r.d, x);
        }
    }
    static constexpr bool two_scales = true;
    static __device__ __forceinline__ float2 scales(const raw & r) { return tq_scales(r.d); }
    static __host__ __device__ __forceinline__ int slot(int q, int p, int e) {
        return p < 2 ? 2 * q + p + 8 * e : tq_lo_pair_slot(q, p, e);
    }
};

// f16 and q8_0 (mixed pairs): quarter q is the 16 values 16q .. 16q + 15 of the block, in order.
template <> struct tq_quarter<GGML_TYPE_F16> {
    struct raw { uint4 a, b; };
    static __device__ __forceinline__ raw load(const char * row, int blk, int q) {
        const uint4 * p = (const uint4 *) (row + (blk * TQ_BLOCK + 16 * q) * 2);
        return { p[0], p[1] };
    }
    template <int D>
    static __device__ __forceinline__ void decode(const raw & r, const tq_tables<GGML_TYPE_F16, D> &, uint32_t (&x)[8]) {
        x[0] = r.a.x; x[1] = r.a.y; x[2] = r.a.z; x[3] = r.a.w;
        x[4] = r.b.x; x[5] = r.b.y; x[6] = r.b.z; x[7] = r.b.w;
    }
    static __host__ __device__ __forceinline__ int slot(int q, int p, int e) { return 16 * q + 2 * p + e; }
    static constexpr bool two_scales = false;
};

template <> struct tq_quarter<GGML_TYPE_Q8_0> {
    struct raw { uint32_t d; uint32_t w[4]; };
    static __device__ __forceinline__ raw load(const char * row, int blk, int q) {
        const block_q8_0 * bq = (const block_q8_0 *) row + 2 * blk + q / 2;
        const uint16_t * s = (const uint16_t *) (bq->qs + 16 * (q % 2)); // blocks are 2-byte aligned
        raw r;
        r.d = *(const uint16_t *) &bq->d;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            r.w[i] = s[2 * i] | ((uint32_t) s[2 * i + 1] << 16);
        }
        return r;
    }
    template <int D>
    static __device__ __forceinline__ void decode(const raw & r, const tq_tables<GGML_TYPE_Q8_0, D> &, uint32_t (&x)[8]) {
        const uint32_t d = __byte_perm(r.d, 0, 0x1010);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int w = r.w[i / 2] >> (16 * (i % 2));
            x[i] = tq_h2_mul(tq_h2((float) (int8_t) (w & 0xFF), (float) (int8_t) (w >> 8)), d);
        }
    }
    static __host__ __device__ __forceinline__ int slot(int q, int p, int e) { return 16 * q + 2 * p + e; }
    static constexpr bool two_scales = false;
};

// Fills a type's pair tables (tq_tables) from its codebooks. Consecutive threads write the
// copies of one entry, so a warp reads one or two codebook entries at a time (no divergent
// reads of the kernel's arguments).
template <ggml_type T, int D>
static __device__ __forceinline__ void tq_pair_tables(const tq_lut & l, tq_tables<T, D> & tb) {
    if constexpr (T == GGML_TYPE_TQ2_5) {
        constexpr int HI = tq_tables<T, D>::HI, LO = tq_tables<T, D>::LO;
        for (int i = threadIdx.x; i < 0x60 * HI; i += blockDim.x) {
            tb.hi[i / HI][i % HI] = tq_pair3_entry(l.c[0], i / HI);
        }
        for (int i = threadIdx.x; i < 16 * LO; i += blockDim.x) {
            const int n = i / LO;
            tb.lo[n][i % LO] = tq_h2(l.c[1][n & 3], l.c[1][n >> 2]);
        }
    } else if constexpr (T == GGML_TYPE_TQ3_5) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) {
            tb.hi[i] = tq_h2(l.c[0][i & 15], l.c[0][i >> 4]);
            if (i < 0x60) {
                tb.lo[i] = tq_pair3_entry(l.c[1], i);
            }
        }
    }
}

static __device__ __forceinline__ void tq_prefetch_l1(const void * p) {
    asm volatile("prefetch.global.L1 [%0];" :: "l"(p));
}

// Key k's K and V rows (each may straddle two 128-byte lines) into L1.
static __device__ __forceinline__ void tq_fa_prefetch(const tq_fa_params & p, const char * K, const char * V, int k, int kv1) {
    if (k < kv1) {
        const char * kr = K + (int64_t) k * p.nbk1;
        const char * vr = V + (int64_t) k * p.nbv1;
        tq_prefetch_l1(kr);
        tq_prefetch_l1(kr + p.k_row_bytes - 1);
        tq_prefetch_l1(vr);
        tq_prefetch_l1(vr + p.v_row_bytes - 1);
    }
}

// ---- staged tiles ------------------------------------------------------------------------
// In a KV cache's layout a head's rows lie n_head_kv rows apart (352 bytes for 8 heads of 44),
// and the decode's byte loads, each over 8 keys (K phase) or 4 (V phase), then touch 8 or 4
// L1 lines where adjacent rows need 3-4, which made the op markedly slower than with each
// head's rows adjacent (device-cuda.sh perf, docs/results/cuda-h200.md). With head 128 and TQ types for K and V, each warp copies its next tile's rows into shared
// memory (cp.async, 4 bytes a lane: one instruction reads two whole rows) while it works on
// the current one, and the decode reads them there. (Head 64's 22-byte rows are not 4-byte
// aligned in a cache; head 256's buffers would need dynamic shared memory: not yet.)
template <int D, ggml_type TK, ggml_type TV>
static constexpr __host__ __device__ bool tq_fa_stages() {
    return D == 128 && (TK == GGML_TYPE_TQ2_5 || TK == GGML_TYPE_TQ3_5) && (TV == GGML_TYPE_TQ2_5 || TV == GGML_TYPE_TQ3_5);
}

// A head's row of type T in bytes, and the stride of the staged rows. TQ2_5's 44-byte rows 48
// bytes apart make the K phase's loads from them conflict-free and the V phase's fewer passes
// than at 44; TQ3_5's 60-byte rows stay unpadded: no stride up to 80 does better in both phases
// (scripts/stage-banks.py models the shared-memory passes of each stride).
template <ggml_type T, int D>
static constexpr __host__ __device__ int tq_fa_row_bytes() {
    if constexpr (T == GGML_TYPE_F16) {
        return 2 * D;
    } else if constexpr (T == GGML_TYPE_Q8_0) {
        return D / 32 * (int) sizeof(block_q8_0);
    } else {
        return D / TQ_BLOCK * tq_layout<T>::bytes;
    }
}
template <ggml_type T, int D>
static constexpr __host__ __device__ int tq_fa_stage_stride() {
    return tq_fa_row_bytes<T, D>() + (T == GGML_TYPE_TQ2_5 ? 4 : 0);
}

// cp.async, guarded as cp-async.cuh guards it. Not cp-async.cuh's own wrappers: it has the
// 16-byte copy and wait_all only, and the staged rows are 4-byte aligned (44-byte TQ2_5 rows)
// and the double buffer waits for all but the newest group.
static __device__ __forceinline__ void tq_cp_async4(uint32_t dst, const void * src) {
#ifdef CP_ASYNC_AVAILABLE
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(dst), "l"(src) : "memory");
#else
    GGML_UNUSED_VARS(dst, src);
    NO_DEVICE_CODE;
#endif // CP_ASYNC_AVAILABLE
}
static __device__ __forceinline__ void tq_cp_commit() {
#ifdef CP_ASYNC_AVAILABLE
    asm volatile("cp.async.commit_group;" ::: "memory");
#else
    NO_DEVICE_CODE;
#endif // CP_ASYNC_AVAILABLE
}
template <int N>
static __device__ __forceinline__ void tq_cp_wait() {
#ifdef CP_ASYNC_AVAILABLE
    asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
#else
    NO_DEVICE_CODE;
#endif // CP_ASYNC_AVAILABLE
}

// A warp copies 32 rows of RB bytes, nb1 apart from src, to shared memory at dst, RS apart; rows
// from n_valid on repeat row n_valid - 1 (as the unstaged path clamps its rows: their scores are
// masked, but V's values must be finite). Lane l < R W copies word l % W of row l / W of each R
// rows (W = RB / 4 words, R = 32 / W rows per instruction).
template <int RB, int RS>
static __device__ __forceinline__ void tq_stage_rows(uint32_t dst, const char * src, const int64_t nb1, const int n_valid, const int lane) {
    constexpr int W = RB / 4, R = 32 / W;
    static_assert(RB % 4 == 0 && RS % 4 == 0 && R >= 1 && 32 % R == 0, "staged rows: 4-byte words, whole rows per instruction");
    if (lane < R * W) {
        const int rl = lane / W, c = 4 * (lane % W);
        dst += rl * RS + c;
        const char * last = src + (n_valid - 1) * nb1 + c;
        src += rl * nb1 + c;
        if (n_valid >= 32) {
#pragma unroll
            for (int i = 0; i < 32; i += R) {
                tq_cp_async4(dst + i * RS, src);
                src += R * nb1;
            }
        } else { // the split's last tile
#pragma unroll
            for (int i = 0; i < 32; i += R) {
                tq_cp_async4(dst + i * RS, i + rl < n_valid ? src : last);
                src += R * nb1;
            }
        }
    }
}

// The V-phase dimension that lane group g2 (0..7) holds as element h of its pair i: with
// D >= 128 a group takes quarter g2 % 4 of blocks g2 / 4, 2 + g2 / 4, ...; with D = 64, half of
// quarter g2 % 4 of the one block.
template <int D, ggml_type TV>
static __device__ __forceinline__ int tq_v_dim(int g2, int i, int h) {
    if constexpr (D >= 128) {
        return (2 * (i / 8) + g2 / 4) * TQ_BLOCK + tq_quarter<TV>::slot(g2 % 4, i % 8, h);
    } else {
        return tq_quarter<TV>::slot(g2 % 4, 4 * (g2 / 4) + i, h);
    }
}

// A warp's partial outputs (Ow): row c of D + 2 words holds column c, dimension d at
// tq_ow_swap(d). The epilogue stores them in the V phase's order: the 4 lanes t of a group g
// write columns 2t + e, the 8 groups dimensions tq_v_dim(g, ...), among them d and d + 64. Rows
// of D words would put the 4 lanes t on one bank (8-way conflicts at D = 128); 2 words of
// padding per row and the 16-word halves swapped in odd 64-dimension blocks spread them over
// the banks: at D = 128, 1 pass per store for a TQ2_5 V, 1.25 for TQ3_5, 4 for f16/q8_0, against
// 8, 8 and 16 (scripts/ow-banks.py, a model of these indices).
// A warp's 32 consecutive d of one row stay 32 banks for the merge's reads.
#define TQ_OW_STRIDE(D) ((D) + 2)
static __device__ __forceinline__ int tq_ow_swap(int d) {
    return d ^ (((d >> 6) & 1) << 4);
}

// Warps work on their own 32-key tiles with their own online softmax (no block-wide barrier
// in the loop, so one warp's loads overlap another's arithmetic); the block merges its four
// warps at the end.
template <int D, ggml_type TK, ggml_type TV, bool STAGE>
// 4 blocks per SM for D <= 128 (128 registers, at which the loop spills a few loads and stores
// per tile): at 3 blocks (no spills) ncu found the schedulers short of warps, neither issue- nor
// memory-bound
__launch_bounds__(TQ_FA_THREADS, D >= 256 ? 2 : 4)
static __global__ void k_tq_fattn_decode(const tq_fa_params p) {
#ifdef TURING_MMA_AVAILABLE
    constexpr int NC = TQ_FA_MAX_COLS;
    constexpr int NB = D / TQ_BLOCK;          // blocks per row
    constexpr int VQ = D >= 128 ? D / 128 : 1; // quarters a lane decodes per V row
    constexpr int VP = D >= 128 ? 8 : 4;      // pairs it uses of each
    using QK = tq_quarter<TK>;
    using QV = tq_quarter<TV>;
    // Q as the K phase's B fragments, scaled: slice s (16 dims) of block s / 4 holds quarter t's
    // pairs 2(s % 4) and 2(s % 4) + 1 for column g, as lane (g, t) reads them (in shared memory:
    // registers are what limits the blocks per SM)
    __shared__ uint2 Qf[D / 16][32];
    __shared__ tq_tables<TK, D> tab_k; // pair tables (tq_pair_tables)
    __shared__ tq_tables<TV, D> tab_v;
    __shared__ float Mw[TQ_FA_WARPS][NC], Lw[TQ_FA_WARPS][NC];
    __shared__ float Se[GGML_TQ_K_EXACT_MAX][NC]; // the exact cells' scores (p.k_exact), scaled
    // each warp's partial outputs (Ow), dimension d of row c at tq_ow_swap(d), written at the end.
    // Before that the memory first stages Q: the fused path's raw q (Qr), then Q transposed (Qt),
    // for the fragments. With STAGE it holds two tile buffers per warp (a tile's K rows, then its
    // V rows; buffer b of warp w at b SB / 2 + w WB), Q staged in buffers 1 before the loop
    constexpr int RSK = tq_fa_stage_stride<TK, D>(), RSV = tq_fa_stage_stride<TV, D>();
    constexpr int WB = 32 * (RSK + RSV);
    constexpr int SB = STAGE ? 2 * TQ_FA_WARPS * WB : 0;
    constexpr int OWB = TQ_FA_WARPS * NC * TQ_OW_STRIDE(D) * (int) sizeof(float);
    __shared__ __align__(16) char shu[SB > OWB ? SB : OWB];
    float (&Ow)[TQ_FA_WARPS][NC][TQ_OW_STRIDE(D)] = *reinterpret_cast<float (*)[TQ_FA_WARPS][NC][TQ_OW_STRIDE(D)]>(shu);
    static_assert(SB / 2 + 2 * NC * D * (int) sizeof(float) <= (SB > OWB ? SB : OWB), "Qr and Qt fit");
    float * Qr = (float *) (shu + SB / 2);
    float * Qt = Qr + NC * D;

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int hkv = blockIdx.x, split = blockIdx.y, seq = blockIdx.z;

    const char * K = p.K + (seq % p.k_ne3) * p.nbk3 + hkv * p.nbk2;
    const char * V = p.V + (seq % p.v_ne3) * p.nbv3 + hkv * p.nbv2;
    const int kv0 = split * p.kv_per_split;
    const int kv1 = min(p.n_kv, kv0 + p.kv_per_split);

    // the tables come from the arguments: built while the kernel before may still run
    ggml_cuda_pdl_lc();
    tq_pair_tables<TK>(p.lut_k, tab_k);
    tq_pair_tables<TV>(p.lut_v, tab_v);
    if (p.Tq) { // fused: the rows of Q's transform this warp's first job reads (see below)
        tq_prefetch_rows_l2<D>(p.Tq + ((int64_t) hkv * D + 32 * (warp % (D / 32))) * D, lane);
    }
    ggml_cuda_pdl_sync();
    // the warp's first tile on its way into L1 while Q is set up: at 16K a warp has only a few
    // tiles, and this memory latency was exposed once per block (not before the sync: the
    // cache write before this kernel may still be writing its newest row)
    if constexpr (STAGE) { // (buffer 0: Q is staged in buffers 1)
        const int k = kv0 + 32 * warp;
        if (k < kv1) {
            const uint32_t b = __cvta_generic_to_shared(shu + warp * WB);
            tq_stage_rows<tq_fa_row_bytes<TK, D>(), RSK>(b, K + k * p.nbk1, p.nbk1, kv1 - k, lane);
            tq_stage_rows<tq_fa_row_bytes<TV, D>(), RSV>(b + 32 * RSK, V + k * p.nbv1, p.nbv1, kv1 - k, lane);
        }
        tq_cp_commit();
    } else {
        tq_fa_prefetch(p, K, V, kv0 + 32 * warp + lane, kv1);
    }
    // column c = (query token j, head hkv*gqa + g) with j = c / gqa, g = c % gqa
    if (p.Tq) {
        // fused: Q = T_k q (one token) from the raw q in Qr; warp products (tq_warp_rows_dot),
        // a warp per 32 dimensions and column
        for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
            const int c = i / D, d = i % D;
            Qr[i] = c < p.ncols ? p.qraw[(int64_t) (hkv * p.gqa + c) * D + d] : 0.0f;
        }
        __syncthreads();
        for (int job = warp; job < p.ncols * (D / 32); job += TQ_FA_WARPS) {
            const int c = job / (D / 32), rows = 32 * (job % (D / 32));
            float xl[D / 32];
            tq_load_lane<D / 32>(Qr + c * D + lane * (D / 32), xl);
            Qt[(rows + lane) * NC + c] = tq_warp_rows_dot<D>(p.Tq + ((int64_t) hkv * D + rows) * D, xl, lane);
        }
        for (int i = tid; i < (NC - p.ncols) * D; i += TQ_FA_THREADS) {
            Qt[(i % D) * NC + p.ncols + i / D] = 0.0f;
        }
    } else {
        for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
            const int c = i / D, d = i % D;
            Qt[d * NC + c] = tq_fa_q(p, seq, hkv, c, d);
        }
    }
    __syncthreads();

    // the exact cells' scores from Q as it stands (Qt; the loop's tiles reuse its memory)
    const int n_exact = p.k_exact ? min(p.n_exact, kv1) : 0;
    if (kv0 < n_exact) {
        const char * E = p.k_exact + (seq % p.e_ne3) * p.nbe3 + hkv * p.nbe2;
        for (int i = tid; i < (n_exact - kv0) * NC; i += TQ_FA_THREADS) {
            const int k = kv0 + i / NC, c = i % NC;
            const float * e = (const float *) (E + k * p.nbe1);
            float s = 0.0f;
            for (int d = 0; d < D; ++d) {
                s = fmaf(Qt[d * NC + c], e[d], s);
            }
            Se[k][c] = s * p.scale;
        }
    }

    // Q's fragments (Qf), the slices shared among the warps
#pragma unroll
    for (int s = warp; s < D / 16; s += TQ_FA_WARPS) {
        const int base = (s / 4) * TQ_BLOCK;
        const int p0 = 2 * (s % 4), p1 = p0 + 1;
        Qf[s][lane] = make_uint2(tq_h2(Qt[(base + QK::slot(t, p0, 0)) * NC + g] * p.scale,
                                       Qt[(base + QK::slot(t, p0, 1)) * NC + g] * p.scale),
                                 tq_h2(Qt[(base + QK::slot(t, p1, 0)) * NC + g] * p.scale,
                                       Qt[(base + QK::slot(t, p1, 1)) * NC + g] * p.scale));
    }
    __syncthreads();

    const half * mask = p.mask ? (const half *) (p.mask + (seq % p.mask_ne3) * p.nbm3) : nullptr;
    // lane (g, t) works on columns 2t and 2t + 1
    bool col_ok[2];
    const half * mrow[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        col_ok[e] = 2 * t + e < p.ncols;
        // (a column past ncols reads row 0's mask: its scores are dropped anyway)
        mrow[e] = mask ? mask + (int64_t) (col_ok[e] ? (2 * t + e) / p.gqa : 0) * p.nbm1 / 2 : nullptr;
    }
    const bool mask_shared = mrow[0] == mrow[1]; // both columns of one query token: one load

    float M[2] = { -INFINITY, -INFINITY }, Lp[2] = { 0.0f, 0.0f }; // running max; this lane's share of the sum
    constexpr int MT = VQ * VP; // 16-dimension m-tiles of the V phase
    float O[MT][4];             // O^T: rows tq_v_dim(g, ...), columns 2t, 2t + 1 (see below)
#pragma unroll
    for (int m = 0; m < MT; ++m) {
        O[m][0] = O[m][1] = O[m][2] = O[m][3] = 0.0f;
    }

    int buf = 0;
    for (int t0 = kv0 + 32 * warp; t0 < kv1; t0 += 32 * TQ_FA_WARPS) {
        // STAGE: the tile's rows in shared memory (sk, sv), the next tile's copied into the other
        // buffer meanwhile; otherwise the next tile's rows into L1 while this one is worked on:
        // the decode's loads are then L1 hits, not one exposed memory latency per quarter
        const char * sk = nullptr;
        const char * sv = nullptr;
        if constexpr (STAGE) {
            __syncwarp(); // every lane is done with the other buffer (the tile before)
            const int k = t0 + 32 * TQ_FA_WARPS;
            if (k < kv1) {
                const uint32_t b = __cvta_generic_to_shared(shu + (buf ^ 1) * (SB / 2) + warp * WB);
                tq_stage_rows<tq_fa_row_bytes<TK, D>(), RSK>(b, K + k * p.nbk1, p.nbk1, kv1 - k, lane);
                tq_stage_rows<tq_fa_row_bytes<TV, D>(), RSV>(b + 32 * RSK, V + k * p.nbv1, p.nbv1, kv1 - k, lane);
            }
            tq_cp_commit();
            tq_cp_wait<1>(); // this lane's copies of this tile are done,
            __syncwarp();    // and every lane's are visible
            sk = shu + buf * (SB / 2) + warp * WB;
            sv = sk + 32 * RSK;
            buf ^= 1;
        } else {
            tq_fa_prefetch(p, K, V, t0 + 32 * TQ_FA_WARPS + lane, kv1);
        }
        // K phase, keys as mma's M rows: S[h] = scores of keys t0 + 16h + g (elements 0, 1) and
        // t0 + 16h + g + 8 (2, 3) against columns 2t, 2t + 1. Lane (g, t) decodes quarter t of
        // both keys: their pairs are its A fragments, Q's the B fragments (Qf, as they stand)
        float S[2][4];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            S[h][0] = S[h][1] = S[h][2] = S[h][3] = 0.0f;
            const char * row0 = STAGE ? sk + (16 * h + g) * RSK : K + (int64_t) min(t0 + 16 * h + g, kv1 - 1) * p.nbk1;
            const char * row1 = STAGE ? sk + (16 * h + g + 8) * RSK : K + (int64_t) min(t0 + 16 * h + g + 8, kv1 - 1) * p.nbk1;
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                uint32_t x0[8], x1[8];
                const typename QK::raw r0 = QK::load(row0, b, t), r1 = QK::load(row1, b, t);
                if constexpr (QK::two_scales) {
                    // the centroids as they are, the outlier slice (s = 0) and the rest (1..3)
                    // into accumulators of their own, scaled once per key in f32: 16 products
                    // instead of 64 pair multiplies per lane and tile
                    QK::template decode<D, false>(r0, tab_k, x0);
                    QK::template decode<D, false>(r1, tab_k, x1);
                    float Sh[4] = { 0.0f, 0.0f, 0.0f, 0.0f }, Sl[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
#pragma unroll
                    for (int s = 0; s < 4; ++s) {
                        const uint2 q = Qf[4 * b + s][lane];
                        tq_mma_full(s == 0 ? Sh : Sl, x0[2 * s], x1[2 * s], x0[2 * s + 1], x1[2 * s + 1], q.x, q.y);
                    }
                    const float2 d0 = QK::scales(r0), d1 = QK::scales(r1); // keys g and g + 8
#pragma unroll
                    for (int r = 0; r < 4; ++r) {
                        S[h][r] = fmaf(Sl[r], r < 2 ? d0.y : d1.y, fmaf(Sh[r], r < 2 ? d0.x : d1.x, S[h][r]));
                    }
                } else {
                    QK::decode(r0, tab_k, x0);
                    QK::decode(r1, tab_k, x1);
#pragma unroll
                    for (int s = 0; s < 4; ++s) {
                        const uint2 q = Qf[4 * b + s][lane];
                        tq_mma_full(S[h], x0[2 * s], x1[2 * s], x0[2 * s + 1], x1[2 * s + 1], q.x, q.y);
                    }
                }
            }
        }

        if (t0 < n_exact) { // (whole warps: t0 is the warp's)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const int k = t0 + 16 * h + g + 8 * (r / 2);
                    S[h][r] = k < n_exact ? Se[k][2 * t + r % 2] : S[h][r];
                }
            }
        }

        // online softmax of columns 2t, 2t + 1 over the tile: the 8 lanes g of each t hold its 32 keys
        // (the softcap and the mask under branches taken by the whole block, the bounds as
        // selects: no branch per score)
        if (p.softcap != 0.0f) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    S[h][r] = p.softcap * tanhf(S[h][r]);
                }
            }
        }
        if (mask) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
#pragma unroll
                for (int kr = 0; kr < 2; ++kr) {
                    const int k = min(t0 + 16 * h + g + 8 * kr, kv1 - 1);
                    const float m0 = __half2float(mrow[0][k]);
                    S[h][2 * kr]     += m0;
                    S[h][2 * kr + 1] += mask_shared ? m0 : __half2float(mrow[1][k]);
                }
            }
        }
        float mx[2] = { -INFINITY, -INFINITY };
#pragma unroll
        for (int h = 0; h < 2; ++h) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int k = t0 + 16 * h + g + 8 * (r / 2), e = r % 2;
                S[h][r] = k < kv1 && col_ok[e] ? S[h][r] : -INFINITY;
                mx[e] = fmaxf(mx[e], S[h][r]);
            }
        }
        float alpha[2], m_new[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
#pragma unroll
            for (int o = 4; o < 32; o <<= 1) {
                mx[e] = fmaxf(mx[e], __shfl_xor_sync(0xffffffff, mx[e], o));
            }
            m_new[e] = fmaxf(M[e], mx[e]);
            alpha[e] = m_new[e] == -INFINITY ? 1.0f : tq_exp(M[e] - m_new[e]);
            M[e] = m_new[e];
        }
        // P^T as B fragments of the V phase: P's rows (keys g, g + 8 of a 16-key slice) are what
        // the lane holds; movmatrix transposes each 8x8 half so that lane (g, t) gets keys 2t,
        // 2t + 1 (and + 8) of column g
        uint32_t pb[2][2];
        float ps[2] = { 0.0f, 0.0f };
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float e4[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int e = r % 2;
                e4[r] = m_new[e] == -INFINITY ? 0.0f : tq_exp(S[h][r] - m_new[e]);
                ps[e] += e4[r];
            }
            pb[h][0] = tq_movmatrix_trans(tq_h2(e4[0], e4[1]));
            pb[h][1] = tq_movmatrix_trans(tq_h2(e4[2], e4[3]));
        }
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            Lp[e] = Lp[e] * alpha[e] + ps[e];
        }
        // past the first tiles the running max seldom moves: skip the rescale (32 multiplies at
        // D = 128) when no lane's does
        if (__any_sync(0xffffffff, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                O[m][0] *= alpha[0];
                O[m][1] *= alpha[1];
                O[m][2] *= alpha[0];
                O[m][3] *= alpha[1];
            }
        }

        // V phase, dimensions as mma's M rows: O^T += V^T P^T over two 16-key slices. Lane (g, t)
        // decodes its dimensions of keys 2t, 2t+1, 2t+8, 2t+9 of the slice and pairs them by key;
        // element 0 of its pair i is row g of m-tile i, element 1 row g + 8
#pragma unroll
        for (int kk = 0; kk < 2; ++kk) {
            const char * rows[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int kr = 16 * kk + 2 * t + (r & 1) + 8 * (r >> 1);
                rows[r] = STAGE ? sv + kr * RSV : V + (int64_t) min(t0 + kr, kv1 - 1) * p.nbv1;
            }
#pragma unroll
            for (int vq = 0; vq < VQ; ++vq) {
                const int blk = D >= 128 ? 2 * vq + g / 4 : 0;
                uint32_t X[4][8];
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    QV::decode(QV::load(rows[r], blk, g % 4), tab_v, X[r]);
                }
#pragma unroll
                for (int i = 0; i < VP; ++i) {
                    uint32_t y[4];
#pragma unroll
                    for (int r = 0; r < 4; ++r) {
                        if constexpr (VP == 8) {
                            y[r] = X[r][i];
                        } else {
                            y[r] = g < 4 ? X[r][i] : X[r][i + 4];
                        }
                    }
                    tq_mma_full(O[vq * VP + i], __byte_perm(y[0], y[1], 0x5410), __byte_perm(y[0], y[1], 0x7632),
                                __byte_perm(y[2], y[3], 0x5410), __byte_perm(y[2], y[3], 0x7632), pb[kk][0], pb[kk][1]);
                }
            }
        }
    }

    // column 2t + e: the lane's share of the sum, over the 8 lanes g
#pragma unroll
    for (int e = 0; e < 2; ++e) {
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) {
            Lp[e] += __shfl_xor_sync(0xffffffff, Lp[e], o);
        }
    }
    // O[m]: rows tq_v_dim(g, m, 0) (elements 0, 1) and tq_v_dim(g, m, 1) (2, 3), columns 2t, 2t + 1,
    // at tq_ow_swap: bit 6 of every dimension group g holds is bit 2 of g (tq_v_dim), so the
    // swap is one constant of the lane
    const int swap = D >= 128 ? ((g >> 2) & 1) << 4 : 0;
    if constexpr (STAGE) { // Ow overlaps every warp's tile buffers
        tq_cp_wait<0>();
        __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            Ow[warp][2 * t + r % 2][tq_v_dim<D, TV>(g, m, r / 2) ^ swap] = O[m][r];
        }
    }
    if (g == 0) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            Mw[warp][2 * t + e] = M[e];
            Lw[warp][2 * t + e] = Lp[e];
        }
    }
    __syncthreads();

    // merge the four warps and write this split's unnormalized result and (max, sum)
    for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
        const int c = i / D, d = i % D;
        if (c >= p.ncols) {
            continue;
        }
        float m = -INFINITY;
#pragma unroll
        for (int w = 0; w < TQ_FA_WARPS; ++w) {
            m = fmaxf(m, Mw[w][c]);
        }
        float o = 0.0f, l = 0.0f;
#pragma unroll
        for (int w = 0; w < TQ_FA_WARPS; ++w) {
            const float f = Mw[w][c] == -INFINITY ? 0.0f : __expf(Mw[w][c] - m);
            o += f * Ow[w][c][tq_ow_swap(d)];
            l += f * Lw[w][c];
        }
        const int j = c / p.gqa, head = hkv * p.gqa + c % p.gqa;
        const int64_t r = ((int64_t) seq * p.n_q + j) * p.n_head + head;
        p.part[(r * p.n_splits + split) * D + d] = o;
        if (d == 0) {
            p.meta[r * p.n_splits + split] = make_float2(m, l);
        }
    }
#else
    GGML_UNUSED(p);
    NO_DEVICE_CODE;
#endif // TURING_MMA_AVAILABLE
}

template <int D, ggml_type TK, ggml_type TV, bool STAGE>
static int tq_fa_launch_instance(tq_fa_params p, int n_seq, int nsm, int max_splits, cudaStream_t stream) {
    // one full wave: as many blocks as the SMs hold at once, split evenly over heads and sequences
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_tq_fattn_decode<D, TK, TV, STAGE>, TQ_FA_THREADS, 0));
    const int tiles = (p.n_kv + TQ_FA_TILE - 1) / TQ_FA_TILE;
    int splits = std::max(1, std::min({ tiles, max_splits, std::max(1, per_sm) * nsm / (p.n_head_kv * n_seq) }));
    p.kv_per_split = ((tiles + splits - 1) / splits) * TQ_FA_TILE;
    const int n_cache = (p.n_kv + p.kv_per_split - 1) / p.kv_per_split;
    p.n_splits = n_cache + (p.k_extra ? 1 : 0); // the extra rows' split last (k_tq_fattn_extra)
    const dim3 grid(p.n_head_kv, n_cache, n_seq);
    ggml_cuda_kernel_launch(k_tq_fattn_decode<D, TK, TV, STAGE>, ggml_cuda_kernel_launch_params(grid, TQ_FA_THREADS, 0, stream), p);
    return p.n_splits;
}

template <int D, ggml_type TK, ggml_type TV>
int ggml_cuda_tq_fattn_launch(tq_fa_params p, int n_seq, int nsm, int max_splits, cudaStream_t stream) {
    if constexpr (tq_fa_stages<D, TK, TV>()) {
        if (p.stage) {
            return tq_fa_launch_instance<D, TK, TV, true>(p, n_seq, nsm, max_splits, stream);
        }
    }
    return tq_fa_launch_instance<D, TK, TV, false>(p, n_seq, nsm, max_splits, stream);
}

#define TQ_FA_DECL(D, TK, TV) template int ggml_cuda_tq_fattn_launch<D, TK, TV>(tq_fa_params, int, int, int, cudaStream_t);
#define TQ_FA_DECL_ALL_D(TK, TV) TQ_FA_DECL(64, TK, TV) TQ_FA_DECL(128, TK, TV) TQ_FA_DECL(256, TK, TV)

#endif // TQ_FA_DEFINE_KERNELS
