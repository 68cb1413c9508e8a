"""Preconditioners (tqgguf/precondition.py): the matrices prepare stores, checked against their math."""
import numpy as np
import pytest

from tqgguf import precondition as pc


def _moments(rng, d, spread):
    """A random second moment whose eigenvalues span ``spread`` decades."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.logspace(0, -spread, d)) @ q.T


def _cost(p, s_x, s_w):
    """What isotropic rounding of P x costs, read through s_w: tr(P S_x P^T) tr(P^-T S_w P^-1)."""
    p_inv = np.linalg.inv(p)
    return np.trace(p @ s_x @ p.T) * np.trace(p_inv.T @ s_w @ p_inv)


def test_inverse_and_rows_by_energy():
    rng = np.random.default_rng(0)
    s_x, s_w = _moments(rng, 64, 3), _moments(rng, 64, 2)
    p, p_inv = pc.head_preconditioner(s_x, s_w)
    assert np.abs(p @ p_inv - np.eye(64)).max() < 1e-9
    energy = np.diag(p @ s_x @ p.T)
    assert np.all(np.diff(energy) <= 1e-9 * energy[0])
    assert energy.mean() == pytest.approx(1.0)


def test_full_strength_reaches_the_bound_and_half_lies_between():
    rng = np.random.default_rng(1)
    d = 64
    s_x, s_w = _moments(rng, d, 3), _moments(rng, d, 3)
    # the least cost over all P: (sum of the square roots of eig(S_x S_w))^2, reached by the geometric mean
    bound = np.sum(np.sqrt(np.clip(np.linalg.eigvals(s_x @ s_w).real, 0, None))) ** 2
    full = _cost(pc.head_preconditioner(s_x, s_w, alpha=1.0, ridge=0.0)[0], s_x, s_w)
    half = _cost(pc.head_preconditioner(s_x, s_w, alpha=0.5, ridge=0.0)[0], s_x, s_w)
    none = _cost(np.eye(d), s_x, s_w)
    assert full == pytest.approx(bound, rel=1e-6)
    assert bound < half < none


def test_zero_strength_is_a_rotation():
    rng = np.random.default_rng(2)
    p, _ = pc.head_preconditioner(_moments(rng, 64, 2), _moments(rng, 64, 2), alpha=0.0)
    g = p @ p.T
    assert np.abs(g / g[0, 0] - np.eye(64)).max() < 1e-9


def test_v_preconditioner_weighs_each_kv_head_by_its_query_heads_columns():
    class Stats:  # two KV heads, four query heads, head 64
        n_layer, n_head, n_kv_head, head_dim_v = 1, 4, 2, 64
    rng = np.random.default_rng(4)
    Stats.mean = {"v": np.zeros((1, 2, 64))}
    Stats.cov = {"v": np.broadcast_to(np.eye(64), (1, 2, 64, 64))}
    w = rng.standard_normal((32, 4 * 64))
    w[:, 2 * 64:] = np.tile(np.eye(32, 64), 2)  # query heads 2 and 3 (KV head 1) read channels 0..31 only
    v = pc.v_preconditioner(Stats, [w])
    for h, cols in ((0, w[:, :128]), (1, w[:, 128:])):
        s_w = sum(c.T @ c for c in (cols[:, :64], cols[:, 64:]))
        want, _ = pc.head_preconditioner(np.eye(64), s_w)
        assert np.allclose(v.p[0, h], want)


def test_degenerate_statistics_are_refused():
    with pytest.raises(pc.PreconditionError):
        pc.v_preconditioner(type("S", (), {"n_layer": 1, "n_head": 1, "n_kv_head": 1, "head_dim_v": 64,
                                           "mean": {"v": np.full((1, 1, 64), np.nan)},
                                           "cov": {"v": np.zeros((1, 1, 64, 64))}}), [np.ones((8, 64))])
