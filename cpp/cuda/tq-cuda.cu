// TQ blocks on the GPU: quantize into the cache (SET_ROWS, CPY) and dequantize out of it
// (GET_ROWS, CPY, the f16/f32 conversions that prefill's flash attention uses).
#include "tq-cuda.cuh"
#include "convert.cuh"
#include "tq-device.cuh"
#include "ggml-tq-impl.h"

#include <atomic>

static_assert(sizeof(block_tq2_5) == tq_layout<GGML_TYPE_TQ2_5>::bytes, "tq_layout<TQ2_5> out of date");
static_assert(sizeof(block_tq3_5) == tq_layout<GGML_TYPE_TQ3_5>::bytes, "tq_layout<TQ3_5> out of date");
static_assert(offsetof(block_tq2_5, hi_q2) == tq_layout<GGML_TYPE_TQ2_5>::hi_a && offsetof(block_tq2_5, hi_q1) == tq_layout<GGML_TYPE_TQ2_5>::hi_b &&
              offsetof(block_tq2_5, lo_q2) == tq_layout<GGML_TYPE_TQ2_5>::lo_a, "tq_layout<TQ2_5> out of date");
static_assert(offsetof(block_tq3_5, hi_q4) == tq_layout<GGML_TYPE_TQ3_5>::hi_a && offsetof(block_tq3_5, lo_q2) == tq_layout<GGML_TYPE_TQ3_5>::lo_a &&
              offsetof(block_tq3_5, lo_q1) == tq_layout<GGML_TYPE_TQ3_5>::lo_b, "tq_layout<TQ3_5> out of date");

static constexpr int TQ_CUDA_THREADS = 256;

ggml_cuda_tq_caps ggml_cuda_tq_caps_of(int device) {
    const int cc = ggml_cuda_info().devices[device].cc;
    const ggml_cuda_tq_caps c = { turing_mma_available(cc), cp_async_available(cc), ampere_mma_available(cc) };
    static std::atomic<bool> said[GGML_CUDA_MAX_DEVICES];
    if ((!c.decode || !c.stage || !c.tokens) && !said[device].exchange(true)) {
        const int code = ggml_cuda_highest_compiled_arch(cc);
        GGML_LOG_WARN("ggml_cuda_tq: CUDA%d (compute capability %d.%d, this build's code for it %d.%d): %s\n",
                      device, cc / 100, cc % 100 / 10, code / 100, code % 100 / 10,
                      !c.decode ? "the TQ decode attention needs 7.5 and the ubatch transform 8.0, so they take "
                                  "upstream's slower paths (attention on K/V converted to f16, a plain MUL_MAT)"
                                : "the TQ ubatch transform and staged decode tiles need 8.0, so they take "
                                  "slower paths (a plain MUL_MAT, the unstaged decode)");
    }
    return c;
}

static tq_lut tq_lut_of(ggml_type type) {
    const tq_codebooks * cb = ggml_tq_codebooks(type);
    tq_lut l;
    for (int i = 0; i < 16; ++i) {
        l.c[0][i] = cb->hi.c[i];
        l.c[1][i] = cb->lo.c[i];
    }
    return l;
}

// ---- dequantize -------------------------------------------------------------------

// The codebooks from the kernel's argument into shared memory (codes index them divergently).
static __device__ __forceinline__ void tq_lut_to_shared(const tq_lut & lut, float (*slut)[16]) {
    if (threadIdx.x < 32) {
        slut[threadIdx.x / 16][threadIdx.x % 16] = lut.c[threadIdx.x / 16][threadIdx.x % 16];
    }
    __syncthreads();
}

// 8 consecutive values (eighth u of a block: slots 8u .. 8u + 7, all of one group) into y.
// Stored as one 16-byte (f16) or two (f32) vectors when y allows: the conversions feed
// prefill's flash attention with the whole cache, and 2-byte stores scattered over a warp
// cost many times the bytes they write.
template <ggml_type T, typename dst_t, bool HI>
static __device__ __forceinline__ void tq_dequantize_eighth_of(const uint8_t * blk, int j0, const float * lut, dst_t (&v)[8]) {
    const float d = tq_scale_at(blk, HI);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        v[i] = ggml_cuda_cast<dst_t>(d * lut[tq_code_at(blk, tq_slot_in_group<T, HI>(j0 + i))]);
    }
}

template <ggml_type T, typename dst_t, bool vec>
static __device__ __forceinline__ void tq_dequantize_eighth(const uint8_t * blk, int u, const float (*lut)[16], dst_t * y) {
    dst_t v[8];
    if (u < TQ_HI / 8) {
        tq_dequantize_eighth_of<T, dst_t, true>(blk, 8 * u, lut[0], v);
    } else {
        tq_dequantize_eighth_of<T, dst_t, false>(blk, 8 * u - TQ_HI, lut[1], v);
    }
    if constexpr (vec) {
#pragma unroll
        for (int i = 0; i < (int) sizeof(v) / 16; ++i) {
            ((uint4 *) y)[i] = ((const uint4 *) v)[i];
        }
    } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            y[i] = v[i];
        }
    }
}

// One thread per eighth block, consecutive threads on consecutive eighths of the rows i1 of one
// (i2, i3) = (blockIdx.y, blockIdx.z). Rows of x at byte strides sx*, of y at element strides sy*
// (y's values contiguous within a row). 32-bit index arithmetic with multiply-shift division:
// with 64-bit divisions, the index took most of the time of this kernel, which prefill runs
// over the whole cache at every ubatch.
template <ggml_type T, typename dst_t, bool vec>
static __global__ void k_tq_dequantize(const char * x, dst_t * y, const uint32_t n, const uint3 nblk,
                                       const int64_t sx1, const int64_t sx2, const int64_t sx3,
                                       const int64_t sy1, const int64_t sy2, const int64_t sy3, const tq_lut lut) {
    __shared__ float slut[2][16];
    ggml_cuda_pdl_lc();
    tq_lut_to_shared(lut, slut);
    ggml_cuda_pdl_sync();
    const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    const int u = i % 8;
    const uint2 rb = fast_div_modulo(i / 8, nblk); // (row i1, block b)
    const int64_t i2 = blockIdx.y, i3 = blockIdx.z;
    const uint8_t * blk = (const uint8_t *) x + rb.x * sx1 + i2 * sx2 + i3 * sx3 + rb.y * tq_layout<T>::bytes;
    tq_dequantize_eighth<T, dst_t, vec>(blk, u, slut, y + rb.x * sy1 + i2 * sy2 + i3 * sy3 + rb.y * TQ_BLOCK + 8 * u);
}

template <ggml_type T, typename dst_t>
static void tq_dequantize_cuda(const void * x, dst_t * y, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3,
                               int64_t sx1, int64_t sx2, int64_t sx3, int64_t sy1, int64_t sy2, int64_t sy3, cudaStream_t stream) {
    GGML_ASSERT(ne0 % TQ_BLOCK == 0);
    GGML_ASSERT(ne2 <= 65535 && ne3 <= 65535); // the grid's y and z (heads, sequences)
    const int64_t n = 8 * (ne0 / TQ_BLOCK) * ne1; // eighths per (i2, i3)
    if (n == 0 || ne2 == 0 || ne3 == 0) {
        return;
    }
    GGML_ASSERT(n < INT_MAX); // fast_div_modulo takes 31-bit numerators
    const dim3 grid((n + TQ_CUDA_THREADS - 1) / TQ_CUDA_THREADS, ne2, ne3);
    const uint3 nblk = init_fastdiv_values(ne0 / TQ_BLOCK);
    // 8 values of f16 or f32 are whole 16-byte vectors when y and every row start are 16-byte aligned
    const bool vec = (uintptr_t) y % 16 == 0 && (sy1 * sizeof(dst_t)) % 16 == 0 && (sy2 * sizeof(dst_t)) % 16 == 0 &&
                     (sy3 * sizeof(dst_t)) % 16 == 0;
    if (vec) {
        ggml_cuda_kernel_launch(k_tq_dequantize<T, dst_t, true>, ggml_cuda_kernel_launch_params(grid, TQ_CUDA_THREADS, 0, stream),
            (const char *) x, y, (uint32_t) n, nblk, sx1, sx2, sx3, sy1, sy2, sy3, tq_lut_of(T));
    } else {
        ggml_cuda_kernel_launch(k_tq_dequantize<T, dst_t, false>, ggml_cuda_kernel_launch_params(grid, TQ_CUDA_THREADS, 0, stream),
            (const char *) x, y, (uint32_t) n, nblk, sx1, sx2, sx3, sy1, sy2, sy3, tq_lut_of(T));
    }
}

template <ggml_type T> void ggml_cuda_tq_to_fp16(const void * x, half * y, int64_t k, cudaStream_t stream) {
    tq_dequantize_cuda<T>(x, y, k, 1, 1, 1, 0, 0, 0, 0, 0, 0, stream);
}
template <ggml_type T> void ggml_cuda_tq_to_fp32(const void * x, float * y, int64_t k, cudaStream_t stream) {
    tq_dequantize_cuda<T>(x, y, k, 1, 1, 1, 0, 0, 0, 0, 0, 0, stream);
}
template <ggml_type T> void ggml_cuda_tq_to_fp16_nc_t(const void * x, half * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                                                      int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream) {
    const int64_t bb = tq_layout<T>::bytes;
    tq_dequantize_cuda<T>(x, y, ne00, ne01, ne02, ne03, s01 * bb, s02 * bb, s03 * bb, ne00, ne00 * ne01, ne00 * ne01 * ne02, stream);
}
template <ggml_type T> void ggml_cuda_tq_to_fp32_nc_t(const void * x, float * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                                                      int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream) {
    const int64_t bb = tq_layout<T>::bytes;
    tq_dequantize_cuda<T>(x, y, ne00, ne01, ne02, ne03, s01 * bb, s02 * bb, s03 * bb, ne00, ne00 * ne01, ne00 * ne01 * ne02, stream);
}

void ggml_cuda_tq_to_fp16_rows(const ggml_tensor * x, half * y, int64_t sy1, int64_t sy2, int64_t sy3, cudaStream_t stream) {
    const auto f = x->type == GGML_TYPE_TQ2_5 ? tq_dequantize_cuda<GGML_TYPE_TQ2_5, half> : tq_dequantize_cuda<GGML_TYPE_TQ3_5, half>;
    GGML_ASSERT(ggml_tq_is_tq(x->type) && x->nb[0] == ggml_type_size(x->type));
    f(x->data, y, x->ne[0], x->ne[1], x->ne[2], x->ne[3], x->nb[1], x->nb[2], x->nb[3], sy1, sy2, sy3, stream);
}

#define TQ_INSTANTIATE_CONVERT(T)                                                                                              \
    template void ggml_cuda_tq_to_fp16<T>(const void *, half *, int64_t, cudaStream_t);                                        \
    template void ggml_cuda_tq_to_fp32<T>(const void *, float *, int64_t, cudaStream_t);                                       \
    template void ggml_cuda_tq_to_fp16_nc_t<T>(const void *, half *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t); \
    template void ggml_cuda_tq_to_fp32_nc_t<T>(const void *, float *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
TQ_INSTANTIATE_CONVERT(GGML_TYPE_TQ2_5)
TQ_INSTANTIATE_CONVERT(GGML_TYPE_TQ3_5)

// ---- GET_ROWS ------------------------------------------------------------------------

// dst row (i10, i11, i12) = src0 row (idx[i10, i11, i12], i11, i12); one thread per eighth block.
template <ggml_type T, typename dst_t>
static __global__ void k_tq_get_rows(const char * x, const int32_t * idx, dst_t * y, const int64_t nblk,
                                     const int64_t ne10, const int64_t ne11, const int64_t ne12,
                                     const int64_t sx1, const int64_t sx2, const int64_t sx3,
                                     const int64_t si0, const int64_t si1, const int64_t si2,
                                     const int64_t sy1, const int64_t sy2, const int64_t sy3, const tq_lut lut) {
    __shared__ float slut[2][16];
    ggml_cuda_pdl_lc();
    tq_lut_to_shared(lut, slut);
    ggml_cuda_pdl_sync();
    const int64_t i = (int64_t) blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 8 * nblk * ne10 * ne11 * ne12) {
        return;
    }
    const int u = i % 8;
    int64_t r = i / 8;
    const int64_t b = r % nblk; r /= nblk;
    const int64_t i10 = r % ne10; r /= ne10;
    const int64_t i11 = r % ne11;
    const int64_t i12 = r / ne11;
    const int64_t row = idx[i10 * si0 + i11 * si1 + i12 * si2];
    const uint8_t * blk = (const uint8_t *) x + row * sx1 + i11 * sx2 + i12 * sx3 + b * tq_layout<T>::bytes;
    tq_dequantize_eighth<T, dst_t, false>(blk, u, slut, y + i10 * sy1 + i11 * sy2 + i12 * sy3 + b * TQ_BLOCK + 8 * u);
}

template <ggml_type T, typename dst_t>
static void tq_get_rows_cuda(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    const int64_t nblk = src0->ne[0] / TQ_BLOCK;
    const int64_t n = 8 * nblk * src1->ne[0] * src1->ne[1] * src1->ne[2];
    if (n == 0) {
        return;
    }
    const size_t ds = ggml_type_size(dst->type);
    ggml_cuda_kernel_launch(k_tq_get_rows<T, dst_t>, ggml_cuda_kernel_launch_params((n + TQ_CUDA_THREADS - 1) / TQ_CUDA_THREADS, TQ_CUDA_THREADS, 0, stream),
        (const char *) src0->data, (const int32_t *) src1->data, (dst_t *) dst->data, nblk,
        src1->ne[0], src1->ne[1], src1->ne[2], src0->nb[1], src0->nb[2], src0->nb[3],
        src1->nb[0] / 4, src1->nb[1] / 4, src1->nb[2] / 4, dst->nb[1] / ds, dst->nb[2] / ds, dst->nb[3] / ds, tq_lut_of(T));
}

void ggml_cuda_tq_get_rows(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst) {
    GGML_ASSERT(src1->type == GGML_TYPE_I32 && (dst->type == GGML_TYPE_F32 || dst->type == GGML_TYPE_F16));
    cudaStream_t stream = ctx.stream();
    if (src0->type == GGML_TYPE_TQ2_5) {
        dst->type == GGML_TYPE_F32 ? tq_get_rows_cuda<GGML_TYPE_TQ2_5, float>(src0, src1, dst, stream)
                                   : tq_get_rows_cuda<GGML_TYPE_TQ2_5, half>(src0, src1, dst, stream);
    } else {
        dst->type == GGML_TYPE_F32 ? tq_get_rows_cuda<GGML_TYPE_TQ3_5, float>(src0, src1, dst, stream)
                                   : tq_get_rows_cuda<GGML_TYPE_TQ3_5, half>(src0, src1, dst, stream);
    }
}

// ---- quantize (SET_ROWS, CPY) -------------------------------------------------------

// One warp per block. Source rows (i1, i2, i3) at byte strides ss*; the destination row is
// i1, or idx[i1, i2 % ni1, i3 % ni2] when idx is given (SET_ROWS).
static constexpr int TQ_QUANT_WARPS = 4;

template <ggml_type T, typename src_t, typename idx_t>
static __global__ void __launch_bounds__(32 * TQ_QUANT_WARPS)
k_tq_quantize(const char * src, char * dst, const idx_t * idx, const int64_t nblk,
              const int64_t ne1, const int64_t ne2, const int64_t ne3,
              const int64_t ss0, const int64_t ss1, const int64_t ss2, const int64_t ss3,
              const int64_t sd1, const int64_t sd2, const int64_t sd3,
              const int64_t ni1, const int64_t ni2, const int64_t si0, const int64_t si1, const int64_t si2,
              const tq_codebooks cb) {
    __shared__ uint8_t codes[TQ_QUANT_WARPS][TQ_BLOCK];
    ggml_cuda_pdl_lc();
    ggml_cuda_pdl_sync();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t i = (int64_t) blockIdx.x * TQ_QUANT_WARPS + warp;
    if (i >= nblk * ne1 * ne2 * ne3) {
        return; // a whole warp leaves together
    }
    int64_t r = i;
    const int64_t b = r % nblk; r /= nblk;
    const int64_t i1 = r % ne1; r /= ne1;
    const int64_t i2 = r % ne2;
    const int64_t i3 = r / ne2;
    const int64_t row = idx ? (int64_t) idx[i1 * si0 + (i2 % ni1) * si1 + (i3 % ni2) * si2] : i1;

    const char * s = src + i1 * ss1 + i2 * ss2 + i3 * ss3 + b * TQ_BLOCK * ss0;
    const float v0 = ggml_cuda_cast<float>(*(const src_t *) (s + lane * ss0));
    const float v1 = ggml_cuda_cast<float>(*(const src_t *) (s + (lane + 32) * ss0));
    uint8_t * blk = (uint8_t *) dst + row * sd1 + i2 * sd2 + i3 * sd3 + b * tq_layout<T>::bytes;
    tq_quantize_block_warp<T>(v0, v1, cb, codes[warp], blk);
}

template <ggml_type T, typename src_t, typename idx_t>
static void tq_quantize_cuda(const ggml_tensor * src, ggml_tensor * dst, const ggml_tensor * idx, cudaStream_t stream) {
    const int64_t nblk = src->ne[0] / TQ_BLOCK;
    const int64_t n = nblk * src->ne[1] * src->ne[2] * src->ne[3];
    if (n == 0) {
        return;
    }
    const int64_t is = idx ? (int64_t) sizeof(idx_t) : 1;
    ggml_cuda_kernel_launch(k_tq_quantize<T, src_t, idx_t>,
        ggml_cuda_kernel_launch_params((n + TQ_QUANT_WARPS - 1) / TQ_QUANT_WARPS, 32 * TQ_QUANT_WARPS, 0, stream),
        (const char *) src->data, (char *) dst->data, idx ? (const idx_t *) idx->data : nullptr, nblk,
        src->ne[1], src->ne[2], src->ne[3], src->nb[0], src->nb[1], src->nb[2], src->nb[3],
        dst->nb[1], dst->nb[2], dst->nb[3],
        idx ? idx->ne[1] : 1, idx ? idx->ne[2] : 1,
        idx ? idx->nb[0] / is : 0, idx ? idx->nb[1] / is : 0, idx ? idx->nb[2] / is : 0,
        *ggml_tq_codebooks(T));
}

template <ggml_type T, typename idx_t>
static void tq_quantize_dispatch(const ggml_tensor * src, ggml_tensor * dst, const ggml_tensor * idx, cudaStream_t stream) {
    if (src->type == GGML_TYPE_F32) {
        tq_quantize_cuda<T, float, idx_t>(src, dst, idx, stream);
    } else {
        tq_quantize_cuda<T, half, idx_t>(src, dst, idx, stream);
    }
}

template <typename idx_t>
static void tq_quantize_any(const ggml_tensor * src, ggml_tensor * dst, const ggml_tensor * idx, cudaStream_t stream) {
    GGML_ASSERT(src->type == GGML_TYPE_F32 || src->type == GGML_TYPE_F16);
    GGML_ASSERT(src->ne[0] % TQ_BLOCK == 0);
    if (dst->type == GGML_TYPE_TQ2_5) {
        tq_quantize_dispatch<GGML_TYPE_TQ2_5, idx_t>(src, dst, idx, stream);
    } else {
        tq_quantize_dispatch<GGML_TYPE_TQ3_5, idx_t>(src, dst, idx, stream);
    }
}

void ggml_cuda_tq_set_rows(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst) {
    if (src1->type == GGML_TYPE_I64) {
        tq_quantize_any<int64_t>(src0, dst, src1, ctx.stream());
    } else {
        tq_quantize_any<int32_t>(src0, dst, src1, ctx.stream());
    }
}

// Fused (tq-fuse.cu, WRITE): one token's transforms T x (+ K's centering offset), each either
// quantized into its cache row idx[0] (SET_ROWS: K's, V's) or written plain (Q's). The jobs'
// blocks of 64 values follow one another in the grid; a block of two warps makes one: warp w
// the rows o0 + 32w + lane of its head's T x (tq_warp_rows_dot), then warp 0 quantizes the 64
// (lane l holds slots l and l + 32, as the quantizer takes them). Two warps, not one making
// both halves in turn: the products are latency (rows of T from memory).
struct tq_write_job {
    const half * T;    // [D, D] per KV head, f16
    const float * x;   // [D, n_head]: the token's heads
    const float * off; // K's offset [D, n_head], or null
    float * y;         // plain: the product [D, n_head]
    char * cache;      // a cache write: the cache, its row idx[0] at stride sd1 (null: plain)
    const void * idx;
    int64_t sd1;
    int blk0;          // the job's first block in the grid
    int r;             // heads per T: Q's GQA ratio, 1 for K and V
    bool idx64;
    bool tq3;          // the cache is TQ3_5 (else TQ2_5)
};

struct tq_write_jobs {
    tq_write_job j[3];
    int n;
    tq_codebooks cb2, cb3; // TQ2_5's and TQ3_5's
};

template <int D>
static __global__ void __launch_bounds__(64) k_tq_write(const tq_write_jobs a) {
    __shared__ float upper[32]; // slots 32..63, from warp 1
    __shared__ uint8_t codes[TQ_BLOCK];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // the block's job, by constant indices (a dynamic one would copy the parameters to local memory)
    tq_write_job j = a.j[0];
    if (a.n > 1 && (int) blockIdx.x >= a.j[1].blk0) {
        j = a.j[1];
    }
    if (a.n > 2 && (int) blockIdx.x >= a.j[2].blk0) {
        j = a.j[2];
    }
    const int64_t b = blockIdx.x - j.blk0;
    const int64_t h = b * TQ_BLOCK / D, o = b * TQ_BLOCK % D + 32 * warp;
    const half * t_rows = j.T + ((h / j.r) * D + o) * D;
    ggml_cuda_pdl_lc();
    tq_prefetch_rows_l2<D>(t_rows, lane);
    ggml_cuda_pdl_sync();
    float xl[D / 32];
    tq_load_lane<D / 32>(j.x + h * D + lane * (D / 32), xl);
    float v = tq_warp_rows_dot<D>(t_rows, xl, lane);
    if (j.off) {
        v += j.off[h * D + o + lane];
    }
    if (!j.cache) { // the whole block takes one job: no barrier is skipped by some of its warps only
        j.y[h * D + o + lane] = v;
        return;
    }
    if (warp == 1) {
        upper[lane] = v;
    }
    __syncthreads();
    if (warp == 0) {
        const int64_t row = j.idx64 ? ((const int64_t *) j.idx)[0] : ((const int32_t *) j.idx)[0];
        uint8_t * dst = (uint8_t *) j.cache + row * j.sd1;
        if (j.tq3) {
            tq_quantize_block_warp<GGML_TYPE_TQ3_5>(v, upper[lane], a.cb3, codes, dst + b * tq_layout<GGML_TYPE_TQ3_5>::bytes);
        } else {
            tq_quantize_block_warp<GGML_TYPE_TQ2_5>(v, upper[lane], a.cb2, codes, dst + b * tq_layout<GGML_TYPE_TQ2_5>::bytes);
        }
    }
}

void ggml_cuda_tq_write(ggml_backend_cuda_context & ctx, const ggml_cuda_tq_fused & m) {
    tq_write_jobs a = {};
    a.n = m.n_jobs;
    a.cb2 = *ggml_tq_codebooks(GGML_TYPE_TQ2_5);
    a.cb3 = *ggml_tq_codebooks(GGML_TYPE_TQ3_5);
    const int d = (int) m.jobs[0].mm->src[0]->ne[0];
    int n_blk = 0;
    for (int i = 0; i < m.n_jobs; ++i) {
        const ggml_cuda_tq_fused::write_job & w = m.jobs[i];
        const ggml_tensor * T = w.mm->src[0];
        const ggml_tensor * x = w.mm->src[1];
        tq_write_job & j = a.j[i];
        j.T = (const half *) T->data;
        j.x = (const float *) x->data;
        j.off = w.offset ? (const float *) w.offset->data : nullptr;
        j.r = (int) (x->ne[2] / T->ne[2]);
        j.blk0 = n_blk;
        if (w.set_rows) {
            const ggml_tensor * sr = w.set_rows;
            j.cache = (char *) sr->data; // row idx[0], read by the kernel (the index lives on the device)
            j.idx = sr->src[1]->data;
            j.idx64 = sr->src[1]->type == GGML_TYPE_I64;
            j.sd1 = sr->nb[1];
            j.tq3 = sr->type == GGML_TYPE_TQ3_5;
        } else {
            j.y = (float *) w.mm->data;
        }
        n_blk += (int) (ggml_nelements(x) / TQ_BLOCK);
    }
    const ggml_cuda_kernel_launch_params lp(n_blk, 64, 0, ctx.stream());
    switch (d) {
        case 64:  ggml_cuda_kernel_launch(k_tq_write<64>, lp, a); break;
        case 128: ggml_cuda_kernel_launch(k_tq_write<128>, lp, a); break;
        default:  ggml_cuda_kernel_launch(k_tq_write<256>, lp, a); break;
    }
}

bool ggml_cuda_tq_cpy_supported(const ggml_tensor * src0, const ggml_tensor * src1) {
    const bool q_dst = ggml_tq_is_tq(src1->type) && (src0->type == GGML_TYPE_F32 || src0->type == GGML_TYPE_F16);
    const bool q_src = ggml_tq_is_tq(src0->type) && (src1->type == GGML_TYPE_F32 || src1->type == GGML_TYPE_F16);
    // the TQ side has whole blocks; a float destination has its values contiguous within a row
    const ggml_tensor * q = q_dst ? src1 : src0;
    return (q_dst || q_src) && ggml_are_same_shape(src0, src1) && q->ne[0] % TQ_BLOCK == 0 &&
           q->nb[0] == ggml_type_size(q->type) && (q_dst || src1->nb[0] == ggml_type_size(src1->type));
}

void ggml_cuda_tq_cpy(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, ggml_tensor * src1) {
    cudaStream_t stream = ctx.stream();
    if (ggml_tq_is_tq(src1->type)) {
        tq_quantize_any<int32_t>(src0, src1, nullptr, stream);
        return;
    }
    // TQ -> f32/f16 with the destination's own strides (its values contiguous within a row)
    GGML_ASSERT(src1->nb[0] == ggml_type_size(src1->type));
    const size_t ds = ggml_type_size(src1->type);
    const int64_t sy1 = src1->nb[1] / ds, sy2 = src1->nb[2] / ds, sy3 = src1->nb[3] / ds;
#define TQ_DEQ(T, dst_t) tq_dequantize_cuda<T>(src0->data, (dst_t *) src1->data, src0->ne[0], src0->ne[1], src0->ne[2], src0->ne[3], \
                                               src0->nb[1], src0->nb[2], src0->nb[3], sy1, sy2, sy3, stream)
    if (src0->type == GGML_TYPE_TQ2_5) {
        if (src1->type == GGML_TYPE_F32) { TQ_DEQ(GGML_TYPE_TQ2_5, float); } else { TQ_DEQ(GGML_TYPE_TQ2_5, half); }
    } else {
        if (src1->type == GGML_TYPE_F32) { TQ_DEQ(GGML_TYPE_TQ3_5, float); } else { TQ_DEQ(GGML_TYPE_TQ3_5, half); }
    }
#undef TQ_DEQ
}
