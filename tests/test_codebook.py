"""Lloyd-Max codebooks for the exact coordinate law of a random unit vector."""
import math

import numpy as np
import pytest
from scipy import integrate

from tqgguf import codebook

DIMS = [16, 32, 48, 64, 96, 128, 192, 256]


@pytest.mark.parametrize("d", [3, 16, 64, 256])
def test_density_is_a_probability_law(d):
    total, _ = integrate.quad(codebook.density, -1, 1, args=(d,), limit=200)
    var, _ = integrate.quad(lambda x: x * x * codebook.density(x, d), -1, 1, limit=200)
    assert total == pytest.approx(1.0, abs=1e-9)
    assert var == pytest.approx(1.0 / d, rel=1e-7)  # E[x^2] = 1/d for a unit vector's coordinate


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_lloyd_conditions_and_symmetry(d, bits):
    c = codebook.centroids(d, bits)
    assert len(c) == 2 ** bits and np.all(np.diff(c) > 0)
    np.testing.assert_allclose(c, -c[::-1], atol=1e-15)
    t = codebook.boundaries(c)
    edges = np.concatenate([[-1.0], t, [1.0]])
    for i in range(len(c)):  # each centroid is its cell's conditional mean, by direct quadrature
        pts = np.clip(np.array([0.0, 1 / math.sqrt(d), 3 / math.sqrt(d)]), edges[i], edges[i + 1])
        m, _ = integrate.quad(codebook.density, edges[i], edges[i + 1], args=(d,), points=pts, limit=200)
        mx, _ = integrate.quad(lambda x: x * codebook.density(x, d), edges[i], edges[i + 1], points=pts, limit=200)
        assert mx / m == pytest.approx(c[i], rel=1e-6, abs=1e-12)
    np.testing.assert_array_equal(t, (c[1:] + c[:-1]) / 2)


@pytest.mark.parametrize("bits,expected", [(1, 0.36), (2, 0.116), (3, 0.034), (4, 0.0093)])
def test_normalised_distortion_at_128_matches_the_paper(bits, expected):
    assert codebook.normalised_distortion(128, bits) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_distortion_within_the_papers_bounds(d, bits):
    dd = codebook.normalised_distortion(d, bits)
    assert 4.0 ** -bits <= dd <= math.sqrt(3) * math.pi / 2 * 4.0 ** -bits


def test_distortion_matches_monte_carlo():
    d, bits = 64, 2
    rng = np.random.default_rng(1)
    u = rng.standard_normal((20000, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    c = codebook.centroids(d, bits)
    q = c[np.searchsorted(codebook.boundaries(c), u)]
    assert np.mean(np.sum((u - q) ** 2, axis=1)) == pytest.approx(codebook.normalised_distortion(d, bits), rel=0.02)


def test_deterministic_and_scaled():
    a = codebook.scaled_f32(48, 3)
    codebook._lloyd_max.cache_clear()
    b = codebook.scaled_f32(48, 3)
    assert a.dtype == np.float32 and a.tobytes() == b.tobytes()
    np.testing.assert_allclose(a, codebook.centroids(48, 3) * math.sqrt(48), rtol=1e-7)


@pytest.mark.parametrize("d,bits", [(2, 2), (16, 0), (16, 9), (5000, 2)])
def test_refuses_out_of_range(d, bits):
    with pytest.raises(ValueError):
        codebook.centroids(d, bits)


@pytest.mark.parametrize("d", DIMS)
def test_c_core_computes_the_same_float32_codebooks(d):
    """ggml computes its own codebooks (cpp/tq_codebook.c) when no model set them: they must be these."""
    from tqgguf import _core
    for bits in (1, 2, 3, 4):
        np.testing.assert_array_equal(_core.codebook_scaled(d, bits), codebook.scaled_f32(d, bits))
