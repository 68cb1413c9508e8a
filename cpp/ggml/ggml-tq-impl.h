// ggml-internal glue of the TQ types: the row functions that ggml's type tables point to.
#pragma once

#include "ggml-tq.h"
#include "tq.h"

#ifdef __cplusplus
extern "C" {
#endif

// The codebooks of a TQ type (computed once, read-only); never NULL.
GGML_API const tq_codebooks * ggml_tq_codebooks(enum ggml_type type);

GGML_API void quantize_row_tq2_5_ref(const float * x, void * y, int64_t k);
GGML_API void quantize_row_tq3_5_ref(const float * x, void * y, int64_t k);
GGML_API void dequantize_row_tq2_5(const void * x, float * y, int64_t k);
GGML_API void dequantize_row_tq3_5(const void * x, float * y, int64_t k);
GGML_API size_t quantize_tq2_5(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
GGML_API size_t quantize_tq3_5(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix);

// CPU backend (ggml-cpu-tq.c): quantize, and the dot product with an f32 vector used by
// flash attention for K . Q (vec_dot_type F32: Q stays in float), and the V accumulation.
void quantize_row_tq2_5(const float * x, void * y, int64_t k);
void quantize_row_tq3_5(const float * x, void * y, int64_t k);
void ggml_vec_dot_tq2_5_f32(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc);
void ggml_vec_dot_tq3_5_f32(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc);
// y[0..n) += v * dequantize(x): flash attention's V accumulation without a row buffer.
void ggml_vec_mad_tq_f32(enum ggml_type type, int n, float * y, const void * vx, float v);
// Which of those paths this build compiled: "avx512", "avx2", "neon" or "portable".
const char * ggml_tq_cpu_simd(void);

#ifdef __cplusplus
}
#endif
