"""Every ``turboquant.*`` GGUF key: its name, type and meaning, and how to build and check them.

docs/metadata.md is the prose twin of this module; the patched llama.cpp reads the
same keys (patches/, src/llama-turboquant.cpp) and applies the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gguf.constants import GGUFValueType as VT

from . import blocks
from .gguf_file import Header, KV, make_kv

PREFIX = "turboquant."
# 2: codebooks left the metadata (they are fixed by the block layout: ggml computes them once),
# and turboquant.checksum seals every other turboquant.* record.
# 3: the optional preconditioners turboquant.{k,v}.precond(_inv); format 2 files still read.
FORMAT_VERSION = 3
FORMAT_VERSION_MIN = 2

K_VERSION = "turboquant.format_version"      # u32: FORMAT_VERSION
K_SEED = "turboquant.seed"                   # u64: master seed of every rotation
K_TYPES = "turboquant.types"                 # [str]: TQ cache types this file was prepared for
K_BLOCK = "turboquant.block_size"            # u32: values per TQ block (64)
K_BLOCK_HI = "turboquant.block_hi"           # u32: outlier-group slots per block (16)
K_LAYERS = "turboquant.layer_count"          # u32: layers covered
K_KV_HEADS = "turboquant.kv_head_count"      # u32: KV heads per layer
K_OUTLIER_METHOD = "turboquant.outlier_method"  # str: how outlier channels were chosen
K_CHECKSUM = "turboquant.checksum"          # u64: FNV-1a 64 of every other turboquant.* record (seal)
K_K_CENTER = "turboquant.k.center"            # [f32] n_layer * n_kv_head * k head_dim, optional: calibrated mean
                                              # K row (after RoPE) per head; the cache stores T (k - mu)
K_CAL_POSITIONS = "turboquant.calibration_positions"  # u32, optional: the context the statistics were taken over
K_K_EXACT = "turboquant.k.exact_tokens"       # u32, optional: first cells of each stream whose K the cache also
                                              # keeps unquantized (the attention sink)
K_EXACT_MAX = 32                              # more would be a second cache, not a sink (ggml-tq.h: GGML_TQ_K_EXACT_MAX)
K_WINDOW = "turboquant.window_tokens"         # u32, optional: each query's last tokens (itself included) whose K
                                              # and V the attention reads unquantized (the recent window)
WINDOW_MAX = 256                              # more would be a second cache (ggml-tq.h: GGML_TQ_WINDOW_MAX)


def k_head_dim(kind: str) -> str:            # u32: head size of K ("k") or V ("v")
    return f"turboquant.{kind}.head_dim"


def k_layer_seeds(kind: str) -> str:         # [u64] n_layer: per-layer rotation seeds
    return f"turboquant.{kind}.layer_seeds"


def k_outliers(kind: str) -> str:            # [i32] n_layer * n_kv_head * head_dim/4, sorted per head
    return f"turboquant.{kind}.outliers"


def k_precond(kind: str) -> str:             # [f32] n_layer * n_kv_head * d * d, optional: P per head,
    return f"turboquant.{kind}.precond"       # row-major, applied before the rotation (precondition.py)


def k_precond_inv(kind: str) -> str:         # [f32] the same shape: P^-1 per head
    return f"turboquant.{kind}.precond_inv"


def k_type_bits(type_name: str) -> str:      # [u32] (hi bits, lo bits) of a TQ type
    return f"turboquant.{type_name}.bits"


KINDS = ("k", "v")

# A K center beyond f16's range cannot be the mean of keys that an f16 cache could hold.
K_CENTER_MAX = 65504.0
# A preconditioner entry beyond this, or a P P^-1 further than this from the identity, is corrupt
# (prepare's are well conditioned and computed in double); llama-tq.cpp checks the same.
PRECOND_MAX = 1.0e4
PRECOND_INV_TOL = 1.0e-3


def checksum(kvs: list[KV]) -> int:
    """FNV-1a 64 over the raw GGUF records of every turboquant.* key but the checksum itself,
    sorted by key: the reader recomputes it, so a record changed after prepare cannot load."""
    h = 0xCBF29CE484222325
    for raw in sorted((kv.key, kv.raw) for kv in kvs if kv.key.startswith(PREFIX) and kv.key != K_CHECKSUM):
        for b in raw[1]:
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def seal(kvs: list[KV]) -> list[KV]:
    """``kvs`` with turboquant.checksum (re)computed over its turboquant.* records, last."""
    kept = [kv for kv in kvs if kv.key != K_CHECKSUM]
    return kept + [make_kv(K_CHECKSUM, VT.UINT64, checksum(kept))]


@dataclass
class TQMeta:
    """The TurboQuant side data of one model, as prepare writes it and llama.cpp reads it."""
    seed: int
    types: list[str]
    n_layer: int
    n_kv_head: int
    head_dim: dict[str, int]               # kind -> head size
    layer_seeds: dict[str, np.ndarray]     # kind -> (n_layer,) uint64
    outliers: dict[str, np.ndarray]        # kind -> (n_layer, n_kv_head, head_dim/4) int32
    outlier_method: str = "weights"        # outliers.py; chosen by docs/ablation.md table 2
    k_center: np.ndarray | None = None     # (n_layer, n_kv_head, k head_dim) or None (docs/ablation.md tables 5, 8)
    # kind -> (P, P^-1), each (n_layer, n_kv_head, d, d); a kind without one is absent
    precond: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    calibration_positions: int | None = None  # positions 0..n-1 the centers/preconditioners saw
    k_exact_tokens: int = 0                # first tokens whose K is kept exact (docs/ablation.md, section 10)
    window_tokens: int = 0                 # recent tokens whose K and V are read exact (docs/ablation.md)

    def to_kvs(self) -> list[KV]:
        kvs = [
            make_kv(K_VERSION, VT.UINT32, FORMAT_VERSION),
            make_kv(K_SEED, VT.UINT64, self.seed),
            make_kv(K_TYPES, VT.ARRAY, self.types, VT.STRING),
            make_kv(K_BLOCK, VT.UINT32, blocks.BLOCK),
            make_kv(K_BLOCK_HI, VT.UINT32, blocks.HI),
            make_kv(K_LAYERS, VT.UINT32, self.n_layer),
            make_kv(K_KV_HEADS, VT.UINT32, self.n_kv_head),
            make_kv(K_OUTLIER_METHOD, VT.STRING, self.outlier_method),
        ]
        for t in self.types:
            lay = blocks.layout(t)
            kvs.append(make_kv(k_type_bits(t), VT.ARRAY, [lay.hi_bits, lay.lo_bits], VT.UINT32))
        for kind in KINDS:
            kvs.append(make_kv(k_head_dim(kind), VT.UINT32, self.head_dim[kind]))
            kvs.append(make_kv(k_layer_seeds(kind), VT.ARRAY, self.layer_seeds[kind], VT.UINT64))
            kvs.append(make_kv(k_outliers(kind), VT.ARRAY, self.outliers[kind].reshape(-1), VT.INT32))
        if self.calibration_positions is not None:
            kvs.append(make_kv(K_CAL_POSITIONS, VT.UINT32, self.calibration_positions))
        if self.k_exact_tokens:
            kvs.append(make_kv(K_K_EXACT, VT.UINT32, self.k_exact_tokens))
        if self.window_tokens:
            kvs.append(make_kv(K_WINDOW, VT.UINT32, self.window_tokens))
        if self.k_center is not None:
            kvs.append(make_kv(K_K_CENTER, VT.ARRAY, self.k_center.reshape(-1).astype(np.float32), VT.FLOAT32))
        for kind, (p, p_inv) in sorted(self.precond.items()):
            kvs.append(make_kv(k_precond(kind), VT.ARRAY, p.reshape(-1).astype(np.float32), VT.FLOAT32))
            kvs.append(make_kv(k_precond_inv(kind), VT.ARRAY, p_inv.reshape(-1).astype(np.float32), VT.FLOAT32))
        return seal(kvs)


class MetadataError(ValueError):
    """TurboQuant metadata that is missing or malformed; one line, naming the key."""


def has_metadata(hdr: Header) -> bool:
    return any(kv.key.startswith(PREFIX) for kv in hdr.kvs)


def _get(hdr: Header, key: str, vtype: VT, elem: VT | None = None, length: int | None = None):
    for kv in hdr.kvs:
        if kv.key != key:
            continue
        if kv.type != vtype or (elem is not None and kv.elem_type != elem):
            want = vtype.name + (f" of {elem.name}" if elem is not None else "")
            raise MetadataError(f"{key} has the wrong type (expected {want})")
        if length is not None and len(kv.value) != length:
            raise MetadataError(f"{key} has {len(kv.value)} elements, expected {length}")
        return kv.value
    raise MetadataError(f"{key} is missing")


def read(hdr: Header) -> TQMeta:
    """Read and check the TurboQuant metadata; MetadataError (one line) if anything is off."""
    if not has_metadata(hdr):
        raise MetadataError("the model has no turboquant.* metadata: run `tqgguf prepare` on it first")
    version = _get(hdr, K_VERSION, VT.UINT32)
    if not FORMAT_VERSION_MIN <= version <= FORMAT_VERSION:
        raise MetadataError(f"{K_VERSION} is {version}, this tqgguf reads {FORMAT_VERSION_MIN} to {FORMAT_VERSION}: "
                            "run `tqgguf prepare` again")
    if _get(hdr, K_BLOCK, VT.UINT32) != blocks.BLOCK or _get(hdr, K_BLOCK_HI, VT.UINT32) != blocks.HI:
        raise MetadataError(f"{K_BLOCK}/{K_BLOCK_HI} must be {blocks.BLOCK}/{blocks.HI}")
    stored = _get(hdr, K_CHECKSUM, VT.UINT64)
    if stored != checksum(hdr.kvs):
        raise MetadataError(f"{K_CHECKSUM} does not match the turboquant.* records: the metadata was changed "
                            "after `tqgguf prepare`; prepare the model again")
    types = list(_get(hdr, K_TYPES, VT.ARRAY, VT.STRING))
    for t in types:
        try:
            lay = blocks.layout(t)
        except ValueError as e:
            raise MetadataError(f"{K_TYPES}: {e}") from None
        bits = _get(hdr, k_type_bits(t), VT.ARRAY, VT.UINT32, 2)
        if list(bits) != [lay.hi_bits, lay.lo_bits]:
            raise MetadataError(f"{k_type_bits(t)} is {list(bits)}, {t} is {[lay.hi_bits, lay.lo_bits]}")
    n_layer = _get(hdr, K_LAYERS, VT.UINT32)
    n_kv = _get(hdr, K_KV_HEADS, VT.UINT32)
    if not (0 < n_layer <= 4096 and 0 < n_kv <= 4096):
        raise MetadataError(f"{K_LAYERS}={n_layer} or {K_KV_HEADS}={n_kv} is out of range")
    meta = TQMeta(seed=_get(hdr, K_SEED, VT.UINT64), types=types, n_layer=n_layer, n_kv_head=n_kv,
                  head_dim={}, layer_seeds={}, outliers={},
                  outlier_method=_get(hdr, K_OUTLIER_METHOD, VT.STRING))
    for kind in KINDS:
        d = _get(hdr, k_head_dim(kind), VT.UINT32)
        if not (0 < d <= 1024) or d % blocks.BLOCK:
            raise MetadataError(f"{k_head_dim(kind)} is {d}: TQ types need a multiple of {blocks.BLOCK} up to 1024")
        n_hi = d // blocks.BLOCK * blocks.HI
        meta.head_dim[kind] = d
        meta.layer_seeds[kind] = np.asarray(_get(hdr, k_layer_seeds(kind), VT.ARRAY, VT.UINT64, n_layer))
        out = np.asarray(_get(hdr, k_outliers(kind), VT.ARRAY, VT.INT32, n_layer * n_kv * n_hi))
        out = out.reshape(n_layer, n_kv, n_hi)
        if out.min() < 0 or out.max() >= d or np.any(np.diff(out, axis=-1) <= 0):
            raise MetadataError(f"{k_outliers(kind)}: each head's channels must be sorted, distinct and in [0, {d})")
        meta.outliers[kind] = out
    if any(kv.key == K_K_CENTER for kv in hdr.kvs):
        d = meta.head_dim["k"]
        c = np.asarray(_get(hdr, K_K_CENTER, VT.ARRAY, VT.FLOAT32, n_layer * n_kv * d), dtype=np.float32)
        if not np.all(np.isfinite(c)) or np.max(np.abs(c)) > K_CENTER_MAX:
            raise MetadataError(f"{K_K_CENTER} must be finite and within f16's range (|x| <= {K_CENTER_MAX:g})")
        meta.k_center = c.reshape(n_layer, n_kv, d)
    keys = {kv.key for kv in hdr.kvs}
    if K_CAL_POSITIONS in keys:
        meta.calibration_positions = int(_get(hdr, K_CAL_POSITIONS, VT.UINT32))
    if K_K_EXACT in keys:
        meta.k_exact_tokens = int(_get(hdr, K_K_EXACT, VT.UINT32))
        if meta.k_exact_tokens > K_EXACT_MAX:
            raise MetadataError(f"{K_K_EXACT} is {meta.k_exact_tokens}: at most {K_EXACT_MAX}")
    if K_WINDOW in keys:
        meta.window_tokens = int(_get(hdr, K_WINDOW, VT.UINT32))
        if meta.window_tokens > WINDOW_MAX:
            raise MetadataError(f"{K_WINDOW} is {meta.window_tokens}: at most {WINDOW_MAX}")
    for kind in KINDS:
        if (k_precond(kind) in keys) != (k_precond_inv(kind) in keys):
            raise MetadataError(f"{k_precond(kind)} and {k_precond_inv(kind)} come together")
        if k_precond(kind) not in keys:
            continue
        if version < 3:
            raise MetadataError(f"{k_precond(kind)} needs {K_VERSION} 3")
        d = meta.head_dim[kind]
        n = n_layer * n_kv * d * d
        p, p_inv = (np.asarray(_get(hdr, key, VT.ARRAY, VT.FLOAT32, n), dtype=np.float32).reshape(n_layer, n_kv, d, d)
                    for key in (k_precond(kind), k_precond_inv(kind)))
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(p_inv))) or max(np.abs(p).max(), np.abs(p_inv).max()) > PRECOND_MAX:
            raise MetadataError(f"{k_precond(kind)} and {k_precond_inv(kind)} must be finite and below {PRECOND_MAX:g}")
        err = np.abs(p.astype(np.float64) @ p_inv.astype(np.float64) - np.eye(d)).max(axis=(-2, -1))
        if err.max() > PRECOND_INV_TOL:
            il, h = np.unravel_index(int(err.argmax()), err.shape)
            raise MetadataError(f"{k_precond_inv(kind)} is not the inverse of {k_precond(kind)} (layer {il}, head {h})")
        meta.precond[kind] = (p, p_inv)
    return meta
