// CPU backend side of the TQ types: quantize into the cache, the K . Q dot product, and the
// fused "VKQ += v * dequantize(V row)" of flash attention.
//
// Decode is called once per (key, query head), so it is where the time goes. Each SIMD path
// unpacks the bit planes of docs/format.md in registers and looks the codes up in a codebook
// held in registers; all of them are checked against the C core (cpp/tests/test-tq-kernels.c).
//   AVX-512 (BW, VL, VBMI2): a plane's bytes are broadcast to one lane per shift, shifted and
//     masked, and the lanes' valid bytes compressed into code order; a permute looks 16 codes up.
//   AVX2 (+FMA, F16C): 8 codes at a time, one per 32-bit lane: a permute brings each lane the
//     dword that holds its code's byte, a variable shift brings the code to bit 0, and a
//     permute of an 8-float codebook looks them up (16 entries: two permutes and a blend).
//   NEON (aarch64): 16 codes as bytes (table lookup of their bytes, variable shift, mask); a
//     table lookup of the codebook's bytes gives 4 floats at a time.
// Elsewhere a portable path decodes into a small buffer.
#include "ggml-tq-impl.h"

#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VBMI2__)
#define TQ_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define TQ_AVX2 1
#include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define TQ_NEON 1
#include <arm_neon.h>
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

#elif defined(TQ_AVX2)

// Per 8-code group g of the 48 lo codes: the dword of (lo_q2 - 4) that holds code j's byte
// (j % 12) and the shift to its bits (2 * (j / 12)); lo_q2 is dwords 1..3 in both types.
static const int32_t tq_lo2_idx[6][8] = {
    { 1,  1,  1,  1,  2,  2,  2,  2},
    { 3,  3,  3,  3,  1,  1,  1,  1},
    { 2,  2,  2,  2,  3,  3,  3,  3},
    { 1,  1,  1,  1,  2,  2,  2,  2},
    { 3,  3,  3,  3,  1,  1,  1,  1},
    { 2,  2,  2,  2,  3,  3,  3,  3},
};
static const int32_t tq_lo2_sh[6][8] = {
    { 0,  8, 16, 24,  0,  8, 16, 24},
    { 0,  8, 16, 24,  2, 10, 18, 26},
    { 2, 10, 18, 26,  2, 10, 18, 26},
    { 4, 12, 20, 28,  4, 12, 20, 28},
    { 4, 12, 20, 28,  6, 14, 22, 30},
    { 6, 14, 22, 30,  6, 14, 22, 30},
};
// tq3_5's 1-bit lo plane, in dwords 4..5 (the 8 bytes at lo_q1 - 2): code j is bit j / 6 of
// byte j % 6.
static const int32_t tq_lo1_idx[6][8] = {
    { 4,  4,  5,  5,  5,  5,  4,  4},
    { 5,  5,  5,  5,  4,  4,  5,  5},
    { 5,  5,  4,  4,  5,  5,  5,  5},
    { 4,  4,  5,  5,  5,  5,  4,  4},
    { 5,  5,  5,  5,  4,  4,  5,  5},
    { 5,  5,  4,  4,  5,  5,  5,  5},
};
static const int32_t tq_lo1_sh[6][8] = {
    {16, 24,  0,  8, 16, 24, 17, 25},
    { 1,  9, 17, 25, 18, 26,  2, 10},
    {18, 26, 19, 27,  3, 11, 19, 27},
    {20, 28,  4, 12, 20, 28, 21, 29},
    { 5, 13, 21, 29, 22, 30,  6, 14},
    {22, 30, 23, 31,  7, 15, 23, 31},
};

static inline __m256i tq_ld(const int32_t * t) {
    return _mm256_loadu_si256((const __m256i *) t);
}

// A block's source dwords: lo_q2 as dwords 1..3 (16 bytes ending at lo_q2's end, inside the
// block in both types), and for tq3_5 the bytes of lo_q1 in dwords 4..5.
static inline __m256i tq2_5_src(const block_tq2_5 * x) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) (x->lo_q2 - 4)));
}

static inline __m256i tq3_5_src(const block_tq3_5 * x) {
    return _mm256_setr_m128i(_mm_loadu_si128((const __m128i *) (x->lo_q2 - 4)),
                             _mm_loadl_epi64((const __m128i *) (x->lo_q1 - 2)));
}

// Codes 8h..8h+7 of the hi group, one per lane; the lookup reads only the bits it needs.
static inline __m256i tq2_5_hi(const block_tq2_5 * x, int h) {
    uint32_t q2, q1 = 0;
    memcpy(&q2, x->hi_q2, 4);
    memcpy(&q1, x->hi_q1, 2);
    // code i: bits 2*(i/4) of byte i%4 of the 2-bit plane; bit 2 is bit i/2 of byte i%2
    const __m256i s2 = h ? _mm256_setr_epi32(4, 12, 20, 28, 6, 14, 22, 30) : _mm256_setr_epi32(0, 8, 16, 24, 2, 10, 18, 26);
    const __m256i s1 = h ? _mm256_setr_epi32(4, 12, 5, 13, 6, 14, 7, 15) : _mm256_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11);
    const __m256i c2 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int) q2), s2), _mm256_set1_epi32(3));
    const __m256i c1 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int) (q1 << 2)), s1), _mm256_set1_epi32(4));
    return _mm256_or_si256(c2, c1);
}

static inline __m256i tq3_5_hi(const block_tq3_5 * x, int h) {
    // code i: low nibble of byte i for i < 8, high nibble of byte i-8 after (bit 3 is looked
    // at by the blend, bits 0..2 by the permutes)
    const __m256i b = _mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *) x->hi_q4));
    const __m256i w = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
    return _mm256_srlv_epi32(w, h ? _mm256_setr_epi32(4, 12, 20, 28, 4, 12, 20, 28) : _mm256_setr_epi32(0, 8, 16, 24, 0, 8, 16, 24));
}

// Codes 8g..8g+7 of the lo group.
static inline __m256i tq2_5_lo(__m256i src, int g) {
    // 4 centroids held twice in the 8-float codebook register: bit 2 need not be cleared
    return _mm256_srlv_epi32(_mm256_permutevar8x32_epi32(src, tq_ld(tq_lo2_idx[g])), tq_ld(tq_lo2_sh[g]));
}

static inline __m256i tq3_5_lo(__m256i src, int g) {
    // bits 0..1 from the 2-bit plane, bit 2 from the 1-bit plane; the bits above are left over
    const __m256i c2 = _mm256_and_si256(tq2_5_lo(src, g), _mm256_set1_epi32(3));
    const __m256i c1 = _mm256_srlv_epi32(_mm256_permutevar8x32_epi32(src, tq_ld(tq_lo1_idx[g])), tq_ld(tq_lo1_sh[g]));
    return _mm256_or_si256(c2, _mm256_slli_epi32(c1, 2));
}

// The codebook registers: hi (8 entries, or 16 as two halves) and lo (8, or 4 held twice).
typedef struct { __m256 hi0, hi1, lo; } tq_luts;

static inline tq_luts tq_luts_of(const tq_codebooks * cb, int lo_bits) {
    tq_luts l;
    l.hi0 = _mm256_loadu_ps(cb->hi.c);
    l.hi1 = _mm256_loadu_ps(cb->hi.c + 8);
    l.lo = lo_bits == 2 ? _mm256_broadcast_ps((const __m128 *) cb->lo.c) : _mm256_loadu_ps(cb->lo.c);
    return l;
}

static inline __m256 tq2_5_hi_values(const tq_luts * l, __m256i c) {
    return _mm256_permutevar8x32_ps(l->hi0, c);
}

static inline __m256 tq3_5_hi_values(const tq_luts * l, __m256i c) {
    const __m256 a = _mm256_permutevar8x32_ps(l->hi0, c), b = _mm256_permutevar8x32_ps(l->hi1, c);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)));
}

static inline float tq_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// the two f16 scales (d_hi, d_lo) at the start of a block
static inline __m128 tq_scales(const void * blk) {
    uint32_t d;
    memcpy(&d, blk, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int) d));
}

#define TQ_DEFINE_SIMD(name, block_t, lo_bits)                                                          \
    static float name##_dot(const tq_codebooks * cb, int n, const void * vx, const float * y) {         \
        const block_t * x = (const block_t *) vx;                                                       \
        const tq_luts l = tq_luts_of(cb, lo_bits);                                                      \
        __m256 acc = _mm256_setzero_ps();                                                               \
        for (int b = 0; b < n / TQ_BLOCK; ++b, y += TQ_BLOCK) {                                         \
            const __m256i src = name##_src(x + b);                                                      \
            __m256 hi = _mm256_mul_ps(name##_hi_values(&l, name##_hi(x + b, 0)), _mm256_loadu_ps(y));   \
            hi = _mm256_fmadd_ps(name##_hi_values(&l, name##_hi(x + b, 1)), _mm256_loadu_ps(y + 8), hi); \
            __m256 lo = _mm256_mul_ps(_mm256_permutevar8x32_ps(l.lo, name##_lo(src, 0)), _mm256_loadu_ps(y + 16)); \
            for (int g = 1; g < 6; ++g) {                                                               \
                lo = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(l.lo, name##_lo(src, g)), _mm256_loadu_ps(y + 16 + 8 * g), lo); \
            }                                                                                           \
            const __m128 d = tq_scales(x + b);                                                          \
            acc = _mm256_fmadd_ps(hi, _mm256_broadcastss_ps(d), acc);                                   \
            acc = _mm256_fmadd_ps(lo, _mm256_broadcastss_ps(_mm_movehdup_ps(d)), acc);                  \
        }                                                                                               \
        return tq_hsum(acc);                                                                            \
    }                                                                                                   \
    static void name##_mad(const tq_codebooks * cb, int n, float * y, const void * vx, float v) {       \
        const block_t * x = (const block_t *) vx;                                                       \
        const tq_luts l = tq_luts_of(cb, lo_bits);                                                      \
        for (int b = 0; b < n / TQ_BLOCK; ++b, y += TQ_BLOCK) {                                         \
            const __m256i src = name##_src(x + b);                                                      \
            const __m128 d = _mm_mul_ps(tq_scales(x + b), _mm_set1_ps(v));                              \
            const __m256 sh = _mm256_broadcastss_ps(d), sl = _mm256_broadcastss_ps(_mm_movehdup_ps(d)); \
            _mm256_storeu_ps(y,     _mm256_fmadd_ps(name##_hi_values(&l, name##_hi(x + b, 0)), sh, _mm256_loadu_ps(y))); \
            _mm256_storeu_ps(y + 8, _mm256_fmadd_ps(name##_hi_values(&l, name##_hi(x + b, 1)), sh, _mm256_loadu_ps(y + 8))); \
            for (int g = 0; g < 6; ++g) {                                                               \
                float * yg = y + 16 + 8 * g;                                                            \
                _mm256_storeu_ps(yg, _mm256_fmadd_ps(_mm256_permutevar8x32_ps(l.lo, name##_lo(src, g)), sl, _mm256_loadu_ps(yg))); \
            }                                                                                           \
        }                                                                                               \
    }

TQ_DEFINE_SIMD(tq2_5, block_tq2_5, 2)
TQ_DEFINE_SIMD(tq3_5, block_tq3_5, 3)

#elif defined(TQ_NEON)

// Per 16-code group g of the 48 lo codes: the byte of (lo_q2 - 4) that holds code j (4 + j % 12,
// the 16 bytes ending at lo_q2's end) and minus the shift to its bits (2 * (j / 12)).
static const uint8_t tq_lo2_idx[3][16] = {
    {4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 4, 5, 6, 7},
    {8, 9, 10, 11, 12, 13, 14, 15, 4, 5, 6, 7, 8, 9, 10, 11},
    {12, 13, 14, 15, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
};
static const int8_t tq_lo2_sh[3][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -2, -2, -2, -2},
    {-2, -2, -2, -2, -2, -2, -2, -2, -4, -4, -4, -4, -4, -4, -4, -4},
    {-4, -4, -4, -4, -6, -6, -6, -6, -6, -6, -6, -6, -6, -6, -6, -6},
};
// tq3_5's 1-bit lo plane in the 16 bytes ending at lo_q1's end: code j is bit j / 6 of byte
// 10 + j % 6.
static const uint8_t tq_lo1_idx[3][16] = {
    {10, 11, 12, 13, 14, 15, 10, 11, 12, 13, 14, 15, 10, 11, 12, 13},
    {14, 15, 10, 11, 12, 13, 14, 15, 10, 11, 12, 13, 14, 15, 10, 11},
    {12, 13, 14, 15, 10, 11, 12, 13, 14, 15, 10, 11, 12, 13, 14, 15},
};
static const int8_t tq_lo1_sh[3][16] = {
    {0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -2, -2, -2, -2},
    {-2, -2, -3, -3, -3, -3, -3, -3, -4, -4, -4, -4, -4, -4, -5, -5},
    {-5, -5, -5, -5, -6, -6, -6, -6, -6, -6, -7, -7, -7, -7, -7, -7},
};

// The 16 hi codes, one per byte.
static inline uint8x16_t tq2_5_hi(const block_tq2_5 * x) {
    uint32_t q2;
    uint16_t q1;
    memcpy(&q2, x->hi_q2, 4);
    memcpy(&q1, x->hi_q1, 2);
    // code i: bits 2*(i/4) of byte i%4 of the 2-bit plane; bit 2 is bit i/2 of byte i%2
    static const int8_t s2[16] = {0, 0, 0, 0, -2, -2, -2, -2, -4, -4, -4, -4, -6, -6, -6, -6};
    static const int8_t s1[16] = {0, 0, -1, -1, -2, -2, -3, -3, -4, -4, -5, -5, -6, -6, -7, -7};
    const uint8x16_t c2 = vandq_u8(vshlq_u8(vreinterpretq_u8_u32(vdupq_n_u32(q2)), vld1q_s8(s2)), vdupq_n_u8(3));
    const uint8x16_t c1 = vandq_u8(vshlq_u8(vreinterpretq_u8_u16(vdupq_n_u16(q1)), vld1q_s8(s1)), vdupq_n_u8(1));
    return vorrq_u8(c2, vshlq_n_u8(c1, 2));
}

static inline uint8x16_t tq3_5_hi(const block_tq3_5 * x) {
    // code i: low nibble of byte i for i < 8, high nibble of byte i-8 after
    const uint8x8_t b = vld1_u8(x->hi_q4);
    return vcombine_u8(vand_u8(b, vdup_n_u8(0x0F)), vshr_n_u8(b, 4));
}

// A block's lo planes as loaded once: the 16 bytes ending at lo_q2's end (and at lo_q1's).
typedef struct { uint8x16_t q2, q1; } tq_src;

static inline tq_src tq2_5_src(const block_tq2_5 * x) {
    tq_src s = { vld1q_u8(x->lo_q2 - 4), vdupq_n_u8(0) };
    return s;
}

static inline tq_src tq3_5_src(const block_tq3_5 * x) {
    tq_src s = { vld1q_u8(x->lo_q2 - 4), vld1q_u8(x->lo_q1 - 10) };
    return s;
}

// Codes 16g..16g+15 of the lo group.
static inline uint8x16_t tq2_5_lo(tq_src s, int g) {
    return vandq_u8(vshlq_u8(vqtbl1q_u8(s.q2, vld1q_u8(tq_lo2_idx[g])), vld1q_s8(tq_lo2_sh[g])), vdupq_n_u8(3));
}

static inline uint8x16_t tq3_5_lo(tq_src s, int g) {
    const uint8x16_t c1 = vandq_u8(vshlq_u8(vqtbl1q_u8(s.q1, vld1q_u8(tq_lo1_idx[g])), vld1q_s8(tq_lo1_sh[g])), vdupq_n_u8(1));
    return vorrq_u8(tq2_5_lo(s, g), vshlq_n_u8(c1, 2));
}

// Centroids of codes 4q..4q+3 of 16: a table lookup of the codebook's bytes (4 per float).
static inline float32x4_t tq_lookup(const uint8x16x4_t * lut, uint8x16_t codes, int q) {
    static const uint8_t rep[4][16] = {
        {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
        {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
        {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
        {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15},
    };
    static const uint8_t byte[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    const uint8x16_t idx = vaddq_u8(vshlq_n_u8(vqtbl1q_u8(codes, vld1q_u8(rep[q])), 2), vld1q_u8(byte));
    return vreinterpretq_f32_u8(vqtbl4q_u8(*lut, idx));
}

// the two f16 scales (d_hi, d_lo) at the start of a block, in lanes 0 and 1
static inline float32x4_t tq_scales(const void * blk) {
    uint32_t d;
    memcpy(&d, blk, 4);
    return vcvt_f32_f16(vreinterpret_f16_u32(vdup_n_u32(d)));
}

#define TQ_DEFINE_SIMD(name, block_t)                                                                   \
    static float name##_dot(const tq_codebooks * cb, int n, const void * vx, const float * y) {         \
        const block_t * x = (const block_t *) vx;                                                       \
        const uint8x16x4_t lut_hi = vld1q_u8_x4((const uint8_t *) cb->hi.c);                            \
        const uint8x16x4_t lut_lo = vld1q_u8_x4((const uint8_t *) cb->lo.c);                            \
        float32x4_t acc = vdupq_n_f32(0.0f);                                                            \
        for (int b = 0; b < n / TQ_BLOCK; ++b, y += TQ_BLOCK) {                                         \
            const tq_src src = name##_src(x + b);                                                       \
            const uint8x16_t ch = name##_hi(x + b);                                                     \
            float32x4_t hi = vmulq_f32(tq_lookup(&lut_hi, ch, 0), vld1q_f32(y));                        \
            for (int q = 1; q < 4; ++q) {                                                               \
                hi = vfmaq_f32(hi, tq_lookup(&lut_hi, ch, q), vld1q_f32(y + 4 * q));                    \
            }                                                                                           \
            float32x4_t lo = vdupq_n_f32(0.0f);                                                         \
            for (int g = 0; g < 3; ++g) {                                                               \
                const uint8x16_t cl = name##_lo(src, g);                                                \
                for (int q = 0; q < 4; ++q) {                                                           \
                    lo = vfmaq_f32(lo, tq_lookup(&lut_lo, cl, q), vld1q_f32(y + 16 + 16 * g + 4 * q));  \
                }                                                                                       \
            }                                                                                           \
            const float32x4_t d = tq_scales(x + b);                                                     \
            acc = vfmaq_laneq_f32(acc, hi, d, 0);                                                       \
            acc = vfmaq_laneq_f32(acc, lo, d, 1);                                                       \
        }                                                                                               \
        return vaddvq_f32(acc);                                                                         \
    }                                                                                                   \
    static void name##_mad(const tq_codebooks * cb, int n, float * y, const void * vx, float v) {       \
        const block_t * x = (const block_t *) vx;                                                       \
        const uint8x16x4_t lut_hi = vld1q_u8_x4((const uint8_t *) cb->hi.c);                            \
        const uint8x16x4_t lut_lo = vld1q_u8_x4((const uint8_t *) cb->lo.c);                            \
        for (int b = 0; b < n / TQ_BLOCK; ++b, y += TQ_BLOCK) {                                         \
            const tq_src src = name##_src(x + b);                                                       \
            const uint8x16_t ch = name##_hi(x + b);                                                     \
            const float32x4_t d = vmulq_n_f32(tq_scales(x + b), v);                                     \
            for (int q = 0; q < 4; ++q) {                                                               \
                vst1q_f32(y + 4 * q, vfmaq_laneq_f32(vld1q_f32(y + 4 * q), tq_lookup(&lut_hi, ch, q), d, 0)); \
            }                                                                                           \
            for (int g = 0; g < 3; ++g) {                                                               \
                const uint8x16_t cl = name##_lo(src, g);                                                \
                for (int q = 0; q < 4; ++q) {                                                           \
                    float * yq = y + 16 + 16 * g + 4 * q;                                               \
                    vst1q_f32(yq, vfmaq_laneq_f32(vld1q_f32(yq), tq_lookup(&lut_lo, cl, q), d, 1));     \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
    }

TQ_DEFINE_SIMD(tq2_5, block_tq2_5)
TQ_DEFINE_SIMD(tq3_5, block_tq3_5)

#endif

#if defined(TQ_AVX512) || defined(TQ_AVX2) || defined(TQ_NEON)

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

const char * ggml_tq_cpu_simd(void) {
#if defined(TQ_AVX512)
    return "avx512";
#elif defined(TQ_AVX2)
    return "avx2";
#elif defined(TQ_NEON)
    return "neon";
#else
    return "portable";
#endif
}
