// Fusing the TQ transforms with their neighbours, as ggml-cuda fuses its other chains (all off
// with upstream's GGML_CUDA_DISABLE_FUSION=1, which runs every node as its own kernel).
//
// tq_match_plain: a ubatch's transform writes straight into the head-major layout that the
// graph's copy back (CONT) would make, plus K's centering offset when an ADD of it follows; a
// token's transform adds K's offset itself. Each saves a kernel and, for ubatches, a copy of
// the activations.
//
// At decode a layer's TQ graph (llama-graph.cpp, patch 0004) has four small products by the
// per-head transforms: Q's, K's and V's, back to back with K's and V's cache writes, and the
// output's right after the attention. Launched alone they cost more than the attention itself
// at short context. These chains run as one kernel each here:
//
//   MUL_MAT(T_k, q), MUL_MAT(T_k, k) [-> ADD offset] -> SET_ROWS, MUL_MAT(T_v, v) -> SET_ROWS
//        (views between)                                             one kernel (WRITE): Q's
//        product written plain, K's and V's quantized into their cache rows as they are made
//   FLASH_ATTN_EXT -> views -> MUL_MAT(T_v^T, o)                     the decode kernel, whose
//        merge step writes T_v^T o (ATTN)
//
// and, where a graph puts Q's transform right before the attention (test-backend-ops'
// test_tq_attn_chain), MUL_MAT(T_k, q) -> views -> FLASH_ATTN_EXT [-> out]: the decode kernel
// transforms Q as it loads it.
//
// A chain is fused only when every intermediate result is used by the chain alone. Memory:
// the fused kernels write only results that outlive the chain (the caches, Q's product, the
// output product's destination) after reading everything else they read (the merge runs after
// the attention kernel). The intermediates are never written, so gallocr's reuse of their
// memory cannot be hit; Q's product was allocated while K's and V's inputs, which later nodes
// of the chain read, were live, and is checked disjoint from them anyway.
#include "tq-cuda.cuh"
#include "tq-fattn.cuh"
#include "ggml-tq-impl.h"

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

// A ubatch's transform with its copy back into head-major order (+ K's offset), and a token's
// transform with K's offset.
static int tq_match_plain(int device, const ggml_cgraph * g, int i, ggml_cuda_tq_fused & m) {
    const ggml_tensor * mm = g->nodes[i];
    const int j = tq_next_compute(g, i);
    if (ggml_cuda_tq_transform_applies(mm)) {
        const ggml_tensor * add = tq_offset_add(g, j, mm);
        if (!add || ggml_nelements(add) != ggml_nelements(mm) || add->ne[0] * add->ne[1] != ggml_nelements(mm) ||
            !tq_token_out_ok(add, mm->src[1])) {
            return 0;
        }
        m.kind = ggml_cuda_tq_fused::TRANSFORM;
        m.mm = mm;
        m.offset = add->src[1];
        m.out = add;
        return j - i + 1;
    }
    if (!ggml_cuda_tq_transform_tokens_applies(device, mm) || j >= g->n_nodes) {
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

// The index of the SET_ROWS that ends mm [-> ADD offset] -> SET_ROWS into a TQ cache, writing
// one token's whole row, with job filled in; -1 if no such chain starts at mm (node k).
static int tq_cache_write(const ggml_cgraph * g, int k, ggml_cuda_tq_fused::write_job & job) {
    const ggml_tensor * mm = g->nodes[k];
    const int j = tq_next_compute(g, k);
    if (j >= g->n_nodes) {
        return -1;
    }
    const ggml_tensor * add = tq_offset_add(g, j, mm);
    if (add && ggml_nelements(add->src[1]) != ggml_nelements(mm)) {
        add = nullptr; // an offset per head of the one token, as the kernel reads it
    }
    int last = j;
    if (add) {
        last = tq_next_compute(g, j);
        if (last >= g->n_nodes) {
            return -1;
        }
    }
    const ggml_tensor * sr = g->nodes[last];
    const ggml_tensor * val = add ? add : mm;
    if (sr->op != GGML_OP_SET_ROWS || !ggml_tq_is_tq(sr->type) || tq_root(sr->src[0]) != val ||
        sr->src[0]->ne[0] != ggml_nelements(mm) || sr->src[0]->ne[1] != 1 || sr->src[0]->ne[2] != 1 ||
        sr->src[0]->ne[3] != 1 || sr->src[0]->nb[0] != sizeof(float) || mm->src[1]->ne[2] != mm->src[0]->ne[2] ||
        !tq_only_user(g, mm, add ? add : sr) || (add && !tq_only_user(g, add, sr))) {
        return -1;
    }
    job = { mm, add ? add->src[1] : nullptr, sr };
    return last;
}

// WRITE: from node i on, one token's transforms with their cache writes, the first possibly
// plain (Q's), at least two jobs or one cache write; of one head size.
static int tq_match_write(const ggml_cgraph * g, int i, ggml_cuda_tq_fused & m) {
    int k = i, last = -1;
    const int64_t d = g->nodes[i]->src[0]->ne[0];
    while (m.n_jobs < 3 && k < g->n_nodes && ggml_cuda_tq_transform_applies(g->nodes[k]) &&
           g->nodes[k]->src[0]->ne[0] == d) {
        ggml_cuda_tq_fused::write_job & job = m.jobs[m.n_jobs];
        int e = tq_cache_write(g, k, job);
        if (e < 0) {
            if (m.n_jobs > 0) {
                break;
            }
            job = { g->nodes[k], nullptr, nullptr };
            e = k;
        }
        ++m.n_jobs;
        last = e;
        k = tq_next_compute(g, e);
    }
    if (m.n_jobs == 0 || (m.n_jobs == 1 && !m.jobs[0].set_rows)) {
        m.n_jobs = 0;
        return 0;
    }
    if (!m.jobs[0].set_rows) { // Q's product: apart from what the other jobs read
        const ggml_tensor * y = m.jobs[0].mm;
        for (int j = 1; j < m.n_jobs; ++j) {
            if (!tq_disjoint(y, m.jobs[j].mm->src[1]) || (m.jobs[j].offset && !tq_disjoint(y, m.jobs[j].offset))) {
                m.n_jobs = 0;
                return 0;
            }
        }
    }
    m.kind = ggml_cuda_tq_fused::WRITE;
    m.out = g->nodes[last];
    return last - i + 1;
}

// ATTN from the attention on: FLASH_ATTN_EXT -> views -> MUL_MAT(T_v^T, o), one query token
static int tq_match_attn_out(int device, const ggml_cgraph * g, int i, ggml_cuda_tq_fused & m) {
    const ggml_tensor * fa = g->nodes[i];
    const ggml_tensor * Q = fa->src[0];
    const ggml_tensor * K = fa->src[1];
    const int k = tq_next_compute(g, i);
    if (!ggml_cuda_tq_fattn_applies(device, fa) || Q->ne[1] != 1 || Q->ne[3] != 1 || k >= g->n_nodes) {
        return 0;
    }
    const ggml_tensor * mo = g->nodes[k];
    if (!ggml_cuda_tq_transform_applies(mo) || tq_root(mo->src[1]) != fa || mo->src[0]->ne[0] != fa->ne[0] ||
        mo->src[0]->ne[2] != K->ne[2] || mo->src[1]->ne[2] != fa->ne[1] || !tq_only_user(g, fa, mo)) {
        return 0;
    }
    m.kind = ggml_cuda_tq_fused::ATTN;
    m.fa = fa;
    m.t_out = mo->src[0];
    m.out = mo;
    return k - i + 1;
}

int ggml_cuda_tq_match(int device, const ggml_cgraph * g, int i, ggml_cuda_tq_fused & m) {
    m = {};
    const ggml_tensor * mm = g->nodes[i];
    if (mm->op == GGML_OP_FLASH_ATTN_EXT) {
        return tq_match_attn_out(device, g, i, m);
    }
    if (!ggml_cuda_tq_transform_applies(mm)) {
        return tq_match_plain(device, g, i, m);
    }
    const int j = tq_next_compute(g, i);
    if (j >= g->n_nodes) {
        return 0;
    }
    const ggml_tensor * next = g->nodes[j];

    if (next->op == GGML_OP_FLASH_ATTN_EXT) {
        const ggml_tensor * K = next->src[1];
        if (tq_root(next->src[0]) != mm || !ggml_cuda_tq_fattn_applies(device, next) || next->src[0]->ne[1] != 1 ||
            next->src[0]->ne[3] != 1 ||
            mm->src[1]->ne[2] != next->src[0]->ne[2] || mm->src[0]->ne[2] != K->ne[2] ||
            mm->src[0]->ne[0] != K->ne[0] || !tq_only_user(g, mm, next)) {
            return 0;
        }
        const int n = tq_match_attn_out(device, g, j, m);
        m.kind = ggml_cuda_tq_fused::ATTN;
        m.fa = next;
        m.out = n ? m.out : next;
        m.t_in = mm->src[0];
        m.x = mm->src[1];
        return n ? j - i + n : j - i + 1;
    }

    if (const int n = tq_match_write(g, i, m)) {
        return n;
    }
    return tq_match_plain(device, g, i, m);
}

void ggml_cuda_tq_run_fused(ggml_backend_cuda_context & ctx, const ggml_cuda_tq_fused & m) {
    switch (m.kind) {
        case ggml_cuda_tq_fused::ATTN:
            ggml_cuda_tq_fattn(ctx, const_cast<ggml_tensor *>(m.fa), &m);
            break;
        case ggml_cuda_tq_fused::WRITE:
            ggml_cuda_tq_write(ctx, m);
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
