"""kvsim: the end-to-end KLD of a KV-cache format through the numpy forward pass."""
import numpy as np

from studies import ablation as ab, capture, kvsim
from tqgguf import assets, metadata, outliers as outl
from tqgguf.gguf_file import read_header


def test_kl_divergence_matches_its_definition():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    p = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    assert np.allclose(kvsim.kl_divergence(a, b), (p * np.log(p / q)).sum(1))
    assert np.allclose(kvsim.kl_divergence(a, a + 5.0), 0.0)  # a shift of every logit changes nothing


def test_window_attention_is_exact_inside_and_quantized_outside():
    rng = np.random.default_rng(1)
    T, d = 9, 8
    q, k, v = (rng.normal(size=(T, 4, d)) for _ in range(3))
    k, v = k[:, :2], v[:, :2]
    kh, vh = k + rng.normal(size=k.shape), v + rng.normal(size=v.shape)
    mask = capture.causal_mask(T)
    assert np.allclose(kvsim.attention_window(q, k, kh, v, vh, T), capture.attention(q, k, v, mask))
    w = kvsim.attention_window(q, k, kh, v, vh, 1)  # only the token itself is exact
    assert np.allclose(w[0], capture.attention(q, k, v, mask)[0])
    assert not np.allclose(w[1:], capture.attention(q, k, v, mask)[1:])
    assert not np.allclose(w[1:], capture.attention(q, kh, vh, mask)[1:])


def test_window_keys_of_a_ring_follow_the_ubatches():
    per_query = kvsim.window_keys(8, 2)
    assert per_query[5].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    # one token per ubatch: the ring holds the query's 2 predecessors besides itself
    assert kvsim.window_keys(8, 2, ubatch=1)[5].tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    # ubatches of 4 (tokens 4-7): the ring's last 2 cells before the ubatch and the ubatch's own
    assert kvsim.window_keys(8, 2, ubatch=4)[5].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    # the ring alone after the ubatch's writes: cells 6 and 7, which token 5 may not see
    assert kvsim.window_keys(8, 2, ubatch=4, ring_only=True)[5].tolist() == [0] * 8
    assert kvsim.window_keys(8, 2, ubatch=4, ring_only=True)[7].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]


def test_f16_is_near_exact_and_tq2_5_is_not(prepared_smollm2):
    m = capture.load(str(prepared_smollm2))
    meta = metadata.read(read_header(prepared_smollm2))
    chunks = kvsim.chunks(m, assets.eval_text().read_text(), 64, 1)
    ctx = ab.Context(meta.layer_seeds, meta.outliers, outl.rope_units(64, 64, m.arch, True))
    exact = []
    f16, tq = kvsim.evaluate(m, chunks, [kvsim.Cache("f16", "f16", "f16"),
                                         kvsim.Cache("tq2_5", ab.Variant("", "tq2_5"), ab.Variant("", "tq2_5"))], ctx,
                             on_exact=lambda ids, logits: exact.append((ids, logits)))
    assert f16.kld < 1e-3 and f16.same_top1 > 0.95
    assert tq.kld > 20 * f16.kld and tq.kld_sem > 0
    # the exact pass, once per chunk, is the model's own forward pass
    assert len(exact) == len(chunks) and exact[0][0] == chunks[0]
    assert np.array_equal(exact[0][1], capture.forward(m, chunks[0], dtype=np.float32))


def test_block_scale_rules():
    """In the block format, "norm" (the product's) keeps each group's length, "lsq" has the least
    error, and the study's "norm" is the C core's to the bit."""
    from tqgguf import _core, reference
    rng = np.random.default_rng(4)
    x = rng.standard_normal(64 * 200).astype(np.float32)
    err = {}
    for rule in ab.SCALE_RULES:
        xh = ab.with_scale_rule(x, "tq2_5", rule)
        err[rule] = float(np.mean((x - xh) ** 2))
    hi, lo = reference.codebooks_for("tq2_5")
    core = np.asarray(_core.dequantize_row("tq2_5", _core.quantize_row("tq2_5", x, hi, lo), hi, lo))
    np.testing.assert_array_equal(ab.with_scale_rule(x, "tq2_5", "norm"), core)
    g = lambda a: np.linalg.norm(a.reshape(-1, 64)[:, 16:], axis=1)
    np.testing.assert_allclose(g(core), g(x), rtol=2e-3)  # f16 scale rounding only
    assert err["lsq"] < err["plain"] and err["lsq"] < err["norm"]


def test_plain_blocks_keep_each_block_length_with_codebook_values():
    """run_levers' "p2" (2-bit codes for a whole block of 64, one f16 scale): every value is a
    scaled centroid of the 64-dimensional 2-bit codebook, each block keeps its length (the
    norm rule, to the f16 scale's rounding), and the error is the codebook's, not more."""
    from studies.run_levers import _plain_blocks
    from tqgguf import codebook
    z = np.random.default_rng(1).standard_normal((40, 128)).astype(np.float32)
    r = _plain_blocks(z, 2)
    g, rg = z.reshape(-1, 64).astype(np.float64), r.reshape(-1, 64)
    c = codebook.scaled_f32(64, 2)
    levels = np.sort(np.abs(c))[[0, -1]] / np.abs(c).max()  # a symmetric 4-level codebook: two magnitudes
    for row, rec in zip(g, rg):
        a = np.abs(rec) / np.abs(rec).max()
        assert np.all(np.isclose(a[:, None], levels[None, :], rtol=1e-5).any(1))
        assert np.isclose(np.linalg.norm(rec), np.linalg.norm(row), rtol=1e-3)
    nmse = ((r - z) ** 2).sum() / (z ** 2).sum()
    assert 0.10 < nmse < 0.16  # 2-bit Lloyd-Max on a rotated coordinate: about 0.12-0.13
