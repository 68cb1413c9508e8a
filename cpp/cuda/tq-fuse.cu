// Fusing the TQ transforms with their neighbours at decode (one token). Off by default (see
// tq_fuse_enabled); GGML_CUDA_TQ_FUSE=1 turns it on.
//
// At decode a layer's TQ graph (llama-graph.cpp, patch 0004) has four small products by the
// per-head transforms: Q's right before the attention, the output's right after it, K's and V's
// right before their cache writes. Launched alone they cost more than the attention itself at
// short context. The graph places each next to its consumer with only views in between, so
// these chains run as one kernel each here:
//
//   MUL_MAT(T_k, q) -> views -> FLASH_ATTN_EXT [-> views -> MUL_MAT(T_v^T, o)]   the decode kernel
//        transforms Q as it loads it, and its merge step writes T_v^T o
//   MUL_MAT(T, x) -> views [-> ADD(center offset) -> views] -> SET_ROWS          the quantizer
//        transforms (and offsets) each block as it quantizes it
//
// A chain is fused only when every intermediate result is used by the chain alone. Memory:
// the fused kernels write only the chain's last output (the cache, or the output product's
// destination), after reading everything else they read (the merge runs after the attention
// kernel), so gallocr's reuse of freed intermediates cannot be hit.
#include "tq-cuda.cuh"
#include "tq-fattn.cuh"
#include "ggml-tq-impl.h"

static bool tq_fuse_enabled() {
    // Off unless GGML_CUDA_TQ_FUSE=1: on an H200 the fused chains, correct as they are (CUDA =
    // CPU in test-backend-ops and llama-perplexity), decode a little slower than the separate
    // kernels (0.81x against 0.84x f16 at 16K, docs/results/cuda-h200.md). Their products are
    // warp products now; what remains is that the attention recomputes its head's Q transform
    // in every split block, and the quantizer and the merge carry a product inside what was
    // already the latency chain. Compute Q's transform once per KV head, then measure again.
    static const bool on = getenv("GGML_CUDA_TQ_FUSE") != nullptr && atoi(getenv("GGML_CUDA_TQ_FUSE")) != 0;
    return on;
}

static const ggml_tensor * tq_root(const ggml_tensor * t) {
    return t->view_src ? t->view_src : t;
}

static bool tq_is_view(const ggml_tensor * t) {
    return t->op == GGML_OP_RESHAPE || t->op == GGML_OP_VIEW || t->op == GGML_OP_PERMUTE || t->op == GGML_OP_TRANSPOSE ||
           t->op == GGML_OP_NONE;
}

// The first node after i that is not a view (n_nodes if none).
static int tq_next_compute(const ggml_cgraph * g, int i) {
    int j = i + 1;
    while (j < g->n_nodes && tq_is_view(g->nodes[j])) {
        ++j;
    }
    return j;
}

// Whether every use of t's data (directly or through views) is by node `user`.
static bool tq_only_user(const ggml_cgraph * g, const ggml_tensor * t, const ggml_tensor * user) {
    for (int j = 0; j < g->n_nodes; ++j) {
        const ggml_tensor * n = g->nodes[j];
        if (n == user || tq_is_view(n)) {
            continue;
        }
        for (int s = 0; s < GGML_MAX_SRC; ++s) {
            if (n->src[s] && tq_root(n->src[s]) == t) {
                return false;
            }
        }
    }
    return !(t->flags & GGML_TENSOR_FLAG_OUTPUT);
}

int ggml_cuda_tq_match(const ggml_cgraph * g, int i, ggml_cuda_tq_fused & m) {
    m = {};
    const ggml_tensor * mm = g->nodes[i];
    if (!tq_fuse_enabled() || !ggml_cuda_tq_transform_applies(mm)) {
        return 0;
    }
    const int j = tq_next_compute(g, i);
    if (j >= g->n_nodes) {
        return 0;
    }
    const ggml_tensor * next = g->nodes[j];

    if (next->op == GGML_OP_FLASH_ATTN_EXT) {
        const ggml_tensor * K = next->src[1];
        if (tq_root(next->src[0]) != mm || !ggml_cuda_tq_fattn_applies(next) || next->src[0]->ne[1] != 1 ||
            next->src[0]->ne[3] != 1 ||
            mm->src[1]->ne[2] != next->src[0]->ne[2] || mm->src[0]->ne[2] != K->ne[2] ||
            mm->src[0]->ne[0] != K->ne[0] || !tq_only_user(g, mm, next)) {
            return 0;
        }
        m.kind = ggml_cuda_tq_fused::ATTN;
        m.fa = next;
        m.t_in = mm->src[0];
        m.x = mm->src[1];
        m.out = next;
        int n = j - i + 1;
        const int k = tq_next_compute(g, j);
        if (k < g->n_nodes) {
            const ggml_tensor * mo = g->nodes[k];
            if (ggml_cuda_tq_transform_applies(mo) && tq_root(mo->src[1]) == next && mo->src[0]->ne[0] == next->ne[0] &&
                mo->src[0]->ne[2] == K->ne[2] && mo->src[1]->ne[2] == next->ne[1] && tq_only_user(g, next, mo)) {
                m.t_out = mo->src[0];
                m.out = mo;
                n = k - i + 1;
            }
        }
        return n;
    }

    // MUL_MAT -> [ADD offset] -> SET_ROWS into a TQ cache
    const ggml_tensor * add = nullptr;
    const ggml_tensor * sr = next;
    int last = j;
    if (next->op == GGML_OP_ADD && tq_root(next->src[0]) == mm && next->src[0]->ne[0] == mm->ne[0] &&
        next->src[1]->type == GGML_TYPE_F32 && ggml_is_contiguous(next->src[1]) && next->src[1]->ne[0] == mm->ne[0] &&
        ggml_nelements(next->src[1]) == ggml_nelements(mm) && ggml_are_same_shape(next, next->src[0])) {
        add = next;
        last = tq_next_compute(g, j);
        if (last >= g->n_nodes) {
            return 0;
        }
        sr = g->nodes[last];
    }
    const ggml_tensor * val = add ? add : mm;
    if (sr->op != GGML_OP_SET_ROWS || !ggml_tq_is_tq(sr->type) || tq_root(sr->src[0]) != val ||
        sr->src[0]->ne[0] != ggml_nelements(mm) || sr->src[0]->ne[1] != 1 || sr->src[0]->ne[2] != 1 ||
        sr->src[0]->ne[3] != 1 || sr->src[0]->nb[0] != sizeof(float) || mm->src[1]->ne[2] != mm->src[0]->ne[2] ||
        !tq_only_user(g, mm, add ? add : sr) || (add && !tq_only_user(g, add, sr))) {
        return 0;
    }
    m.kind = ggml_cuda_tq_fused::SET_ROWS;
    m.t_in = mm->src[0];
    m.x = mm->src[1];
    m.offset = add ? add->src[1] : nullptr;
    m.set_rows = sr;
    m.out = sr;
    return last - i + 1;
}

void ggml_cuda_tq_run_fused(ggml_backend_cuda_context & ctx, const ggml_cuda_tq_fused & m) {
    if (m.kind == ggml_cuda_tq_fused::ATTN) {
        ggml_cuda_tq_fattn(ctx, const_cast<ggml_tensor *>(m.fa), &m);
    } else {
        ggml_cuda_tq_set_rows_transformed(ctx, m);
    }
}
