// TurboQuant KV-cache blocks: the one C source for tqgguf's Python extension and for ggml.
//
// A block holds 64 values of a row that the graph has already transformed (see
// tq_head_transform): 16 outlier-group slots then 48 rest-group slots. Each group
// keeps an f16 scale and one Lloyd-Max code per value; codes of 3 and 4 bits are
// stored as bit planes so no code straddles a byte (docs/format.md).
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TQ_BLOCK 64
#define TQ_HI    16
#define TQ_LO    48

typedef struct {
    uint16_t d_hi;             // f16 scale of the 16 outlier-group values
    uint16_t d_lo;             // f16 scale of the 48 rest-group values
    uint8_t  hi_q2[TQ_HI / 4]; // hi codes, low 2 bits
    uint8_t  hi_q1[TQ_HI / 8]; // hi codes, bit 2
    uint8_t  lo_q2[TQ_LO / 4]; // lo codes (2 bits)
} block_tq2_5;
#ifdef __cplusplus
static_assert(sizeof(block_tq2_5) == 22, "block_tq2_5: 2.75 bits per value");
#else
_Static_assert(sizeof(block_tq2_5) == 22, "block_tq2_5: 2.75 bits per value");
#endif

typedef struct {
    uint16_t d_hi;
    uint16_t d_lo;
    uint8_t  hi_q4[TQ_HI / 2]; // hi codes (4 bits), low nibble first
    uint8_t  lo_q2[TQ_LO / 4]; // lo codes, low 2 bits
    uint8_t  lo_q1[TQ_LO / 8]; // lo codes, bit 2
} block_tq3_5;
#ifdef __cplusplus
static_assert(sizeof(block_tq3_5) == 30, "block_tq3_5: 3.75 bits per value");
#else
_Static_assert(sizeof(block_tq3_5) == 30, "block_tq3_5: 3.75 bits per value");
#endif

// A codebook of one group: 2^bits sorted centroids, times sqrt(group size), and
// the float32 midpoints between neighbours that quantization compares against.
typedef struct {
    int   bits;
    float c[16];
    float bnd[15];
} tq_codebook;

// The two codebooks of one TQ type. A group's scale is s = ||v|| / ||c[codes]||, so the
// reconstruction s * c[code] keeps the group's length (docs/ablation.md weighs the other rules).
typedef struct {
    tq_codebook hi;
    tq_codebook lo;
} tq_codebooks;

enum tq_type { TQ_TYPE_TQ2_5 = 0, TQ_TYPE_TQ3_5 = 1, TQ_TYPE_COUNT = 2 };

int tq_hi_bits(enum tq_type t);
int tq_lo_bits(enum tq_type t);
static inline size_t tq_block_bytes(enum tq_type t) {
    return t == TQ_TYPE_TQ2_5 ? sizeof(block_tq2_5) : sizeof(block_tq3_5);
}

// Fills cb from 2^bits centroids; returns 0, or -1 when they are not finite and
// strictly increasing or bits is not 1..4.
int tq_codebook_init(tq_codebook * cb, int bits, const float * centroids);

// Quantize n values (n % 64 == 0) of a transformed row into n/64 blocks, and back.
void tq_quantize_row  (enum tq_type t, const float * x, void * blocks, int64_t n, const tq_codebooks * cb);
void tq_dequantize_row(enum tq_type t, const void * blocks, float * y, int64_t n, const tq_codebooks * cb);

// IEEE binary16 <-> binary32, round to nearest even (no ggml dependency).
uint16_t tq_fp32_to_fp16(float f);
float    tq_fp16_to_fp32(uint16_t h);

// ---- codebooks (tq_codebook.c) ---------------------------------------------------

// The 2^bits Lloyd-Max centroids (unit-sphere scale) for one coordinate of a uniform unit
// vector in R^d; 3 <= d <= 4096, 1 <= bits <= 8. Returns 0, or -1 on a bad argument.
int tq_lloyd_max(int d, int bits, double * centroids);

// The same as float32, times sqrt(d): the values the GGUF stores and the quantizer uses.
int tq_codebook_scaled(int d, int bits, float * out);

// ---- rotations (tq_rotation.c) ---------------------------------------------------

uint64_t tq_splitmix64_next(uint64_t * state);
uint64_t tq_subseed(uint64_t seed, uint64_t tag);

// The d x d orthogonal transform (row-major, y = T x) of KV head `head` of a layer
// with seed `layer_seed`; outliers: the d/4 sorted outlier channels of that head.
// Returns 0, or -1 on a bad size or outlier set.
int tq_head_transform(double * T, int d, uint64_t layer_seed, int head, const int32_t * outliers);

#ifdef __cplusplus
}
#endif
