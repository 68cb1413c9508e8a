// CPU correctness of the TQ KV-cache types inside ggml (built into llama.cpp by tqgguf's patches).
//
// Every check compares ggml's CPU backend with the C core as ggml's type table exposes it
// (from_float_ref = tq_quantize_row, to_float = tq_dequantize_row):
//   SET_ROWS / CPY write exactly the C core's bytes; GET_ROWS / CPY back give its floats;
//   FLASH_ATTN_EXT over TQ K/V equals FLASH_ATTN_EXT over f32 copies of the dequantized rows
//   (to summation order), for TQ with TQ and for mixed pairs. Ends with "N passed, M failed".
#include "ggml.h"
#include "ggml-cpu.h"
#include "ggml-tq.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

static int n_pass = 0, n_fail = 0;

static void check(bool ok, const std::string & what) {
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAIL: %s\n", what.c_str());
    }
}

struct ctx_guard {
    ggml_context * ctx;
    ctx_guard() {
        ggml_init_params p = { /*mem_size*/ 512u << 20, /*mem_buffer*/ nullptr, /*no_alloc*/ false };
        ctx = ggml_init(p);
    }
    ~ctx_guard() { ggml_free(ctx); }
};

static void compute(ggml_context * ctx, ggml_tensor * out) {
    ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, out);
    ggml_graph_compute_with_ctx(ctx, gf, 2);
}

static void fill(ggml_tensor * t, std::mt19937 & rng, float scale = 1.0f) {
    std::student_t_distribution<float> dist(4.0f); // heavy tails, like real K/V
    float * d = (float *) t->data;
    for (int64_t i = 0; i < ggml_nelements(t); ++i) {
        d[i] = scale * dist(rng);
    }
}

// quantize an f32 tensor into a new tensor of `type` with the type's reference quantizer
static ggml_tensor * quantized_copy(ggml_context * ctx, ggml_tensor * src, ggml_type type) {
    ggml_tensor * t = ggml_new_tensor(ctx, type, GGML_MAX_DIMS, src->ne);
    const auto * tr = ggml_get_type_traits(type);
    for (int64_t r = 0; r < ggml_nrows(src); ++r) {
        const float * x = (const float *) src->data + r * src->ne[0];
        if (type == GGML_TYPE_F32) {
            memcpy((char *) t->data + r * t->nb[1], x, src->ne[0] * sizeof(float));
        } else if (type == GGML_TYPE_F16) {
            ggml_fp32_to_fp16_row(x, (ggml_fp16_t *) ((char *) t->data + r * t->nb[1]), src->ne[0]);
        } else {
            tr->from_float_ref(x, (char *) t->data + r * t->nb[1], src->ne[0]);
        }
    }
    return t;
}

// an f32 tensor holding what `q` means
static ggml_tensor * dequantized_copy(ggml_context * ctx, ggml_tensor * q) {
    ggml_tensor * t = ggml_new_tensor(ctx, GGML_TYPE_F32, GGML_MAX_DIMS, q->ne);
    for (int64_t r = 0; r < ggml_nrows(q); ++r) {
        float * y = (float *) t->data + r * q->ne[0];
        const char * x = (const char *) q->data + r * q->nb[1];
        if (q->type == GGML_TYPE_F32) {
            memcpy(y, x, q->ne[0] * sizeof(float));
        } else if (q->type == GGML_TYPE_F16) {
            ggml_fp16_to_fp32_row((const ggml_fp16_t *) x, y, q->ne[0]);
        } else {
            ggml_get_type_traits(q->type)->to_float(x, y, q->ne[0]);
        }
    }
    return t;
}

static void test_set_get_rows_cpy(ggml_type type, int64_t ncols, std::mt19937 & rng) {
    const std::string tag = std::string(ggml_type_name(type)) + " n=" + std::to_string(ncols);
    const auto * tr = ggml_get_type_traits(type);
    const size_t row_size = ggml_row_size(type, ncols);
    ctx_guard g;
    ggml_context * ctx = g.ctx;

    const int n_src = 6, n_dst = 11;
    ggml_tensor * src = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ncols, n_src);
    fill(src, rng, 3.0f);
    ((float *) src->data)[5] = 0.0f; // a zero, and a whole zero row
    memset((char *) src->data + 2 * src->nb[1], 0, src->nb[1]);
    ggml_tensor * idx = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, n_src);
    const int64_t rows[n_src] = {3, 0, 10, 7, 1, 5};
    memcpy(idx->data, rows, sizeof(rows));
    ggml_tensor * dst = ggml_new_tensor_2d(ctx, type, ncols, n_dst);
    memset(dst->data, 0, ggml_nbytes(dst));

    compute(ctx, ggml_set_rows(ctx, dst, src, idx));
    std::vector<uint8_t> want(row_size);
    bool same = true;
    for (int i = 0; i < n_src; ++i) {
        tr->from_float_ref((const float *) src->data + i * ncols, want.data(), ncols);
        same &= memcmp(want.data(), (char *) dst->data + rows[i] * dst->nb[1], row_size) == 0;
    }
    check(same, "SET_ROWS bytes = C core " + tag);

    ggml_tensor * idx32 = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_src);
    for (int i = 0; i < n_src; ++i) ((int32_t *) idx32->data)[i] = (int32_t) rows[i];
    ggml_tensor * got = ggml_get_rows(ctx, dst, idx32);
    compute(ctx, got);
    std::vector<float> deq(ncols);
    same = true;
    for (int i = 0; i < n_src; ++i) {
        tr->to_float((char *) dst->data + rows[i] * dst->nb[1], deq.data(), ncols);
        same &= memcmp(deq.data(), (float *) got->data + i * ncols, ncols * sizeof(float)) == 0;
    }
    check(same, "GET_ROWS floats = C core " + tag);

    ggml_tensor * q = ggml_new_tensor_2d(ctx, type, ncols, n_src);
    compute(ctx, ggml_cpy(ctx, src, q));
    same = true;
    for (int i = 0; i < n_src; ++i) {
        tr->from_float_ref((const float *) src->data + i * ncols, want.data(), ncols);
        same &= memcmp(want.data(), (char *) q->data + i * q->nb[1], row_size) == 0;
    }
    check(same, "CPY f32->tq bytes = C core " + tag);

    ggml_tensor * back = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ncols, n_src);
    compute(ctx, ggml_cpy(ctx, q, back));
    same = true;
    for (int i = 0; i < n_src; ++i) {
        tr->to_float((char *) q->data + i * q->nb[1], deq.data(), ncols);
        same &= memcmp(deq.data(), (float *) back->data + i * ncols, ncols * sizeof(float)) == 0;
    }
    check(same, "CPY tq->f32 floats = C core " + tag);
}

// The flash-attention tests' heads: 4 query heads over 2 KV heads (GQA).
static const int64_t FA_N_HEAD = 4, FA_N_HEAD_KV = 2;

// Q [d, n_q, heads], K and V [d, n_kv, KV heads], f32 with heavy-tailed values.
static void random_qkv(ggml_context * ctx, int64_t d, int64_t n_q, int64_t n_kv, std::mt19937 & rng,
                       ggml_tensor *& q, ggml_tensor *& k, ggml_tensor *& v) {
    q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, d, n_q, FA_N_HEAD, 1);
    k = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, d, n_kv, FA_N_HEAD_KV, 1);
    v = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, d, n_kv, FA_N_HEAD_KV, 1);
    fill(q, rng, 0.5f);
    fill(k, rng, 0.5f);
    fill(v, rng, 1.0f);
}

// Computes out and ref and checks out's normalized squared error against ref below tol (and finite).
static void check_close(ggml_context * ctx, ggml_tensor * out, ggml_tensor * ref, double tol, const std::string & tag) {
    compute(ctx, out);
    compute(ctx, ref);
    double err = 0.0, norm = 0.0;
    bool finite = true;
    for (int64_t i = 0; i < ggml_nelements(out); ++i) {
        const double a = ((float *) out->data)[i], b = ((float *) ref->data)[i];
        finite &= std::isfinite(a);
        err += (a - b) * (a - b);
        norm += b * b;
    }
    const double nmse = err / (norm > 0 ? norm : 1.0);
    char buf[32];
    snprintf(buf, sizeof(buf), " nmse=%.3g", nmse);
    check(finite && nmse < tol, tag + buf);
}

static void test_flash_attn(ggml_type tk, ggml_type tv, int64_t d, int64_t n_kv, int64_t n_q, std::mt19937 & rng) {
    const std::string tag = std::string("FA K=") + ggml_type_name(tk) + " V=" + ggml_type_name(tv) +
                            " d=" + std::to_string(d) + " kv=" + std::to_string(n_kv) + " q=" + std::to_string(n_q);
    ctx_guard g;
    ggml_context * ctx = g.ctx;
    ggml_tensor * q, * k32, * v32;
    random_qkv(ctx, d, n_q, n_kv, rng, q, k32, v32);
    ggml_tensor * k = quantized_copy(ctx, k32, tk);
    ggml_tensor * v = quantized_copy(ctx, v32, tv);
    // the reference replaces only the TQ side(s) by f32 copies of what they mean: the other side
    // then takes the very same path (e.g. Q converted for a q8_0 K, f16 accumulation for an f16 V)
    ggml_tensor * k_ref = ggml_tq_is_tq(tk) ? dequantized_copy(ctx, k) : k;
    ggml_tensor * v_ref = ggml_tq_is_tq(tv) ? dequantized_copy(ctx, v) : v;
    const float scale = 1.0f / sqrtf((float) d);
    ggml_tensor * out = ggml_flash_attn_ext(ctx, q, k, v, nullptr, scale, 0.0f, 0.0f);
    ggml_prec_set_acc(out, GGML_PREC_F32);
    ggml_tensor * ref = ggml_flash_attn_ext(ctx, q, k_ref, v_ref, nullptr, scale, 0.0f, 0.0f);
    ggml_prec_set_acc(ref, GGML_PREC_F32);
    // an f16 V accumulates in f16: a last-bit change in a K.Q dot (summation order) can move it
    check_close(ctx, out, ref, tv == GGML_TYPE_F16 ? 1e-6 : 1e-9, tag);
}

// Extra rows (ggml_tq_flash_attn_set_kv_extra) are keys and values appended to the cache: the
// attention equals one over the dequantized cache's rows followed by the extra rows, under the
// same mask (random -inf entries, in the cache's columns and the extras', and a padded width).
static void test_flash_attn_extra(ggml_type tk, ggml_type tv, int64_t d, int64_t n_kv, int64_t n_extra, int64_t n_q,
                                  std::mt19937 & rng) {
    const std::string tag = std::string("FA extra K=") + ggml_type_name(tk) + " V=" + ggml_type_name(tv) +
                            " d=" + std::to_string(d) + " kv=" + std::to_string(n_kv) + " extra=" +
                            std::to_string(n_extra) + " q=" + std::to_string(n_q);
    ctx_guard g;
    ggml_context * ctx = g.ctx;
    const int64_t n_head_kv = FA_N_HEAD_KV, n_all = n_kv + n_extra;
    const int64_t n_cols = n_kv + GGML_PAD(n_extra, GGML_TQ_EXTRA_PAD);
    ggml_tensor * q, * k32, * v32;
    random_qkv(ctx, d, n_q, n_all, rng, q, k32, v32);
    // the cache: the first n_kv rows, quantized; the extras: the rest, as f32 views
    ggml_tensor * kc32 = ggml_cont(ctx, ggml_view_4d(ctx, k32, d, n_kv, n_head_kv, 1, k32->nb[1], k32->nb[2], k32->nb[3], 0));
    ggml_tensor * vc32 = ggml_cont(ctx, ggml_view_4d(ctx, v32, d, n_kv, n_head_kv, 1, v32->nb[1], v32->nb[2], v32->nb[3], 0));
    compute(ctx, kc32);
    compute(ctx, vc32);
    ggml_tensor * k = quantized_copy(ctx, kc32, tk);
    ggml_tensor * v = quantized_copy(ctx, vc32, tv);
    ggml_tensor * ke = ggml_view_4d(ctx, k32, d, n_extra, n_head_kv, 1, k32->nb[1], k32->nb[2], k32->nb[3], n_kv * k32->nb[1]);
    ggml_tensor * ve = ggml_view_4d(ctx, v32, d, n_extra, n_head_kv, 1, v32->nb[1], v32->nb[2], v32->nb[3], n_kv * v32->nb[1]);
    // the reference: every row in f32, what the cache's rows mean followed by the extras
    ggml_tensor * k_ref = ggml_concat(ctx, ggml_tq_is_tq(tk) ? dequantized_copy(ctx, k) : ggml_cast(ctx, k, GGML_TYPE_F32), ke, 1);
    ggml_tensor * v_ref = ggml_concat(ctx, ggml_tq_is_tq(tv) ? dequantized_copy(ctx, v) : ggml_cast(ctx, v, GGML_TYPE_F32), ve, 1);
    const int64_t n_q_pad = n_q;
    ggml_tensor * mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_cols, n_q_pad);
    ggml_tensor * mask_ref = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_all, n_q_pad);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (int64_t i = 0; i < n_q_pad; ++i) {
        for (int64_t j = 0; j < n_cols; ++j) {
            const float m = j >= n_all ? -INFINITY : u(rng) < 0.3f ? -INFINITY : 0.0f;
            ((ggml_fp16_t *) mask->data)[i * n_cols + j] = ggml_fp32_to_fp16(m);
            if (j < n_all) {
                ((ggml_fp16_t *) mask_ref->data)[i * n_all + j] = ggml_fp32_to_fp16(m);
            }
        }
    }
    const float scale = 1.0f / sqrtf((float) d);
    ggml_tensor * out = ggml_flash_attn_ext(ctx, q, k, v, mask, scale, 0.0f, 0.0f);
    ggml_prec_set_acc(out, GGML_PREC_F32);
    ggml_tq_flash_attn_set_kv_extra(out, ke, ve);
    ggml_tensor * ref = ggml_flash_attn_ext(ctx, q, k_ref, v_ref, mask_ref, scale, 0.0f, 0.0f);
    ggml_prec_set_acc(ref, GGML_PREC_F32);
    // the reference reads a plain side in f32, where the attention takes its own path for the
    // cache's rows: Q rounded to q8_0 for a q8_0 K, to f16 for an f16 K, an f16 V's sum in f16
    check_close(ctx, out, ref, tk == GGML_TYPE_Q8_0 ? 3e-4 : tk == GGML_TYPE_F16 || tv == GGML_TYPE_F16 ? 3e-5 : 1e-9, tag);
}

static void test_api() {
    float hi[16], lo[16];
    check(ggml_tq_bits(GGML_TYPE_TQ2_5, true) == 3 && ggml_tq_bits(GGML_TYPE_TQ2_5, false) == 2 &&
          ggml_tq_bits(GGML_TYPE_TQ3_5, true) == 4 && ggml_tq_bits(GGML_TYPE_TQ3_5, false) == 3 &&
          ggml_tq_bits(GGML_TYPE_Q4_0, true) == 0, "ggml_tq_bits");
    check(ggml_type_size(GGML_TYPE_TQ2_5) == 22 && ggml_type_size(GGML_TYPE_TQ3_5) == 30 &&
          ggml_blck_size(GGML_TYPE_TQ2_5) == 64 && std::string(ggml_type_name(GGML_TYPE_TQ3_5)) == "tq3_5",
          "type table");
    const float * cur_hi;
    const float * cur_lo;
    ggml_tq_get_codebooks(GGML_TYPE_TQ2_5, &cur_hi, &cur_lo);
    ggml_tq_default_codebook(16, 3, hi);
    ggml_tq_default_codebook(48, 2, lo);
    check(memcmp(hi, cur_hi, 8 * sizeof(float)) == 0 && memcmp(lo, cur_lo, 4 * sizeof(float)) == 0,
          "the Lloyd-Max codebooks in use");
    check(!ggml_tq_default_codebook(2, 3, hi) && !ggml_tq_default_codebook(16, 9, hi), "bad codebook arguments refused");

    for (int d : {64, 128, 256}) {
        std::vector<int32_t> out(d / 4);
        for (int i = 0; i < d / 4; ++i) out[i] = 4 * i + 1;
        std::vector<float> T((size_t) d * d);
        bool ok = ggml_tq_head_transform(T.data(), d, 12345, 1, out.data());
        double worst = 0.0;
        for (int i = 0; ok && i < d; ++i) {
            for (int j = 0; j < d; ++j) {
                double dot = 0.0;
                for (int c = 0; c < d; ++c) dot += (double) T[(size_t) i * d + c] * T[(size_t) j * d + c];
                worst = std::max(worst, std::fabs(dot - (i == j ? 1.0 : 0.0)));
            }
        }
        check(ok && worst < 1e-5, "head transform orthogonal d=" + std::to_string(d));
        out[1] = out[0];
        check(!ggml_tq_head_transform(T.data(), d, 12345, 1, out.data()), "head transform refuses repeated outliers");
    }
}

int main() {
    ggml_cpu_init();
    std::mt19937 rng(42);
    test_api();
    for (ggml_type t : {GGML_TYPE_TQ2_5, GGML_TYPE_TQ3_5}) {
        for (int64_t n : {64, 256, 64 * 3 * 4}) {
            test_set_get_rows_cpy(t, n, rng);
        }
    }
    struct pair { ggml_type k, v; };
    const pair pairs[] = {
        {GGML_TYPE_TQ2_5, GGML_TYPE_TQ2_5}, {GGML_TYPE_TQ3_5, GGML_TYPE_TQ3_5},
        {GGML_TYPE_Q8_0, GGML_TYPE_TQ2_5}, {GGML_TYPE_TQ3_5, GGML_TYPE_TQ2_5},
        {GGML_TYPE_TQ2_5, GGML_TYPE_F16}, {GGML_TYPE_F16, GGML_TYPE_TQ3_5},
    };
    for (const pair & p : pairs) {
        for (int64_t d : {64, 128, 256}) {
            for (int64_t n_kv : {7, 300}) {
                for (int64_t n_q : {1, 5}) {
                    test_flash_attn(p.k, p.v, d, n_kv, n_q, rng);
                }
            }
        }
    }
    for (const pair & p : pairs) {
        for (int64_t d : {64, 128}) {
            for (int64_t n_q : {1, 5}) {
                test_flash_attn_extra(p.k, p.v, d, 300, 33, n_q, rng);
                test_flash_attn_extra(p.k, p.v, d, 7, 1, n_q, rng);
            }
        }
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
