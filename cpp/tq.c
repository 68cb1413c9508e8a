// TurboQuant KV-cache blocks: reference quantize / dequantize (see tq.h, docs/format.md).
// tqgguf/reference.py is the executable definition; tests hold this file to it bit for bit.
#include "tq.h"

#include <math.h>
#include <string.h>

static const int tq_bits[TQ_TYPE_COUNT][2] = {
    [TQ_TYPE_TQ2_5] = {3, 2},
    [TQ_TYPE_TQ3_5] = {4, 3},
};

int tq_hi_bits(enum tq_type t) { return tq_bits[t][0]; }
int tq_lo_bits(enum tq_type t) { return tq_bits[t][1]; }


int tq_codebook_init(tq_codebook * cb, int bits, const float * centroids) {
    if (bits < 1 || bits > 4) {
        return -1;
    }
    const int n = 1 << bits;
    memset(cb, 0, sizeof(*cb));
    cb->bits = bits;
    for (int i = 0; i < n; ++i) {
        if (!isfinite(centroids[i]) || (i > 0 && !(centroids[i] > centroids[i - 1]))) {
            return -1;
        }
        cb->c[i] = centroids[i];
    }
    for (int i = 0; i + 1 < n; ++i) {
        cb->bnd[i] = (cb->c[i] + cb->c[i + 1]) * 0.5f;
    }
    return 0;
}

// ---- f16 -------------------------------------------------------------------------

uint16_t tq_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) { // inf or nan
        return (uint16_t) (sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    }
    if (absx >= 0x477ff000u) { // rounds to >= 65520: overflow to inf
        return (uint16_t) (sign | 0x7c00u);
    }
    if (absx < 0x38800000u) { // subnormal half (or zero)
        if (absx < 0x33000000u) {
            return (uint16_t) sign; // below half the smallest subnormal
        }
        const uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
        const int shift = 126 - (int) (absx >> 23); // value = mant * 2^(e-150), half unit 2^-24
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) {
            h++;
        }
        return (uint16_t) (sign | h);
    }
    uint32_t h = ((absx - 0x38000000u) >> 13);
    const uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) {
        h++;
    }
    return (uint16_t) (sign | h);
}

float tq_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0x1fu) {
        x = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        x = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        x = sign;
    } else { // subnormal: value = mant * 2^-24
        float f = (float) mant * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

// ---- one group -------------------------------------------------------------------

// Codes (one byte each) and the f16 scale ||v|| / ||c[codes]|| of n values (tq.h).
static uint16_t tq_quantize_group(const float * v, int n, const tq_codebook * cb, uint8_t * codes) {
    double ss = 0.0;
    for (int i = 0; i < n; ++i) {
        ss += (double) v[i] * (double) v[i];
    }
    const double nrm = sqrt(ss);
    if (!(nrm > 0.0) || !isfinite(nrm)) {
        memset(codes, 0, (size_t) n);
        return 0;
    }
    const float inv = (float) (sqrt((double) n) / nrm);
    const int nb = (1 << cb->bits) - 1;
    double cs = 0.0;
    for (int i = 0; i < n; ++i) {
        const float y = v[i] * inv;
        int q = 0;
        while (q < nb && cb->bnd[q] < y) {
            ++q;
        }
        codes[i] = (uint8_t) q;
        cs += (double) cb->c[q] * (double) cb->c[q];
    }
    return tq_fp32_to_fp16((float) (nrm / sqrt(cs)));
}

// ---- bit planes ------------------------------------------------------------------

static void tq_pack(const uint8_t * codes, int n, int bits, uint8_t * out) {
    const int per_byte = 8 / bits;
    const int nbytes = n / per_byte;
    const uint8_t mask = (uint8_t) ((1u << bits) - 1);
    for (int j = 0; j < nbytes; ++j) {
        uint8_t b = 0;
        for (int s = 0; s < per_byte; ++s) {
            b |= (uint8_t) ((codes[s * nbytes + j] & mask) << (bits * s));
        }
        out[j] = b;
    }
}

static inline void tq_unpack(const uint8_t * in, int n, int bits, uint8_t * codes) {
    const int per_byte = 8 / bits;
    const int nbytes = n / per_byte;
    const uint8_t mask = (uint8_t) ((1u << bits) - 1);
    for (int s = 0; s < per_byte; ++s) {
        for (int j = 0; j < nbytes; ++j) {
            codes[s * nbytes + j] = (uint8_t) ((in[j] >> (bits * s)) & mask);
        }
    }
}

// A group of n codes of `bits` bits at `out`: 3 bits are a 2-bit plane then a 1-bit plane.
static void tq_pack_codes(const uint8_t * codes, int n, int bits, uint8_t * out) {
    if (bits != 3) {
        tq_pack(codes, n, bits, out);
        return;
    }
    uint8_t lo[TQ_LO], hi[TQ_LO];
    for (int i = 0; i < n; ++i) {
        lo[i] = codes[i] & 3;
        hi[i] = codes[i] >> 2;
    }
    tq_pack(lo, n, 2, out);
    tq_pack(hi, n, 1, out + n / 4);
}

static inline void tq_unpack_codes(const uint8_t * in, int n, int bits, uint8_t * codes) {
    if (bits != 3) {
        tq_unpack(in, n, bits, codes);
        return;
    }
    uint8_t hi[TQ_LO];
    tq_unpack(in, n, 2, codes);
    tq_unpack(in + n / 4, n, 1, hi);
    for (int i = 0; i < n; ++i) {
        codes[i] |= (uint8_t) (hi[i] << 2);
    }
}

// ---- rows ------------------------------------------------------------------------

// Both block structs are: two f16 scales, the hi codes, then the lo codes.
void tq_quantize_row(enum tq_type t, const float * x, void * blocks, int64_t n, const tq_codebooks * cb) {
    const size_t bb = tq_block_bytes(t);
    const int hi_bytes = TQ_HI * cb->hi.bits / 8;
    uint8_t codes[TQ_LO];
    for (int64_t b = 0; b < n / TQ_BLOCK; ++b) {
        uint8_t * out = (uint8_t *) blocks + b * bb;
        const float * v = x + b * TQ_BLOCK;
        const uint16_t d_hi = tq_quantize_group(v, TQ_HI, &cb->hi, codes);
        tq_pack_codes(codes, TQ_HI, cb->hi.bits, out + 4);
        const uint16_t d_lo = tq_quantize_group(v + TQ_HI, TQ_LO, &cb->lo, codes);
        tq_pack_codes(codes, TQ_LO, cb->lo.bits, out + 4 + hi_bytes);
        memcpy(out, &d_hi, 2);
        memcpy(out + 2, &d_lo, 2);
    }
}

// One group's values: codes of a compile-time width (so the plane loops unroll) times the scale.
static inline void tq_dequantize_group(const uint8_t * in, int n, int bits, float scale, const float * c, float * v) {
    uint8_t codes[TQ_LO];
    tq_unpack_codes(in, n, bits, codes);
    for (int i = 0; i < n; ++i) {
        v[i] = scale * c[codes[i]];
    }
}

void tq_dequantize_row(enum tq_type t, const void * blocks, float * y, int64_t n, const tq_codebooks * cb) {
    for (int64_t b = 0; b < n / TQ_BLOCK; ++b) {
        float * v = y + b * TQ_BLOCK;
        if (t == TQ_TYPE_TQ2_5) {
            const block_tq2_5 * x = (const block_tq2_5 *) blocks + b;
            tq_dequantize_group(x->hi_q2, TQ_HI, 3, tq_fp16_to_fp32(x->d_hi), cb->hi.c, v);
            tq_dequantize_group(x->lo_q2, TQ_LO, 2, tq_fp16_to_fp32(x->d_lo), cb->lo.c, v + TQ_HI);
        } else {
            const block_tq3_5 * x = (const block_tq3_5 *) blocks + b;
            tq_dequantize_group(x->hi_q4, TQ_HI, 4, tq_fp16_to_fp32(x->d_hi), cb->hi.c, v);
            tq_dequantize_group(x->lo_q2, TQ_LO, 3, tq_fp16_to_fp32(x->d_lo), cb->lo.c, v + TQ_HI);
        }
    }
}
