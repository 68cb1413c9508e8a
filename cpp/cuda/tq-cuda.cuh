// The CUDA backend's entry points for the TQ KV-cache types (patch 0007 calls them from
// ggml-cuda's set-rows, cpy, getrows, convert and fattn). Codebooks come from ggml's
// process-wide ones (set from the model's turboquant.* metadata) and travel to each kernel
// as a by-value argument, i.e. in constant memory; no kernel holds a literal codebook.
#pragma once

#include "common.cuh"

// What of the TQ kernels a card can run, by the highest architecture this binary has code for
// on it (common.cuh's helpers, as ggml-cuda picks its own kernels):
//   decode   the decode attention: mma m16n8k16 and movmatrix (mma.cuh), Turing (7.5) on
//   stage    its staged tiles: cp.async, Ampere (8.0) on
//   tokens   the ubatch transform: TF32 mma, Ampere on
// Every TQ op runs on every card that ggml-cuda runs on: where a kernel is missing, the op takes
// upstream's path (attention on K/V converted to f16, the transform as a plain MUL_MAT, the
// unstaged decode), and the log says so in one line, once per device.
struct ggml_cuda_tq_caps {
    bool decode, stage, tokens;
};
ggml_cuda_tq_caps ggml_cuda_tq_caps_of(int device);

// SET_ROWS from f32/f16 into a TQ tensor.
void ggml_cuda_tq_set_rows(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst);

// CPY between TQ and f32/f16 (either direction, same shape, any strides).
bool ggml_cuda_tq_cpy_supported(const ggml_tensor * src0, const ggml_tensor * src1);
void ggml_cuda_tq_cpy(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, ggml_tensor * src1);

// GET_ROWS from a TQ tensor into f32/f16.
void ggml_cuda_tq_get_rows(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst);

// Dequantizers in convert.cuh's shapes (s01..s03 in blocks, dst contiguous).
template <ggml_type T> void ggml_cuda_tq_to_fp16(const void * x, half * y, int64_t k, cudaStream_t stream);
template <ggml_type T> void ggml_cuda_tq_to_fp32(const void * x, float * y, int64_t k, cudaStream_t stream);
template <ggml_type T> void ggml_cuda_tq_to_fp16_nc_t(const void * x, half * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                             int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream);
// x (TQ, any row strides) into f16 y at element strides sy1..sy3 (its values contiguous in a row).
void ggml_cuda_tq_to_fp16_rows(const ggml_tensor * x, half * y, int64_t sy1, int64_t sy2, int64_t sy3, cudaStream_t stream);
template <ggml_type T> void ggml_cuda_tq_to_fp32_nc_t(const void * x, float * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                             int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream);

// The per-head TQ transform of one token (MUL_MAT hinted GGML_HINT_SRC0_IS_TQ_TRANSFORM, f32,
// [d, d, n_kv_head] x [d, 1, n_head]) as 32-row warp products (tq-transform.cu); with `bias`
// (K's centering offset, [d, n_head]) added, into `out` instead of dst when given; `out` may be
// x itself (every head is read whole before it is written).
bool ggml_cuda_tq_transform_applies(const ggml_tensor * dst);
void ggml_cuda_tq_transform(ggml_backend_cuda_context & ctx, const ggml_tensor * dst, const float * bias = nullptr,
                            float * out = nullptr);

// The same transforms of several tokens (a ubatch): T [d, d, 1, n_kv] times the strided view
// x [d, n_tok, r, n_kv] of the heads, on tensor cores. Into dst's own layout [d, n_tok, r, n_kv],
// or with `out` into the head-major [d, n_head, n_tok] (contiguous, head h = kv * r + s) that
// the graph's copy back would make (tq-fuse.cu), plus `bias` ([d, n_head]) when given.
bool ggml_cuda_tq_transform_tokens_applies(int device, const ggml_tensor * dst);
void ggml_cuda_tq_transform_tokens(ggml_backend_cuda_context & ctx, const ggml_tensor * dst, float * out = nullptr,
                                   const float * bias = nullptr);

// A chain of graph nodes that one TQ kernel computes (tq-fuse.cu): a TQ transform (MUL_MAT
// hinted GGML_HINT_SRC0_IS_TQ_TRANSFORM) fused with what follows it.
struct ggml_cuda_tq_fused {
    // ATTN, WRITE: decode. TRANSFORM: a token's transform + K's offset. TOKENS: a ubatch's
    // transform + its copy back [+ K's offset]. All off with upstream's GGML_CUDA_DISABLE_FUSION=1.
    enum { NONE, ATTN, WRITE, TRANSFORM, TOKENS } kind;
    const ggml_tensor * mm;       // TRANSFORM, TOKENS: the transform's MUL_MAT node
    const ggml_tensor * t_in;     // ATTN: Q's transform [d, d, n_kv_head] applied to x (null: Q as it is)
    const ggml_tensor * x;        // its input: one token's heads, [d, 1, n_heads], contiguous
    const ggml_tensor * fa;       // ATTN: the FLASH_ATTN_EXT node
    const ggml_tensor * t_out;    // ATTN: the transform of the output, or null
    const ggml_tensor * offset;   // TRANSFORM, TOKENS: the K centering offset added after the product, or null
    const ggml_tensor * out;      // the chain's last node: what the fused kernel writes
    // WRITE: up to three of one token's transforms in one kernel, each either followed by its
    // cache write (mm [+ ADD offset] -> SET_ROWS into a TQ cache: K's, V's) or, only as the
    // first, plain (Q's: into mm's own result, which the attention reads later)
    struct write_job {
        const ggml_tensor * mm;
        const ggml_tensor * offset;   // or null
        const ggml_tensor * set_rows; // null: plain
    } jobs[3];
    int n_jobs;
};

// Number of nodes from i on that one fused kernel computes on `device` (0: no TQ chain starts at i).
int ggml_cuda_tq_match(int device, const ggml_cgraph * cgraph, int i, ggml_cuda_tq_fused & m);
void ggml_cuda_tq_run_fused(ggml_backend_cuda_context & ctx, const ggml_cuda_tq_fused & m);

// WRITE: the jobs' products, each quantized as it is made into its cache row or written plain.
void ggml_cuda_tq_write(ggml_backend_cuda_context & ctx, const ggml_cuda_tq_fused & m);

// Flash attention at decode with a TQ K and/or V: one kernel that reads each K/V row once for
// all query heads that share it (GQA) and decodes it once, split over the KV length. With
// `fused`, Q is t_in x (if t_in) and the result goes through t_out into fused->out.
bool ggml_cuda_tq_fattn_applies(int device, const ggml_tensor * dst);
void ggml_cuda_tq_fattn(ggml_backend_cuda_context & ctx, ggml_tensor * dst, const ggml_cuda_tq_fused * fused = nullptr);

// Prefill: over K converted to f16 for ggml-cuda's flash attention (fattn-common.cuh), the first
// cells' exact rows (ggml_tq_flash_attn_set_k_exact), where dst has them; nb1-nb3 are K_f16's strides.
void ggml_cuda_tq_fattn_k_exact_f16(const ggml_tensor * dst, half * K_f16, size_t nb1, size_t nb2, size_t nb3,
                                    cudaStream_t stream);

// Extra rows after the cache's (ggml_tq_flash_attn_set_kv_extra): whether ggml-cuda runs the
// attention with them (true without them); at decode the TQ kernel scores them (one more split),
// otherwise ggml_cuda_tq_fattn_extra_f16 runs `fattn` (ggml_cuda_flash_attn_ext) on a copy of dst
// whose K and V are f16 copies with the extra rows after the cache's, as wide as the mask (false,
// doing nothing, when dst has no extra rows).
bool ggml_cuda_tq_fattn_extra_supported(const ggml_tensor * op);
bool ggml_cuda_tq_fattn_extra_f16(ggml_backend_cuda_context & ctx, ggml_tensor * dst,
                                  void (*fattn)(ggml_backend_cuda_context & ctx, ggml_tensor * dst));
