#include "llama-tq.h"

#include "llama-model.h"
#include "llama.h"

#include "ggml-tq.h"
#include "gguf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

static const char * TQ_FIX = "run `tqgguf prepare` on the model first";
// Format 3 adds the optional preconditioners; format 2 files (without them) still load.
static const uint32_t TQ_FORMAT_VERSION = 3;
static const uint32_t TQ_FORMAT_VERSION_MIN = 2;
// A K center beyond f16's range cannot be the mean of keys that an f16 cache could hold.
static const float TQ_K_CENTER_MAX = 65504.0f;
// A preconditioner entry beyond this, or a P P^-1 further than this from the identity, is corrupt
// (prepare's are well conditioned and computed in double).
static const float  TQ_PRECOND_MAX = 1.0e4f;
static const double TQ_PRECOND_INV_TOL = 1.0e-3;

namespace {

struct tq_reader {
    const gguf_context * ctx;

    int64_t find(const std::string & key) const {
        const int64_t id = gguf_find_key(ctx, key.c_str());
        if (id < 0) {
            throw std::runtime_error(key + " is missing");
        }
        return id;
    }

    uint32_t u32(const std::string & key) const {
        const int64_t id = find(key);
        if (gguf_get_kv_type(ctx, id) != GGUF_TYPE_UINT32) throw std::runtime_error(key + " has the wrong type (expected UINT32)");
        return gguf_get_val_u32(ctx, id);
    }

    uint64_t u64(const std::string & key) const {
        const int64_t id = find(key);
        if (gguf_get_kv_type(ctx, id) != GGUF_TYPE_UINT64) throw std::runtime_error(key + " has the wrong type (expected UINT64)");
        return gguf_get_val_u64(ctx, id);
    }

    std::string str(const std::string & key) const {
        const int64_t id = find(key);
        if (gguf_get_kv_type(ctx, id) != GGUF_TYPE_STRING) throw std::runtime_error(key + " has the wrong type (expected STRING)");
        return gguf_get_val_str(ctx, id);
    }

    template <typename T>
    std::vector<T> arr(const std::string & key, gguf_type elem, size_t n) const {
        const int64_t id = find(key);
        if (gguf_get_kv_type(ctx, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(ctx, id) != elem) {
            throw std::runtime_error(key + " has the wrong type");
        }
        if (gguf_get_arr_n(ctx, id) != n) {
            throw std::runtime_error(key + " has " + std::to_string(gguf_get_arr_n(ctx, id)) + " elements, expected " + std::to_string(n));
        }
        const T * p = (const T *) gguf_get_arr_data(ctx, id);
        return std::vector<T>(p, p + n);
    }

    std::vector<std::string> strs(const std::string & key) const {
        const int64_t id = find(key);
        if (gguf_get_kv_type(ctx, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(ctx, id) != GGUF_TYPE_STRING) {
            throw std::runtime_error(key + " has the wrong type");
        }
        std::vector<std::string> out;
        for (size_t i = 0; i < gguf_get_arr_n(ctx, id) && i < 16; ++i) {
            out.emplace_back(gguf_get_arr_str(ctx, id, i));
        }
        return out;
    }
};

const char * kind_name(int kind) { return kind == 0 ? "k" : "v"; }

// FNV-1a 64 over GGUF records as they stand in the file (tqgguf/metadata.py's checksum())
struct fnv1a64 {
    uint64_t h = 0xcbf29ce484222325ull;
    void bytes(const void * p, size_t n) {
        for (size_t i = 0; i < n; ++i) {
            h = (h ^ ((const uint8_t *) p)[i]) * 0x100000001b3ull;
        }
    }
    template <typename T> void le(T v) { bytes(&v, sizeof(v)); } // GGUF is little-endian, as are ggml's hosts
    void str(const char * s) { const size_t n = strlen(s); le<uint64_t>(n); bytes(s, n); }
};

size_t scalar_size(gguf_type t) {
    switch (t) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
        case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
        case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
        default: return 0;
    }
}

// The record of key `id` (key, type, value) in GGUF's encoding.
void hash_record(fnv1a64 & f, const gguf_context * ctx, int64_t id) {
    f.str(gguf_get_key(ctx, id));
    const gguf_type t = gguf_get_kv_type(ctx, id);
    f.le<uint32_t>(t);
    if (t == GGUF_TYPE_STRING) {
        f.str(gguf_get_val_str(ctx, id));
    } else if (t == GGUF_TYPE_ARRAY) {
        const gguf_type et = gguf_get_arr_type(ctx, id);
        const size_t n = gguf_get_arr_n(ctx, id);
        f.le<uint32_t>(et);
        f.le<uint64_t>(n);
        if (et == GGUF_TYPE_STRING) {
            for (size_t i = 0; i < n; ++i) {
                f.str(gguf_get_arr_str(ctx, id, i));
            }
        } else if (et == GGUF_TYPE_ARRAY) {
            throw std::runtime_error(std::string(gguf_get_key(ctx, id)) + " is an array of arrays");
        } else {
            f.bytes(gguf_get_arr_data(ctx, id), n * scalar_size(et));
        }
    } else {
        f.bytes(gguf_get_val_data(ctx, id), scalar_size(t));
    }
}

} // namespace

void llama_tq_meta::load(const gguf_context * ctx) {
    present = false;
    error.clear();
    const int64_t n_kv = gguf_get_n_kv(ctx);
    for (int64_t i = 0; i < n_kv && !present; ++i) {
        present = std::string(gguf_get_key(ctx, i)).rfind("turboquant.", 0) == 0;
    }
    if (!present) {
        error = "the model has no turboquant.* metadata";
        return;
    }
    const tq_reader r{ctx};
    try {
        const uint32_t version = r.u32("turboquant.format_version");
        if (version < TQ_FORMAT_VERSION_MIN || version > TQ_FORMAT_VERSION) {
            throw std::runtime_error("turboquant.format_version is " + std::to_string(version) + ", this build reads " +
                                     std::to_string(TQ_FORMAT_VERSION_MIN) + " to " + std::to_string(TQ_FORMAT_VERSION));
        }
        if (r.u32("turboquant.block_size") != GGML_TQ_BLOCK || r.u32("turboquant.block_hi") != GGML_TQ_HI) {
            throw std::runtime_error("turboquant.block_size/block_hi do not match this build's TQ blocks");
        }
        // the seal: every other turboquant.* record, sorted by key, as prepare wrote it
        checksum = r.u64("turboquant.checksum");
        std::vector<std::pair<std::string, int64_t>> recs;
        for (int64_t i = 0; i < gguf_get_n_kv(ctx); ++i) {
            const std::string key = gguf_get_key(ctx, i);
            if (key.rfind("turboquant.", 0) == 0 && key != "turboquant.checksum") {
                recs.emplace_back(key, i);
            }
        }
        std::sort(recs.begin(), recs.end());
        fnv1a64 f;
        for (const auto & [key, id] : recs) {
            hash_record(f, ctx, id);
        }
        if (f.h != checksum) {
            throw std::runtime_error("turboquant.checksum does not match the turboquant.* records: the metadata was "
                                     "changed after `tqgguf prepare`");
        }
        types = r.strs("turboquant.types");
        n_layer   = r.u32("turboquant.layer_count");
        n_kv_head = r.u32("turboquant.kv_head_count");
        if (n_layer == 0 || n_layer > 4096 || n_kv_head == 0 || n_kv_head > 4096) {
            throw std::runtime_error("turboquant.layer_count or turboquant.kv_head_count is out of range");
        }
        for (int kind = 0; kind < 2; ++kind) {
            const std::string p = std::string("turboquant.") + kind_name(kind) + ".";
            const uint32_t d = r.u32(p + "head_dim");
            if (d == 0 || d > 1024 || d % GGML_TQ_BLOCK != 0) {
                throw std::runtime_error(p + "head_dim is " + std::to_string(d) + ", not a multiple of 64 up to 1024");
            }
            head_dim[kind] = d;
            layer_seeds[kind] = r.arr<uint64_t>(p + "layer_seeds", GGUF_TYPE_UINT64, n_layer);
            const uint32_t n_hi = d / 4;
            outliers[kind] = r.arr<int32_t>(p + "outliers", GGUF_TYPE_INT32, (size_t) n_layer * n_kv_head * n_hi);
            for (size_t h = 0; h < (size_t) n_layer * n_kv_head; ++h) {
                for (uint32_t i = 0; i < n_hi; ++i) {
                    const int32_t c = outliers[kind][h * n_hi + i];
                    if (c < 0 || c >= (int32_t) d || (i > 0 && c <= outliers[kind][h * n_hi + i - 1])) {
                        throw std::runtime_error(p + "outliers: each head's channels must be sorted, distinct and inside the head");
                    }
                }
            }
        }
        for (const std::string & t : types) {
            const ggml_type type = t == "tq2_5" ? GGML_TYPE_TQ2_5 : t == "tq3_5" ? GGML_TYPE_TQ3_5 : GGML_TYPE_COUNT;
            if (type == GGML_TYPE_COUNT) {
                throw std::runtime_error("turboquant.types names an unknown type '" + t + "'");
            }
            const auto bits = r.arr<uint32_t>("turboquant." + t + ".bits", GGUF_TYPE_UINT32, 2);
            if ((int) bits[0] != ggml_tq_bits(type, true) || (int) bits[1] != ggml_tq_bits(type, false)) {
                throw std::runtime_error("turboquant." + t + ".bits does not match the " + t + " block layout");
            }
        }
        if (gguf_find_key(ctx, "turboquant.calibration_positions") >= 0) {
            calibration_positions = r.u32("turboquant.calibration_positions");
        }
        if (gguf_find_key(ctx, "turboquant.k.exact_tokens") >= 0) {
            k_exact_tokens = r.u32("turboquant.k.exact_tokens");
            // more would be a second cache, not a sink (metadata.py: K_EXACT_MAX)
            if (k_exact_tokens > GGML_TQ_K_EXACT_MAX) {
                throw std::runtime_error("turboquant.k.exact_tokens must be at most " + std::to_string(GGML_TQ_K_EXACT_MAX));
            }
        }
        if (gguf_find_key(ctx, "turboquant.window_tokens") >= 0) {
            window_tokens = r.u32("turboquant.window_tokens");
            // a longer window is a second cache (metadata.py: WINDOW_MAX)
            if (window_tokens > GGML_TQ_WINDOW_MAX) {
                throw std::runtime_error("turboquant.window_tokens must be at most " + std::to_string(GGML_TQ_WINDOW_MAX));
            }
        }
        if (gguf_find_key(ctx, "turboquant.k.center") >= 0) {
            k_center = r.arr<float>("turboquant.k.center", GGUF_TYPE_FLOAT32, (size_t) n_layer * n_kv_head * head_dim[0]);
            for (const float c : k_center) {
                if (!std::isfinite(c) || std::fabs(c) > TQ_K_CENTER_MAX) {
                    throw std::runtime_error("turboquant.k.center must be finite and within f16's range");
                }
            }
        }
        for (int kind = 0; kind < 2; ++kind) {
            const std::string p = std::string("turboquant.") + kind_name(kind) + ".precond";
            const bool has = gguf_find_key(ctx, p.c_str()) >= 0, has_inv = gguf_find_key(ctx, (p + "_inv").c_str()) >= 0;
            if (has != has_inv) {
                throw std::runtime_error(p + " and " + p + "_inv come together");
            }
            if (!has) {
                continue;
            }
            if (version < 3) {
                throw std::runtime_error(p + " needs turboquant.format_version 3");
            }
            const uint32_t d = head_dim[kind];
            const size_t n = (size_t) n_layer * n_kv_head * d * d;
            precond[kind]     = r.arr<float>(p, GGUF_TYPE_FLOAT32, n);
            precond_inv[kind] = r.arr<float>(p + "_inv", GGUF_TYPE_FLOAT32, n);
            for (size_t i = 0; i < n; ++i) {
                if (!std::isfinite(precond[kind][i]) || !std::isfinite(precond_inv[kind][i]) ||
                    std::fabs(precond[kind][i]) > TQ_PRECOND_MAX || std::fabs(precond_inv[kind][i]) > TQ_PRECOND_MAX) {
                    throw std::runtime_error(p + " and " + p + "_inv must be finite and below 1e4");
                }
            }
            for (size_t h = 0; h < (size_t) n_layer * n_kv_head; ++h) {
                const float * a = precond[kind].data() + h * d * d;
                const float * b = precond_inv[kind].data() + h * d * d;
                for (uint32_t i = 0; i < d; ++i) {
                    for (uint32_t j = 0; j < d; ++j) {
                        double acc = 0.0;
                        for (uint32_t k = 0; k < d; ++k) {
                            acc += (double) a[(size_t) i * d + k] * b[(size_t) k * d + j];
                        }
                        if (std::fabs(acc - (i == j ? 1.0 : 0.0)) > TQ_PRECOND_INV_TOL) {
                            throw std::runtime_error(p + "_inv is not the inverse of " + p + " (layer " +
                                                     std::to_string(h / n_kv_head) + ", head " + std::to_string(h % n_kv_head) + ")");
                        }
                    }
                }
            }
        }
    } catch (const std::exception & e) {
        error = e.what();
    }
}

void llama_tq_meta::require(ggml_type type_k, ggml_type type_v, uint32_t n_layer_model, uint32_t n_kv_head_model,
                            uint32_t head_dim_k, uint32_t head_dim_v) const {
    const std::string what = std::string("a ") + ggml_type_name(ggml_tq_is_tq(type_k) ? type_k : type_v) + " KV cache";
    if (!error.empty()) {
        throw std::runtime_error(what + " needs the model's TurboQuant metadata, but " + error + ": " + TQ_FIX);
    }
    if (n_layer != n_layer_model || n_kv_head != n_kv_head_model) {
        throw std::runtime_error(what + ": the TurboQuant metadata was made for " + std::to_string(n_layer) + " layers x " +
                                 std::to_string(n_kv_head) + " KV heads, the model has " + std::to_string(n_layer_model) + " x " +
                                 std::to_string(n_kv_head_model) + ": " + TQ_FIX);
    }
    const ggml_type kinds[2] = {type_k, type_v};
    const uint32_t dims[2] = {head_dim_k, head_dim_v};
    for (int kind = 0; kind < 2; ++kind) {
        const ggml_type t = kinds[kind];
        if (!ggml_tq_is_tq(t)) {
            continue;
        }
        if (head_dim[kind] != dims[kind]) {
            throw std::runtime_error(what + ": the TurboQuant metadata is for " + kind_name(kind) + " heads of " +
                                     std::to_string(head_dim[kind]) + ", the model's are " + std::to_string(dims[kind]) + ": " + TQ_FIX);
        }
        bool prepared = false;
        for (const auto & name : types) prepared |= name == ggml_type_name(t);
        if (!prepared) {
            throw std::runtime_error(what + ": the model was not prepared for " + ggml_type_name(t) + ": " + TQ_FIX +
                                     " (with --types including " + ggml_type_name(t) + ")");
        }
    }
}

std::vector<float> llama_tq_meta::transforms(uint32_t il, int kind, bool inverse) const {
    const int kv = kind == 1 ? 1 : 0; // Q shares K's rotation and outliers
    const uint32_t d = head_dim[kv];
    const uint32_t n_hi = d / 4;
    const bool pre = !precond[kv].empty();
    std::vector<float> out((size_t) d * d * n_kv_head);
    std::vector<float> t((size_t) d * d);
    std::vector<double> a((size_t) d * d);
    for (uint32_t h = 0; h < n_kv_head; ++h) {
        const int32_t * o = outliers[kv].data() + ((size_t) il * n_kv_head + h) * n_hi;
        if (!ggml_tq_head_transform(t.data(), (int) d, layer_seeds[kv][il], (int) h, o)) {
            throw std::runtime_error("TurboQuant: cannot build the transform of layer " + std::to_string(il) + ": " + TQ_FIX);
        }
        const size_t off = ((size_t) il * n_kv_head + h) * d * d;
        const float * P  = pre ? precond[kv].data() + off : nullptr;
        const float * Pi = pre ? precond_inv[kv].data() + off : nullptr;
        // a[i][k], the matrix of y = A x: T P, P^-1 T^T, or T P^-T for Q (identity P: T, T^T, T)
        for (uint32_t i = 0; i < d; ++i) {
            for (uint32_t k = 0; k < d; ++k) {
                double acc = 0.0;
                if (!pre) {
                    acc = inverse ? t[(size_t) k * d + i] : t[(size_t) i * d + k];
                } else if (inverse) {
                    for (uint32_t j = 0; j < d; ++j) acc += (double) Pi[(size_t) i * d + j] * t[(size_t) k * d + j];
                } else if (kind == 2) {
                    for (uint32_t j = 0; j < d; ++j) acc += (double) t[(size_t) i * d + j] * Pi[(size_t) k * d + j];
                } else {
                    for (uint32_t j = 0; j < d; ++j) acc += (double) t[(size_t) i * d + j] * P[(size_t) j * d + k];
                }
                a[(size_t) i * d + k] = acc;
            }
        }
        // ggml_mul_mat(A, x) computes y[i] = sum_k A[i*d + k] x[k]: A row-major. Rounded to f16,
        // as the cache keeps them: K's centering offset must come from the matrix the graph
        // applies, or the rounding of T mu, large beside the centered rows, lands in the cache.
        float * dst = out.data() + (size_t) h * d * d;
        for (size_t i = 0; i < (size_t) d * d; ++i) {
            dst[i] = ggml_fp16_to_fp32(ggml_fp32_to_fp16((float) a[i]));
        }
    }
    return out;
}

std::vector<float> llama_tq_meta::k_offset(uint32_t il) const {
    if (k_center.empty()) {
        return {};
    }
    const uint32_t d = head_dim[0];
    const std::vector<float> T = transforms(il, 0, false);
    std::vector<float> out((size_t) d * n_kv_head);
    for (uint32_t h = 0; h < n_kv_head; ++h) {
        const float * mu = k_center.data() + ((size_t) il * n_kv_head + h) * d;
        for (uint32_t i = 0; i < d; ++i) {
            double acc = 0.0;
            for (uint32_t k = 0; k < d; ++k) {
                acc += (double) T[((size_t) h * d + i) * d + k] * mu[k];
            }
            out[(size_t) h * d + i] = (float) -acc;
        }
    }
    return out;
}

ggml_tensor * llama_tq_apply(ggml_context * ctx, ggml_tensor * x, ggml_tensor * T) {
    const int64_t d = T->ne[0];
    // [d, n_head, n_tokens] (Q/K/V) or [d*n_head, n_tokens] (the attention output)
    const int64_t n_head = x->ne[0] == d ? x->ne[1] : x->ne[0] / d;
    const int64_t n_tokens = ggml_nelements(x) / (d * n_head);
    // T [d, d, n_kv_head] broadcasts over the heads that share it (h -> h / (n_head / n_kv_head),
    // as attention maps them)
    if (n_tokens == 1) {
        ggml_tensor * y = ggml_is_contiguous(x) ? x : ggml_cont(ctx, x);
        // hinted: a backend may fuse this product into its consumer (ggml-cuda/turboquant/tq-fuse.cu)
        y = ggml_mul_mat(ctx, T, ggml_reshape_3d(ctx, y, d, 1, n_head));
        ggml_mul_mat_set_hint(y, GGML_HINT_SRC0_IS_TQ_TRANSFORM);
        return ggml_reshape(ctx, y, x);
    }
    // Several tokens: one [d, d] x [d, n_tokens] product per head, the tokens as its columns,
    // read through a strided view of the heads (no copy in): x as [d, n_tokens, r, n_kv_head]
    // against T as [d, d, 1, n_kv_head]. The product comes out token-major per head; the copy
    // back into [d, n_head, n_tokens] is what a backend may fold into the product (tq-fuse.cu).
    ggml_tensor * x3 = x;
    if (x->ne[0] != d || x->nb[0] != ggml_type_size(x->type)) {
        x3 = ggml_reshape_3d(ctx, ggml_is_contiguous(x) ? x : ggml_cont(ctx, x), d, n_head, n_tokens);
    }
    const int64_t n_kv = T->ne[2], r = n_head / n_kv;
    ggml_tensor * xv = ggml_view_4d(ctx, x3, d, n_tokens, r, n_kv, x3->nb[2], x3->nb[1], r * x3->nb[1], 0);
    ggml_tensor * y = ggml_mul_mat(ctx, ggml_reshape_4d(ctx, T, d, d, 1, n_kv), xv); // [d, n_tokens, r, n_kv]
    ggml_mul_mat_set_hint(y, GGML_HINT_SRC0_IS_TQ_TRANSFORM);
    y = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, y, d, n_tokens, n_head), 0, 2, 1, 3)); // [d, n_head, n_tokens]
    return ggml_reshape(ctx, y, x);
}

void llama_tq_require(const llama_model & model, ggml_type type_k, ggml_type type_v) {
    const llama_hparams & hp = model.hparams;
    if (hp.is_mla()) {
        throw std::runtime_error(std::string(ggml_type_name(ggml_tq_is_tq(type_k) ? type_k : type_v)) +
                                 " KV cache: MLA attention is not supported by TQ caches");
    }
    model.tq.require(type_k, type_v, hp.n_layer_all, hp.n_head_kv(0), hp.n_embd_head_k(0), hp.n_embd_head_v(0));
    for (uint32_t il = 0; il < hp.n_layer_all; ++il) {
        if (hp.has_kv(il) && (hp.n_head_kv(il) != hp.n_head_kv(0) || hp.n_embd_head_k(il) != hp.n_embd_head_k(0) ||
                              hp.n_embd_head_v(il) != hp.n_embd_head_v(0))) {
            throw std::runtime_error("TQ KV caches need the same head count and head sizes in every layer");
        }
    }
}

int32_t llama_model_tq_check(const llama_model * model, ggml_type type_k, ggml_type type_v, char * buf, size_t buf_size) {
    if (!ggml_tq_is_tq(type_k) && !ggml_tq_is_tq(type_v)) {
        return 0;
    }
    try {
        llama_tq_require(*model, type_k, type_v);
        return 0;
    } catch (const std::exception & e) {
        if (buf && buf_size) {
            snprintf(buf, buf_size, "%s", e.what());
        }
        return -1;
    }
}
