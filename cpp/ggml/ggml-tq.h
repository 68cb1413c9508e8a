// Public API of the TurboQuant KV-cache types GGML_TYPE_TQ2_5 / GGML_TYPE_TQ3_5 (tqgguf).
// ggml/include/ggml-tq.h in the patched tree (a new file of the series); see docs/format.md.
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ggml_tensor; // (ggml.h defines it; the kernel check's stub ggml.h does not)

#define GGML_TQ_BLOCK 64 // values per block
#define GGML_TQ_HI    16 // outlier-group slots per block; the other 48 are the rest group
#define GGML_TQ_K_EXACT_MAX 32 // cells with exact K rows at most (ggml_tq_flash_attn_set_k_exact)

GGML_API bool ggml_tq_is_tq(enum ggml_type type);

// Bits per code of the outlier group (hi) or of the rest group of a TQ type; 0 for other types.
GGML_API int ggml_tq_bits(enum ggml_type type, bool hi);

// ggml's own Lloyd-Max codebook for a group of `dim` values at `bits` bits: 2^bits floats,
// times sqrt(dim) (the values `tqgguf prepare` writes). False on a bad argument.
GGML_API bool ggml_tq_default_codebook(int dim, int bits, float * out);

// The codebooks of a TQ type (2^bits floats each, read-only, the same for every model), e.g. to
// pass to a GPU kernel.
GGML_API void ggml_tq_get_codebooks(enum ggml_type type, const float ** hi, const float ** lo);

// The d x d orthogonal transform (row-major, y = T x) of KV head `head` of a layer whose seed is
// `layer_seed`; `outliers` are the head's d/4 sorted outlier channels (docs/rotation.md).
GGML_API bool ggml_tq_head_transform(float * T, int d, uint64_t layer_seed, int head, const int32_t * outliers);

// Exact K rows for the first cells of a flash attention `a` whose K is a TQ cache: k_exact is
// [DK, n_exact, n_head_kv, n_stream] f32 (n_exact <= GGML_TQ_K_EXACT_MAX), laid out like a's
// K (permuted view of the cache), and
// holds what the cache's first n_exact cells would hold before quantization. The attention
// scores those cells from these rows (the attention sink: a sequence's first tokens take a
// large share of every row's attention, so their scores' error moves the most probability).
// A backend that ignores it reads the quantized rows, which the cache always holds too.
// NULL removes it.
GGML_API void ggml_tq_flash_attn_set_k_exact(struct ggml_tensor * a, struct ggml_tensor * k_exact);

// What ggml_tq_flash_attn_set_k_exact set on `a`, or NULL.
GGML_API const struct ggml_tensor * ggml_tq_flash_attn_k_exact(const struct ggml_tensor * a);

#ifdef __cplusplus
}
#endif
