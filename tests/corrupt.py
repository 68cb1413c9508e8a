"""Test helper: copies of a prepared GGUF with one turboquant.* key broken in one way each.

Used by the Python reader's tests (test_metadata.py) and by the patched llama.cpp's
(test_llama_cpu.py): both must refuse every case with one line, never crash.
"""
import numpy as np
from gguf.constants import GGUFValueType as VT

from tqgguf import metadata
from tqgguf.gguf_file import Header, header_bytes, make_kv, read_header


def rewrite(src, dst, edit, reseal=True):
    """Copy ``src`` with its KV list passed through ``edit``; tensors byte for byte. ``reseal``:
    recompute turboquant.checksum, as a deliberate edit would, so that the check under test is the
    one that refuses the file (and not the checksum, which ``reseal=False`` tests)."""
    hdr = read_header(src)
    kvs = edit(list(hdr.kvs))
    if reseal:
        kvs = metadata.seal(kvs)
    new = Header(version=hdr.version, kvs=kvs, tensors=hdr.tensors, alignment=hdr.alignment)
    with open(src, "rb") as f, open(dst, "wb") as out:
        out.write(header_bytes(new))
        f.seek(hdr.data_offset)
        while chunk := f.read(16 << 20):
            out.write(chunk)
    return dst


def replace(key, vtype, value, elem=None):
    return lambda kvs: [make_kv(key, vtype, value, elem) if kv.key == key else kv for kv in kvs]


def add(key, vtype, value, elem=None):
    return lambda kvs: [kv for kv in kvs if kv.key != key] + [make_kv(key, vtype, value, elem)]


def drop(key):
    return lambda kvs: [kv for kv in kvs if kv.key != key]


def shift_k_center(delta: float):
    """Every element of turboquant.k.center moved by ``delta``: plausible values, wrong ones."""
    def edit(kvs):
        kv = next(kv for kv in kvs if kv.key == metadata.K_K_CENTER)
        return replace(metadata.K_K_CENTER, VT.ARRAY, np.asarray(kv.value, np.float32) + delta, VT.FLOAT32)(kvs)
    return edit


def unsealed_cases() -> dict:
    """Edits made without recomputing the checksum (corruption, or a hand edit): name -> (edit, needle)."""
    return {
        "checksum missing": (drop(metadata.K_CHECKSUM), "checksum"),
        "seed changed": (replace(metadata.K_SEED, VT.UINT64, 12345), "checksum"),
        "outlier method renamed": (replace(metadata.K_OUTLIER_METHOD, VT.STRING, "weightz"), "checksum"),
    }


def cases(n_layer: int, n_kv: int, head_dim: int) -> dict:
    """name -> (edit, a word the refusal must contain), for a model of this shape (sealed again)."""
    n_out = n_layer * n_kv * head_dim // 4
    n_center = n_layer * n_kv * head_dim
    big = np.zeros(n_center, np.float32)
    big[7] = 9.9e5
    return {
        "missing version": (drop(metadata.K_VERSION), metadata.K_VERSION),
        "future version": (replace(metadata.K_VERSION, VT.UINT32, 99), "format_version"),
        "version as string": (replace(metadata.K_VERSION, VT.STRING, "1"), "wrong type"),
        "head dim 80": (replace(metadata.k_head_dim("k"), VT.UINT32, 80), "head_dim"),
        "absurd layers": (replace(metadata.K_LAYERS, VT.UINT32, 2**31), "layer_count"),
        "absurd kv heads": (replace(metadata.K_KV_HEADS, VT.UINT32, 2**30), "kv_head_count"),
        "seeds too short": (replace(metadata.k_layer_seeds("v"), VT.ARRAY, [1], VT.UINT64), "layer_seeds"),
        "seeds wrong type": (replace(metadata.k_layer_seeds("v"), VT.ARRAY, [1.0] * n_layer, VT.FLOAT32), "layer_seeds"),
        "outliers short": (replace(metadata.k_outliers("k"), VT.ARRAY, np.arange(5), VT.INT32), "outliers"),
        "outliers huge count": (replace(metadata.k_outliers("k"), VT.ARRAY, np.arange(n_out * 4), VT.INT32), "outliers"),
        "outliers out of range": (replace(metadata.k_outliers("k"), VT.ARRAY, np.arange(n_out) + 10**6, VT.INT32),
                                  "outliers"),
        "outliers repeated": (replace(metadata.k_outliers("k"), VT.ARRAY, np.zeros(n_out), VT.INT32), "outliers"),
        "type bits": (replace(metadata.k_type_bits("tq2_5"), VT.ARRAY, [4, 2], VT.UINT32), "tq2_5"),
        "unknown type": (replace(metadata.K_TYPES, VT.ARRAY, ["tq9_9"], VT.STRING), "tq9_9"),
        "block size": (replace(metadata.K_BLOCK, VT.UINT32, 32), "block_size"),
        "k center short": (add(metadata.K_K_CENTER, VT.ARRAY, [0.0] * 5, VT.FLOAT32), "k.center"),
        "k center nan": (add(metadata.K_K_CENTER, VT.ARRAY, [np.nan] * (n_layer * n_kv * head_dim), VT.FLOAT32),
                         "k.center"),
        "k center wrong type": (add(metadata.K_K_CENTER, VT.ARRAY, [0] * (n_layer * n_kv * head_dim), VT.INT32),
                                "k.center"),
        "k center beyond f16": (add(metadata.K_K_CENTER, VT.ARRAY, big, VT.FLOAT32), "k.center"),
        "calibration positions wrong type": (add(metadata.K_CAL_POSITIONS, VT.STRING, "4096"), "calibration_positions"),
        "exact tokens beyond the sink": (add(metadata.K_K_EXACT, VT.UINT32, metadata.K_EXACT_MAX + 1), "exact_tokens"),
        "exact tokens wrong type": (add(metadata.K_K_EXACT, VT.INT32, 4), "exact_tokens"),
        "window beyond its maximum": (add(metadata.K_WINDOW, VT.UINT32, metadata.WINDOW_MAX + 1), "window_tokens"),
        "window wrong type": (add(metadata.K_WINDOW, VT.INT32, 32), "window_tokens"),
        **precond_cases(n_layer, n_kv, head_dim),
    }


def with_precond(kind: str, p: np.ndarray, p_inv: np.ndarray):
    """turboquant.{kind}.precond(_inv) set to ``p`` / ``p_inv`` (format 3)."""
    def edit(kvs):
        kvs = add(metadata.k_precond(kind), VT.ARRAY, np.asarray(p, np.float32).reshape(-1), VT.FLOAT32)(kvs)
        kvs = add(metadata.k_precond_inv(kind), VT.ARRAY, np.asarray(p_inv, np.float32).reshape(-1), VT.FLOAT32)(kvs)
        return replace(metadata.K_VERSION, VT.UINT32, 3)(kvs)
    return edit


def precond_cases(n_layer: int, n_kv: int, head_dim: int) -> dict:
    eye = np.broadcast_to(np.eye(head_dim, dtype=np.float32), (n_layer, n_kv, head_dim, head_dim))
    nan = eye.copy()
    nan[-1, -1, 3, 5] = np.nan
    huge = eye * 2e4
    alone = lambda kvs: add(metadata.k_precond("v"), VT.ARRAY, eye.reshape(-1), VT.FLOAT32)(
        replace(metadata.K_VERSION, VT.UINT32, 3)(kvs))
    def in_format_2(kvs):
        return replace(metadata.K_VERSION, VT.UINT32, 2)(with_precond("k", eye, eye)(kvs))
    return {
        "precond without its inverse": (alone, "precond"),
        "precond not the inverse": (with_precond("k", eye, 2 * eye), "inverse"),
        "precond nan": (with_precond("v", nan, eye), "finite"),
        "precond huge": (with_precond("k", huge, eye / 2e4), "finite"),
        "precond short": (with_precond("k", eye.reshape(-1)[:5], eye.reshape(-1)[:5]), "precond"),
        "precond in format 2": (in_format_2, "format_version 3"),
    }
