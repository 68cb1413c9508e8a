"""Preconditioners: where in each head a TQ cache spends its precision (turboquant.{k,v}.precond).

A TQ block gives every direction of a transformed row the same relative error. The model does
not see that error evenly. K's error reaches the scores through the queries (q . e); V's error
reaches the residual stream through the output projection (W_o e). So the graph maps each K row
by a matrix P before the seeded rotation, and Q by P^-T, which leaves every score q . k as it
was. V rows get their own P, and the attention output gets P^-1, which leaves the output as it
was. Only the rounding changes: it now falls where the queries, or W_o, look least.

For rows x of second moment S_x and an error read through S_w (the queries' second moment for
K, W_o^T W_o for V), quantizing P x isotropically costs tr(P S_x P^T) tr(P^-T S_w P^-1). That is
smallest when P^T P is the matrix geometric mean of S_x^-1 and S_w. Calibration statistics from
1024 tokens are not the whole truth, so prepare goes half way, P^T P = G^ALPHA
(docs/ablation.md, the preconditioner table). P's rows come sorted by energy, so a head's first
quarter of channels is its outlier group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# How far towards the geometric mean: 0 is no preconditioning, 1 trusts the statistics fully.
ALPHA = 0.5
# Ridge on both second moments, relative to their mean eigenvalue: keeps P finite on heads whose
# calibration rows span fewer directions than the head has.
RIDGE = 1e-3


class PreconditionError(ValueError):
    """Statistics that cannot give a preconditioner; one line."""


@dataclass
class Preconditioner:
    """One kind's matrices: ``p`` and ``p_inv``, (n_layer, n_kv_head, d, d) float64, y = P x."""
    p: np.ndarray
    p_inv: np.ndarray


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, u = np.linalg.eigh((a + a.T) / 2)
    return (u * np.sqrt(np.clip(w, 0.0, None))) @ u.T


def head_preconditioner(s_x: np.ndarray, s_w: np.ndarray, alpha: float = ALPHA,
                        ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """(P, P^-1) for one head: rows x of second moment ``s_x``, error weighted by ``s_w``."""
    d = s_x.shape[0]
    eye = np.eye(d)
    s_x0 = s_x
    s_x = s_x + ridge * np.trace(s_x) / d * eye
    s_w = s_w + ridge * np.trace(s_w) / d * eye
    a = _psd_sqrt(s_x)
    a_inv = np.linalg.inv(a)
    g = a_inv @ _psd_sqrt(a @ s_w @ a) @ a_inv  # the geometric mean of s_x^-1 and s_w
    w, u = np.linalg.eigh((g + g.T) / 2)
    if not np.all(w > 0):
        raise PreconditionError("a head's statistics are degenerate")
    p0 = (u * w ** (alpha / 2)).T                     # P0^T P0 = G^alpha
    e, v = np.linalg.eigh(p0 @ s_x @ p0.T)
    p = v[:, ::-1].T @ p0                             # rows by energy, largest first
    p /= np.sqrt(np.trace(p @ s_x0 @ p.T) / d)        # unit energy per channel on average
    return p, np.linalg.inv(p)


def second_moment(mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    return cov.astype(np.float64) + np.outer(mean, mean)


def k_preconditioner(stats) -> Preconditioner:
    """K's: K's covariance (the cache holds centered K) read through the queries' second moment."""
    return _build(stats.n_layer, stats.n_kv_head,
                  lambda il, h: (stats.cov["k"][il, h].astype(np.float64),
                                 second_moment(stats.mean["q"][il, h], stats.cov["q"][il, h])))


def v_preconditioner(stats, w_o: list[np.ndarray]) -> Preconditioner:
    """V's: V's second moment read through W_o. ``w_o``: per layer the output projection,
    [n_embd, n_head * d], whose column block of query head j takes head j // (n_head / n_kv_head)."""
    d = stats.head_dim_v
    r = stats.n_head // stats.n_kv_head

    def weight(il, h):
        w = w_o[il].astype(np.float64)
        if w.shape[1] != stats.n_head * d:
            raise PreconditionError(f"blk.{il}.attn_output.weight has {w.shape[1]} columns, expected {stats.n_head * d}")
        cols = [w[:, j * d:(j + 1) * d] for j in range(h * r, (h + 1) * r)]
        return sum(c.T @ c for c in cols)

    return _build(stats.n_layer, stats.n_kv_head,
                  lambda il, h: (second_moment(stats.mean["v"][il, h], stats.cov["v"][il, h]), weight(il, h)))


def _build(n_layer: int, n_kv: int, moments) -> Preconditioner:
    ps, pis = [], []
    for il in range(n_layer):
        for h in range(n_kv):
            s_x, s_w = moments(il, h)
            if not (np.isfinite(s_x).all() and np.isfinite(s_w).all()):
                raise PreconditionError(f"layer {il}, KV head {h}: the statistics are not finite")
            p, p_inv = head_preconditioner(s_x, s_w)
            ps.append(p)
            pis.append(p_inv)
    d = ps[0].shape[0]
    return Preconditioner(np.stack(ps).reshape(n_layer, n_kv, d, d), np.stack(pis).reshape(n_layer, n_kv, d, d))


def outlier_channels(n_layer: int, n_kv: int, d: int) -> np.ndarray:
    """A preconditioned head's outlier group: its first quarter of channels, the most energetic."""
    return np.broadcast_to(np.arange(d // 4, dtype=np.int32), (n_layer, n_kv, d // 4)).copy()
