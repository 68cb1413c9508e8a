// Flash attention at decode over a KV cache with TQ K and/or V (mixed pairs with f16 / q8_0).
//
// Why a kernel of its own: upstream's vector kernel runs one query head per block, so with
// grouped-query attention every head of a group re-reads and re-decodes the same K/V rows.
// Here a block owns one KV head and a slice of the KV length, and the "columns" it computes
// are all (query token, query head) pairs that read that KV head: each K and V row is read
// from memory and decoded once per block, then used by every column.
//
//   grid  (n_head_kv, n_splits, n_seq)   block 128 threads = 4 warps
//   K phase: thread t scores key t of a 128-key tile against all columns (Q in shared memory)
//   softmax: online, per column, one warp per column
//   V phase: warp w takes every 4th key of the tile, lane l the dims [l*D/32, (l+1)*D/32)
// Each block writes unnormalized partial outputs and (max, sum) per column; a second kernel
// merges the splits.
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
};

// Launches the decode kernel over as many splits of the KV length as fill the GPU once
// (at most max_splits); returns the number of splits, which p.part / p.meta must hold.
template <int D, ggml_type TK, ggml_type TV>
int ggml_cuda_tq_fattn_launch(tq_fa_params p, int n_seq, int nsm, int max_splits, cudaStream_t stream);

// The kernels themselves are compiled only in the instance files tq-fattn-k-*.cu.
#ifdef TQ_FA_DEFINE_KERNELS

// ---- readers: K phase gets 64 values of a row at once, V phase a lane's D/32 values ----------

template <ggml_type T> struct tq_fa_reader {
    static constexpr int bytes = tq_layout<T>::bytes;
    static __device__ __forceinline__ void block64(const char * row, int b, const float (*lut)[16], float * out) {
        tq_block_values<T>((const uint8_t *) row + b * bytes, lut, out);
    }
    template <int n> struct dims {
        tq_slot s[n];
        int off, hi;
        __device__ __forceinline__ void init(int d0) {
            off = (d0 / TQ_BLOCK) * bytes;
#pragma unroll
            for (int v = 0; v < n; ++v) {
                s[v] = tq_slot_of<T>(d0 % TQ_BLOCK + v);
            }
            hi = s[0].hi; // n divides 16: a lane's dims lie in one group
        }
        __device__ __forceinline__ void read(const char * row, const float (*lut)[16], float * out) const {
            const uint8_t * blk = (const uint8_t *) row + off;
            const float d = tq_scale_at(blk, hi);
            const float * c = lut[hi ? 0 : 1];
#pragma unroll
            for (int v = 0; v < n; ++v) {
                out[v] = d * c[tq_code_at(blk, s[v])];
            }
        }
    };
};

template <> struct tq_fa_reader<GGML_TYPE_F16> {
    static __device__ __forceinline__ void block64(const char * row, int b, const float (*)[16], float * out) {
        const float4 * p = (const float4 *) (row + b * TQ_BLOCK * 2);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float4 raw = p[i];
            const half2 * h = (const half2 *) &raw;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float2 f = __half22float2(h[k]);
                out[8 * i + 2 * k] = f.x;
                out[8 * i + 2 * k + 1] = f.y;
            }
        }
    }
    template <int n> struct dims {
        int off;
        __device__ __forceinline__ void init(int d0) { off = d0 * 2; }
        __device__ __forceinline__ void read(const char * row, const float (*)[16], float * out) const {
            const half2 * h = (const half2 *) (row + off);
#pragma unroll
            for (int v = 0; v < n / 2; ++v) {
                const float2 f = __half22float2(h[v]);
                out[2 * v] = f.x;
                out[2 * v + 1] = f.y;
            }
        }
    };
};

template <> struct tq_fa_reader<GGML_TYPE_Q8_0> {
    static __device__ __forceinline__ void block64(const char * row, int b, const float (*)[16], float * out) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const block_q8_0 * q = (const block_q8_0 *) row + 2 * b + h;
            const float d = __half2float(q->d);
#pragma unroll
            for (int i = 0; i < QK8_0; ++i) {
                out[QK8_0 * h + i] = d * q->qs[i];
            }
        }
    }
    template <int n> struct dims {
        int blk, idx;
        __device__ __forceinline__ void init(int d0) { blk = d0 / QK8_0; idx = d0 % QK8_0; }
        __device__ __forceinline__ void read(const char * row, const float (*)[16], float * out) const {
            const block_q8_0 * q = (const block_q8_0 *) row + blk;
            const float d = __half2float(q->d);
#pragma unroll
            for (int v = 0; v < n; ++v) {
                out[v] = d * q->qs[idx + v];
            }
        }
    };
};


template <int D, ggml_type TK, ggml_type TV, int NC>
__launch_bounds__(TQ_FA_THREADS, 2)
static __global__ void k_tq_fattn_decode(const tq_fa_params p) {
    constexpr int VPT = D / 32;
    __shared__ float Qs[NC][D];
    __shared__ float S[NC][TQ_FA_TILE];
    __shared__ float lut_k[2][16], lut_v[2][16];
    __shared__ float M_s[NC], L_s[NC], alpha_s[NC];
    __shared__ float comb[TQ_FA_WARPS][NC][D];

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int hkv = blockIdx.x, split = blockIdx.y, seq = blockIdx.z;

    if (tid < 32) {
        lut_k[tid / 16][tid % 16] = p.lut_k.c[tid / 16][tid % 16];
        lut_v[tid / 16][tid % 16] = p.lut_v.c[tid / 16][tid % 16];
    }
    // column c = (query token j, head hkv*gqa + g) with j = c / gqa, g = c % gqa
    for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
        const int c = i / D, d = i % D;
        float q = 0.0f;
        if (c < p.ncols) {
            const int j = c / p.gqa, head = hkv * p.gqa + c % p.gqa;
            q = ((const float *) (p.Q + seq * p.nbq3 + head * p.nbq2 + j * p.nbq1))[d];
        }
        Qs[c][d] = q;
    }
    if (tid < NC) {
        M_s[tid] = -INFINITY;
        L_s[tid] = 0.0f;
    }

    const char * K = p.K + (seq % p.k_ne3) * p.nbk3 + hkv * p.nbk2;
    const char * V = p.V + (seq % p.v_ne3) * p.nbv3 + hkv * p.nbv2;
    const half * mask = p.mask ? (const half *) (p.mask + (seq % p.mask_ne3) * p.nbm3) : nullptr;

    float acc[NC][VPT];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
#pragma unroll
        for (int v = 0; v < VPT; ++v) {
            acc[c][v] = 0.0f;
        }
    }
    typename tq_fa_reader<TV>::template dims<VPT> vr;
    vr.init(lane * VPT);

    const int kv0 = split * p.kv_per_split;
    const int kv1 = min(p.n_kv, kv0 + p.kv_per_split);
    __syncthreads();

    for (int t0 = kv0; t0 < kv1; t0 += TQ_FA_TILE) {
        const int nt = min(TQ_FA_TILE, kv1 - t0);

        // K phase: scores of key t0 + tid for every column
        {
            float s[NC];
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                s[c] = 0.0f;
            }
            const int k = t0 + tid;
            if (tid < nt) {
                const char * row = K + (int64_t) k * p.nbk1;
#pragma unroll
                for (int b = 0; b < D / TQ_BLOCK; ++b) {
                    float x[TQ_BLOCK];
                    tq_fa_reader<TK>::block64(row, b, lut_k, x);
#pragma unroll
                    for (int i = 0; i < TQ_BLOCK; ++i) {
#pragma unroll
                        for (int c = 0; c < NC; ++c) {
                            s[c] = fmaf(x[i], Qs[c][b * TQ_BLOCK + i], s[c]);
                        }
                    }
                }
            }
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                float v = -INFINITY;
                if (tid < nt && c < p.ncols) {
                    v = s[c] * p.scale;
                    if (p.softcap != 0.0f) {
                        v = p.softcap * tanhf(v);
                    }
                    if (mask) {
                        v += __half2float(mask[(int64_t) (c / p.gqa) * p.nbm1 / 2 + k]);
                    }
                }
                S[c][tid] = v;
            }
        }
        __syncthreads();

        // online softmax: warp w owns columns w, w + 4, ...
        for (int c = warp; c < NC; c += TQ_FA_WARPS) {
            float m = -INFINITY;
#pragma unroll
            for (int i = lane; i < TQ_FA_TILE; i += 32) {
                m = fmaxf(m, S[c][i]);
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
            }
            const float m_old = M_s[c];
            const float m_new = fmaxf(m_old, m);
            float sum = 0.0f;
#pragma unroll
            for (int i = lane; i < TQ_FA_TILE; i += 32) {
                const float e = m_new == -INFINITY ? 0.0f : __expf(S[c][i] - m_new);
                S[c][i] = e;
                sum += e;
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                sum += __shfl_xor_sync(0xffffffff, sum, o);
            }
            __syncwarp();
            if (lane == 0) {
                const float a = m_new == -INFINITY ? 1.0f : __expf(m_old - m_new);
                alpha_s[c] = a;
                L_s[c] = L_s[c] * a + sum;
                M_s[c] = m_new;
            }
        }
        __syncthreads();

        // V phase
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const float a = alpha_s[c];
#pragma unroll
            for (int v = 0; v < VPT; ++v) {
                acc[c][v] *= a;
            }
        }
#pragma unroll 4
        for (int i = warp; i < nt; i += TQ_FA_WARPS) {
            float x[VPT];
            vr.read(V + (int64_t) (t0 + i) * p.nbv1, lut_v, x);
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const float w = S[c][i];
#pragma unroll
                for (int v = 0; v < VPT; ++v) {
                    acc[c][v] = fmaf(w, x[v], acc[c][v]);
                }
            }
        }
        __syncthreads();
    }

    // merge the four warps' partial sums and write this split's result
#pragma unroll
    for (int c = 0; c < NC; ++c) {
#pragma unroll
        for (int v = 0; v < VPT; ++v) {
            comb[warp][c][lane * VPT + v] = acc[c][v];
        }
    }
    __syncthreads();
    for (int i = tid; i < NC * D; i += TQ_FA_THREADS) {
        const int c = i / D, d = i % D;
        if (c >= p.ncols) {
            continue;
        }
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < TQ_FA_WARPS; ++w) {
            o += comb[w][c][d];
        }
        const int j = c / p.gqa, head = hkv * p.gqa + c % p.gqa;
        const int64_t r = ((int64_t) seq * p.n_q + j) * p.n_head + head;
        p.part[(r * p.n_splits + split) * D + d] = o;
        if (d == 0) {
            p.meta[r * p.n_splits + split] = make_float2(M_s[c], L_s[c]);
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
