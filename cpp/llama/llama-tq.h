// TurboQuant KV cache in llama.cpp (tqgguf): the model's turboquant.* metadata and the
// per-layer, per-KV-head transforms the graph applies to Q/K/V. src/llama-tq.h in the patched tree
// (the series carries it as a new file); the key names and checks mirror tqgguf/metadata.py.
#pragma once

#include "ggml.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

struct gguf_context;
struct llama_model;

struct llama_tq_meta {
    bool        present = false; // the model has turboquant.* keys
    std::string error;           // why they are unusable; empty when they are usable

    uint32_t n_layer   = 0;
    uint32_t n_kv_head = 0;
    uint32_t head_dim[2] = {0, 0};           // [0] = K, [1] = V
    std::vector<uint64_t> layer_seeds[2];    // per layer
    std::vector<int32_t>  outliers[2];       // n_layer * n_kv_head * head_dim/4
    std::vector<std::string> types;
    uint64_t checksum = 0;                   // turboquant.checksum: ties saved states to this metadata
    // optional turboquant.k.center: a calibrated mean K row (after RoPE) per layer and head,
    // n_layer * n_kv_head * head_dim[0]; empty when the model has none
    std::vector<float> k_center;
    // optional turboquant.{k,v}.precond and .precond_inv: per layer and head a d x d matrix P
    // (row-major, y = P x) applied before the seeded transform, and its inverse. Quantizing P k
    // spends precision where queries look (P^-T goes to Q) and P v where the output projection
    // looks (P^-1 comes after the attention). Empty when the model has none.
    std::vector<float> precond[2];
    std::vector<float> precond_inv[2];
    // optional turboquant.calibration_positions: the context length (positions 0..n-1) those
    // statistics were taken over; 0 when the model has none
    uint32_t calibration_positions = 0;
    // optional turboquant.k.exact_tokens: the first cells of each stream (a sequence's first
    // tokens, the attention sink) whose K the cache also keeps unquantized; 0 when none
    uint32_t k_exact_tokens = 0;
    // optional turboquant.window_tokens: each query's last tokens (itself included) whose K and V
    // the attention reads unquantized, from a ring of the last cells written beside the cache
    // and from the ubatch's own rows; 0 when none
    uint32_t window_tokens = 0;

    // Read and check the metadata; never throws (problems are kept in `error`).
    void load(const gguf_context * ctx);

    // Throw std::runtime_error, one line naming `tqgguf prepare`, unless a cache with these types
    // can be built for a model of this shape.
    void require(ggml_type type_k, ggml_type type_v, uint32_t n_layer_model, uint32_t n_kv_head_model,
                 uint32_t head_dim_k, uint32_t head_dim_v) const;

    // The transforms of layer il for K (kind 0), V (kind 1) or Q (kind 2): n_kv_head matrices of
    // d x d floats, in ggml_mul_mat's src0 layout, each rounded to f16 (the cache keeps them in
    // f16). With P the kind's preconditioner (identity if none) and T the seeded rotation: K and
    // V get T P (`inverse`: P^-1 T^T), Q gets T P^-T, so that every q . k is unchanged.
    std::vector<float> transforms(uint32_t il, int kind, bool inverse) const;

    // Whether Q needs its own transform (a K preconditioner makes Q's differ from K's).
    bool q_has_own_transform() const { return !precond[0].empty(); }

    // What the graph adds to layer il's transformed K rows: -T_h mu_h per KV head ([d, n_kv_head]),
    // so the cache holds T (k - mu). Softmax ignores it: q . (k - mu) moves every key's score by the
    // same q . mu. Empty when the model has no turboquant.k.center.
    std::vector<float> k_offset(uint32_t il) const;
};

// y = T x for every head of x ([d, n_head, n_tokens], or [d*n_head, n_tokens] with d = T->ne[0]);
// T is [d, d, n_kv_head] and head h uses T[h / (n_head / n_kv_head)], as attention does.
ggml_tensor * llama_tq_apply(ggml_context * ctx, ggml_tensor * x, ggml_tensor * T);

// Throw std::runtime_error, one line naming `tqgguf prepare`, unless a KV cache with these types can
// be built for this model (its TurboQuant metadata, and head counts and sizes the same in every layer).
void llama_tq_require(const llama_model & model, ggml_type type_k, ggml_type type_v);
