"""Data-free choice of each KV head's outlier channels, from the model's own weights.

A K (or V) channel c is k_c = sum_j W[c, j] * g_j * xhat_j + b_c, where xhat is the
RMS-normalised input (each coordinate of mean square ~1), g the attention norm and
b the projection bias. Its expected energy is therefore

    E[k_c^2] ~ sum_j (W[c, j] * g_j)^2 + b_c^2

(for models with a per-head K norm, attn_k_norm, the norm's weight squared replaces
it: the head is renormalised after the projection). The d/4 channels of largest
energy in each head go to the outlier group. RoPE mixes the two channels of a
rotary pair, so for K a pair is chosen or left as one unit (its energy summed):
adjacent pairs (2i, 2i+1) for llama-style rope, (i, i + n_rot/2) for NeoX style.

Why data-free: on SmolLM2's real K/V rows this choice is as good as the channels of largest
energy in those very rows, and far better than a random quarter (docs/ablation.md table 2).
"""

from __future__ import annotations

import numpy as np
from . import blocks
from .gguf_file import TensorReader

# GGUF architectures whose rope rotates adjacent pairs (llama.cpp's LLAMA_ROPE_TYPE_NORM);
# every other rope-using architecture rotates (i, i + n_rot/2).
ROPE_NORM_ARCHS = frozenset("""
llama llada llama4 deci baichuan starcoder internlm2 minicpm xverse command-r cohere2 cohere2moe
olmo arctic deepseek deepseek2 plm chatglm granite granitemoe granitehybrid chameleon bailingmoe
neo-bert smollm3 arcee ernie4_5 ernie4_5-moe mistral3 mistral4 glm4 nanbeige
""".split())


def rope_units(d: int, n_rot: int, arch: str, rotary: bool) -> list[tuple[int, ...]]:
    """The channel groups of one head that must stay together (pairs under RoPE)."""
    if not rotary:
        return [(c,) for c in range(d)]
    n_rot = min(n_rot, d)
    if arch in ROPE_NORM_ARCHS:
        units = [(i, i + 1) for i in range(0, n_rot, 2)]
    else:
        half = n_rot // 2
        units = [(i, i + half) for i in range(half)]
    return units + [(c,) for c in range(n_rot, d)]


def choose(energy: np.ndarray, units: list[tuple[int, ...]], count: int) -> np.ndarray:
    """The ``count`` channels of largest energy, taking units whole; sorted ascending.

    Units are taken by total energy (ties: lowest channel first); a unit that no
    longer fits is passed over for a smaller one, so the set is always full.
    """
    unit_energy = np.array([energy[list(u)].sum() for u in units])
    order = sorted(range(len(units)), key=lambda i: (-unit_energy[i], units[i][0]))
    chosen: list[int] = []
    for i in order:
        if len(chosen) + len(units[i]) <= count:
            chosen.extend(units[i])
        if len(chosen) == count:
            break
    return np.array(sorted(chosen), dtype=np.int32)


def channel_energy(w: np.ndarray, norm: np.ndarray | None, bias: np.ndarray | None) -> np.ndarray:
    """Expected squared output of each row of w (see the module docstring), float64."""
    w = w.astype(np.float64)
    if norm is not None:
        w = w * norm.reshape(1, -1).astype(np.float64)
    e = np.einsum("ij,ij->i", w, w)
    if bias is not None:
        e = e + bias.reshape(-1).astype(np.float64) ** 2
    return e


def layer_outliers(reader: TensorReader, layer: int, kind: str, n_head_kv: int, head_dim: int,
                   n_head: int, head_dim_q: int, arch: str, n_rot: int) -> np.ndarray:
    """Outlier channels, shape (n_head_kv, head_dim / 4), of K (kind "k") or V ("v") in a layer."""
    p = f"blk.{layer}."
    width = n_head_kv * head_dim
    w = reader.get(p + f"attn_{kind}.weight")
    bias = reader.get(p + f"attn_{kind}.bias")
    if w is None:  # fused projection: rows are Q, then K, then V
        qkv = reader.get(p + "attn_qkv.weight")
        if qkv is None:
            raise GGUFError(f"{reader.path}: layer {layer} has neither attn_{kind}.weight nor attn_qkv.weight")
        start = n_head * head_dim_q + (0 if kind == "k" else width)
        w = qkv[start:start + width]
        qkv_bias = reader.get(p + "attn_qkv.bias")
        bias = None if qkv_bias is None else qkv_bias.reshape(-1)[start:start + width]
    if w.shape[0] != width:
        raise GGUFError(f"{reader.path}: blk.{layer} attn_{kind} has {w.shape[0]} rows, expected {width}")
    norm = reader.get(p + "attn_norm.weight")
    energy = channel_energy(w, norm, bias).reshape(n_head_kv, head_dim)
    head_norm = reader.get(p + f"attn_{kind}_norm.weight")
    if head_norm is not None and head_norm.size == head_dim:
        # the head is RMS-renormalised after projection: its shape is set by the norm weight
        energy = np.broadcast_to(head_norm.reshape(1, -1).astype(np.float64) ** 2, energy.shape)
    units = rope_units(head_dim, n_rot, arch, rotary=(kind == "k"))
    count = head_dim // blocks.BLOCK * blocks.HI
    return np.stack([choose(energy[h], units, count) for h in range(n_head_kv)])
