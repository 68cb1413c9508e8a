"""End to end without a kernel: the mean KL divergence a KV-cache quantizer causes in the model's
next-token distributions, through the numpy forward pass (capture.forward).

llama-perplexity measures this for the formats that have a kernel. The ablations also need it for
formats that have none (the paper's plain configuration at 2/3/4 bits, a recent window kept in
f16): here every layer's K and V rows are replaced by their reconstruction before attention, as a
cache would hand them back, and the errors travel through the following layers as they would in
llama.cpp. The same numbers for tq2_5/tq3_5/q4_0, which do have kernels, show how far this
simulation is from llama.cpp's (docs/ablation.md, table 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ablation as ab
from studies.capture import Model, attention, causal_mask, forward, tokenize_greedy


@dataclass
class Cache:
    """How one configuration stores K and V: a variant per side (None: exact), the model's K
    centers (turboquant.k.center, [n_layer, n_kv, d]) or None, and a window of the most recent
    keys that stay exact (0: none)."""
    name: str
    k: ab.Variant | str | None
    v: ab.Variant | str | None
    k_center: np.ndarray | None = None
    window: int = 0


def _q4_0_rotated(rows: np.ndarray) -> np.ndarray:
    """Upstream's rotated q4_0 (llama.cpp's attn_rot): an orthonormal Sylvester Hadamard of the
    head (64 channels at a time), q4_0 blocks of 32, the inverse rotation."""
    import gguf.quants as gq
    from gguf import GGMLQuantizationType

    n = 64
    H = np.array([[1.0]])
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    H /= np.sqrt(n)
    t, d = rows.shape
    y = (rows.reshape(t, d // n, n) @ H.T).reshape(t, d).astype(np.float32)
    yq = gq.dequantize(gq.quantize(y, GGMLQuantizationType.Q4_0), GGMLQuantizationType.Q4_0).astype(np.float64)
    return (yq.reshape(t, d // n, n) @ H).reshape(t, d)


def reconstruct(how, kind: str, rows: np.ndarray, il: int, h: int, ctx: ab.Context, mu: np.ndarray | None) -> np.ndarray:
    """Rows [T, d] of one KV head as the cache gives them back."""
    if how is None:
        return rows
    if how == "f16":
        return rows.astype(np.float16).astype(np.float64)
    if how == "q4_0":
        return _q4_0_rotated(rows)
    return ab.roundtrip(how, kind, rows, il, h, ctx, mu=mu)


def window_keys(T: int, window: int, ubatch: int = 0, ring_only: bool = False) -> np.ndarray:
    """[T, T] bool: the keys each query reads exact. ubatch 0: each query's ``window`` most
    recent tokens. Otherwise what a cache that keeps its last ``window`` cells exact gives when
    the tokens arrive in ubatches of ``ubatch``, each attending after its own writes: with
    ``ring_only`` those last cells of the cache (the end of the query's ubatch), else also every
    earlier token of the query's own ubatch (read from the ubatch's unquantized rows)."""
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    if ubatch == 0:
        return (i - j >= 0) & (i - j < window)
    if ring_only:
        end = np.minimum((i // ubatch + 1) * ubatch, T)
        return (j <= i) & (j >= end - window)
    return (j <= i) & (j >= (i // ubatch) * ubatch - window)


def attention_window(q, k, kh, v, vh, window: int, ubatch: int = 0, ring_only: bool = False) -> np.ndarray:
    """Causal attention where the keys/values window_keys names are exact."""
    T, n_head, d = q.shape
    r = n_head // k.shape[1]
    near = window_keys(T, window, ubatch, ring_only)
    mask = causal_mask(T)
    out = np.empty((T, n_head, v.shape[2]))
    for hq in range(n_head):
        hk = hq // r
        s = np.where(near, q[:, hq] @ k[:, hk].T, q[:, hq] @ kh[:, hk].T) / np.sqrt(d) + mask
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        out[:, hq] = np.where(near, p, 0.0) @ v[:, hk] + np.where(near, 0.0, p) @ vh[:, hk]
    return out


def attend_with(cache: Cache, ctx: ab.Context):
    """An ``attend`` hook for capture.forward that stores K/V the way ``cache`` does."""
    def attend(il, q, k, v):
        q, k, v = (a.astype(np.float64) for a in (q, k, v))
        mu = (lambda h: cache.k_center[il, h]) if cache.k_center is not None else (lambda h: None)
        kh = np.stack([reconstruct(cache.k, "k", k[:, h], il, h, ctx, mu(h)) for h in range(k.shape[1])], 1)
        vh = np.stack([reconstruct(cache.v, "v", v[:, h], il, h, ctx, None) for h in range(v.shape[1])], 1)
        if cache.window:
            return attention_window(q, k, kh, v, vh, cache.window)
        return attention(q, kh, vh, causal_mask(q.shape[0]))
    return attend


def kl_divergence(base_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(base || other) per position, in nats (llama-perplexity's --kl-divergence)."""
    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))
    lp, lq = log_softmax(base_logits.astype(np.float64)), log_softmax(logits.astype(np.float64))
    return (np.exp(lp) * (lp - lq)).sum(1)


@dataclass
class Result:
    name: str
    kld: float          # mean over scored positions
    kld_sem: float      # its standard error
    same_top1: float    # share of positions whose most likely token is unchanged


def chunks(m: Model, text: str, n_ctx: int, n_chunks: int) -> list[list[int]]:
    ids = tokenize_greedy(m.vocab, text, n_ctx * n_chunks)
    if len(ids) < n_ctx * n_chunks:
        raise ValueError(f"the text gives {len(ids)} tokens, {n_ctx * n_chunks} needed")
    return [ids[i * n_ctx:(i + 1) * n_ctx] for i in range(n_chunks)]


def chunks_from_kld_base(path: str, n_chunks: int) -> list[list[int]]:
    """The token chunks llama-perplexity evaluated, from its --kl-divergence-base file ("_logits_",
    n_ctx, n_vocab, n_chunk as int32, then every chunk's tokens): the model's real tokenizer."""
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            raise ValueError(f"{path} is not a llama-perplexity logits file")
        n_ctx, _, n_chunk = np.frombuffer(f.read(12), dtype=np.int32)
        if n_chunks > n_chunk:
            raise ValueError(f"{path} has {n_chunk} chunks, {n_chunks} asked for")
        toks = np.frombuffer(f.read(4 * int(n_ctx) * n_chunks), dtype=np.int32)
    return [toks[i * n_ctx:(i + 1) * n_ctx].tolist() for i in range(n_chunks)]


def evaluate(m: Model, token_chunks: list[list[int]], caches: list[Cache], ctx: ab.Context, progress=None,
             on_exact=None) -> list[Result]:
    """Mean KLD of each cache against exact K/V over the second half of every chunk (as
    llama-perplexity scores only the second half of its context). ``on_exact(ids, logits)`` sees
    each chunk's exact pass (a report's check that the pass is the model's, without another)."""
    kl = {c.name: [] for c in caches}
    same = {c.name: [] for c in caches}
    for ids in token_chunks:
        base = forward(m, ids, dtype=np.float32)
        if on_exact:
            on_exact(ids, base)
        half = len(ids) // 2
        for c in caches:
            logits = forward(m, ids, attend_with(c, ctx), dtype=np.float32)
            kl[c.name].append(kl_divergence(base[half:], logits[half:]))
            same[c.name].append(base[half:].argmax(1) == logits[half:].argmax(1))
            if progress:
                progress()
    out = []
    for c in caches:
        k = np.concatenate(kl[c.name])
        out.append(Result(c.name, float(k.mean()), float(k.std(ddof=1) / np.sqrt(len(k))), float(np.concatenate(same[c.name]).mean())))
    return out
