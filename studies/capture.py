"""Q, K and V of every layer of a llama-architecture GGUF on real text: a numpy forward pass.

A study tool, not the product: `tqgguf prepare` calibrates through llama.cpp itself
(llama-tq-calibrate, tqgguf/calibrate.py); tests/test_calibrate.py holds the two to the same K
means. For the ablations (docs/ablation.md): quantizer choices are judged on the rows llama.cpp would
put into its KV cache (K after RoPE, V), with the queries that will read them. Weights are
dequantized with gguf-py; the text is tokenized by greedy longest match over the model's own
vocabulary (GPT-2 byte-level pieces), close to but not exactly its BPE: the statistics of K and V
come from the weights and real words, which is what the ablations need.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayerKV:
    q: np.ndarray  # [T, n_head, d], after RoPE
    k: np.ndarray  # [T, n_head_kv, d], after RoPE (what the cache stores)
    v: np.ndarray  # [T, n_head_kv, d]

    @functools.cached_property
    def exact(self) -> np.ndarray:
        """The layer's attention output from the unquantized rows: what every variant is held to."""
        return attention(*(a.astype(np.float64) for a in (self.q, self.k, self.v)), causal_mask(self.q.shape[0]))


def causal_mask(t: int) -> np.ndarray:
    return np.triu(np.full((t, t), -np.inf), 1)


def _field(r, key):
    f = r.fields[key]
    return f.parts[f.data[0]]


def _str(r, key) -> str:
    return bytes(_field(r, key)).decode()


def tokenize_greedy(tokens: list[str], text: str, n: int) -> list[int]:
    """Greedy longest match of ``text`` over ``tokens``: spaces and newlines as GPT-2's Ġ and Ċ,
    or as SentencePiece's ▁ when the vocabulary has no Ġ."""
    table = {t: i for i, t in enumerate(tokens)}
    longest = max(len(t) for t in tokens)
    space, newline = ("Ġ", "Ċ") if "Ġ" in table else ("▁", "▁")
    s = "".join(space if ch == " " else newline if ch == "\n" else ch if 32 < ord(ch) < 127 else space for ch in text)
    out, i = [], 0
    while i < len(s) and len(out) < n:
        for j in range(min(len(s), i + longest), i, -1):
            if s[i:j] in table:
                out.append(table[s[i:j]])
                i = j
                break
        else:
            i += 1  # a character no token covers
    return out


def _rope(x: np.ndarray, base: float, neox: bool = False) -> np.ndarray:
    """llama.cpp's rope: adjacent pairs (2i, 2i+1) for llama (the converter permuted the weights
    for it), pairs (i, i + d/2) for NeoX-style models such as qwen2."""
    t, _, d = x.shape
    inv = base ** (-np.arange(0, d, 2) / d)
    ang = np.arange(t)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    lo, hi = (np.s_[..., : d // 2], np.s_[..., d // 2:]) if neox else (np.s_[..., 0::2], np.s_[..., 1::2])
    a, b = x[lo], x[hi]
    out = np.empty_like(x)
    out[lo] = a * cos - b * sin
    out[hi] = a * sin + b * cos
    return out


ARCHS = ("llama", "qwen2")


class UnsupportedArchitecture(ValueError):
    def __init__(self, arch: str):
        super().__init__(f"the numpy forward pass supports the {' and '.join(ARCHS)} architectures, not {arch}")
        self.arch = arch


@dataclass
class Model:
    """A llama/qwen2 GGUF's shape and weights (dequantized to f32 on use; kept if keep_weights)."""
    reader: object
    arch: str
    n_layer: int
    n_head: int
    n_kv: int
    eps: float
    base: float
    vocab: list[str]
    keep_weights: bool = True
    cache: dict = field(default_factory=dict)

    @property
    def neox(self) -> bool:
        return self.arch == "qwen2"

    @functools.cached_property
    def tensors(self) -> dict:
        return {t.name: t for t in self.reader.tensors}

    def has(self, name: str) -> bool:
        return name in self.tensors

    def w(self, name: str) -> np.ndarray:
        if name in self.cache:
            return self.cache[name]
        from gguf.quants import dequantize

        t = self.tensors[name]
        a = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        a = a.reshape(int(t.shape[1]), int(t.shape[0])) if len(t.shape) > 1 else a.ravel()
        if self.keep_weights:
            self.cache[name] = a
        return a


def load(path: str, keep_weights: bool = True) -> Model:
    import gguf

    r = gguf.GGUFReader(path)
    arch = _str(r, "general.architecture")
    if arch not in ARCHS:
        raise UnsupportedArchitecture(arch)
    vocab_field = r.fields["tokenizer.ggml.tokens"]
    return Model(r, arch,
                 n_layer=int(_field(r, f"{arch}.block_count")[0]),
                 n_head=int(_field(r, f"{arch}.attention.head_count")[0]),
                 n_kv=int(_field(r, f"{arch}.attention.head_count_kv")[0]),
                 eps=float(_field(r, f"{arch}.attention.layer_norm_rms_epsilon")[0]),
                 base=float(_field(r, f"{arch}.rope.freq_base")[0]) if f"{arch}.rope.freq_base" in r.fields else 10000.0,
                 vocab=[bytes(vocab_field.parts[i]).decode(errors="replace") for i in vocab_field.data],
                 keep_weights=keep_weights)


def forward(m: Model, ids: list[int], attend=None, dtype=np.float64) -> np.ndarray:
    """Logits [T, n_vocab] of the token ids. ``attend(il, q, k, v)`` computes a layer's attention
    output from its Q, K (after RoPE) and V, [T, heads, d] each: hook it to read or quantize K/V
    (default: exact causal attention)."""
    x = m.w("token_embd.weight")[ids].astype(dtype)
    T = len(ids)
    d = x.shape[1] // m.n_head
    mask = causal_mask(T)
    attend = attend or (lambda il, q, k, v: attention(q, k, v, mask))
    norm = lambda h, g: h / np.sqrt((h * h).mean(-1, keepdims=True) + m.eps) * g
    for il in range(m.n_layer):
        p = f"blk.{il}."
        h = norm(x, m.w(p + "attn_norm.weight"))
        proj = lambda n: h @ m.w(p + f"attn_{n}.weight").T + (m.w(p + f"attn_{n}.bias") if m.has(p + f"attn_{n}.bias") else 0.0)
        q = _rope(proj("q").reshape(T, m.n_head, d), m.base, m.neox)
        k = _rope(proj("k").reshape(T, m.n_kv, d), m.base, m.neox)
        v = proj("v").reshape(T, m.n_kv, d)
        att = attend(il, q, k, v).astype(dtype)
        x = x + att.reshape(T, -1) @ m.w(p + "attn_output.weight").T
        h = norm(x, m.w(p + "ffn_norm.weight"))
        g, u = h @ m.w(p + "ffn_gate.weight").T, h @ m.w(p + "ffn_up.weight").T
        x = x + (g / (1 + np.exp(-g)) * u) @ m.w(p + "ffn_down.weight").T
    out_w = m.w("output.weight") if m.has("output.weight") else m.w("token_embd.weight")  # tied embeddings
    return norm(x, m.w("output_norm.weight")) @ out_w.T


def top1(logits: np.ndarray, ids: list[int]) -> float:
    """Share of next tokens the logits predict: the check that this forward pass is the model's."""
    return float(np.mean(logits[:-1].argmax(1) == np.asarray(ids[1:])))


def capture(path: str, text: str, n_tokens: int = 512) -> tuple[list[int], list[LayerKV], float]:
    """Token ids and per-layer Q/K/V of the first ``n_tokens`` tokens of ``text``, and the share of
    next tokens the model predicts (top-1)."""
    m = load(path, keep_weights=False)
    ids = tokenize_greedy(m.vocab, text, n_tokens)
    mask = causal_mask(len(ids))
    layers = []

    def attend(il, q, k, v):
        layers.append(LayerKV(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)))
        return attention(q, k, v, mask)

    logits = forward(m, ids, attend)
    return ids, layers, top1(logits, ids)


def k_means(m: Model, ids: list[int]) -> np.ndarray:
    """The mean K row (after RoPE) of each layer and KV head over the token ids:
    (n_layer, n_kv_head, d), float64 (f32 forward pass)."""
    means = []
    mask = causal_mask(len(ids))

    def attend(il, q, k, v):
        means.append(k.astype(np.float64).mean(0))
        return attention(q, k, v, mask)

    forward(m, ids, attend, dtype=np.float32)
    return np.stack(means)


def k_centers(path: str, text: str, n_tokens: int = 1024) -> np.ndarray:
    """k_means over the first ``n_tokens`` of ``text``, tokenized greedily: what `tqgguf prepare`
    stored before it calibrated through llama.cpp (float32)."""
    m = load(path, keep_weights=False)
    return k_means(m, tokenize_greedy(m.vocab, text, n_tokens)).astype(np.float32)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Causal softmax attention, [T, n_head, d] out; query head h reads KV head h // (n_head / n_kv)."""
    T, n_head, d = q.shape
    r = n_head // k.shape[1]
    out = np.empty((T, n_head, v.shape[2]))
    for h in range(n_head):
        hk = h // r
        s = q[:, h] @ k[:, hk].T
        s = s / np.sqrt(d) + mask
        s = np.exp(s - s.max(1, keepdims=True))
        out[:, h] = (s / s.sum(1, keepdims=True)) @ v[:, hk]
    return out
