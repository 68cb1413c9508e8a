// The CPU kernels of the TQ types (cpp/ggml/ggml-cpu-tq.c, whichever SIMD path the compiler
// flags select) against the C core, without ggml: built by scripts/check-kernels.sh natively,
// for AVX2 or portable, or for aarch64 (NEON) and run under qemu.
//   decode: y = 0 + 1 * row through ggml_vec_mad_tq_f32 equals tq_dequantize_row exactly
//   dot:    ggml_vec_dot_tq*_f32 equals the dot product of the dequantized row, to rounding
//   mad:    y + v * row equals the same on the dequantized row, to rounding
// over random blocks (every code pattern, random f16 scales), the default codebooks and random
// increasing ones, rows of 1..7 blocks. Ends with "N passed, M failed".
#include "ggml-tq-impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tq_codebooks g_cb[TQ_TYPE_COUNT];

static enum tq_type tq_of(enum ggml_type type) {
    return type == GGML_TYPE_TQ2_5 ? TQ_TYPE_TQ2_5 : TQ_TYPE_TQ3_5;
}

const tq_codebooks * ggml_tq_codebooks(enum ggml_type type) {
    return &g_cb[tq_of(type)];
}

float ggml_fp16_to_fp32(ggml_fp16_t h) {
    return tq_fp16_to_fp32(h);
}

// what ggml-tq.c gives the kernels in ggml
void quantize_row_tq2_5_ref(const float * x, void * y, int64_t k) {
    tq_quantize_row(TQ_TYPE_TQ2_5, x, y, k, &g_cb[TQ_TYPE_TQ2_5]);
}

void quantize_row_tq3_5_ref(const float * x, void * y, int64_t k) {
    tq_quantize_row(TQ_TYPE_TQ3_5, x, y, k, &g_cb[TQ_TYPE_TQ3_5]);
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void) {
    return (uint32_t) (tq_splitmix64_next(&g_rng) >> 32);
}

static float unif(void) { // [-1, 1)
    return (float) rnd() / 2147483648.0f - 1.0f;
}

static int n_pass = 0, n_fail = 0;

static void check(int ok, const char * what, enum tq_type t, int n, const char * cb) {
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAIL: %s %s n=%d codebooks=%s\n", what, t == TQ_TYPE_TQ2_5 ? "tq2_5" : "tq3_5", n, cb);
    }
}

static void set_codebooks(int random) {
    for (int t = 0; t < TQ_TYPE_COUNT; ++t) {
        float hi[16], lo[16];
        const int hb = tq_hi_bits((enum tq_type) t), lb = tq_lo_bits((enum tq_type) t);
        tq_codebook_scaled(TQ_HI, hb, hi);
        tq_codebook_scaled(TQ_LO, lb, lo);
        if (random) { // increasing, asymmetric: a code read from the wrong place shows
            float a = -3.0f;
            for (int i = 0; i < (1 << hb); ++i) hi[i] = (a += 0.1f + (unif() + 1.0f));
            a = -2.0f;
            for (int i = 0; i < (1 << lb); ++i) lo[i] = (a += 0.1f + (unif() + 1.0f));
        }
        memset(&g_cb[t], 0, sizeof(g_cb[t]));
        if (tq_codebook_init(&g_cb[t].hi, hb, hi) != 0 || tq_codebook_init(&g_cb[t].lo, lb, lo) != 0) {
            printf("FAIL: codebook init\n");
            exit(1);
        }
    }
}

static void test_row(enum ggml_type type, int nb, const char * cbname) {
    const enum tq_type t = tq_of(type);
    const size_t bb = tq_block_bytes(t);
    const int n = nb * TQ_BLOCK;
    // exactly the row's bytes on the heap, so a read past its end is a sanitizer's error
    uint8_t * row = malloc(nb * bb);
    float * deq = malloc(n * sizeof(float));
    float * y = malloc(n * sizeof(float));
    float * q = malloc(n * sizeof(float));
    for (size_t i = 0; i < nb * bb; ++i) row[i] = (uint8_t) rnd();
    for (int b = 0; b < nb; ++b) { // finite scales, one of them 0 now and then
        for (int s = 0; s < 2; ++s) {
            const uint16_t h = rnd() % 8 == 0 ? 0 : tq_fp32_to_fp16(4.0f * unif());
            memcpy(row + b * bb + 2 * s, &h, 2);
        }
    }
    tq_dequantize_row(t, row, deq, n, &g_cb[t]);

    memset(y, 0, n * sizeof(float));
    ggml_vec_mad_tq_f32(type, n, y, row, 1.0f);
    int same = 1;
    for (int i = 0; i < n; ++i) same &= y[i] == deq[i];
    check(same, "decode (mad into zeros) = tq_dequantize_row exactly", t, n, cbname);

    double ref = 0.0, mag = 0.0;
    for (int i = 0; i < n; ++i) {
        q[i] = unif();
        ref += (double) deq[i] * q[i];
        mag += fabs((double) deq[i] * q[i]);
    }
    float got;
    if (type == GGML_TYPE_TQ2_5) {
        ggml_vec_dot_tq2_5_f32(n, &got, 0, row, 0, q, 0, 1);
    } else {
        ggml_vec_dot_tq3_5_f32(n, &got, 0, row, 0, q, 0, 1);
    }
    check(fabs(got - ref) <= 1e-5 * mag + 1e-30, "dot = dot of the dequantized row", t, n, cbname);

    const float v = 0.5f + unif();
    int close = 1;
    for (int i = 0; i < n; ++i) y[i] = q[i];
    ggml_vec_mad_tq_f32(type, n, y, row, v);
    for (int i = 0; i < n; ++i) {
        const double want = (double) q[i] + (double) v * deq[i];
        close &= fabs(y[i] - want) <= 1e-6 * (fabs(q[i]) + fabs(v * deq[i])) + 1e-30;
    }
    check(close, "mad = y + v * dequantized row", t, n, cbname);
    free(row);
    free(deq);
    free(y);
    free(q);
}

int main(void) {
    printf("path: %s\n", ggml_tq_cpu_simd());
    for (int random = 0; random < 2; ++random) {
        set_codebooks(random);
        for (int rep = 0; rep < 50; ++rep) {
            for (int nb = 1; nb <= 7; ++nb) {
                test_row(GGML_TYPE_TQ2_5, nb, random ? "random" : "default");
                test_row(GGML_TYPE_TQ3_5, nb, random ? "random" : "default");
            }
        }
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
