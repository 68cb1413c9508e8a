// llama-tq-calibrate: the statistics `tqgguf prepare` needs, collected from llama.cpp's own graph.
//
//   llama-tq-calibrate -m MODEL.gguf -f TEXT -o STATS.gguf [-n TOKENS] [-c CTX] [-p POSITIONS] [-t N] [-ngl N]
//
// Runs MODEL over the first TOKENS tokens of TEXT (one sequence per CTX tokens, positions from 0;
// with POSITIONS, each sequence again at start positions spread up to POSITIONS) and writes, per layer and KV head, the mean and covariance of K (after RoPE: the rows the KV
// cache stores), of V, and of Q (the queries the attention reads, pooled over each KV head's
// query group), to a GGUF file (docs/calibration.md). Like llama-imatrix, it reads the tensors
// through the scheduler's eval callback, so it calibrates every architecture llama.cpp runs,
// on any backend (-ngl).
//
// How the rows are found: the cache is made f32 (exact rows, and never a TurboQuant type, so no
// TQ transform is applied), flash attention is on (V is stored untransposed). K and V are read
// back from the cache right after each SET_ROWS into `cache_{k,v}_l<il>`, at the rows it wrote
// (a backend that fuses RoPE into the cache write still writes them there; the SET_ROWS node is
// a view of the cache, so it carries the cache's name); Q is the first
// operand of the layer's FLASH_ATTN_EXT, whose K operand names the layer's cache.
//
// Why replay a sequence at later positions: the cache stores K after RoPE, so K's statistics
// depend on the positions they are taken at (a pair that turns little within 1024 positions
// turns far within 4096), and a context uses all of its positions. Attention sees relative
// positions only, so a sequence started at position o has the same hidden states as from 0; only
// K's and Q's rotation differ. Its first token is left out of a replay's statistics: in a real
// context the attention sink sits at position 0 only.
//
// Errors are one line on stderr, `llama-tq-calibrate: error: ...`, exit status 1.

#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
#include "gguf.h"

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

static const uint32_t STATS_FORMAT_VERSION = 1;

[[noreturn]] static void die(const char * fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    // one line, whatever the message holds
    for (char * p = buf; *p; ++p) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    fprintf(stderr, "llama-tq-calibrate: error: %s\n", buf);
    exit(1);
}

// llama.cpp's log: shown with -v; otherwise only its first error is kept, for die() (the first says
// why: "unknown model architecture: 'x'", the later ones only that loading failed)
static bool        g_verbose = false;
static std::string g_first_error;

static void log_cb(ggml_log_level level, const char * text, void *) {
    if (g_verbose) {
        fputs(text, stderr);
    }
    if (level == GGML_LOG_LEVEL_ERROR) {
        std::string s(text);
        while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
            s.pop_back();
        }
        if (!s.empty() && g_first_error.empty()) {
            g_first_error = s;
        }
    }
}

// Sums of rows x and of x x^T (upper triangle) for one (layer, KV head), in double.
struct moments {
    int64_t n = 0;
    std::vector<double> sum, m2;

    void init(int64_t d) {
        sum.assign(d, 0.0);
        m2.assign(d*d, 0.0);
    }

    void add(const float * x, int64_t d) {
        n++;
        for (int64_t i = 0; i < d; ++i) {
            const double xi = x[i];
            sum[i] += xi;
            double * row = m2.data() + i*d;
            for (int64_t j = i; j < d; ++j) {
                row[j] += xi*(double) x[j];
            }
        }
    }

    // mean and covariance (population: / n), full symmetric, as f32
    void finish(int64_t d, float * mean, float * cov) const {
        for (int64_t i = 0; i < d; ++i) {
            mean[i] = n ? (float) (sum[i]/n) : 0.0f;
        }
        for (int64_t i = 0; i < d; ++i) {
            for (int64_t j = i; j < d; ++j) {
                const double c = n ? m2[i*d + j]/n - (sum[i]/n)*(sum[j]/n) : 0.0;
                cov[i*d + j] = cov[j*d + i] = (float) c;
            }
        }
    }
};

struct layer_stats {
    std::vector<moments> k, v, q;  // per KV head
    float kq_scale = 0.0f, softcap = 0.0f;
};

struct collector {
    int64_t n_layer = 0, n_kv = 0, n_head = 0, dk = 0, dv = 0;
    std::vector<layer_stats> layers;
    std::vector<uint8_t> buf;
    std::vector<float>   row;
    std::string          problem;  // the first thing that went wrong inside the callback
    bool skip_first = false;       // leave the ubatch's first token out (a replay's attention sink)

    void init() {
        layers.resize(n_layer);
        for (auto & l : layers) {
            l.k.resize(n_kv);
            l.v.resize(n_kv);
            l.q.resize(n_kv);
            for (int64_t h = 0; h < n_kv; ++h) {
                l.k[h].init(dk);
                l.v[h].init(dv);
                l.q[h].init(dk);
            }
        }
    }

    // the tensor's bytes from its start to its last element, wherever it lives
    const uint8_t * bytes(const ggml_tensor * t) {
        if (t->buffer == nullptr || ggml_backend_buffer_is_host(t->buffer)) {
            return (const uint8_t *) t->data;
        }
        buf.resize(ggml_nbytes(t));
        ggml_backend_tensor_get(t, buf.data(), 0, buf.size());
        return buf.data();
    }

    // row i1 (dims 1..3 as i1, i2, i3) of t as f32
    const float * get_row(const ggml_tensor * t, const uint8_t * data, int64_t i1, int64_t i2, int64_t i3) {
        const uint8_t * p = data + i1*t->nb[1] + i2*t->nb[2] + i3*t->nb[3];
        if (t->type == GGML_TYPE_F32) {
            return (const float *) p;
        }
        row.resize(t->ne[0]);
        ggml_get_type_traits(t->type)->to_float(p, row.data(), t->ne[0]);
        return row.data();
    }

    bool fail(const std::string & why) {
        if (problem.empty()) {
            problem = why;
        }
        return false;
    }

    // the K/V rows a SET_ROWS wrote into the cache of layer il
    bool on_set_rows(ggml_tensor * t, char kind, int il) {
        const int64_t d = kind == 'k' ? dk : dv;
        const ggml_tensor * idx = t->src[1];  // ggml_set_rows(a, b, c): the result views a; src 0, 1 are b, c
        if (t->ne[0] != n_kv*d) {
            return fail("layer " + std::to_string(il) + "'s " + kind + " rows have " + std::to_string(t->ne[0]) +
                        " values, not " + std::to_string(n_kv) + " KV heads x " + std::to_string(d) +
                        " (KV head count or head size varies across layers)");
        }
        if (t->type != GGML_TYPE_F32 || (idx->type != GGML_TYPE_I64 && idx->type != GGML_TYPE_I32)) {
            return fail("unexpected cache write (" + std::string(ggml_type_name(t->type)) + ")");
        }
        std::vector<int64_t> rows(ggml_nelements(idx));
        {
            std::vector<uint8_t> ib(ggml_nbytes(idx));
            ggml_backend_tensor_get(idx, ib.data(), 0, ib.size());
            for (size_t i = 0; i < rows.size(); ++i) {
                rows[i] = idx->type == GGML_TYPE_I64 ? ((const int64_t *) ib.data())[i] : ((const int32_t *) ib.data())[i];
            }
        }
        auto & acc = kind == 'k' ? layers[il].k : layers[il].v;
        const bool host = t->buffer == nullptr || ggml_backend_buffer_is_host(t->buffer);
        std::vector<float> r(t->ne[0]);
        for (size_t j = skip_first ? 1 : 0; j < rows.size(); ++j) {
            const int64_t i = rows[j];
            const float * x;
            if (host) {
                x = (const float *) ((const uint8_t *) t->data + i*t->nb[1]);
            } else {
                ggml_backend_tensor_get(t, r.data(), i*t->nb[1], t->ne[0]*sizeof(float));
                x = r.data();
            }
            for (int64_t h = 0; h < n_kv; ++h) {
                acc[h].add(x + h*d, d);
            }
        }
        return true;
    }

    // the queries of layer il's attention: q is [d, n_tokens, n_head, n_stream]
    bool on_attention(ggml_tensor * t, int il) {
        const ggml_tensor * q = t->src[0];
        if (q->ne[0] != dk || q->ne[2] % n_kv != 0) {
            return fail("layer " + std::to_string(il) + "'s queries are " + std::to_string(q->ne[0]) + " x " +
                        std::to_string(q->ne[2]) + " heads, not " + std::to_string(dk) + " x a multiple of " +
                        std::to_string(n_kv));
        }
        if (q->nb[0] != ggml_type_size(q->type) || ggml_blck_size(q->type) != 1) {
            return fail("layer " + std::to_string(il) + "'s queries are not rows of floats");
        }
        const int64_t group = q->ne[2] / n_kv;
        const uint8_t * data = bytes(q);
        for (int64_t s = 0; s < q->ne[3]; ++s) {
            for (int64_t h = 0; h < q->ne[2]; ++h) {
                for (int64_t i = skip_first ? 1 : 0; i < q->ne[1]; ++i) {
                    layers[il].q[h / group].add(get_row(q, data, i, h, s), dk);
                }
            }
        }
        float params[3];
        memcpy(params, t->op_params, sizeof(params));
        layers[il].kq_scale = params[0];
        layers[il].softcap  = params[2];
        return true;
    }
};

// "cache_k_l12", "cache_k_l12 (view) (permuted) (copy)", with any tag before the k/v
static bool cache_layer(const ggml_tensor * t, char & kind, int & il) {
    static const std::regex re("cache_[A-Za-z0-9_]*?([kv])_l([0-9]+)");
    std::cmatch m;
    if (t == nullptr || !std::regex_search(t->name, m, re)) {
        return false;
    }
    kind = m[1].str()[0];
    il   = std::atoi(m[2].str().c_str());
    return true;
}

static bool eval_cb(ggml_tensor * t, bool ask, void * user_data) {
    auto * c = (collector *) user_data;
    char kind;
    int il;
    const bool write = t->op == GGML_OP_SET_ROWS && cache_layer(t, kind, il);
    const bool attn  = t->op == GGML_OP_FLASH_ATTN_EXT && cache_layer(t->src[1], kind, il) && kind == 'k';
    if (ask) {
        return (write || attn) && il >= 0 && il < c->n_layer;
    }
    if (write) {
        c->on_set_rows(t, kind, il);
    } else if (attn) {
        c->on_attention(t, il);
    }
    return true;  // a problem stops the run after this llama_decode (collector::problem)
}

static std::string read_file(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        die("cannot read %s", path.c_str());
    }
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

static int64_t meta_int(const llama_model * model, const std::string & key, int64_t def) {
    char buf[128];
    if (llama_model_meta_val_str(model, key.c_str(), buf, sizeof(buf)) < 0) {
        return def;
    }
    return std::atoll(buf);  // an array (per-layer value) reads as its first element: checked per layer later
}

// Where a sequence of n tokens starts: 0, and for a span of positions past n, evenly spaced starts
// whose last one ends at span - 1, as many as it takes to cover the span.
static std::vector<int64_t> start_positions(int64_t n, int64_t span) {
    std::vector<int64_t> starts = {0};
    const int64_t runs = (span + n - 1) / n;
    for (int64_t j = 1; j < runs; ++j) {
        starts.push_back(j*(span - n)/(runs - 1));
    }
    return starts;
}

static void usage() {
    fprintf(stderr,
        "usage: llama-tq-calibrate -m MODEL.gguf -f TEXT -o STATS.gguf [options]\n"
        "  -n, --tokens N     tokens of TEXT to run (default 1024; fewer if TEXT is shorter)\n"
        "  -c, --ctx N        tokens per sequence; each starts at position 0 (default: all in one)\n"
        "  -p, --positions N  run each sequence again at start positions spread so that its last\n"
        "                     reaches N-1 (statistics over the positions a context of N uses;\n"
        "                     default: once, from 0)\n"
        "  -b, --batch N      tokens per llama_decode (default 512)\n"
        "  -t, --threads N    CPU threads (default: llama.cpp's)\n"
        "  -ngl N             layers on the GPU (default 0)\n"
        "  --min-tokens N     refuse a text that gives fewer tokens (default 16)\n"
        "  -v                 show llama.cpp's log\n"
        "Writes per layer and KV head the mean and covariance of K (after RoPE), V and Q\n"
        "(pooled over the head's query group) to STATS.gguf (tqgguf docs/calibration.md).\n");
}

int main(int argc, char ** argv) {
    std::string model_path, text_path, out_path;
    int64_t n_tokens_max = 1024, n_ctx_seq = 0, n_batch = 512, min_tokens = 16, n_positions = 0;
    int n_threads = -1, n_gpu_layers = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                die("%s needs a value", a.c_str());
            }
            return argv[++i];
        };
        auto next_int = [&]() -> int64_t {
            const std::string v = next();
            char * end;
            const long long x = strtoll(v.c_str(), &end, 10);
            if (v.empty() || *end) {
                die("%s wants a number, not '%s'", a.c_str(), v.c_str());
            }
            return x;
        };
        if (a == "-m" || a == "--model") { model_path = next(); }
        else if (a == "-f" || a == "--file") { text_path = next(); }
        else if (a == "-o" || a == "--output") { out_path = next(); }
        else if (a == "-n" || a == "--tokens") { n_tokens_max = next_int(); }
        else if (a == "-c" || a == "--ctx") { n_ctx_seq = next_int(); }
        else if (a == "-p" || a == "--positions") { n_positions = next_int(); }
        else if (a == "-b" || a == "--batch") { n_batch = next_int(); }
        else if (a == "-t" || a == "--threads") { n_threads = (int) next_int(); }
        else if (a == "-ngl" || a == "--n-gpu-layers") { n_gpu_layers = (int) next_int(); }
        else if (a == "--min-tokens") { min_tokens = next_int(); }
        else if (a == "-v" || a == "--verbose") { g_verbose = true; }
        else if (a == "-h" || a == "--help") { usage(); return 0; }
        else { die("unknown option %s (see --help)", a.c_str()); }
    }
    if (model_path.empty() || text_path.empty() || out_path.empty()) {
        die("-m MODEL, -f TEXT and -o STATS are needed (see --help)");
    }
    if (n_tokens_max < 1 || n_batch < 1 || n_ctx_seq < 0 || n_positions < 0) {
        die("--tokens and --batch must be positive, --ctx and --positions not negative");
    }
    const std::string text = read_file(text_path);

    llama_log_set(log_cb, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = n_gpu_layers;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (model == nullptr) {
        die("llama.cpp cannot load %s: %s", model_path.c_str(),
            g_first_error.empty() ? "see -v" : g_first_error.c_str());
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    // the text's tokens, as llama.cpp tokenizes it (with the model's BOS if it adds one)
    std::vector<llama_token> tokens(text.size() + 8);
    int32_t n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), tokens.data(), (int32_t) tokens.size(), true, false);
    if (n < 0) {
        tokens.resize(-n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), tokens.data(), (int32_t) tokens.size(), true, false);
    }
    if (n < 0) {
        die("llama.cpp cannot tokenize %s with the model's vocabulary", text_path.c_str());
    }
    tokens.resize(std::min<int64_t>(n, n_tokens_max));
    if ((int64_t) tokens.size() < min_tokens) {
        die("%s gives %zu tokens with the model's vocabulary (at least %lld needed)", text_path.c_str(), tokens.size(),
            (long long) min_tokens);
    }

    collector c;
    char arch[128] = "";
    llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch));
    c.n_layer = llama_model_n_layer(model);
    c.n_head  = llama_model_n_head(model);
    c.n_kv    = llama_model_n_head_kv(model);
    const int64_t d_def = c.n_head > 0 ? llama_model_n_embd(model) / c.n_head : 0;
    c.dk = meta_int(model, std::string(arch) + ".attention.key_length", d_def);
    c.dv = meta_int(model, std::string(arch) + ".attention.value_length", d_def);
    if (c.n_layer <= 0 || c.n_kv <= 0 || c.dk <= 0 || c.dv <= 0) {
        die("%s has no attention layers llama.cpp keeps K and V of (%s)", model_path.c_str(), arch);
    }
    c.init();

    const int64_t n_seq_tok = n_ctx_seq > 0 ? n_ctx_seq : (int64_t) tokens.size();
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx           = (uint32_t) ((std::min<int64_t>(n_seq_tok, tokens.size()) + 255) / 256 * 256);
    cp.n_batch         = (uint32_t) std::min<int64_t>(n_batch, cp.n_ctx);
    cp.n_ubatch        = cp.n_batch;
    cp.n_seq_max       = 1;
    cp.type_k          = GGML_TYPE_F32;
    cp.type_v          = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.cb_eval         = eval_cb;
    cp.cb_eval_user_data = &c;
    cp.no_perf         = true;
    if (n_threads > 0) {
        cp.n_threads = cp.n_threads_batch = n_threads;
    }
    llama_context * ctx = llama_init_from_model(model, cp);
    if (ctx == nullptr) {
        die("llama.cpp cannot make a context for %s: %s", model_path.c_str(),
            g_first_error.empty() ? "see -v" : g_first_error.c_str());
    }

    llama_batch batch = llama_batch_init((int32_t) cp.n_batch, 0, 1);
    for (size_t start = 0; start < tokens.size(); start += n_seq_tok) {
        const size_t end = std::min(tokens.size(), start + (size_t) n_seq_tok);
        for (const int64_t offset : start_positions((int64_t) (end - start), n_positions)) {
            llama_memory_clear(llama_get_memory(ctx), true);
            for (size_t b = start; b < end; b += cp.n_batch) {
                batch.n_tokens = 0;
                for (size_t i = b; i < std::min(end, b + cp.n_batch); ++i) {
                    const int32_t j = batch.n_tokens++;
                    batch.token[j]     = tokens[i];
                    batch.pos[j]       = (llama_pos) (offset + (int64_t) (i - start));
                    batch.n_seq_id[j]  = 1;
                    batch.seq_id[j][0] = 0;
                    batch.logits[j]    = i + 1 == end;
                }
                c.skip_first = offset > 0 && b == start;  // one ubatch per decode (n_ubatch = n_batch)
                if (llama_decode(ctx, batch) != 0) {
                    die("llama_decode failed at token %zu: %s", b, g_first_error.empty() ? "see -v" : g_first_error.c_str());
                }
                if (!c.problem.empty()) {
                    die("%s", c.problem.c_str());
                }
            }
        }
    }
    c.skip_first = false;
    llama_batch_free(batch);

    // every layer that has a KV cache must have been seen
    std::vector<uint32_t> k_rows(c.n_layer), q_rows(c.n_layer);
    std::vector<float> kq_scale(c.n_layer), softcap(c.n_layer);
    int64_t seen = 0;
    for (int64_t il = 0; il < c.n_layer; ++il) {
        k_rows[il]   = (uint32_t) c.layers[il].k[0].n;
        q_rows[il]   = (uint32_t) c.layers[il].q[0].n;
        kq_scale[il] = c.layers[il].kq_scale;
        softcap[il]  = c.layers[il].softcap;
        seen += k_rows[il] > 0;
    }
    if (seen == 0) {
        die("no K rows reached a KV cache: llama.cpp keeps no K/V cache for %s (%s)", model_path.c_str(), arch);
    }

    // the statistics file
    const int64_t L = c.n_layer, H = c.n_kv;
    ggml_init_params ip = {
        /*.mem_size   =*/ ggml_tensor_overhead()*8 + 7*GGML_MEM_ALIGN + sizeof(float)*(size_t) (L*H*(2*c.dk + c.dv + 2*c.dk*c.dk + c.dv*c.dv)) +
                          sizeof(int32_t)*tokens.size() + 1024,
        /*.mem_buffer =*/ nullptr,
        /*.no_alloc   =*/ false,
    };
    ggml_context * gctx = ggml_init(ip);
    gguf_context * g = gguf_init_empty();
    gguf_set_val_u32(g, "tqcal.format_version", STATS_FORMAT_VERSION);
    gguf_set_val_str(g, "tqcal.architecture", arch);
    gguf_set_val_u32(g, "tqcal.layer_count", (uint32_t) L);
    gguf_set_val_u32(g, "tqcal.head_count", (uint32_t) c.n_head);
    gguf_set_val_u32(g, "tqcal.kv_head_count", (uint32_t) H);
    gguf_set_val_u32(g, "tqcal.k.head_dim", (uint32_t) c.dk);
    gguf_set_val_u32(g, "tqcal.v.head_dim", (uint32_t) c.dv);
    gguf_set_val_u32(g, "tqcal.token_count", (uint32_t) tokens.size());
    gguf_set_val_u32(g, "tqcal.ctx", (uint32_t) n_seq_tok);
    gguf_set_val_u32(g, "tqcal.positions", (uint32_t) std::max<int64_t>(n_positions, std::min<int64_t>(n_seq_tok, tokens.size())));
    gguf_set_arr_data(g, "tqcal.k_rows", GGUF_TYPE_UINT32, k_rows.data(), k_rows.size());
    gguf_set_arr_data(g, "tqcal.q_rows", GGUF_TYPE_UINT32, q_rows.data(), q_rows.size());
    gguf_set_arr_data(g, "tqcal.kq_scale", GGUF_TYPE_FLOAT32, kq_scale.data(), kq_scale.size());
    gguf_set_arr_data(g, "tqcal.softcap", GGUF_TYPE_FLOAT32, softcap.data(), softcap.size());

    auto add = [&](const char * name, int64_t d, auto pick) {
        ggml_tensor * mean = ggml_new_tensor_3d(gctx, GGML_TYPE_F32, d, H, L);
        ggml_tensor * cov  = ggml_new_tensor_4d(gctx, GGML_TYPE_F32, d, d, H, L);
        ggml_set_name(mean, (std::string("tqcal.") + name + ".mean").c_str());
        ggml_set_name(cov,  (std::string("tqcal.") + name + ".cov").c_str());
        for (int64_t il = 0; il < L; ++il) {
            for (int64_t h = 0; h < H; ++h) {
                pick(c.layers[il])[h].finish(d, (float *) mean->data + (il*H + h)*d, (float *) cov->data + (il*H + h)*d*d);
            }
        }
        gguf_add_tensor(g, mean);
        gguf_add_tensor(g, cov);
    };
    add("k", c.dk, [](layer_stats & l) -> std::vector<moments> & { return l.k; });
    add("v", c.dv, [](layer_stats & l) -> std::vector<moments> & { return l.v; });
    add("q", c.dk, [](layer_stats & l) -> std::vector<moments> & { return l.q; });
    ggml_tensor * tok = ggml_new_tensor_1d(gctx, GGML_TYPE_I32, (int64_t) tokens.size());
    ggml_set_name(tok, "tqcal.tokens");
    memcpy(tok->data, tokens.data(), tokens.size()*sizeof(int32_t));
    gguf_add_tensor(g, tok);

    const std::string tmp = out_path + ".part";
    if (!gguf_write_to_file(g, tmp.c_str(), false) || rename(tmp.c_str(), out_path.c_str()) != 0) {
        remove(tmp.c_str());
        die("cannot write %s", out_path.c_str());
    }
    fprintf(stderr, "llama-tq-calibrate: %zu tokens, %lld layers x %lld KV heads -> %s\n", tokens.size(),
            (long long) L, (long long) H, out_path.c_str());

    gguf_free(g);
    ggml_free(gctx);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
