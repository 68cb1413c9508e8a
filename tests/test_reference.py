"""The numpy reference: TurboQuant_mse distortion, TurboQuant_prod unbiasedness, outlier split."""
import math

import numpy as np
import pytest

from tqgguf import codebook, reference, rotation


def _unit_rows(n, d, rng):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_mse_quantizer_error_matches_codebook_distortion(bits):
    d = 128
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((4000, d)) * 3.0  # any scale: the norm is stored
    q = reference.MSEQuantizer(d, bits, rotation.group_rotation(d, 11), norm_correction=False)
    xh = q.dequantize(*q.quantize(x))
    rel = np.mean(np.sum((x - xh) ** 2, axis=1) / np.sum(x * x, axis=1))
    assert rel == pytest.approx(codebook.normalised_distortion(d, bits), rel=0.03)


def test_norm_correction_keeps_length():
    d = 64
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, d))
    rot = rotation.group_rotation(d, 1)
    plain = reference.MSEQuantizer(d, 2, rot, norm_correction=False)
    corr = reference.MSEQuantizer(d, 2, rot, norm_correction=True)
    xc = corr.dequantize(*corr.quantize(x))
    xp = plain.dequantize(*plain.quantize(x))
    np.testing.assert_allclose(np.linalg.norm(xc, axis=1), np.linalg.norm(x, axis=1), rtol=1e-12)
    # the plain norm is MSE-right on average (centroid condition): correction costs a little MSE
    assert np.mean((x - xp) ** 2) < np.mean((x - xc) ** 2) < 1.05 * np.mean((x - xp) ** 2)


def _inner_products(quantizer_for_seed, x, y, seeds):
    return np.array([quantizer_for_seed(s)(x, y) for s in seeds])


def test_prod_is_unbiased_and_mse_is_biased_at_low_bits():
    d = 64
    rng = np.random.default_rng(5)
    x, y = _unit_rows(1, d, rng)[0], _unit_rows(1, d, rng)[0]
    y = 0.6 * x + 0.8 * y / np.linalg.norm(y)  # a correlated query, <x, y> ~ 0.6
    true = float(x @ y)
    seeds = range(600)

    def prod(s):
        q = reference.ProdQuantizer(d, 2, rotation.haar(d, 2 * s), seed=2 * s + 1)
        return lambda a, b: float(q.inner(b, q.quantize(a))[0, 0])

    def mse1(s):
        q = reference.MSEQuantizer(d, 1, rotation.haar(d, 2 * s), norm_correction=False)
        return lambda a, b: float(q.dequantize(*q.quantize(a))[0] @ b)

    est_prod = _inner_products(prod, x, y, seeds)
    est_mse = _inner_products(mse1, x, y, seeds)
    se = est_prod.std() / math.sqrt(len(est_prod))
    assert abs(est_prod.mean() - true) < 4 * se
    # 1-bit mse shrinks inner products by ~2/pi (the paper's bias)
    assert est_mse.mean() / true == pytest.approx(2 / math.pi, abs=0.05)
    assert abs(est_mse.mean() - true) > 10 * est_mse.std() / math.sqrt(len(est_mse))


def test_split_quantizer_bits_and_benefit_on_outlier_channels():
    d = 128
    rng = np.random.default_rng(9)
    out = np.arange(32) * 4
    x = rng.standard_normal((3000, d))
    x[:, out] *= 8.0
    split = reference.SplitQuantizer(d, out, hi_bits=3, lo_bits=2, seed=4)
    assert split.bits == pytest.approx(2.25)
    plain = reference.MSEQuantizer(d, 2, rotation.group_rotation(d, 4))
    err_split = np.mean((x - split.roundtrip(x)) ** 2)
    err_plain = np.mean((x - plain.dequantize(*plain.quantize(x))) ** 2)
    assert err_split < 0.7 * err_plain
