// ggml-base side of the TQ types: the codebooks and the row functions.
#include "ggml-tq-impl.h"
#include "ggml-threading.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static tq_codebooks g_tq_cb[TQ_TYPE_COUNT];
static int          g_tq_ready = 0;

static enum tq_type tq_type_of(enum ggml_type type) {
    return type == GGML_TYPE_TQ3_5 ? TQ_TYPE_TQ3_5 : TQ_TYPE_TQ2_5;
}

bool ggml_tq_is_tq(enum ggml_type type) {
    return type == GGML_TYPE_TQ2_5 || type == GGML_TYPE_TQ3_5;
}

int ggml_tq_bits(enum ggml_type type, bool hi) {
    if (!ggml_tq_is_tq(type)) {
        return 0;
    }
    return hi ? tq_hi_bits(tq_type_of(type)) : tq_lo_bits(tq_type_of(type));
}

bool ggml_tq_default_codebook(int dim, int bits, float * out) {
    return tq_codebook_scaled(dim, bits, out) == 0;
}

// The codebooks are fixed by the block layout (Lloyd-Max for a rotated coordinate of a 16- or
// 48-value group), so they are computed once (a few ms) on first use and never change: every
// model and context in the process shares them, read-only.
static void tq_ensure_defaults(void) {
    if (__atomic_load_n(&g_tq_ready, __ATOMIC_ACQUIRE)) {
        return;
    }
    ggml_critical_section_start();
    if (!g_tq_ready) {
        for (int t = 0; t < TQ_TYPE_COUNT; ++t) {
            float hi[16], lo[16];
            tq_codebook_scaled(TQ_HI, tq_hi_bits((enum tq_type) t), hi);
            tq_codebook_scaled(TQ_LO, tq_lo_bits((enum tq_type) t), lo);
            tq_codebook_init(&g_tq_cb[t].hi, tq_hi_bits((enum tq_type) t), hi);
            tq_codebook_init(&g_tq_cb[t].lo, tq_lo_bits((enum tq_type) t), lo);
        }
        __atomic_store_n(&g_tq_ready, 1, __ATOMIC_RELEASE);
    }
    ggml_critical_section_end();
}

const tq_codebooks * ggml_tq_codebooks(enum ggml_type type) {
    tq_ensure_defaults();
    return &g_tq_cb[tq_type_of(type)];
}

void ggml_tq_get_codebooks(enum ggml_type type, const float ** hi, const float ** lo) {
    const tq_codebooks * cb = ggml_tq_codebooks(type);
    *hi = cb->hi.c;
    *lo = cb->lo.c;
}

bool ggml_tq_head_transform(float * T, int d, uint64_t layer_seed, int head, const int32_t * outliers) {
    if (d <= 0 || d % TQ_BLOCK != 0 || d > 4096) {
        return false;
    }
    double * tmp = (double *) malloc(sizeof(double) * (size_t) d * d);
    if (!tmp) {
        return false;
    }
    const bool ok = tq_head_transform(tmp, d, layer_seed, head, outliers) == 0;
    for (size_t i = 0; ok && i < (size_t) d * d; ++i) {
        T[i] = (float) tmp[i];
    }
    free(tmp);
    return ok;
}

void quantize_row_tq2_5_ref(const float * x, void * y, int64_t k) {
    tq_quantize_row(TQ_TYPE_TQ2_5, x, y, k, ggml_tq_codebooks(GGML_TYPE_TQ2_5));
}

void quantize_row_tq3_5_ref(const float * x, void * y, int64_t k) {
    tq_quantize_row(TQ_TYPE_TQ3_5, x, y, k, ggml_tq_codebooks(GGML_TYPE_TQ3_5));
}

void dequantize_row_tq2_5(const void * x, float * y, int64_t k) {
    tq_dequantize_row(TQ_TYPE_TQ2_5, x, y, k, ggml_tq_codebooks(GGML_TYPE_TQ2_5));
}

void dequantize_row_tq3_5(const void * x, float * y, int64_t k) {
    tq_dequantize_row(TQ_TYPE_TQ3_5, x, y, k, ggml_tq_codebooks(GGML_TYPE_TQ3_5));
}

static size_t tq_quantize_rows(enum ggml_type type, const float * src, void * dst, int64_t nrows, int64_t n_per_row) {
    const size_t row_size = ggml_row_size(type, n_per_row);
    for (int64_t r = 0; r < nrows; ++r) {
        tq_quantize_row(tq_type_of(type), src + r * n_per_row, (char *) dst + r * row_size, n_per_row, ggml_tq_codebooks(type));
    }
    return nrows * row_size;
}

size_t quantize_tq2_5(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix) {
    (void) imatrix; // TQ codebooks are fixed by the law of a rotated coordinate: no importance weighting
    return tq_quantize_rows(GGML_TYPE_TQ2_5, src, dst, nrows, n_per_row);
}

size_t quantize_tq3_5(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix) {
    (void) imatrix;
    return tq_quantize_rows(GGML_TYPE_TQ3_5, src, dst, nrows, n_per_row);
}

// The exact rows ride in a source slot that upstream's flash attention does not use (0-4 are
// Q, K, V, mask, sinks), so the graph allocator and scheduler treat them as any other input.
#define GGML_TQ_K_EXACT_SRC 5
#define GGML_TQ_K_EXTRA_SRC 6
#define GGML_TQ_V_EXTRA_SRC 7

void ggml_tq_flash_attn_set_k_exact(struct ggml_tensor * a, struct ggml_tensor * k_exact) {
    GGML_ASSERT(a->op == GGML_OP_FLASH_ATTN_EXT);
    if (k_exact) {
        const struct ggml_tensor * k = a->src[1];
        GGML_ASSERT(ggml_tq_is_tq(k->type));
        GGML_ASSERT(k_exact->type == GGML_TYPE_F32);
        GGML_ASSERT(k_exact->ne[0] == k->ne[0] && k_exact->ne[2] == k->ne[2] && k_exact->ne[3] == k->ne[3]);
        GGML_ASSERT(k_exact->nb[0] == sizeof(float) && k_exact->ne[1] <= GGML_TQ_K_EXACT_MAX);
    }
    a->src[GGML_TQ_K_EXACT_SRC] = k_exact;
}

const struct ggml_tensor * ggml_tq_flash_attn_k_exact(const struct ggml_tensor * a) {
    return a->op == GGML_OP_FLASH_ATTN_EXT ? a->src[GGML_TQ_K_EXACT_SRC] : NULL;
}

void ggml_tq_flash_attn_set_kv_extra(struct ggml_tensor * a, struct ggml_tensor * k_extra, struct ggml_tensor * v_extra) {
    GGML_ASSERT(a->op == GGML_OP_FLASH_ATTN_EXT);
    GGML_ASSERT((k_extra == NULL) == (v_extra == NULL));
    if (k_extra) {
        const struct ggml_tensor * k = a->src[1];
        const struct ggml_tensor * v = a->src[2];
        const struct ggml_tensor * mask = a->src[3];
        GGML_ASSERT(ggml_tq_is_tq(k->type) || ggml_tq_is_tq(v->type));
        GGML_ASSERT(k_extra->type == GGML_TYPE_F32 && v_extra->type == GGML_TYPE_F32);
        GGML_ASSERT(k_extra->nb[0] == sizeof(float) && v_extra->nb[0] == sizeof(float));
        GGML_ASSERT(k_extra->ne[0] == k->ne[0] && k_extra->ne[2] == k->ne[2] && k_extra->ne[3] == k->ne[3]);
        GGML_ASSERT(v_extra->ne[0] == v->ne[0] && v_extra->ne[2] == v->ne[2] && v_extra->ne[3] == v->ne[3]);
        GGML_ASSERT(v_extra->ne[1] == k_extra->ne[1]);
        GGML_ASSERT(mask && mask->ne[0] >= k->ne[1] + k_extra->ne[1]);
    }
    a->src[GGML_TQ_K_EXTRA_SRC] = k_extra;
    a->src[GGML_TQ_V_EXTRA_SRC] = v_extra;
}

const struct ggml_tensor * ggml_tq_flash_attn_k_extra(const struct ggml_tensor * a) {
    return a->op == GGML_OP_FLASH_ATTN_EXT ? a->src[GGML_TQ_K_EXTRA_SRC] : NULL;
}

const struct ggml_tensor * ggml_tq_flash_attn_v_extra(const struct ggml_tensor * a) {
    return a->op == GGML_OP_FLASH_ATTN_EXT ? a->src[GGML_TQ_V_EXTRA_SRC] : NULL;
}
