// Fusing the TQ transforms with their neighbours.
//
// Always on (tq_match_plain): a ubatch's transform writes straight into the head-major layout
// that the graph's copy back (CONT) would make, plus K's centering offset when an ADD of it
// follows; a token's transform adds K's offset itself. Each saves a kernel and, for ubatches,
// a copy of the activations.
//
// Off by default (see tq_fuse_enabled); GGML_CUDA_TQ_FUSE=1 turns it on:
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

// Whether a and b share no byte: a plain fused kernel reads its input x while other blocks
// already write `out`, which gallocr may have placed where x was once x's last reader (the
// product) was done.
static bool tq_disjoint(const ggml_tensor * a, const ggml_tensor * b) {
    const char * a0 = (const char *) a->data, * b0 = (const char *) b->data;
    return a0 + ggml_nbytes(a) <= b0 || b0 + ggml_nbytes(b) <= a0;
}

// A token's transform reads each head of x whole before it writes that head (k_tq_transform),
// so besides a disjoint `out` it takes out = x itself, which is where gallocr puts K's offset
// add in the Llama-3-8B layer (the add has x's size, and x is free once the product ran).
static bool tq_token_out_ok(const ggml_tensor * out, const ggml_tensor * x) {
    return tq_disjoint(out, x) || (out->data == x->data && ggml_nbytes(out) == ggml_nbytes(x));
}

// An ADD of a per-head offset ([d, n_head] f32, broadcast over tokens) to `val`, K's centering:
// the next compute node after val's, reading val through views only.
static const ggml_tensor * tq_offset_add(const ggml_cgraph * g, int j, const ggml_tensor * val) {
    if (j >= g->n_nodes) {
        return nullptr;
    }
    const ggml_tensor * add = g->nodes[j];
    if (add->op != GGML_OP_ADD || tq_root(add->src[0]) != val || add->src[0]->data != val->data ||
        add->type != GGML_TYPE_F32 || add->src[1]->type != GGML_TYPE_F32 || !ggml_is_contiguous(add->src[1]) ||
        !ggml_is_contiguous(add) || !ggml_is_contiguous(add->src[0]) || !ggml_are_same_shape(add, add->src[0]) ||
        add->src[1]->ne[0] != add->ne[0] || ggml_nelements(add->src[1]) != add->ne[0] * add->ne[1] ||
        !tq_only_user(g, val, add)) {
        return nullptr;
    }
    return add;
}

// Always on (they only save copies and launches): a ubatch's transform with its copy back into
// head-major order (+ K's offset), and a token's transform with K's offset.
static int tq_match_plain(const ggml_cgraph * g, int i, ggml_cuda_tq_fused & m) {
    const ggml_tensor * mm = g->nodes[i];
    const int j = tq_next_compute(g, i);
    if (ggml_cuda_tq_transform_applies(mm)) {
        const ggml_tensor * add = tq_offset_add(g, j, mm);
        if (!add || ggml_nelements(add) != ggml_nelements(mm) || add->ne[0] * add->ne[1] != ggml_nelements(mm) ||
            !tq_token_out_ok(add, mm->src[1])) {
            return 0;
        }
        m.kind = ggml_cuda_tq_fused::TRANSFORM;
        m.t_in = mm->src[0];
        m.x = mm->src[1];
        m.mm = mm;
        m.offset = add->src[1];
        m.out = add;
        return j - i + 1;
    }
    if (!ggml_cuda_tq_transform_tokens_applies(mm) || j >= g->n_nodes) {
        return 0;
    }
    // CONT(permute(reshape(mm))): mm [d, n_tok, r, n_kv] read as [d, n_head, n_tok]
    const ggml_tensor * cont = g->nodes[j];
    const ggml_tensor * v = cont->src[0];
    const int64_t d = mm->ne[0], n_tok = mm->ne[1], n_head = mm->ne[2] * mm->ne[3];
    if (cont->op != GGML_OP_CONT || tq_root(v) != mm || v->data != mm->data || cont->type != GGML_TYPE_F32 ||
        v->ne[0] != d || v->ne[1] != n_head || v->ne[2] != n_tok || v->ne[3] != 1 || v->nb[0] != sizeof(float) ||
        v->nb[1] != mm->nb[2] || v->nb[2] != mm->nb[1] || !ggml_is_contiguous(cont) || !tq_only_user(g, mm, cont)) {
        return 0;
    }
    m.kind = ggml_cuda_tq_fused::TOKENS;
    m.mm = mm;
    m.out = cont;
    int last = j;
    const int k = tq_next_compute(g, j);
    if (const ggml_tensor * add = tq_offset_add(g, k, cont)) {
        if (add->ne[0] * add->ne[1] == d * n_head && tq_disjoint(add, mm->src[1])) {
            m.offset = add->src[1];
            m.out = add;
            last = k;
        }
    }
    // only the chain's last output is written: the copy back may sit where x was (gallocr does
    // that to K's in the Llama-3-8B layer) when the add after it is fused too
    if (!tq_disjoint(m.out, mm->src[1])) {
        return 0;
    }
    return last - i + 1;
}

int ggml_cuda_tq_match(const ggml_cgraph * g, int i, ggml_cuda_tq_fused & m) {
    m = {};
    const ggml_tensor * mm = g->nodes[i];
    if (!tq_fuse_enabled() || !ggml_cuda_tq_transform_applies(mm)) {
        return tq_match_plain(g, i, m);
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
    const ggml_tensor * add = tq_offset_add(g, j, mm);
    if (add && ggml_nelements(add->src[1]) != ggml_nelements(mm)) {
        add = nullptr; // an offset per head of the one token, as the quantizer reads it
    }
    const ggml_tensor * sr = next;
    int last = j;
    if (add) {
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
        return tq_match_plain(g, i, m);
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
    switch (m.kind) {
        case ggml_cuda_tq_fused::ATTN:
            ggml_cuda_tq_fattn(ctx, const_cast<ggml_tensor *>(m.fa), &m);
            break;
        case ggml_cuda_tq_fused::SET_ROWS:
            ggml_cuda_tq_set_rows_transformed(ctx, m);
            break;
        case ggml_cuda_tq_fused::TRANSFORM:
            ggml_cuda_tq_transform(ctx, m.mm, (const float *) m.offset->data, (float *) m.out->data);
            break;
        case ggml_cuda_tq_fused::TOKENS:
            // the product written where the copy back puts it: out is [d, n_head, n_tok], contiguous
            ggml_cuda_tq_transform_tokens(ctx, m.mm, (float *) m.out->data, m.offset ? (const float *) m.offset->data : nullptr);
            break;
        default:
            GGML_ABORT("TQ fusion: no chain");
    }
}
