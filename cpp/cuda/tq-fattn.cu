// Which flash-attention calls the TQ decode kernel takes (tq-fattn.cuh), its launch over
// splits of the KV length, and the merge of the splits.
#include "tq-fattn.cuh"
#include "ggml-tq-impl.h"

static bool tq_fa_type_ok(ggml_type t) {
    return ggml_tq_is_tq(t) || t == GGML_TYPE_F16 || t == GGML_TYPE_Q8_0;
}

bool ggml_cuda_tq_fattn_applies(int device, const ggml_tensor * dst) {
    const ggml_tensor * Q = dst->src[0];
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    if (!(ggml_tq_is_tq(K->type) || ggml_tq_is_tq(V->type)) || !tq_fa_type_ok(K->type) || !tq_fa_type_ok(V->type)) {
        return false;
    }
    float max_bias;
    memcpy(&max_bias, (const float *) dst->op_params + 1, sizeof(float));
    const int64_t D = K->ne[0];
    if (Q->type != GGML_TYPE_F32 || V->ne[0] != D || Q->ne[0] != D || (D != 64 && D != 128 && D != 256)) {
        return false;
    }
    if (max_bias != 0.0f || dst->src[4] != nullptr || Q->ne[2] % K->ne[2] != 0 || V->ne[2] != K->ne[2]) {
        return false; // ALiBi and attention sinks take upstream's path (K/V converted to f16)
    }
    if (mask && (mask->type != GGML_TYPE_F16 || mask->ne[2] != 1)) {
        return false;
    }
    if (K->nb[0] != ggml_type_size(K->type) || V->nb[0] != ggml_type_size(V->type)) {
        return false;
    }
    return Q->ne[1] * (Q->ne[2] / K->ne[2]) <= TQ_FA_MAX_COLS && ggml_cuda_tq_caps_of(device).decode;
}

// One block per output row (query token, head). Warp 0 weighs the splits (w_s = e^(max_s -
// max) and their sum den); then TQ_MERGE_GROUPS groups of D threads, a thread per dimension,
// each sum every TQ_MERGE_GROUPS-th split: a thread's chain of loads is n_splits / 4 long
// (/ 2 at D = 256), not n_splits (a split per SM's share of the KV length). Group 0 adds the
// groups' sums. With To (fused), the row times the head's output transform, To[h / gqa] o, as
// warp products (tq_warp_rows_dot: warp w of group 0 makes dimensions 32w .. 32w + 31).
// The layout of part and meta is that of upstream's flash_attn_combine_results (fattn-common.cuh),
// which is not used: its thread per dimension walks every split in turn, it has no output
// transform, and a row whose splits are all masked (max -inf) would come out NaN.
template <int D> static constexpr int TQ_MERGE_GROUPS = D >= 256 ? 2 : 4; // <= 512 threads
static constexpr int TQ_MERGE_MAX_SPLITS = 1024; // tq_fa_run caps the splits at it (4 blocks per SM x SMs is less)

template <int D>
static __global__ void __launch_bounds__(D * TQ_MERGE_GROUPS<D>)
k_tq_fattn_merge(const float * part, const float2 * meta, float * dst, const int n_splits,
                 const half * To, const int n_head, const int gqa) {
    __shared__ float w[TQ_MERGE_MAX_SPLITS];
    __shared__ float den_s;
    __shared__ __align__(16) float sum[TQ_MERGE_GROUPS<D>][D];
    const int64_t r = (int64_t) blockIdx.x;
    const int d = threadIdx.x % D, grp = threadIdx.x / D;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    ggml_cuda_pdl_lc();
    if (To && grp == 0) { // the rows of the output transform this warp will read, while the attention finishes
        tq_prefetch_rows_l2<D>(To + ((int64_t) ((r % n_head) / gqa) * D + 32 * warp) * D, lane);
    }
    ggml_cuda_pdl_sync();
    const float2 * m = meta + r * n_splits;
    if (warp == 0) {
        float mx = -INFINITY;
        for (int s = lane; s < n_splits; s += 32) {
            mx = fmaxf(mx, m[s].x);
        }
        mx = warp_reduce_max(mx);
        float den = 0.0f;
        for (int s = lane; s < n_splits; s += 32) {
            const float ws = m[s].x == -INFINITY ? 0.0f : __expf(m[s].x - mx);
            w[s] = ws;
            den += ws * m[s].y;
        }
        den = warp_reduce_sum(den);
        if (lane == 0) {
            den_s = den;
        }
    }
    __syncthreads();
    float num = 0.0f;
    for (int s = grp; s < n_splits; s += TQ_MERGE_GROUPS<D>) {
        if (w[s] != 0.0f) {
            num += w[s] * part[(r * n_splits + s) * D + d];
        }
    }
    sum[grp][d] = num;
    __syncthreads();
    if (grp != 0) {
        return;
    }
#pragma unroll
    for (int i = 1; i < TQ_MERGE_GROUPS<D>; ++i) {
        num += sum[i][d];
    }
    const float val = den_s > 0.0f ? num / den_s : 0.0f;
    if (To == nullptr) {
        dst[r * D + d] = val;
        return;
    }
    sum[0][d] = val; // group 0 alone from here: its 4 warps (D = 128) sync among themselves
    asm volatile("bar.sync 1, %0;" :: "n"(D));
    float xl[D / 32];
    tq_load_lane<D / 32>(&sum[0][0] + lane * (D / 32), xl);
    dst[r * D + d] = tq_warp_rows_dot<D>(To + ((int64_t) ((r % n_head) / gqa) * D + 32 * warp) * D, xl, lane);
}

template <int D, ggml_type TK>
static int tq_fa_launch_v(ggml_type tv, const tq_fa_params & p, int n_seq, int nsm, int ms, cudaStream_t stream) {
    switch (tv) {
        case GGML_TYPE_TQ2_5: return ggml_cuda_tq_fattn_launch<D, TK, GGML_TYPE_TQ2_5>(p, n_seq, nsm, ms, stream);
        case GGML_TYPE_TQ3_5: return ggml_cuda_tq_fattn_launch<D, TK, GGML_TYPE_TQ3_5>(p, n_seq, nsm, ms, stream);
        case GGML_TYPE_F16:   return ggml_cuda_tq_fattn_launch<D, TK, GGML_TYPE_F16>(p, n_seq, nsm, ms, stream);
        case GGML_TYPE_Q8_0:  return ggml_cuda_tq_fattn_launch<D, TK, GGML_TYPE_Q8_0>(p, n_seq, nsm, ms, stream);
        default: GGML_ABORT("TQ flash attention: V type %s", ggml_type_name(tv));
    }
}

// K f16 / q8_0 with a TQ V
template <int D, ggml_type TV>
static int tq_fa_launch_k_plain(ggml_type tk, const tq_fa_params & p, int n_seq, int nsm, int ms, cudaStream_t stream) {
    switch (tk) {
        case GGML_TYPE_F16:  return ggml_cuda_tq_fattn_launch<D, GGML_TYPE_F16,  TV>(p, n_seq, nsm, ms, stream);
        case GGML_TYPE_Q8_0: return ggml_cuda_tq_fattn_launch<D, GGML_TYPE_Q8_0, TV>(p, n_seq, nsm, ms, stream);
        default: GGML_ABORT("TQ flash attention: K type %s", ggml_type_name(tk));
    }
}

template <int D>
static int tq_fa_launch(ggml_type tk, ggml_type tv, const tq_fa_params & p, int n_seq, int nsm, int ms, cudaStream_t stream) {
    if (tk == GGML_TYPE_TQ2_5) {
        return tq_fa_launch_v<D, GGML_TYPE_TQ2_5>(tv, p, n_seq, nsm, ms, stream);
    }
    if (tk == GGML_TYPE_TQ3_5) {
        return tq_fa_launch_v<D, GGML_TYPE_TQ3_5>(tv, p, n_seq, nsm, ms, stream);
    }
    return tv == GGML_TYPE_TQ2_5 ? tq_fa_launch_k_plain<D, GGML_TYPE_TQ2_5>(tk, p, n_seq, nsm, ms, stream)
                                 : tq_fa_launch_k_plain<D, GGML_TYPE_TQ3_5>(tk, p, n_seq, nsm, ms, stream);
}

// The decode kernel, then the merge of its splits (one block per output row) into out.
template <int D>
static void tq_fa_run(ggml_type tk, ggml_type tv, const tq_fa_params & p, int n_seq, int nsm, int max_splits, int64_t rows,
                      float * out, const half * To, cudaStream_t stream) {
    const int splits = tq_fa_launch<D>(tk, tv, p, n_seq, nsm, std::min(max_splits, TQ_MERGE_MAX_SPLITS), stream);
    ggml_cuda_kernel_launch(k_tq_fattn_merge<D>, ggml_cuda_kernel_launch_params(rows, D * TQ_MERGE_GROUPS<D>, 0, stream),
                            p.part, p.meta, out, splits, To, p.n_head, p.gqa);
}

static tq_lut tq_fa_lut(ggml_type t) {
    tq_lut l = {};
    if (ggml_tq_is_tq(t)) {
        const tq_codebooks * cb = ggml_tq_codebooks(t);
        for (int i = 0; i < 16; ++i) {
            l.c[0][i] = cb->hi.c[i];
            l.c[1][i] = cb->lo.c[i];
        }
    }
    return l;
}

void ggml_cuda_tq_fattn(ggml_backend_cuda_context & ctx, ggml_tensor * dst, const ggml_cuda_tq_fused * fused) {
    const ggml_tensor * Q = dst->src[0];
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    cudaStream_t stream = ctx.stream();

    tq_fa_params p = {};
    p.Q = (const char *) Q->data; p.K = (const char *) K->data; p.V = (const char *) V->data;
    p.mask = mask ? (const char *) mask->data : nullptr;
    p.n_q = Q->ne[1]; p.n_head = Q->ne[2]; p.n_head_kv = K->ne[2]; p.n_kv = K->ne[1];
    p.gqa = Q->ne[2] / K->ne[2];
    p.ncols = p.n_q * p.gqa;
    p.nbq1 = Q->nb[1]; p.nbq2 = Q->nb[2]; p.nbq3 = Q->nb[3];
    p.nbk1 = K->nb[1]; p.nbk2 = K->nb[2]; p.nbk3 = K->nb[3];
    p.nbv1 = V->nb[1]; p.nbv2 = V->nb[2]; p.nbv3 = V->nb[3];
    p.nbm1 = mask ? mask->nb[1] : 0; p.nbm3 = mask ? mask->nb[3] : 0;
    p.k_ne3 = K->ne[3]; p.v_ne3 = V->ne[3]; p.mask_ne3 = mask ? mask->ne[3] : 1;
    p.k_row_bytes = (int) ggml_row_size(K->type, K->ne[0]); p.v_row_bytes = (int) ggml_row_size(V->type, V->ne[0]);
    // staged tiles (tq_fa_stages) take 4-byte copies: K and V 4-byte aligned, and cp.async
    const auto al4 = [](int64_t x) { return x % 4 == 0; };
    p.stage = al4((int64_t) (uintptr_t) K->data) && al4((int64_t) (uintptr_t) V->data) &&
              al4(p.nbk1) && al4(p.nbk2) && al4(p.nbk3) && al4(p.nbv1) && al4(p.nbv2) && al4(p.nbv3) &&
              ggml_cuda_tq_caps_of(ctx.device).stage;
    memcpy(&p.scale, (const float *) dst->op_params + 0, sizeof(float));
    memcpy(&p.softcap, (const float *) dst->op_params + 2, sizeof(float));
    if (p.softcap != 0.0f) {
        p.scale /= p.softcap; // as ggml's CPU backend: s = softcap * tanh(s * scale / softcap)
    }
    p.lut_k = tq_fa_lut(K->type);
    p.lut_v = tq_fa_lut(V->type);
    if (fused && fused->t_in) { // Q = t_in x: one token, one sequence (tq-fuse.cu checked the shapes)
        p.Tq = (const half *) fused->t_in->data;
        p.qraw = (const float *) fused->x->data;
    }
    if (const ggml_tensor * E = ggml_tq_flash_attn_k_exact(dst)) {
        p.k_exact = (const char *) E->data;
        p.n_exact = (int) E->ne[1]; p.e_ne3 = (int) E->ne[3];
        p.nbe1 = E->nb[1]; p.nbe2 = E->nb[2]; p.nbe3 = E->nb[3];
    }
    const half * To = fused && fused->t_out ? (const half *) fused->t_out->data : nullptr;
    float * out = (float *) (fused ? fused->out->data : dst->data);

    const int n_seq = Q->ne[3];
    const int nsm = ggml_cuda_info().devices[ctx.device].nsm;
    const int max_splits = (p.n_kv + TQ_FA_TILE - 1) / TQ_FA_TILE;
    const int64_t rows = (int64_t) n_seq * p.n_q * p.n_head;
    const int64_t D = K->ne[0];
    ggml_cuda_pool_alloc<float>  part(ctx.pool(), rows * max_splits * D);
    ggml_cuda_pool_alloc<float2> meta(ctx.pool(), rows * max_splits);
    p.part = part.get();
    p.meta = meta.get();

    switch (D) {
        case 64:  tq_fa_run<64>(K->type, V->type, p, n_seq, nsm, max_splits, rows, out, To, stream); break;
        case 128: tq_fa_run<128>(K->type, V->type, p, n_seq, nsm, max_splits, rows, out, To, stream); break;
        case 256: tq_fa_run<256>(K->type, V->type, p, n_seq, nsm, max_splits, rows, out, To, stream); break;
        default:  GGML_ABORT("TQ flash attention: head size %d", (int) D);
    }
    CUDA_CHECK(cudaGetLastError());
}

// Prefill's flash attention (ggml-cuda's own kernels) reads K converted to f16: the first cells
// get their exact rows there, as the decode kernel scores them.
static __global__ void k_tq_k_exact_f16(const char * E, int64_t nbe1, int64_t nbe2, int64_t nbe3, half * K,
                                        int64_t nb1, int64_t nb2, int64_t nb3, int D, int n_exact, int n_head) {
    const int row = blockIdx.x, c = row % n_exact, h = (row / n_exact) % n_head, s = row / (n_exact * n_head);
    const float * e = (const float *) (E + s * nbe3 + h * nbe2 + c * nbe1);
    half * k = (half *) ((char *) K + s * nb3 + h * nb2 + c * nb1);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        k[d] = __float2half(e[d]);
    }
}

void ggml_cuda_tq_fattn_k_exact_f16(const ggml_tensor * dst, half * K_f16, size_t nb1, size_t nb2, size_t nb3,
                                    cudaStream_t stream) {
    const ggml_tensor * E = ggml_tq_flash_attn_k_exact(dst);
    if (!E) {
        return;
    }
    const int n_exact = (int) std::min<int64_t>(E->ne[1], dst->src[1]->ne[1]);
    const int rows = n_exact * (int) E->ne[2] * (int) E->ne[3];
    if (rows > 0) {
        k_tq_k_exact_f16<<<rows, 64, 0, stream>>>((const char *) E->data, E->nb[1], E->nb[2], E->nb[3], K_f16,
                                                   nb1, nb2, nb3, (int) E->ne[0], n_exact, (int) E->ne[2]);
        CUDA_CHECK(cudaGetLastError());
    }
}
