// The per-head TQ transforms of one token at decode (MUL_MAT hinted GGML_HINT_SRC0_IS_TQ_TRANSFORM,
// llama-tq.cpp): y[h] = T[h / r] x[h], T [d, d, n_kv_head] f32, x and y [d, 1, n_head].
//
// Why not the generic matrix-vector product: these are 8..32 small products of 64..256 rows
// per layer and token, four per layer; what costs is latency, not bandwidth. Here a warp owns
// 32 rows of one head (tq_warp_rows_dot, tq-device.cuh), so every load is coalesced and
// independent of the others.
#include "tq-cuda.cuh"
#include "tq-device.cuh"

// grid (d / 32, n_head), one warp per block
template <int D>
static __global__ void __launch_bounds__(32) k_tq_transform(const float * T, const float * x, float * y, const int r) {
    const int lane = threadIdx.x, rows = 32 * blockIdx.x, h = blockIdx.y;
    float xl[D / 32];
    tq_load_lane<D / 32>(x + (int64_t) h * D + lane * (D / 32), xl);
    y[(int64_t) h * D + rows + lane] = tq_warp_rows_dot<D>(T + ((int64_t) (h / r) * D + rows) * D, xl, lane);
}

bool ggml_cuda_tq_transform_applies(const ggml_tensor * dst) {
    if (dst->op != GGML_OP_MUL_MAT || ggml_get_op_params_i32(dst, 1) != GGML_HINT_SRC0_IS_TQ_TRANSFORM) {
        return false;
    }
    const ggml_tensor * T = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const int64_t d = T->ne[0];
    return (d == 64 || d == 128 || d == 256) && T->ne[1] == d && T->type == GGML_TYPE_F32 && x->type == GGML_TYPE_F32 &&
           dst->type == GGML_TYPE_F32 && ggml_is_contiguous(T) && ggml_is_contiguous(x) && ggml_is_contiguous(dst) &&
           x->ne[0] == d && x->ne[1] == 1 && x->ne[3] == 1 && T->ne[3] == 1 && x->ne[2] % T->ne[2] == 0;
}

void ggml_cuda_tq_transform(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * T = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const int d = T->ne[0], n_head = x->ne[2], r = x->ne[2] / T->ne[2];
    const dim3 grid(d / 32, n_head);
    const float * tp = (const float *) T->data;
    const float * xp = (const float *) x->data;
    float * yp = (float *) dst->data;
    switch (d) {
        case 64:  k_tq_transform<64><<<grid, 32, 0, ctx.stream()>>>(tp, xp, yp, r); break;
        case 128: k_tq_transform<128><<<grid, 32, 0, ctx.stream()>>>(tp, xp, yp, r); break;
        default:  k_tq_transform<256><<<grid, 32, 0, ctx.stream()>>>(tp, xp, yp, r); break;
    }
}
