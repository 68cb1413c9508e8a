"""Seeded rotations: orthogonal, deterministic, the same in C and Python, and Gaussianizing."""
import numpy as np
import pytest
from scipy import stats

from tqgguf import _core, blocks, codebook, rotation


def test_splitmix64_known_answer():
    # Published first outputs of SplitMix64 from state 0 (Vigna's reference implementation).
    rng = rotation.SplitMix64(0)
    assert [rng.next() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_subseed_same_in_c_and_python():
    for seed, tag in [(0, 0), (1, 5), (2**64 - 1, 7), (0x7A5EED, 123)]:
        assert _core.subseed(seed, tag) == rotation.subseed(seed, tag)


@pytest.mark.parametrize("n", [16, 48, 64, 96, 128, 192])
def test_group_rotations_are_orthogonal_and_deterministic(n):
    r = rotation.group_rotation(n, 42)
    np.testing.assert_allclose(r @ r.T, np.eye(n), atol=1e-12)
    assert np.array_equal(r, rotation.group_rotation(n, 42))
    assert not np.allclose(r, rotation.group_rotation(n, 43))


def test_hadamard_is_signed_sylvester():
    r = rotation.hadamard(8, 3)
    assert np.allclose(np.abs(r), 1 / np.sqrt(8))
    with pytest.raises(ValueError):
        rotation.hadamard(48, 3)


def _outliers(d, rng):
    return np.sort(rng.choice(d, d // 4, replace=False)).astype(np.int32)


@pytest.mark.parametrize("d", [64, 128, 256])
def test_head_transform_same_in_c_and_python(d):
    rng = np.random.default_rng(d)
    for head in range(3):
        out = _outliers(d, rng)
        t_py = rotation.head_transform(d, 0xABCDEF, head, out)
        t_c = _core.head_transform(d, 0xABCDEF, head, out)
        np.testing.assert_allclose(t_c, t_py, atol=1e-12)
        np.testing.assert_allclose(t_py @ t_py.T, np.eye(d), atol=1e-12)


def test_head_transform_routes_outliers_to_hi_slots():
    d = 128
    out = np.arange(0, 128, 4, dtype=np.int32)
    t = rotation.head_transform(d, 1, 0, out)
    hi_rows, lo_rows = blocks.slot_rows(d)
    rest = np.setdiff1d(np.arange(d), out)
    assert np.all(t[np.ix_(hi_rows, rest)] == 0) and np.all(t[np.ix_(lo_rows, out)] == 0)


@pytest.mark.parametrize("bad", [[0] * 16, list(range(15)) + [64], list(range(16))[::-1]])
def test_head_transform_refuses_bad_outliers(bad):
    with pytest.raises(ValueError):
        rotation.head_transform(64, 1, 0, bad)
    with pytest.raises(ValueError):
        _core.head_transform(64, 1, 0, np.array(bad, dtype=np.int32))


def _heavy_rows(n, d, rng, planted=()):
    x = stats.t.rvs(df=3, size=(n, d), random_state=rng)
    x[:, list(planted)] *= 6.0
    return x


def _ks_p(values, d):
    return stats.kstest(values, lambda v: codebook.cdf(v, d)).pvalue


def test_rotated_rows_follow_the_beta_law_and_raw_rows_do_not():
    rng = np.random.default_rng(7)
    d, n = 128, 3000
    x = _heavy_rows(n, d, rng)
    pick = np.arange(n) % d  # one coordinate per row: independent samples
    raw = x / np.linalg.norm(x, axis=1, keepdims=True)
    rot = x @ rotation.group_rotation(d, 99).T
    rot /= np.linalg.norm(rot, axis=1, keepdims=True)
    assert _ks_p(raw[np.arange(n), pick], d) < 1e-6
    assert _ks_p(rot[np.arange(n), pick], d) > 1e-3


def test_transformed_block_groups_follow_the_law_their_codebook_assumes():
    """With planted outlier channels, each TQ group (16 hi, 48 lo slots) has the f_16 / f_48 law."""
    rng = np.random.default_rng(8)
    d, n = 128, 4000
    planted = np.arange(0, 64, 2).astype(np.int32)
    x = _heavy_rows(n, d, rng, planted)
    y = x @ rotation.head_transform(d, 5, 0, planted).T
    blk = y[:, :blocks.BLOCK]
    hi = blk[:, :blocks.HI] / np.linalg.norm(blk[:, :blocks.HI], axis=1, keepdims=True)
    lo = blk[:, blocks.HI:] / np.linalg.norm(blk[:, blocks.HI:], axis=1, keepdims=True)
    assert _ks_p(hi[np.arange(n), np.arange(n) % blocks.HI], blocks.HI) > 1e-3
    assert _ks_p(lo[np.arange(n), np.arange(n) % blocks.LO], blocks.LO) > 1e-3
