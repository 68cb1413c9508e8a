// Seeded orthogonal transforms of K/V heads (docs/rotation.md; tqgguf/rotation.py is the definition).
#include "tq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TQ_GOLDEN       0x9E3779B97F4A7C15ull
#define TQ_SUBSEED_STEP 0xD1B54A32D192ED03ull

uint64_t tq_splitmix64_next(uint64_t * state) {
    *state += TQ_GOLDEN;
    uint64_t z = *state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t tq_subseed(uint64_t seed, uint64_t tag) {
    uint64_t s = seed + (tag + 1) * TQ_SUBSEED_STEP;
    return tq_splitmix64_next(&s);
}

static int tq_is_pow2(int n) { return n > 0 && (n & (n - 1)) == 0; }

// (1/sqrt n) H_n diag(s), row-major into R (n x n, leading dimension n).
static void tq_hadamard(double * R, int n, uint64_t seed) {
    uint64_t st = seed;
    const double inv = 1.0 / sqrt((double) n);
    double * sign = malloc(sizeof(double) * (size_t) n);
    for (int j = 0; j < n; ++j) {
        sign[j] = (tq_splitmix64_next(&st) >> 63) ? -1.0 : 1.0;
    }
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j) {
            const int parity = __builtin_popcount((unsigned) (i & j)) & 1;
            R[(size_t) i * n + j] = (parity ? -inv : inv) * sign[j];
        }
    }
    free(sign);
}

static double tq_uniform(uint64_t * st) {
    return ((double) (tq_splitmix64_next(st) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Q of the QR factorisation (diag(R) > 0) of a seeded Gaussian matrix: Haar distributed.
// Modified Gram-Schmidt on the columns, run twice for orthogonality to rounding.
static void tq_haar(double * Q, int n, uint64_t seed) {
    uint64_t st = seed;
    const size_t count = (size_t) n * n;
    for (size_t i = 0; i < count; i += 2) {
        const double u1 = tq_uniform(&st), u2 = tq_uniform(&st);
        const double r = sqrt(-2.0 * log(u1));
        Q[i] = r * cos(2.0 * M_PI * u2);
        if (i + 1 < count) {
            Q[i + 1] = r * sin(2.0 * M_PI * u2);
        }
    }
    for (int j = 0; j < n; ++j) {
        for (int pass = 0; pass < 2; ++pass) {
            for (int k = 0; k < j; ++k) {
                double dot = 0.0;
                for (int i = 0; i < n; ++i) dot += Q[(size_t) i * n + k] * Q[(size_t) i * n + j];
                for (int i = 0; i < n; ++i) Q[(size_t) i * n + j] -= dot * Q[(size_t) i * n + k];
            }
        }
        double nrm = 0.0;
        for (int i = 0; i < n; ++i) nrm += Q[(size_t) i * n + j] * Q[(size_t) i * n + j];
        nrm = sqrt(nrm);
        for (int i = 0; i < n; ++i) Q[(size_t) i * n + j] /= nrm;
    }
}

static void tq_group_rotation(double * R, int n, uint64_t seed) {
    if (tq_is_pow2(n)) {
        tq_hadamard(R, n, seed);
    } else {
        tq_haar(R, n, seed);
    }
}

int tq_head_transform(double * T, int d, uint64_t layer_seed, int head, const int32_t * outliers) {
    if (d <= 0 || d % TQ_BLOCK != 0 || head < 0) {
        return -1;
    }
    const int n_hi = d / TQ_BLOCK * TQ_HI;
    const int n_lo = d - n_hi;
    int * is_hi = calloc((size_t) d, sizeof(int));
    int32_t * rest = malloc(sizeof(int32_t) * (size_t) n_lo);
    double * r_hi = malloc(sizeof(double) * (size_t) n_hi * n_hi);
    double * r_lo = malloc(sizeof(double) * (size_t) n_lo * n_lo);
    int ok = is_hi && rest && r_hi && r_lo;
    for (int i = 0; ok && i < n_hi; ++i) {
        // sorted, distinct and in range: anything else is malformed metadata
        ok = outliers[i] >= 0 && outliers[i] < d && (i == 0 || outliers[i] > outliers[i - 1]);
        if (ok) is_hi[outliers[i]] = 1;
    }
    if (ok) {
        for (int c = 0, k = 0; c < d; ++c) {
            if (!is_hi[c]) rest[k++] = c;
        }
        tq_group_rotation(r_hi, n_hi, tq_subseed(layer_seed, 2 * (uint64_t) head));
        tq_group_rotation(r_lo, n_lo, tq_subseed(layer_seed, 2 * (uint64_t) head + 1));
        memset(T, 0, sizeof(double) * (size_t) d * d);
        int a_hi = 0, a_lo = 0;
        for (int r = 0; r < d; ++r) {
            double * row = T + (size_t) r * d;
            if (r % TQ_BLOCK < TQ_HI) {
                for (int c = 0; c < n_hi; ++c) row[outliers[c]] = r_hi[(size_t) a_hi * n_hi + c];
                ++a_hi;
            } else {
                for (int c = 0; c < n_lo; ++c) row[rest[c]] = r_lo[(size_t) a_lo * n_lo + c];
                ++a_lo;
            }
        }
    }
    free(is_hi);
    free(rest);
    free(r_hi);
    free(r_lo);
    return ok ? 0 : -1;
}
