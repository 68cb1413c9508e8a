"""The C core (cpp/tq.c, the source ggml compiles too) equals the Python reference bit for bit."""
import numpy as np
import pytest

from tqgguf import _core, blocks, metadata, reference, rotation
from tqgguf.gguf_file import TensorReader, read_header

TYPES = list(blocks.TYPES)


def test_block_sizes_and_bits_per_value():
    assert {t: _core.block_bytes(t) for t in TYPES} == {t: blocks.layout(t).nbytes for t in TYPES}
    assert blocks.layout("tq2_5").bits_per_value == 2.75  # <= 2.75 at every head size, all scales counted
    assert blocks.layout("tq3_5").bits_per_value == 3.75


def test_fp16_conversion_matches_numpy():
    rng = np.random.default_rng(0)
    special = np.array([0, -0.0, 1, 65504, 65519.99, 65520, 1e-8, 2.98e-8, 2.99e-8, 6.1e-5, 6.09e-5,
                        5.96e-8, -3.0e-8, np.inf, -np.inf, 1e30], dtype=np.float32)
    bits = rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    vals = np.concatenate([special, bits[np.isfinite(bits)], rng.standard_normal(50000).astype(np.float32) * 1e-5])
    mine = np.array([_core.fp32_to_fp16(float(v)) for v in vals], dtype=np.uint16)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(mine, vals.astype(np.float16).view(np.uint16))
    halves = np.arange(0, 65536, dtype=np.uint32).astype(np.uint16)
    finite = np.isfinite(halves.view(np.float16))
    back = np.array([_core.fp16_to_fp32(int(h)) for h in halves[finite]], dtype=np.float32)
    np.testing.assert_array_equal(back, halves[finite].view(np.float16).astype(np.float32))


def _assert_same(type_name, row):
    hi, lo = reference.codebooks_for(type_name)
    c_bytes = _core.quantize_row(type_name, row, hi, lo)
    py_bytes = reference.quantize_blocks(row, type_name)
    assert c_bytes == py_bytes
    np.testing.assert_array_equal(_core.dequantize_row(type_name, c_bytes, hi, lo),
                                  reference.dequantize_blocks(py_bytes, type_name))


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_c_equals_reference_on_random_rows(type_name, head_dim):
    rng = np.random.default_rng(head_dim)
    heads = 4
    x = rng.standard_t(3, size=(8, heads, head_dim))
    x[..., 5] += 20.0  # a K-bias-like offset channel
    out = np.sort(rng.choice(head_dim, head_dim // 4, replace=False)).astype(np.int32)
    for h in range(heads):
        x[:, h] = x[:, h] @ rotation.head_transform(head_dim, 77, h, out).T
    for row in x.reshape(8, -1).astype(np.float32):
        _assert_same(type_name, row)


@pytest.mark.parametrize("type_name", TYPES)
def test_c_equals_reference_on_edge_rows(type_name):
    z = np.zeros(64, dtype=np.float32)
    one = z.copy()
    one[3] = 1.0
    tiny = np.full(64, 1e-30, dtype=np.float32)
    huge = np.full(64, 3e4, dtype=np.float32)
    for row in (z, one, tiny, huge, -one):
        _assert_same(type_name, row)
    hi, lo = reference.codebooks_for(type_name)
    np.testing.assert_array_equal(_core.dequantize_row(type_name, _core.quantize_row(type_name, z, hi, lo), hi, lo), z)


def _smollm2_k_rows(path, layer=0, n_tokens=64):
    """Real layer-0 K rows of SmolLM2 (before RoPE): token embeddings -> RMSNorm -> attn_k."""
    hdr = read_header(path)
    r = TensorReader(str(path), hdr)
    emb = r.get("token_embd.weight")[1000:1000 + n_tokens]
    x = emb / np.sqrt(np.mean(emb ** 2, axis=1, keepdims=True) + 1e-5) * r.get(f"blk.{layer}.attn_norm.weight")
    return x @ r.get(f"blk.{layer}.attn_k.weight").T, metadata.read(hdr)


@pytest.mark.parametrize("type_name", TYPES)
def test_c_equals_reference_on_real_k_rows(prepared_smollm2, type_name):
    k, meta = _smollm2_k_rows(prepared_smollm2)
    d = meta.head_dim["k"]
    heads = k.reshape(len(k), meta.n_kv_head, d)
    for h in range(meta.n_kv_head):
        t = rotation.head_transform(d, int(meta.layer_seeds["k"][0]), h, meta.outliers["k"][0, h])
        heads[:, h] = heads[:, h] @ t.T
    for row in heads.reshape(len(k), -1).astype(np.float32):
        _assert_same(type_name, row)


def test_c_refuses_bad_arguments():
    hi, lo = reference.codebooks_for("tq2_5")
    with pytest.raises(ValueError):
        _core.quantize_row("tq9_9", np.zeros(64, np.float32), hi, lo)
    with pytest.raises(ValueError):
        _core.quantize_row("tq2_5", np.zeros(63, np.float32), hi, lo)
    with pytest.raises(ValueError):
        _core.quantize_row("tq2_5", np.zeros(64, np.float32), hi[::-1].copy(), lo)
    with pytest.raises(ValueError):
        _core.dequantize_row("tq2_5", b"\0" * 21, hi, lo)
