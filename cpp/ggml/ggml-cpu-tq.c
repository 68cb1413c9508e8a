// CPU backend side of the TQ types: quantize into the cache and the K . Q dot product.
// Codes are decoded plane by plane (docs/format.md) into a small float buffer, then a plain
// dot product that the compiler vectorizes; the scales are applied once per group.
#include "ggml-tq-impl.h"

#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

void quantize_row_tq2_5(const float * x, void * y, int64_t k) {
    quantize_row_tq2_5_ref(x, y, k);
}

void quantize_row_tq3_5(const float * x, void * y, int64_t k) {
    quantize_row_tq3_5_ref(x, y, k);
}

// c[code] for a plane of n codes of `bits` bits (1, 2 or 4) ORed into codes[] at `shift`.
static inline void tq_plane(const uint8_t * p, int n, int bits, int shift, uint8_t * codes) {
    const int nbytes = n * bits / 8;
    const uint8_t mask = (uint8_t) ((1u << bits) - 1);
    for (int s = 0; s < 8 / bits; ++s) {
        for (int j = 0; j < nbytes; ++j) {
            codes[s * nbytes + j] |= (uint8_t) (((p[j] >> (bits * s)) & mask) << shift);
        }
    }
}

// sum_i c[codes[i]] * y[i] for n = 16 or 48. With AVX-512 the codebook (up to 16 entries) sits in
// one register and a permute looks up 16 codes at once.
static inline float tq_group_dot(const uint8_t * codes, const float * c, const float * y, int n) {
#if defined(__AVX512F__)
    const __m512 lut = _mm512_loadu_ps(c);
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) (codes + i)));
        acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, lut), _mm512_loadu_ps(y + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
#else
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) {
        sum += c[codes[i]] * y[i];
    }
    return sum;
#endif
}

static inline float tq_f16(uint16_t h) {
    ggml_fp16_t v;
    memcpy(&v, &h, sizeof(v));
    return ggml_fp16_to_fp32(v);
}

// The codes of one block's two groups, and its scales.
static inline void tq_decode_block(enum tq_type t, const void * blk, uint8_t * hi, uint8_t * lo, float * d_hi, float * d_lo) {
    memset(hi, 0, TQ_HI);
    memset(lo, 0, TQ_LO);
    if (t == TQ_TYPE_TQ2_5) {
        const block_tq2_5 * x = (const block_tq2_5 *) blk;
        tq_plane(x->hi_q2, TQ_HI, 2, 0, hi);
        tq_plane(x->hi_q1, TQ_HI, 1, 2, hi);
        tq_plane(x->lo_q2, TQ_LO, 2, 0, lo);
        *d_hi = tq_f16(x->d_hi);
        *d_lo = tq_f16(x->d_lo);
    } else {
        const block_tq3_5 * x = (const block_tq3_5 *) blk;
        tq_plane(x->hi_q4, TQ_HI, 4, 0, hi);
        tq_plane(x->lo_q2, TQ_LO, 2, 0, lo);
        tq_plane(x->lo_q1, TQ_LO, 1, 2, lo);
        *d_hi = tq_f16(x->d_hi);
        *d_lo = tq_f16(x->d_lo);
    }
}

static inline float tq_vec_dot(enum tq_type t, const tq_codebooks * cb, int n, const void * vx, const float * y) {
    const size_t bb = tq_block_bytes(t);
    float sum = 0.0f;
    for (int b = 0; b < n / TQ_BLOCK; ++b, y += TQ_BLOCK) {
        uint8_t hi[TQ_HI], lo[TQ_LO];
        float d_hi, d_lo;
        tq_decode_block(t, (const char *) vx + b * bb, hi, lo, &d_hi, &d_lo);
        sum += d_hi * tq_group_dot(hi, cb->hi.c, y, TQ_HI) + d_lo * tq_group_dot(lo, cb->lo.c, y + TQ_HI, TQ_LO);
    }
    return sum;
}

void ggml_vec_dot_tq2_5_f32(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by; (void) nrc;
    *s = tq_vec_dot(TQ_TYPE_TQ2_5, ggml_tq_codebooks(GGML_TYPE_TQ2_5), n, vx, (const float *) vy);
}

void ggml_vec_dot_tq3_5_f32(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by; (void) nrc;
    *s = tq_vec_dot(TQ_TYPE_TQ3_5, ggml_tq_codebooks(GGML_TYPE_TQ3_5), n, vx, (const float *) vy);
}
