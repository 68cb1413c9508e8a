// Which flash-attention calls the TQ decode kernel takes (tq-fattn.cuh), its launch over
// splits of the KV length, and the merge of the splits.
#include "tq-fattn.cuh"
#include "ggml-tq-impl.h"
#include "convert.cuh"

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

// The extra rows (ggml_tq_flash_attn_set_kv_extra: a recent window's K and V, f32) as the last
// split of the decode: block (hkv, seq) scores them against the decode kernel's columns in f32,
// as the CPU backend does, and writes that split's unnormalized output and (max, sum) for the
// merge. Q as the decode kernel has it: p.Q, or with the fused transform T_k q made here again.
// The rows come in chunks of 32 with an online softmax: a warp per row for the scores (lanes
// over the dimensions), then a warp per column for the chunk's softmax (a lane per row), then a
// thread per (column, dimension) for the V product. A column whose rows are all masked keeps
// max -inf and sum 0, which the merge weighs 0.
static constexpr int TQ_FA_EXTRA_CHUNK = 32;

template <int D>
static __global__ void __launch_bounds__(TQ_FA_THREADS) k_tq_fattn_extra(const tq_fa_params p) {
    constexpr int NC = TQ_FA_MAX_COLS, CH = TQ_FA_EXTRA_CHUNK, E = D / 32;
    constexpr int PER = NC * D / TQ_FA_THREADS; // (column, dimension) pairs per thread
    static_assert(CH == 32 && (NC * D) % TQ_FA_THREADS == 0, "a lane per row of a chunk; whole pairs per thread");
    __shared__ __align__(16) float Qs[NC][D]; // the columns' Q
    __shared__ __align__(16) float Qr[NC][D]; // fused: the raw q
    __shared__ float S[NC][CH];               // a chunk's scores, then their weights
    __shared__ float Ms[NC], Ls[NC], As[NC];  // running max and sum, the chunk's rescale
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int hkv = blockIdx.x, seq = blockIdx.y;
    const int split = p.n_splits - 1;
    ggml_cuda_pdl_lc();
    ggml_cuda_pdl_sync();

    if (p.Tq) { // fused: Q = T_k q of the one token (as k_tq_fattn_decode makes it)
        for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
            const int c = i / D, d = i % D;
            Qr[c][d] = c < p.ncols ? p.qraw[(int64_t) (hkv * p.gqa + c) * D + d] : 0.0f;
        }
        __syncthreads();
        for (int job = warp; job < p.ncols * (D / 32); job += TQ_FA_WARPS) {
            const int c = job / (D / 32), rows = 32 * (job % (D / 32));
            float xl[E];
            tq_load_lane<E>(&Qr[c][lane * E], xl);
            Qs[c][rows + lane] = tq_warp_rows_dot<D>(p.Tq + ((int64_t) hkv * D + rows) * D, xl, lane);
        }
        for (int i = tid; i < (NC - p.ncols) * D; i += TQ_FA_THREADS) {
            Qs[p.ncols + i / D][i % D] = 0.0f;
        }
    } else {
        for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
            const int c = i / D, d = i % D;
            Qs[c][d] = tq_fa_q(p, seq, hkv, c, d);
        }
    }
    if (tid < NC) {
        Ms[tid] = -INFINITY;
        Ls[tid] = 0.0f;
    }
    __syncthreads();

    const char * KX = p.k_extra + (seq % p.x_ne3) * p.nbxk3 + hkv * p.nbxk2;
    const char * VX = p.v_extra + (seq % p.x_ne3) * p.nbxv3 + hkv * p.nbxv2;
    const char * mask = p.mask ? p.mask + (seq % p.mask_ne3) * p.nbm3 : nullptr;
    float O[PER];
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        O[k] = 0.0f;
    }
    for (int e0 = 0; e0 < p.n_extra; e0 += CH) {
        const int ne = min(CH, p.n_extra - e0);
        // scores of the chunk's rows, scaled, softcapped and masked (mask column n_kv + e)
        for (int r = warp; r < CH; r += TQ_FA_WARPS) {
            const int e = e0 + r;
            float kl[E];
#pragma unroll
            for (int i = 0; i < E; ++i) {
                kl[i] = r < ne ? ((const float *) (KX + (int64_t) e * p.nbxk1))[lane + 32 * i] : 0.0f;
            }
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < E; ++i) {
                    s = fmaf(Qs[c][lane + 32 * i], kl[i], s);
                }
                s = warp_reduce_sum(s) * p.scale;
                if (p.softcap != 0.0f) {
                    s = p.softcap * tanhf(s);
                }
                if (lane == 0) {
                    if (r < ne && c < p.ncols && mask) {
                        s += __half2float(((const half *) (mask + (int64_t) (c / p.gqa) * p.nbm1))[p.n_kv + e]);
                    }
                    S[c][r] = r < ne && c < p.ncols ? s : -INFINITY;
                }
            }
        }
        __syncthreads();
        // each column's online softmax over the chunk: a lane per row
        for (int c = warp; c < NC; c += TQ_FA_WARPS) {
            const float s = S[c][lane];
            const float m_old = Ms[c];
            const float m_new = fmaxf(m_old, warp_reduce_max(s));
            const float w = m_new == -INFINITY ? 0.0f : expf(s - m_new);
            const float sum = warp_reduce_sum(w);
            S[c][lane] = w;
            if (lane == 0) {
                const float alpha = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);
                As[c] = alpha;
                Ms[c] = m_new;
                Ls[c] = Ls[c] * alpha + sum;
            }
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < PER; ++k) {
            const int i = tid + k * TQ_FA_THREADS, c = i / D, d = i % D;
            float o = O[k] * As[c];
            for (int r = 0; r < ne; ++r) {
                o = fmaf(S[c][r], ((const float *) (VX + (int64_t) (e0 + r) * p.nbxv1))[d], o);
            }
            O[k] = o;
        }
        __syncthreads(); // S and As are the next chunk's
    }

#pragma unroll
    for (int k = 0; k < PER; ++k) {
        const int i = tid + k * TQ_FA_THREADS, c = i / D, d = i % D;
        if (c < p.ncols) {
            const int j = c / p.gqa, head = hkv * p.gqa + c % p.gqa;
            const int64_t r = ((int64_t) seq * p.n_q + j) * p.n_head + head;
            p.part[(r * p.n_splits + split) * D + d] = O[k];
            if (d == 0) {
                p.meta[r * p.n_splits + split] = make_float2(Ms[c], Ls[c]);
            }
        }
    }
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
    // (with extra rows their split is one more, past the decode kernel's)
    const int ms = std::min(max_splits, TQ_MERGE_MAX_SPLITS - (p.k_extra ? 1 : 0));
    const int splits = tq_fa_launch<D>(tk, tv, p, n_seq, nsm, ms, stream);
    if (p.k_extra) {
        tq_fa_params pe = p;
        pe.n_splits = splits;
        ggml_cuda_kernel_launch(k_tq_fattn_extra<D>, ggml_cuda_kernel_launch_params(dim3(p.n_head_kv, n_seq, 1), TQ_FA_THREADS, 0, stream), pe);
    }
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
    if (const ggml_tensor * KX = ggml_tq_flash_attn_k_extra(dst)) {
        const ggml_tensor * VX = ggml_tq_flash_attn_v_extra(dst);
        p.k_extra = (const char *) KX->data; p.v_extra = (const char *) VX->data;
        p.n_extra = (int) KX->ne[1]; p.x_ne3 = (int) KX->ne[3];
        p.nbxk1 = KX->nb[1]; p.nbxk2 = KX->nb[2]; p.nbxk3 = KX->nb[3];
        p.nbxv1 = VX->nb[1]; p.nbxv2 = VX->nb[2]; p.nbxv3 = VX->nb[3];
    }
    const half * To = fused && fused->t_out ? (const half *) fused->t_out->data : nullptr;
    float * out = (float *) (fused ? fused->out->data : dst->data);

    const int n_seq = Q->ne[3];
    const int nsm = ggml_cuda_info().devices[ctx.device].nsm;
    const int max_splits = (p.n_kv + TQ_FA_TILE - 1) / TQ_FA_TILE;
    const int64_t rows = (int64_t) n_seq * p.n_q * p.n_head;
    const int64_t D = K->ne[0];
    const int parts = max_splits + (p.k_extra ? 1 : 0);
    ggml_cuda_pool_alloc<float>  part(ctx.pool(), rows * parts * D);
    ggml_cuda_pool_alloc<float2> meta(ctx.pool(), rows * parts);
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

// Prefill with extra rows (ggml_tq_flash_attn_set_kv_extra): ggml-cuda's own kernels read K and
// V as f16 (fattn-common.cuh), here copies of n_rows = the mask's width rows: the cache's (TQ
// dequantized, q8_0 converted, f16 copied), then the extra rows, then zeros (their columns are
// -inf; zeros keep the products finite). Row i of head h, sequence s lands at (i, h, s) of a
// contiguous [D, n_rows, n_head_kv, n_seq].
static __global__ void k_tq_rows_f16(const char * src, int64_t sb1, int64_t sb2, int64_t sb3,
                                     const char * ext, int64_t eb1, int64_t eb2, int64_t eb3, int e_ne3,
                                     half * dst, int D, int r0, int n_src, int n_ext) {
    const int i = r0 + blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    half * y = dst + (((int64_t) s * gridDim.y + h) * (r0 + gridDim.x) + i) * D;
    if (i < n_src) {
        const half * x = (const half *) (src + s * sb3 + h * sb2 + i * sb1);
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            y[d] = x[d];
        }
    } else if (i < n_src + n_ext) {
        const float * x = (const float *) (ext + (s % e_ne3) * eb3 + h * eb2 + (int64_t) (i - n_src) * eb1);
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            y[d] = __float2half(x[d]);
        }
    } else {
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            y[d] = __float2half(0.0f);
        }
    }
}

// X (a cache's K or V as the attention reads it) and its extra rows E into y, as above.
static void tq_fa_rows_f16(ggml_backend_cuda_context & ctx, const ggml_tensor * X, const ggml_tensor * E, half * y,
                           int64_t n_rows, cudaStream_t stream) {
    const int64_t D = X->ne[0], n_kv = X->ne[1], H = X->ne[2], S = X->ne[3];
    GGML_ASSERT(n_rows >= n_kv + E->ne[1] && H <= 65535 && S <= 65535);
    const char * src = nullptr;
    int64_t sb1 = 0, sb2 = 0, sb3 = 0;
    int r0 = 0;
    ggml_cuda_pool_alloc<half> tmp(ctx.pool());
    if (X->type == GGML_TYPE_F16) {
        src = (const char *) X->data;
        sb1 = X->nb[1]; sb2 = X->nb[2]; sb3 = X->nb[3];
    } else if (ggml_tq_is_tq(X->type)) { // straight into place
        ggml_cuda_tq_to_fp16_rows(X, y, D, D * n_rows, D * n_rows * H, stream);
        r0 = (int) n_kv;
    } else { // contiguous f16 first, as launch_fattn converts
        const size_t ts = ggml_type_size(X->type);
        tmp.alloc(ggml_nelements(X));
        ggml_get_to_fp16_nc_cuda(X->type)(X->data, tmp.get(), D, n_kv, H, S, X->nb[1] / ts, X->nb[2] / ts, X->nb[3] / ts, stream);
        src = (const char *) tmp.get();
        sb1 = D * sizeof(half); sb2 = n_kv * sb1; sb3 = H * sb2;
    }
    if (n_rows > r0) {
        k_tq_rows_f16<<<dim3((unsigned) (n_rows - r0), (unsigned) H, (unsigned) S), 64, 0, stream>>>(
            src, sb1, sb2, sb3, (const char *) E->data, E->nb[1], E->nb[2], E->nb[3], (int) E->ne[3],
            y, (int) D, r0, (int) n_kv, (int) E->ne[1]);
        CUDA_CHECK(cudaGetLastError());
    }
}

bool ggml_cuda_tq_fattn_extra_supported(const ggml_tensor * op) {
    const ggml_tensor * K = op->src[1];
    const ggml_tensor * V = op->src[2];
    const ggml_tensor * mask = op->src[3];
    const ggml_tensor * KX = ggml_tq_flash_attn_k_extra(op);
    const ggml_tensor * VX = ggml_tq_flash_attn_v_extra(op);
    if (!KX) {
        return true;
    }
    // TQ K and/or V, the other f16 or q8_0 (what the CPU backend reads extra rows with), head
    // sizes for which upstream's kernels take any KV length (the f16 copies' is the mask's width)
    const int64_t D = K->ne[0];
    return (ggml_tq_is_tq(K->type) || ggml_tq_is_tq(V->type)) && tq_fa_type_ok(K->type) && tq_fa_type_ok(V->type) &&
           (D == 64 || D == 128 || D == 256) && V->ne[0] == D && K->ne[2] <= 65535 && K->ne[3] <= 65535 &&
           KX->type == GGML_TYPE_F32 && VX->type == GGML_TYPE_F32 && KX->nb[0] == sizeof(float) && VX->nb[0] == sizeof(float) &&
           mask && mask->type == GGML_TYPE_F16 && mask->ne[0] >= K->ne[1] + KX->ne[1];
}

bool ggml_cuda_tq_fattn_extra_f16(ggml_backend_cuda_context & ctx, ggml_tensor * dst,
                                  void (*fattn)(ggml_backend_cuda_context & ctx, ggml_tensor * dst)) {
    const ggml_tensor * KX = ggml_tq_flash_attn_k_extra(dst);
    if (!KX) {
        return false;
    }
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    GGML_ASSERT(mask && mask->ne[0] >= K->ne[1] + KX->ne[1]); // (ggml_tq_flash_attn_set_kv_extra checked it)
    cudaStream_t stream = ctx.stream();
    const int64_t n_rows = mask->ne[0];

    // shallow copies of K and V over the f16 rows, and of dst reading them (no TQ sources left)
    ggml_tensor k16 = *K, v16 = *V, fa = *dst;
    ggml_cuda_pool_alloc<half> kf(ctx.pool(), K->ne[0] * n_rows * K->ne[2] * K->ne[3]);
    ggml_cuda_pool_alloc<half> vf(ctx.pool(), V->ne[0] * n_rows * V->ne[2] * V->ne[3]);
    for (ggml_tensor * t : { &k16, &v16 }) {
        t->type = GGML_TYPE_F16;
        t->ne[1] = n_rows;
        t->nb[0] = sizeof(half);
        t->nb[1] = t->ne[0] * sizeof(half);
        t->nb[2] = t->ne[1] * t->nb[1];
        t->nb[3] = t->ne[2] * t->nb[2];
        t->view_src = nullptr;
        t->view_offs = 0;
    }
    k16.data = kf.get();
    v16.data = vf.get();
    tq_fa_rows_f16(ctx, K, KX, kf.get(), n_rows, stream);
    ggml_cuda_tq_fattn_k_exact_f16(dst, kf.get(), k16.nb[1], k16.nb[2], k16.nb[3], stream);
    tq_fa_rows_f16(ctx, V, ggml_tq_flash_attn_v_extra(dst), vf.get(), n_rows, stream);
    fa.src[1] = &k16;
    fa.src[2] = &v16;
    ggml_tq_flash_attn_set_k_exact(&fa, nullptr);           // in kf now
    ggml_tq_flash_attn_set_kv_extra(&fa, nullptr, nullptr); // in kf, vf
    fattn(ctx, &fa);
    return true;
}
