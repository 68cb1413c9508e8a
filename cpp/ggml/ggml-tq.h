// Public API of the TurboQuant KV-cache types GGML_TYPE_TQ2_5 / GGML_TYPE_TQ3_5 (tqgguf).
// ggml/include/ggml-tq.h in the patched tree (a new file of the series); see docs/format.md.
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GGML_TQ_BLOCK 64 // values per block
#define GGML_TQ_HI    16 // outlier-group slots per block; the other 48 are the rest group

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

#ifdef __cplusplus
}
#endif
