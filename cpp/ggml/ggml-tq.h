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
#define GGML_TQ_WINDOW_MAX 256 // recent tokens kept exact at most (ggml_tq_flash_attn_set_kv_extra)
#define GGML_TQ_EXTRA_PAD 256  // the mask's extra columns come in multiples of this (a CUDA tile)

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

// Extra K and V rows that a flash attention `a` over a TQ cache attends to after the cache's
// n_kv = K->ne[1] cells, as if they were appended to K and V: the recent window, each query's
// last tokens kept unquantized. k_extra is [DK, n_extra, n_head_kv, n_stream] and v_extra
// [DV, n_extra, n_head_kv, n_stream], both f32 with contiguous rows (nb[0] = 4), laid out like
// a's K and V (permuted views are fine). a's mask must have at least n_kv + n_extra columns:
// column n_kv + e masks extra row e; it may be wider, up to n_kv + GGML_PAD(n_extra,
// GGML_TQ_EXTRA_PAD), the columns past n_kv + n_extra being -inf. The graph masks out the
// cache cell a query reads from an extra row, so that no token counts twice. A backend must
// read them (they are not in the cache's rows the mask keeps); NULL, NULL removes them.
GGML_API void ggml_tq_flash_attn_set_kv_extra(struct ggml_tensor * a, struct ggml_tensor * k_extra, struct ggml_tensor * v_extra);

// What ggml_tq_flash_attn_set_kv_extra set on `a` (K's, V's), or NULL.
GGML_API const struct ggml_tensor * ggml_tq_flash_attn_k_extra(const struct ggml_tensor * a);
GGML_API const struct ggml_tensor * ggml_tq_flash_attn_v_extra(const struct ggml_tensor * a);

#ifdef __cplusplus
}
#endif
