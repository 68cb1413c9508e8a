// The CUDA backend's entry points for the TQ KV-cache types (patch 0007 calls them from
// ggml-cuda's set-rows, cpy, getrows, convert and fattn). Codebooks come from ggml's
// process-wide ones (set from the model's turboquant.* metadata) and travel to each kernel
// as a by-value argument, i.e. in constant memory; no kernel holds a literal codebook.
#pragma once

#include "common.cuh"

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
template <ggml_type T> void ggml_cuda_tq_to_fp32_nc_t(const void * x, float * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                             int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream);

// Flash attention at decode with a TQ K and/or V: one kernel that reads each K/V row once for
// all query heads that share it (GQA) and decodes it once, split over the KV length.
bool ggml_cuda_tq_fattn_applies(const ggml_tensor * dst);
void ggml_cuda_tq_fattn(ggml_backend_cuda_context & ctx, ggml_tensor * dst);
