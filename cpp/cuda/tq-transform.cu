// The per-head TQ transforms (MUL_MAT hinted GGML_HINT_SRC0_IS_TQ_TRANSFORM, llama-tq.cpp), in
// the two forms the graph builds:
//
//   one token (decode)   y[h] = T[h / r] x[h], T [d, d, n_kv_head], x and y [d, 1, n_head]
//   several (ubatches)   y[:, t, s, kv] = T[kv] x[:, t, s, kv], T [d, d, 1, n_kv_head], x a strided
//                        view [d, n_tokens, r, n_kv_head] of the heads, y contiguous
//
// Why not the generic products: at decode these are 8..32 small products of 64..256 rows per
// layer and token, four per layer, and what costs is latency, not bandwidth; here a warp owns
// 32 rows of one head (tq_warp_rows_dot, tq-device.cuh), so every load is coalesced and
// independent of the others. For ubatches the generic path copied x into a contiguous
// head-major layout, ran a batched GEMM and copied the result back into token-major order;
// here one tensor-core kernel reads x through its strides and can write straight into the
// final layout (tq-fuse.cu fuses the copy back, and K's centering offset, into it).
#include "tq-cuda.cuh"
#include "tq-device.cuh"
#include "mma.cuh"

// y[h] = T[h / r] x[h] (+ bias[h]), a warp per 32 rows (tq_warp_rows_dot). Two grids:
//   WHOLE_HEAD  grid (n_head), D threads: every warp has read all of x[h] before any writes
//               y[h], so y may be x itself; gallocr gives K's offset add the memory of x once the
//               transform, x's last reader, is done (tq-fuse.cu fuses that add into this kernel)
//   otherwise   grid (D / 32, n_head), one warp per block: T's rows spread over 4x the SMs
//               (faster per call: docs/results/cuda-h200.md)
template <int D, bool WHOLE_HEAD>
static __global__ void __launch_bounds__(WHOLE_HEAD ? D : 32)
k_tq_transform(const half * T, const float * x, const float * bias, float * y, const int r) {
    ggml_cuda_pdl_lc();
    const int lane = threadIdx.x % 32;
    const int rows = WHOLE_HEAD ? 32 * (threadIdx.x / 32) : 32 * blockIdx.x;
    const int h = WHOLE_HEAD ? blockIdx.x : blockIdx.y;
    const half * t_rows = T + ((int64_t) (h / r) * D + rows) * D;
    tq_prefetch_rows_l2<D>(t_rows, lane);
    ggml_cuda_pdl_sync();
    float xl[D / 32];
    tq_load_lane<D / 32>(x + (int64_t) h * D + lane * (D / 32), xl);
    if constexpr (WHOLE_HEAD) {
        __syncthreads();
    }
    const float v = tq_warp_rows_dot<D>(t_rows, xl, lane);
    y[(int64_t) h * D + rows + lane] = bias ? v + bias[(int64_t) h * D + rows + lane] : v;
}

template <int D>
static void tq_transform_launch(const half * T, const float * x, const float * bias, float * y, int r, int n_head,
                                cudaStream_t stream) {
    if (y == x) {
        ggml_cuda_kernel_launch(k_tq_transform<D, true>, ggml_cuda_kernel_launch_params(n_head, D, 0, stream), T, x, bias, y, r);
    } else {
        ggml_cuda_kernel_launch(k_tq_transform<D, false>, ggml_cuda_kernel_launch_params(dim3(D / 32, n_head), 32, 0, stream),
                                T, x, bias, y, r);
    }
}

// What both forms need: a hinted MUL_MAT of a contiguous f16 T [d, d, ...] (d = 64, 128, 256; the
// KV cache keeps its transforms in f16) by f32 x, into a contiguous f32 dst.
static bool tq_transform_hinted(const ggml_tensor * dst) {
    if (dst->op != GGML_OP_MUL_MAT || ggml_get_op_params_i32(dst, 1) != GGML_HINT_SRC0_IS_TQ_TRANSFORM) {
        return false;
    }
    const ggml_tensor * T = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const int64_t d = T->ne[0];
    return (d == 64 || d == 128 || d == 256) && T->ne[1] == d && T->type == GGML_TYPE_F16 && x->type == GGML_TYPE_F32 &&
           dst->type == GGML_TYPE_F32 && ggml_is_contiguous(T) && ggml_is_contiguous(dst) && x->ne[0] == d;
}

bool ggml_cuda_tq_transform_applies(const ggml_tensor * dst) {
    if (!tq_transform_hinted(dst)) {
        return false;
    }
    const ggml_tensor * T = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    return ggml_is_contiguous(x) && x->ne[1] == 1 && x->ne[3] == 1 && T->ne[3] == 1 && x->ne[2] % T->ne[2] == 0;
}

void ggml_cuda_tq_transform(ggml_backend_cuda_context & ctx, const ggml_tensor * dst, const float * bias, float * out) {
    const ggml_tensor * T = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const int d = T->ne[0], n_head = x->ne[2], r = x->ne[2] / T->ne[2];
    const half * tp = (const half *) T->data;
    const float * xp = (const float *) x->data;
    float * yp = out ? out : (float *) dst->data;
    switch (d) {
        case 64:  tq_transform_launch<64>(tp, xp, bias, yp, r, n_head, ctx.stream()); break;
        case 128: tq_transform_launch<128>(tp, xp, bias, yp, r, n_head, ctx.stream()); break;
        default:  tq_transform_launch<256>(tp, xp, bias, yp, r, n_head, ctx.stream()); break;
    }
}

// ---- several tokens: TF32 tensor cores -------------------------------------------------
//
// Ampere and later (mma.cuh's TF32 tile product; ggml_cuda_tq_caps_of). A block computes 128 output dimensions (all of them when d = 64) of one head for 64 tokens:
// C (rows x tokens) = T (rows x d) X (d x tokens), in chunks of 32 of d staged through shared
// memory. T is f16 and x is rounded to f16, as the CPU's f16 product rounds it: both are exact
// TF32 values, so the tensor cores multiply exactly what the CPU multiplies, summed in f32.

// The kernel's arguments: y[:, t, s, kv] = T[kv] x[:, t, s, kv] (+ bias[(kv * r + s) * d ...]).
struct tq_transform_tokens_args {
    const half * T; const char * x; char * y; const float * bias;
    int n_tok, r, n_kv;
    int64_t xt, xs, xk; // x's byte strides: token, head within the group, KV head
    int64_t yt, ys, yk; // y's
};

static constexpr int TQ_TT_TOKENS = 64;
static constexpr int TQ_TT_KC     = 32;

// x rounded to the nearest f16, as the CPU's f16 product rounds it (a TF32 value as well)
static __device__ __forceinline__ float tq_f16(float x) {
    return __half2float(__float2half_rn(x));
}

// C += A B, A 16x8 (row-major), B 8x8 (column-major), TF32 in, f32 accumulate: mma.cuh's tile
// product. Lane l = 4g + t holds a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4], a3 = A[g+8][t+4];
// b0 = B[t][g], b1 = B[t+4][g]; c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1].
static __device__ __forceinline__ void tq_mma_tf32(float (&c)[4], const float (&a)[4], float b0, float b1) {
    ggml_cuda_mma::tile<16, 8, float> A, C;
    ggml_cuda_mma::tile<8, 8, float>  B;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        A.x[i] = a[i];
        C.x[i] = c[i];
    }
    B.x[0] = b0;
    B.x[1] = b1;
    ggml_cuda_mma::mma(C, A, B);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        c[i] = C.x[i];
    }
}

// grid (token tiles, r * n_kv, D / rows); 4 warps, warp w on rows w * rows / 4 of the block's
template <int D>
static __global__ void __launch_bounds__(128) k_tq_transform_tokens(const tq_transform_tokens_args a) {
#ifdef AMPERE_MMA_AVAILABLE
    constexpr int RT = D < 128 ? D : 128; // output rows per block
    constexpr int MT = RT / 64;           // 16-row m-tiles per warp
    constexpr int NT = TQ_TT_TOKENS / 8;  // 8-token n-tiles
    constexpr int LD = TQ_TT_KC + 4;      // padded rows: fragment loads hit 32 distinct banks
    __shared__ __align__(16) float Ts[RT][LD];
    __shared__ __align__(16) float Xs[TQ_TT_TOKENS][LD];

    ggml_cuda_pdl_lc();
    ggml_cuda_pdl_sync(); // T and x share the loop: nothing to do before
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
    const int t0 = blockIdx.x * TQ_TT_TOKENS, h = blockIdx.y, s = h % a.r, kv = h / a.r;
    const int row0 = blockIdx.z * RT;
    const half * T = a.T + ((int64_t) kv * D + row0) * D;
    const char * x = a.x + s * a.xs + kv * a.xk;

    float c[MT][NT][4] = {};
    for (int k0 = 0; k0 < D; k0 += TQ_TT_KC) {
        for (int f = tid; f < RT * TQ_TT_KC / 4; f += 128) {
            const int i = f / (TQ_TT_KC / 4), j = 4 * (f % (TQ_TT_KC / 4));
            const float2 w = *(const float2 *) (T + (int64_t) i * D + k0 + j); // 4 f16, as floats
            const float2 lo = __half22float2(*(const half2 *) &w.x), hi = __half22float2(*(const half2 *) &w.y);
            *(float4 *) &Ts[i][j] = make_float4(lo.x, lo.y, hi.x, hi.y);
        }
        for (int f = tid; f < TQ_TT_TOKENS * TQ_TT_KC / 4; f += 128) {
            const int i = f / (TQ_TT_KC / 4), j = 4 * (f % (TQ_TT_KC / 4));
            *(float4 *) &Xs[i][j] = t0 + i < a.n_tok ? *(const float4 *) (x + (int64_t) (t0 + i) * a.xt + (k0 + j) * 4)
                                                     : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TQ_TT_KC; kk += 8) {
            float af[MT][4];
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                const int r0 = warp * (RT / 4) + 16 * m + g;
                af[m][0] = Ts[r0][kk + t]; // f16 values: exact in TF32
                af[m][1] = Ts[r0 + 8][kk + t];
                af[m][2] = Ts[r0][kk + t + 4];
                af[m][3] = Ts[r0 + 8][kk + t + 4];
            }
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                const float b0 = tq_f16(Xs[8 * n + g][kk + t]);
                const float b1 = tq_f16(Xs[8 * n + g][kk + t + 4]);
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    tq_mma_tf32(c[m][n], af[m], b0, b1);
                }
            }
        }
        __syncthreads();
    }

    char * y = a.y + s * a.ys + kv * a.yk;
    const float * bias = a.bias ? a.bias + (int64_t) h * D : nullptr;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int o = row0 + warp * (RT / 4) + 16 * m + g + 8 * e;
            const float b = bias ? bias[o] : 0.0f;
#pragma unroll
            for (int n = 0; n < NT; ++n) {
#pragma unroll
                for (int u = 0; u < 2; ++u) {
                    const int tok = t0 + 8 * n + 2 * t + u;
                    if (tok < a.n_tok) {
                        *(float *) (y + (int64_t) tok * a.yt + o * 4) = c[m][n][2 * e + u] + b;
                    }
                }
            }
        }
    }
#else
    GGML_UNUSED(a);
    NO_DEVICE_CODE;
#endif // AMPERE_MMA_AVAILABLE
}

bool ggml_cuda_tq_transform_tokens_applies(int device, const ggml_tensor * dst) {
    if (!tq_transform_hinted(dst)) {
        return false;
    }
    const ggml_tensor * T = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const bool aligned = (uintptr_t) x->data % 16 == 0 && x->nb[1] % 16 == 0 && x->nb[2] % 16 == 0 && x->nb[3] % 16 == 0 &&
                         (uintptr_t) T->data % 16 == 0;
    return T->ne[2] == 1 && x->nb[0] == sizeof(float) && x->ne[3] == T->ne[3] && aligned &&
           x->ne[1] * x->ne[2] * x->ne[3] < INT_MAX && ggml_cuda_tq_caps_of(device).tokens;
}

void ggml_cuda_tq_transform_tokens(ggml_backend_cuda_context & ctx, const ggml_tensor * dst, float * out, const float * bias) {
    const ggml_tensor * T = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const int d = (int) T->ne[0];
    tq_transform_tokens_args a = {};
    a.T = (const half *) T->data;
    a.x = (const char *) x->data;
    a.bias = bias;
    a.n_tok = (int) x->ne[1]; a.r = (int) x->ne[2]; a.n_kv = (int) x->ne[3];
    a.xt = x->nb[1]; a.xs = x->nb[2]; a.xk = x->nb[3];
    if (out) { // head-major [d, n_head, n_tok], head h = kv * r + s
        const int64_t head = d * sizeof(float);
        a.y = (char *) out;
        a.yt = head * a.r * a.n_kv; a.ys = head; a.yk = head * a.r;
    } else {   // dst's own layout [d, n_tok, r, n_kv]
        a.y = (char *) dst->data;
        a.yt = dst->nb[1]; a.ys = dst->nb[2]; a.yk = dst->nb[3];
    }
    const int rows = d < 128 ? d : 128;
    const dim3 grid((a.n_tok + TQ_TT_TOKENS - 1) / TQ_TT_TOKENS, a.r * a.n_kv, d / rows);
    switch (d) {
        case 64:  ggml_cuda_kernel_launch(k_tq_transform_tokens<64>, ggml_cuda_kernel_launch_params(grid, 128, 0, ctx.stream()), a); break;
        case 128: ggml_cuda_kernel_launch(k_tq_transform_tokens<128>, ggml_cuda_kernel_launch_params(grid, 128, 0, ctx.stream()), a); break;
        default:  ggml_cuda_kernel_launch(k_tq_transform_tokens<256>, ggml_cuda_kernel_launch_params(grid, 128, 0, ctx.stream()), a); break;
    }
}
