"""TurboQuant's open choices judged on real K/V rows: attention-output error, layer by layer.

Each variant is a way to turn the rows of one KV head of one layer into their reconstruction
(for QJL, its unbiased one). The error of a variant is the relative error of the
attention output, ||O - O_hat|| / ||O||, over every query head and token of every layer, with
K only, V only, or both quantized (capture.py gives the Q/K/V of a real forward pass).

The TQ variants run the exact block format through the C core (tqgguf._core); the plain and
QJL variants use the numpy reference (reference.py). Bits per value count all overhead (f16
scales and norms); a per-(layer, head) mean vector kept in the model's metadata costs the cache
nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tqgguf import blocks, outliers as outl, reference, rotation
from studies.capture import LayerKV, attention, causal_mask


@dataclass
class Variant:
    name: str
    kind: str                      # "tq2_5", "tq3_5", "plain", "prod", "split"
    bits: int = 0                  # plain / prod: bits per coordinate
    outliers: str = "weights"      # tq: "weights" (prepare's data-free choice), "calib" (from these rows), "random"
    rule: str = "norm"             # tq: a group's scale (SCALE_RULES; the product has "norm" only)
    center: bool = False           # subtract the head's mean row first (exact in attention, see below)
    rot: str = "hadamard"          # plain: "hadamard" (randomized, pow2 sizes) or "haar" (dense)
    per_layer_seed: bool = True    # False: every layer uses layer 0's rotations
    share: int = 0                 # split: outlier channels per head (chosen on these rows' energy)
    bits_hi: int = 0               # split: bits of the outlier group (the rest get `bits`)

    def bits_per_value(self, d: int) -> float:
        if self.kind in blocks.TYPES:
            return blocks.layout(self.kind).bits_per_value
        if self.kind == "split":  # two groups, an f16 norm each
            return (self.share * self.bits_hi + (d - self.share) * self.bits + 32) / d
        return self.bits + 16 / d * (2 if self.kind == "prod" else 1)  # f16 norm (and residual norm)


@dataclass
class Context:
    """What the variants need besides the rows: rotation seeds and prepare's outlier channels."""
    seeds: dict[str, np.ndarray]            # kind -> (n_layer,) layer seeds
    weight_outliers: dict[str, np.ndarray]  # kind -> (n_layer, n_kv, d/4)
    rope_units: list = field(default_factory=list)


def _units(kind: str, d: int, ctx: Context) -> list:
    """The channel groups an outlier choice takes whole: RoPE pairs for K, single channels for V."""
    return ctx.rope_units if kind == "k" else [(c,) for c in range(d)]


def _tq_roundtrip(v: Variant, kind: str, rows: np.ndarray, il: int, h: int, ctx: Context) -> np.ndarray:
    from tqgguf import _core

    d = rows.shape[1]
    if v.outliers == "weights":
        o = ctx.weight_outliers[kind][il, h]
    elif v.outliers == "calib":
        o = outl.choose((rows.astype(np.float64) ** 2).mean(0), _units(kind, d, ctx), d // 4)
    else:
        o = np.sort(np.random.default_rng(1000 * il + h).choice(d, d // 4, replace=False)).astype(np.int32)
    seed = int(ctx.seeds[kind][il if v.per_layer_seed else 0])
    T = np.asarray(_core.head_transform(d, seed, h, o.astype(np.int32)))
    hi, lo = reference.codebooks_for(v.kind)
    y = (rows.astype(np.float64) @ T.T).astype(np.float32).ravel()
    data = _core.quantize_row(v.kind, y, hi, lo)
    yq = np.asarray(_core.dequantize_row(v.kind, data, hi, lo), dtype=np.float32)
    if v.rule != "norm":
        yq = with_scale_rule(y, v.kind, v.rule)
    return yq.astype(np.float64).reshape(rows.shape) @ T


# A group's scale s (x_hat = s * c[code]); the codes are the same under every rule.
SCALE_RULES = ("norm", "plain", "lsq")


def with_scale_rule(y: np.ndarray, type_name: str, rule: str) -> np.ndarray:
    """The TQ round trip of the transformed row ``y`` with each group's f16 scale chosen by
    ``rule``: "norm" keeps the group's length (the product's, cpp/tq.c); "plain" stores the norm,
    s = ||v|| / sqrt(n) (the paper's); "lsq" is the least-squares scale <v, c> / ||c||^2."""
    if rule not in SCALE_RULES:
        raise ValueError(f"unknown scale rule {rule!r} (known: {', '.join(SCALE_RULES)})")
    c_hi, c_lo = reference.codebooks_for(type_name)
    out = np.empty(len(y), dtype=np.float32)
    for start in range(0, len(y), blocks.BLOCK):
        for lo, hi, c in ((0, blocks.HI, c_hi), (blocks.HI, blocks.BLOCK, c_lo)):
            v = np.asarray(y[start + lo:start + hi], dtype=np.float32)
            codes, s_norm = reference.quantize_group(v, c)  # the codes do not depend on the rule
            cq = c.astype(np.float64)[codes]
            v64 = v.astype(np.float64)
            if rule == "norm" or not np.any(v):
                s = np.float32(s_norm)
            elif rule == "plain":
                s = np.float32(math.sqrt(np.sum(v64 ** 2)) / math.sqrt(len(v)))
            else:
                s = np.float32(np.sum(v64 * cq) / np.sum(cq ** 2))
            out[start + lo:start + hi] = np.float32(np.float16(s)) * c[codes].astype(np.float32)
    return out


def _plain_rotation(v: Variant, d: int, seed: int) -> np.ndarray:
    if v.rot == "hadamard" and rotation.is_power_of_two(d):
        return rotation.hadamard(d, seed)
    return rotation.haar(d, seed)


def roundtrip(v: Variant, kind: str, rows: np.ndarray, il: int, h: int, ctx: Context,
              mu: np.ndarray | None = None) -> np.ndarray:
    """Reconstructed rows [T, d] of one KV head. ``mu``: the center to subtract first (the model's
    turboquant.k.center row); else, with ``v.center``, these rows' own mean."""
    if mu is None:
        mu = rows.mean(0, keepdims=True) if v.center else 0.0
    x = rows - mu
    if v.kind in blocks.TYPES:
        out = _tq_roundtrip(v, kind, x, il, h, ctx)
    elif v.kind == "plain":
        seed = rotation.subseed(int(ctx.seeds[kind][il if v.per_layer_seed else 0]), h)
        q = reference.MSEQuantizer(rows.shape[1], v.bits, _plain_rotation(v, rows.shape[1], seed), norm_correction=False)
        out = q.dequantize(*q.quantize(x))
    elif v.kind == "split":
        # the outlier split in general form: `share` channels of largest energy at bits_hi, the
        # rest at `bits`, each group rotated (Hadamard for powers of two, else Haar) with its own norm
        d = rows.shape[1]
        o = outl.choose((x ** 2).mean(0), _units(kind, d, ctx), v.share)
        rest = np.setdiff1d(np.arange(d), o)
        out = np.empty_like(x)
        seed = rotation.subseed(int(ctx.seeds[kind][il]), h)
        for g, (chan, b) in enumerate(((o, v.bits_hi), (rest, v.bits))):
            q = reference.MSEQuantizer(len(chan), b, _plain_rotation(v, len(chan), seed + g))
            out[:, chan] = q.dequantize(*q.quantize(x[:, chan]))
    elif v.kind == "prod":
        # the unbiased reconstruction: x_mse + ||r|| sqrt(pi/2) / d * S^T sign(S r)
        seed = rotation.subseed(int(ctx.seeds[kind][il]), h)
        q = reference.ProdQuantizer(rows.shape[1], v.bits, _plain_rotation(v, rows.shape[1], seed), seed=seed + 1)
        base, signs, rnorm = q.quantize(x)
        out = base + (signs @ q.sketch) * (rnorm * math.sqrt(math.pi / 2) / rows.shape[1])[:, None]
    else:
        raise ValueError(v.kind)
    return out + mu


def layer_error(layer: LayerKV, v_k: Variant | None, v_v: Variant | None, il: int, ctx: Context) -> float:
    """||O - O_hat|| / ||O|| of one layer with K quantized by v_k and V by v_v (None: exact)."""
    q, k, v = (a.astype(np.float64) for a in (layer.q, layer.k, layer.v))
    kh = np.stack([roundtrip(v_k, "k", k[:, h], il, h, ctx) for h in range(k.shape[1])], 1) if v_k else k
    vh = np.stack([roundtrip(v_v, "v", v[:, h], il, h, ctx) for h in range(v.shape[1])], 1) if v_v else v
    approx = attention(q, kh, vh, causal_mask(q.shape[0]))
    return float(np.linalg.norm(approx - layer.exact) / np.linalg.norm(layer.exact))


def errors(layers: list[LayerKV], v_k: Variant | None, v_v: Variant | None, ctx: Context) -> np.ndarray:
    return np.array([layer_error(l, v_k, v_v, il, ctx) for il, l in enumerate(layers)])


def default_model(out_dir) -> str:
    """The studies' default model: SmolLM2-135M prepared with data-free metadata, made once in
    out_dir (the tables read only its seeds and outlier channels)."""
    from pathlib import Path

    from tqgguf import assets, prepare

    model = Path(out_dir) / "SmolLM2-135M-Instruct.Q4_1.tq.gguf"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        prepare.prepare_file(str(assets.default_model()), str(model), prepare.DEFAULT_SEED, ["tq2_5", "tq3_5"])
    return str(model)


def write_report(path, lines: list[str]) -> None:
    """A study's markdown: written to path and printed."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
