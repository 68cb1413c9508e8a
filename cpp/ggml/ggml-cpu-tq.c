// CPU backend side of the TQ types: quantize into the cache, the K . Q dot product, and the
// fused "VKQ += v * dequantize(V row)" of flash attention.
//
// Decode is called once per (key, query head), so it is where the time goes. With AVX-512
// (BW, VL, VBMI2) the bit planes of docs/format.md are unpacked in registers: a plane's bytes
// are broadcast to one lane per shift, shifted and masked, and the lanes' valid bytes are
// compressed into code order; a permute then looks 16 codes up at once in a codebook held in
// one register. Elsewhere a portable path decodes into a small buffer.
#include "ggml-tq-impl.h"

#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VBMI2__)
#define TQ_AVX512 1
#include <immintrin.h>
#endif

void quantize_row_tq2_5(const float * x, void * y, int64_t k) {
    quantize_row_tq2_5_ref(x, y, k);
}

void quantize_row_tq3_5(const float * x, void * y, int64_t k) {
    quantize_row_tq3_5_ref(x, y, k);
}

static inline float tq_f16(uint16_t h) {
    ggml_fp16_t v;
    memcpy(&v, &h, sizeof(v));
    return ggml_fp16_to_fp32(v);
}

#if defined(TQ_AVX512)

// The 16 hi codes (bytes of an xmm) and the 48 lo codes (bytes 0..47 of a zmm) of a block.
static inline __m128i tq2_5_hi(const block_tq2_5 * x) {
    uint32_t q2;
    uint16_t q1;
    memcpy(&q2, x->hi_q2, 4);
    memcpy(&q1, x->hi_q1, 2);
    // code i: bits 2*(i/4) of byte i%4, and bit i/2 of byte i%2 of the 1-bit plane
    const __m128i c2 = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32((int) q2), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
    const __m128i c1 = _mm_and_si128(_mm_srlv_epi16(_mm_set1_epi16((short) q1), _mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7)), _mm_set1_epi8(1));
    return _mm_or_si128(c2, _mm_slli_epi16(c1, 2));
}

// 48 2-bit codes from 12 bytes: code i is bits 2*(i/12) of byte i%12.
static inline __m512i tq_lo_q2(const uint8_t * p) {
    const __m512i b = _mm512_broadcast_i32x4(_mm_maskz_loadu_epi8(0x0FFF, p));
    const __m512i s = _mm512_srlv_epi16(b, _mm512_setr_epi64(0, 0, 0x0002000200020002, 0x0002000200020002,
                                                             0x0004000400040004, 0x0004000400040004,
                                                             0x0006000600060006, 0x0006000600060006));
    return _mm512_maskz_compress_epi8(0x0FFF0FFF0FFF0FFFull, _mm512_and_si512(s, _mm512_set1_epi8(3)));
}

static inline __m512i tq2_5_lo(const block_tq2_5 * x) {
    return tq_lo_q2(x->lo_q2);
}

static inline __m128i tq3_5_hi(const block_tq3_5 * x) {
    // code i: low nibble of byte i for i < 8, high nibble of byte i-8 after
    const __m128i b = _mm_loadl_epi64((const __m128i *) x->hi_q4);
    const __m128i m = _mm_set1_epi8(0x0F);
    return _mm_unpacklo_epi64(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
}

static inline __m512i tq3_5_lo(const block_tq3_5 * x) {
    // 1-bit plane: code i is bit i/6 of byte i%6; one qword lane per bit
    const __m512i b = _mm512_broadcastq_epi64(_mm_maskz_loadu_epi8(0x3F, x->lo_q1));
    const __m512i s = _mm512_srlv_epi16(b, _mm512_setr_epi64(0, 0x0001000100010001, 0x0002000200020002, 0x0003000300030003,
                                                            0x0004000400040004, 0x0005000500050005,
                                                            0x0006000600060006, 0x0007000700070007));
    const __m512i c1 = _mm512_maskz_compress_epi8(0x3F3F3F3F3F3F3F3Full, _mm512_and_si512(s, _mm512_set1_epi8(1)));
    return _mm512_or_si512(tq_lo_q2(x->lo_q2), _mm512_slli_epi16(c1, 2));
}

static inline __m512 tq_lookup(__m128i codes, __m512 lut) {
    return _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes), lut);
}

// One block as four vectors of 16 centroids (unscaled): hi, then lo 0..47.
#define TQ_BLOCK_VALUES(hi, lo, lut_hi, lut_lo, v0, v1, v2, v3)                   \
    const __m512 v0 = tq_lookup(hi, lut_hi);                                        \
    const __m512 v1 = tq_lookup(_mm512_castsi512_si128(lo), lut_lo);               \
    const __m512 v2 = tq_lookup(_mm512_extracti32x4_epi32(lo, 1), lut_lo);         \
    const __m512 v3 = tq_lookup(_mm512_extracti32x4_epi32(lo, 2), lut_lo)

#define TQ_DEFINE_SIMD(name, block_t)                                                                   \
    static float name##_dot(const tq_codebooks * cb, int n, const void * vx, const float * y) {        \
        const block_t * x = (const block_t *) vx;                                                       \
        const __m512 lut_hi = _mm512_loadu_ps(cb->hi.c), lut_lo = _mm512_loadu_ps(cb->lo.c);            \
        __m512 acc = _mm512_setzero_ps();                                                               \
        for (int b = 0; b < n / TQ_BLOCK; ++b, y += TQ_BLOCK) {                                         \
            TQ_BLOCK_VALUES(name##_hi(x + b), name##_lo(x + b), lut_hi, lut_lo, v0, v1, v2, v3);        \
            __m512 lo = _mm512_mul_ps(v1, _mm512_loadu_ps(y + 16));                                     \
            lo = _mm512_fmadd_ps(v2, _mm512_loadu_ps(y + 32), lo);                                      \
            lo = _mm512_fmadd_ps(v3, _mm512_loadu_ps(y + 48), lo);                                      \
            acc = _mm512_fmadd_ps(_mm512_mul_ps(v0, _mm512_loadu_ps(y)), _mm512_set1_ps(tq_f16(x[b].d_hi)), acc); \
            acc = _mm512_fmadd_ps(lo, _mm512_set1_ps(tq_f16(x[b].d_lo)), acc);                          \
        }                                                                                               \
        return _mm512_reduce_add_ps(acc);                                                               \
    }                                                                                                   \
    static void name##_mad(const tq_codebooks * cb, int n, float * y, const void * vx, float v) {      \
        const block_t * x = (const block_t *) vx;                                                       \
        const __m512 lut_hi = _mm512_loadu_ps(cb->hi.c), lut_lo = _mm512_loadu_ps(cb->lo.c);            \
        for (int b = 0; b < n / TQ_BLOCK; ++b, y += TQ_BLOCK) {                                         \
            TQ_BLOCK_VALUES(name##_hi(x + b), name##_lo(x + b), lut_hi, lut_lo, v0, v1, v2, v3);        \
            const __m512 sh = _mm512_set1_ps(v * tq_f16(x[b].d_hi)), sl = _mm512_set1_ps(v * tq_f16(x[b].d_lo)); \
            _mm512_storeu_ps(y,      _mm512_fmadd_ps(v0, sh, _mm512_loadu_ps(y)));                      \
            _mm512_storeu_ps(y + 16, _mm512_fmadd_ps(v1, sl, _mm512_loadu_ps(y + 16)));                 \
            _mm512_storeu_ps(y + 32, _mm512_fmadd_ps(v2, sl, _mm512_loadu_ps(y + 32)));                 \
            _mm512_storeu_ps(y + 48, _mm512_fmadd_ps(v3, sl, _mm512_loadu_ps(y + 48)));                 \
        }                                                                                               \
    }

TQ_DEFINE_SIMD(tq2_5, block_tq2_5)
TQ_DEFINE_SIMD(tq3_5, block_tq3_5)

static float tq_row_dot(enum tq_type t, const tq_codebooks * cb, int n, const void * vx, const float * y) {
    return t == TQ_TYPE_TQ2_5 ? tq2_5_dot(cb, n, vx, y) : tq3_5_dot(cb, n, vx, y);
}

static void tq_row_mad(enum tq_type t, const tq_codebooks * cb, int n, float * y, const void * vx, float v) {
    if (t == TQ_TYPE_TQ2_5) {
        tq2_5_mad(cb, n, y, vx, v);
    } else {
        tq3_5_mad(cb, n, y, vx, v);
    }
}

#else // portable path

// Codes of a plane of n codes of `bits` bits (1, 2 or 4), ORed into codes[] at `shift`.
static inline void tq_plane(const uint8_t * p, int n, int bits, int shift, uint8_t * codes) {
    const int nbytes = n * bits / 8;
    const uint8_t mask = (uint8_t) ((1u << bits) - 1);
    for (int s = 0; s < 8 / bits; ++s) {
        for (int j = 0; j < nbytes; ++j) {
            codes[s * nbytes + j] |= (uint8_t) (((p[j] >> (bits * s)) & mask) << shift);
        }
    }
}

// The 64 centroid values of one block, unscaled, and its two scales.
static inline void tq_block_values(enum tq_type t, const tq_codebooks * cb, const void * blk, float * out, float * d_hi, float * d_lo) {
    uint8_t codes[TQ_BLOCK] = {0};
    if (t == TQ_TYPE_TQ2_5) {
        const block_tq2_5 * x = (const block_tq2_5 *) blk;
        tq_plane(x->hi_q2, TQ_HI, 2, 0, codes);
        tq_plane(x->hi_q1, TQ_HI, 1, 2, codes);
        tq_plane(x->lo_q2, TQ_LO, 2, 0, codes + TQ_HI);
        *d_hi = tq_f16(x->d_hi);
        *d_lo = tq_f16(x->d_lo);
    } else {
        const block_tq3_5 * x = (const block_tq3_5 *) blk;
        tq_plane(x->hi_q4, TQ_HI, 4, 0, codes);
        tq_plane(x->lo_q2, TQ_LO, 2, 0, codes + TQ_HI);
        tq_plane(x->lo_q1, TQ_LO, 1, 2, codes + TQ_HI);
        *d_hi = tq_f16(x->d_hi);
        *d_lo = tq_f16(x->d_lo);
    }
    for (int i = 0; i < TQ_HI; ++i) {
        out[i] = cb->hi.c[codes[i]];
    }
    for (int i = TQ_HI; i < TQ_BLOCK; ++i) {
        out[i] = cb->lo.c[codes[i]];
    }
}

static float tq_row_dot(enum tq_type t, const tq_codebooks * cb, int n, const void * vx, const float * y) {
    const size_t bb = tq_block_bytes(t);
    float sum = 0.0f;
    for (int b = 0; b < n / TQ_BLOCK; ++b, y += TQ_BLOCK) {
        float v[TQ_BLOCK], d_hi, d_lo, s_hi = 0.0f, s_lo = 0.0f;
        tq_block_values(t, cb, (const char *) vx + b * bb, v, &d_hi, &d_lo);
        for (int i = 0; i < TQ_HI; ++i) {
            s_hi += v[i] * y[i];
        }
        for (int i = TQ_HI; i < TQ_BLOCK; ++i) {
            s_lo += v[i] * y[i];
        }
        sum += d_hi * s_hi + d_lo * s_lo;
    }
    return sum;
}

static void tq_row_mad(enum tq_type t, const tq_codebooks * cb, int n, float * y, const void * vx, float v) {
    const size_t bb = tq_block_bytes(t);
    for (int b = 0; b < n / TQ_BLOCK; ++b, y += TQ_BLOCK) {
        float c[TQ_BLOCK], d_hi, d_lo;
        tq_block_values(t, cb, (const char *) vx + b * bb, c, &d_hi, &d_lo);
        const float sh = v * d_hi, sl = v * d_lo;
        for (int i = 0; i < TQ_HI; ++i) {
            y[i] += sh * c[i];
        }
        for (int i = TQ_HI; i < TQ_BLOCK; ++i) {
            y[i] += sl * c[i];
        }
    }
}

#endif

static inline enum tq_type tq_of(enum ggml_type type) {
    return type == GGML_TYPE_TQ2_5 ? TQ_TYPE_TQ2_5 : TQ_TYPE_TQ3_5;
}

void ggml_vec_dot_tq2_5_f32(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by; (void) nrc;
    *s = tq_row_dot(TQ_TYPE_TQ2_5, ggml_tq_codebooks(GGML_TYPE_TQ2_5), n, vx, (const float *) vy);
}

void ggml_vec_dot_tq3_5_f32(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by; (void) nrc;
    *s = tq_row_dot(TQ_TYPE_TQ3_5, ggml_tq_codebooks(GGML_TYPE_TQ3_5), n, vx, (const float *) vy);
}

void ggml_vec_mad_tq_f32(enum ggml_type type, int n, float * y, const void * vx, float v) {
    tq_row_mad(tq_of(type), ggml_tq_codebooks(type), n, y, vx, v);
}
