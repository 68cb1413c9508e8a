// Flash attention at decode over a KV cache with TQ K and/or V (mixed pairs with f16 / q8_0).
//
// Why a kernel of its own: upstream's vector kernel runs one query head per block, so with
// grouped-query attention every head of a group re-reads and re-decodes the same K/V rows.
// Here a block owns one KV head and a slice of the KV length, and the "columns" it computes
// are all (query token, query head) pairs that read that KV head: each K and V row is read
// from memory and decoded once per block, then used by every column.
//
//   grid  (n_head_kv, n_splits, n_seq)   block 128 threads = 4 warps, each on its own 32-key tiles
//   K phase: lane l scores key l of the warp's tile against all columns (Q in shared memory)
//   softmax: online, per warp and column, across the lanes with shuffles
//   V phase: the warp walks the tile's keys; a lane decodes D/32 values of each row (a "unit"
//            whose codes share plane bytes) and accumulates them for every column
// Each block merges its warps and writes unnormalized partial outputs and (max, sum) per
// column; a second kernel merges the splits.
#pragma once

#include "tq-cuda.cuh"
#include "tq-device.cuh"

static constexpr int TQ_FA_THREADS = 128;
static constexpr int TQ_FA_TILE    = 128;
static constexpr int TQ_FA_WARPS   = TQ_FA_THREADS / 32;
static constexpr int TQ_FA_MAX_COLS = 8;

struct tq_fa_params {
    const char * Q; const char * K; const char * V; const char * mask;
    float * part;   // [rows][n_splits][D] unnormalized outputs
    float2 * meta;  // [rows][n_splits] (max, sum)
    int n_q, n_head, n_head_kv, n_kv, n_splits, kv_per_split, ncols, gqa;
    int64_t nbq1, nbq2, nbq3, nbk1, nbk2, nbk3, nbv1, nbv2, nbv3, nbm1, nbm3;
    int k_ne3, v_ne3, mask_ne3;
    float scale, softcap;
    tq_lut lut_k, lut_v;
    const float * Tq;   // fused Q transform [n_head_kv][D][D] (row i: output i), or null
    const float * qraw; // with Tq: the untransformed Q of the one token, [n_head][D]
};

// Launches the decode kernel over as many splits of the KV length as fill the GPU once
// (at most max_splits); returns the number of splits, which p.part / p.meta must hold.
template <int D, ggml_type TK, ggml_type TV>
int ggml_cuda_tq_fattn_launch(tq_fa_params p, int n_seq, int nsm, int max_splits, cudaStream_t stream);

// The kernels themselves are compiled only in the instance files tq-fattn-k-*.cu.
#ifdef TQ_FA_DEFINE_KERNELS

// ---- K phase: one lane scores one key against every column --------------------------------
// Q sits in shared memory transposed, Qt[d][NC] (columns fastest): one vector load serves all
// columns of a dimension. TQ blocks are scored per group (sum of codebook value x Q) and the
// group scale is applied once per group.

template <int NC>
static __device__ __forceinline__ void tq_fma_cols(float (&s)[NC], const float * qt, const float x) {
    if constexpr (NC % 4 == 0) {
#pragma unroll
        for (int c = 0; c < NC; c += 4) {
            const float4 q = *(const float4 *) (qt + c);
            s[c] = fmaf(x, q.x, s[c]); s[c + 1] = fmaf(x, q.y, s[c + 1]);
            s[c + 2] = fmaf(x, q.z, s[c + 2]); s[c + 3] = fmaf(x, q.w, s[c + 3]);
        }
    } else {
        static_assert(NC == 2, "2, 4 or 8 columns");
        const float2 q = *(const float2 *) qt;
        s[0] = fmaf(x, q.x, s[0]); s[1] = fmaf(x, q.y, s[1]);
    }
}

template <ggml_type T> struct tq_fa_k {
    // s[c] += (the 64 values of block b of `row`) . Qt[b*64 .. b*64+63][c]
    template <int NC>
    static __device__ __forceinline__ void dot(const char * row, int b, const float (*lut)[16], const float * qt, float (&s)[NC]) {
        uint16_t w[tq_layout<T>::bytes / 2];
        tq_load_words<T>((const uint8_t *) row + b * tq_layout<T>::bytes, w);
        float sh[NC], sl[NC];
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            sh[c] = 0.0f;
            sl[c] = 0.0f;
        }
#pragma unroll
        for (int slot = 0; slot < TQ_BLOCK; ++slot) {
            const tq_slot q = tq_slot_of<T>(slot);
            tq_fma_cols<NC>(q.hi ? sh : sl, qt + (b * TQ_BLOCK + slot) * NC, lut[q.hi ? 0 : 1][tq_code_in_words(w, q)]);
        }
        const float d_hi = __half2float(__ushort_as_half(w[0])), d_lo = __half2float(__ushort_as_half(w[1]));
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            s[c] += d_hi * sh[c] + d_lo * sl[c];
        }
    }
};

template <> struct tq_fa_k<GGML_TYPE_F16> {
    template <int NC>
    static __device__ __forceinline__ void dot(const char * row, int b, const float (*)[16], const float * qt, float (&s)[NC]) {
        const float4 * p = (const float4 *) (row + b * TQ_BLOCK * 2);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float4 raw = p[i];
            const half2 * h = (const half2 *) &raw;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float2 f = __half22float2(h[k]);
                tq_fma_cols<NC>(s, qt + (b * TQ_BLOCK + 8 * i + 2 * k) * NC, f.x);
                tq_fma_cols<NC>(s, qt + (b * TQ_BLOCK + 8 * i + 2 * k + 1) * NC, f.y);
            }
        }
    }
};

template <> struct tq_fa_k<GGML_TYPE_Q8_0> {
    template <int NC>
    static __device__ __forceinline__ void dot(const char * row, int b, const float (*)[16], const float * qt, float (&s)[NC]) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const block_q8_0 * q = (const block_q8_0 *) row + 2 * b + h;
            float part[NC];
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                part[c] = 0.0f;
            }
#pragma unroll
            for (int i = 0; i < QK8_0; ++i) {
                tq_fma_cols<NC>(part, qt + (b * TQ_BLOCK + QK8_0 * h + i) * NC, (float) q->qs[i]);
            }
            const float d = __half2float(q->d);
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                s[c] += d * part[c];
            }
        }
    }
};

// ---- V phase: a lane decodes a "unit" of 4 values of a row --------------------------------
// Unit u (0..15) of a block takes the 4 slots whose codes share plane bytes (docs/format.md):
// rest-group unit u < 12 the slots 16 + u + 12k, outlier-group unit 12 + j the slots j + 4k
// (k = 0..3). So a lane reads a scale and two bytes per row, and no lane's codes straddle.

static __host__ __device__ __forceinline__ int tq_unit_slot(int u, int k) {
    return u < 12 ? TQ_HI + u + 12 * k : (u - 12) + 4 * k;
}

template <ggml_type T> struct tq_fa_v {
    int off, so, a0, a1, bs, hi;
    __device__ __forceinline__ void init(int unit) {
        using L = tq_layout<T>;
        const int u = unit % 16, j = u - 12;
        off = (unit / 16) * L::bytes;
        hi = u >= 12;
        so = hi ? 0 : 2;
        if constexpr (T == GGML_TYPE_TQ2_5) {
            // rest: 2-bit codes in byte lo_a + u; outliers: 2-bit plane byte hi_a + j, bit 2 of
            // slot j + 4k in byte hi_b + j % 2 at bit j / 2 + 2k
            a0 = hi ? L::hi_a + j : L::lo_a + u;
            a1 = hi ? L::hi_b + (j & 1) : L::lo_a + u;
            bs = hi ? (j >> 1) : 0;
        } else {
            // outliers: nibbles of bytes hi_a + j (slots j, j + 8) and hi_a + 4 + j (j + 4, j + 12);
            // rest: 2-bit plane byte lo_a + u, bit 2 in byte lo_b + u % 6 at bit u / 6 + 2k
            a0 = hi ? L::hi_a + j : L::lo_a + u;
            a1 = hi ? L::hi_a + 4 + j : L::lo_b + u % 6;
            bs = hi ? 0 : u / 6;
        }
    }
    __device__ __forceinline__ void read(const char * row, const float (*lut)[16], float * x) const {
        const uint8_t * blk = (const uint8_t *) row + off;
        const float d = __half2float(__ushort_as_half(*(const uint16_t *) (blk + so)));
        const int A = blk[a0], B = blk[a1];
        const float * c = lut[hi ? 0 : 1];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            int code;
            if constexpr (T == GGML_TYPE_TQ2_5) {
                code = ((A >> (2 * k)) & 3) | (hi ? ((B >> (bs + 2 * k)) & 1) << 2 : 0);
            } else {
                code = hi ? ((((k & 1) ? B : A) >> (4 * (k >> 1))) & 15)
                          : (((A >> (2 * k)) & 3) | (((B >> (bs + 2 * k)) & 1) << 2));
            }
            x[k] = d * c[code];
        }
    }
};

// f16 / q8_0 V (mixed pairs): the same unit slots, read value by value.
struct tq_fa_v_dims {
    int dim[4];
    __device__ __forceinline__ void init(int unit) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            dim[k] = (unit / 16) * TQ_BLOCK + tq_unit_slot(unit % 16, k);
        }
    }
};

template <> struct tq_fa_v<GGML_TYPE_F16> : tq_fa_v_dims {
    __device__ __forceinline__ void read(const char * row, const float (*)[16], float * x) const {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            x[k] = __half2float(((const half *) row)[dim[k]]);
        }
    }
};

template <> struct tq_fa_v<GGML_TYPE_Q8_0> : tq_fa_v_dims {
    __device__ __forceinline__ void read(const char * row, const float (*)[16], float * x) const {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const block_q8_0 * q = (const block_q8_0 *) row + dim[k] / QK8_0;
            x[k] = __half2float(q->d) * q->qs[dim[k] % QK8_0];
        }
    }
};

static __device__ __forceinline__ void tq_prefetch_l1(const void * p) {
    asm volatile("prefetch.global.L1 [%0];" :: "l"(p));
}

static __device__ __forceinline__ void tq_prefetch_l2(const void * p) {
    asm volatile("prefetch.global.L2 [%0];" :: "l"(p));
}

static __device__ __forceinline__ float tq_warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, o));
    }
    return x;
}

static __device__ __forceinline__ float tq_warp_add(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        x += __shfl_xor_sync(0xffffffff, x, o);
    }
    return x;
}

// Warps work on their own 32-key tiles with their own online softmax (no block-wide barrier
// in the loop, so one warp's loads overlap another's arithmetic); the block merges its four
// warps at the end.
template <int D, ggml_type TK, ggml_type TV, int NC>
__launch_bounds__(TQ_FA_THREADS, D * NC >= 1024 ? 2 : 4)
static __global__ void k_tq_fattn_decode(const tq_fa_params p) {
    constexpr int UNITS = D / 4;                          // 4 values each
    constexpr int UPL   = UNITS >= 32 ? UNITS / 32 : 1;   // units per lane
    constexpr int KPS   = UNITS >= 32 ? 1 : 32 / UNITS;   // keys per V step (head 64: lanes 16..31 take odd keys)
    constexpr int VPL   = 4 * UPL;
    __shared__ __align__(16) float Qt[D * NC];
    __shared__ float lut_k[2][16], lut_v[2][16];
    __shared__ __align__(16) float P[TQ_FA_WARPS][32 * NC];
    __shared__ float Mw[TQ_FA_WARPS][NC], Lw[TQ_FA_WARPS][NC];
    __shared__ float Ow[TQ_FA_WARPS][NC][D];

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int hkv = blockIdx.x, split = blockIdx.y, seq = blockIdx.z;

    if (tid < 32) {
        lut_k[tid / 16][tid % 16] = p.lut_k.c[tid / 16][tid % 16];
        lut_v[tid / 16][tid % 16] = p.lut_v.c[tid / 16][tid % 16];
    }
    // column c = (query token j, head hkv*gqa + g) with j = c / gqa, g = c % gqa
    if (p.Tq) {
        // fused: Q = T_k q (one token), the raw q staged in Ow, which is free until the end
        float * Qr = &Ow[0][0][0];
        for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
            const int c = i / D, d = i % D;
            Qr[i] = c < p.ncols ? p.qraw[(int64_t) (hkv * p.gqa + c) * D + d] : 0.0f;
        }
        __syncthreads();
        for (int d = tid; d < D; d += TQ_FA_THREADS) {
            const float4 * t = (const float4 *) (p.Tq + ((int64_t) hkv * D + d) * D);
            float a[NC];
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                a[c] = 0.0f;
            }
            for (int k4 = 0; k4 < D / 4; ++k4) {
                const float4 tv = t[k4];
#pragma unroll
                for (int c = 0; c < NC; ++c) {
                    const float * q = Qr + c * D + 4 * k4;
                    a[c] += tv.x * q[0] + tv.y * q[1] + tv.z * q[2] + tv.w * q[3];
                }
            }
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                Qt[d * NC + c] = a[c];
            }
        }
    } else {
        for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
            const int c = i / D, d = i % D;
            float q = 0.0f;
            if (c < p.ncols) {
                const int j = c / p.gqa, head = hkv * p.gqa + c % p.gqa;
                q = ((const float *) (p.Q + seq * p.nbq3 + head * p.nbq2 + j * p.nbq1))[d];
            }
            Qt[d * NC + c] = q;
        }
    }
    const char * K = p.K + (seq % p.k_ne3) * p.nbk3 + hkv * p.nbk2;
    const char * V = p.V + (seq % p.v_ne3) * p.nbv3 + hkv * p.nbv2;
    const half * mask = p.mask ? (const half *) (p.mask + (seq % p.mask_ne3) * p.nbm3) : nullptr;

    tq_fa_v<TV> vr[UPL];
#pragma unroll
    for (int u = 0; u < UPL; ++u) {
        vr[u].init(KPS > 1 ? lane % UNITS : lane + 32 * u);
    }
    const int koff = KPS > 1 ? lane / UNITS : 0;

    float M[NC], L[NC], acc[NC][VPL];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        M[c] = -INFINITY;
        L[c] = 0.0f;
#pragma unroll
        for (int v = 0; v < VPL; ++v) {
            acc[c][v] = 0.0f;
        }
    }
    float * Pw = P[warp];

    const int kv0 = split * p.kv_per_split;
    const int kv1 = min(p.n_kv, kv0 + p.kv_per_split);
    __syncthreads();

    for (int t0 = kv0 + 32 * warp; t0 < kv1; t0 += 32 * TQ_FA_WARPS) {
        const int k = t0 + lane;
        float s[NC];
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            s[c] = 0.0f;
        }
        if (k < kv1) {
            // the V rows of this tile into L1 now (the V phase reads them a key at a time), and
            // the K row of this lane's next tile into L2
            tq_prefetch_l1(V + (int64_t) k * p.nbv1);
            if (k + 32 * TQ_FA_WARPS < kv1) {
                tq_prefetch_l2(K + (int64_t) (k + 32 * TQ_FA_WARPS) * p.nbk1);
            }
            const char * row = K + (int64_t) k * p.nbk1;
#pragma unroll
            for (int b = 0; b < D / TQ_BLOCK; ++b) {
                tq_fa_k<TK>::template dot<NC>(row, b, lut_k, Qt, s);
            }
        }
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            float v = -INFINITY;
            if (k < kv1 && c < p.ncols) {
                v = s[c] * p.scale;
                if (p.softcap != 0.0f) {
                    v = p.softcap * tanhf(v);
                }
                if (mask) {
                    v += __half2float(mask[(int64_t) (c / p.gqa) * p.nbm1 / 2 + k]);
                }
            }
            const float m_new = fmaxf(M[c], tq_warp_max(v));
            const float e = m_new == -INFINITY ? 0.0f : __expf(v - m_new);
            const float alpha = m_new == -INFINITY ? 1.0f : __expf(M[c] - m_new);
            L[c] = L[c] * alpha + tq_warp_add(e);
            M[c] = m_new;
#pragma unroll
            for (int v2 = 0; v2 < VPL; ++v2) {
                acc[c][v2] *= alpha;
            }
            Pw[lane * NC + c] = e;
        }
        __syncwarp();

        const int nt = min(32, kv1 - t0);
#pragma unroll 4
        for (int i = koff; i < nt; i += KPS) {
            const char * row = V + (int64_t) (t0 + i) * p.nbv1;
            float x[VPL];
#pragma unroll
            for (int u = 0; u < UPL; ++u) {
                vr[u].read(row, lut_v, x + 4 * u);
            }
            float w[NC];
            if constexpr (NC % 4 == 0) {
#pragma unroll
                for (int c = 0; c < NC; c += 4) {
                    const float4 w4 = *(const float4 *) (Pw + i * NC + c);
                    w[c] = w4.x; w[c + 1] = w4.y; w[c + 2] = w4.z; w[c + 3] = w4.w;
                }
            } else {
                const float2 w2 = *(const float2 *) (Pw + i * NC);
                w[0] = w2.x; w[1] = w2.y;
            }
#pragma unroll
            for (int c = 0; c < NC; ++c) {
#pragma unroll
                for (int v = 0; v < VPL; ++v) {
                    acc[c][v] = fmaf(w[c], x[v], acc[c][v]);
                }
            }
        }
        __syncwarp();
    }

    // head 64: lanes l and l + 16 hold the same dims for odd and even keys
    if constexpr (KPS > 1) {
#pragma unroll
        for (int c = 0; c < NC; ++c) {
#pragma unroll
            for (int v = 0; v < VPL; ++v) {
                acc[c][v] += __shfl_xor_sync(0xffffffff, acc[c][v], 16);
            }
        }
    }
    if (koff == 0) {
#pragma unroll
        for (int u = 0; u < UPL; ++u) {
            const int unit = KPS > 1 ? lane : lane + 32 * u;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const int d = (unit / 16) * TQ_BLOCK + tq_unit_slot(unit % 16, k);
#pragma unroll
                for (int c = 0; c < NC; ++c) {
                    Ow[warp][c][d] = acc[c][4 * u + k];
                }
            }
        }
    }
    if (lane == 0) { // M and L are the same in every lane of the warp
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            Mw[warp][c] = M[c];
            Lw[warp][c] = L[c];
        }
    }
    __syncthreads();

    // merge the four warps and write this split's unnormalized result and (max, sum)
    for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
        const int c = i / D, d = i % D;
        if (c >= p.ncols) {
            continue;
        }
        float m = -INFINITY;
#pragma unroll
        for (int w = 0; w < TQ_FA_WARPS; ++w) {
            m = fmaxf(m, Mw[w][c]);
        }
        float o = 0.0f, l = 0.0f;
#pragma unroll
        for (int w = 0; w < TQ_FA_WARPS; ++w) {
            const float f = Mw[w][c] == -INFINITY ? 0.0f : __expf(Mw[w][c] - m);
            o += f * Ow[w][c][d];
            l += f * Lw[w][c];
        }
        const int j = c / p.gqa, head = hkv * p.gqa + c % p.gqa;
        const int64_t r = ((int64_t) seq * p.n_q + j) * p.n_head + head;
        p.part[(r * p.n_splits + split) * D + d] = o;
        if (d == 0) {
            p.meta[r * p.n_splits + split] = make_float2(m, l);
        }
    }
}

template <int D, ggml_type TK, ggml_type TV, int NC>
static int tq_fattn_launch_nc(tq_fa_params p, int n_seq, int nsm, int max_splits, cudaStream_t stream) {
    // one full wave: as many blocks as the SMs hold at once, split evenly over heads and sequences
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_tq_fattn_decode<D, TK, TV, NC>, TQ_FA_THREADS, 0));
    const int tiles = (p.n_kv + TQ_FA_TILE - 1) / TQ_FA_TILE;
    int splits = std::max(1, std::min({ tiles, max_splits, std::max(1, per_sm) * nsm / (p.n_head_kv * n_seq) }));
    p.kv_per_split = ((tiles + splits - 1) / splits) * TQ_FA_TILE;
    p.n_splits = (p.n_kv + p.kv_per_split - 1) / p.kv_per_split;
    const dim3 grid(p.n_head_kv, p.n_splits, n_seq);
    k_tq_fattn_decode<D, TK, TV, NC><<<grid, TQ_FA_THREADS, 0, stream>>>(p);
    return p.n_splits;
}

template <int D, ggml_type TK, ggml_type TV>
int ggml_cuda_tq_fattn_launch(tq_fa_params p, int n_seq, int nsm, int max_splits, cudaStream_t stream) {
    if (p.ncols <= 2) {
        return tq_fattn_launch_nc<D, TK, TV, 2>(p, n_seq, nsm, max_splits, stream);
    }
    if (p.ncols <= 4) {
        return tq_fattn_launch_nc<D, TK, TV, 4>(p, n_seq, nsm, max_splits, stream);
    }
    return tq_fattn_launch_nc<D, TK, TV, 8>(p, n_seq, nsm, max_splits, stream);
}

#define TQ_FA_DECL(D, TK, TV) template int ggml_cuda_tq_fattn_launch<D, TK, TV>(tq_fa_params, int, int, int, cudaStream_t);
#define TQ_FA_DECL_ALL_D(TK, TV) TQ_FA_DECL(64, TK, TV) TQ_FA_DECL(128, TK, TV) TQ_FA_DECL(256, TK, TV)

#endif // TQ_FA_DEFINE_KERNELS
