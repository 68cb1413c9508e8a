"""capture.py is the model's own forward pass (or the ablations measure nothing real)."""
import numpy as np

from studies import ablation as ab, capture
from tqgguf import assets


def test_numpy_forward_pass_predicts_the_text(smollm2):
    text = assets.eval_text().read_text()[:20000]
    ids, layers, top1 = capture.capture(str(smollm2), text, 128)
    assert len(ids) == 128 and len(layers) == 30
    assert layers[0].k.shape == (128, 3, 64) and layers[0].q.shape == (128, 9, 64)
    # a wrong rope, norm or head mapping drops this to ~0; SmolLM2 gets ~35-40% on this text
    assert top1 > 0.2


def test_centering_is_exact_in_attention():
    # softmax ignores a shift of every key by the same vector: the premise of turboquant.k.center
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((16, 2, 8)), rng.standard_normal((16, 1, 8)), rng.standard_normal((16, 1, 8))
    mask = capture.causal_mask(16)
    shifted = k - rng.standard_normal((1, 1, 8)) * 5
    assert np.allclose(capture.attention(q, k, v, mask), capture.attention(q, shifted, v, mask))


def test_plain_variant_bits_count_the_norm():
    assert ab.Variant("", "plain", 3).bits_per_value(64) == 3.25
    assert ab.Variant("", "tq2_5").bits_per_value(128) == 2.75
