#!/usr/bin/env python3
"""Does a preconditioner need to be a dense matrix? (issue 21: the transforms' half bit at c=4096.)

    .venv/bin/python studies/run_precond_structure.py MODEL.gguf STATS.gguf OUT.gguf [--structure diagonal] [--alpha 0.5]

Writes MODEL prepared as `tqgguf prepare --stats STATS` does, but with each head's K and V
preconditioner restricted to a structure that would cost O(d) at run time instead of d x d:

- dense: prepare's own (tqgguf/precondition.py), the reference;
- diagonal: P = diag(p) in the channel basis the cache sees (K after RoPE, V), p_i^2 =
  (s_w,ii / s_x,ii)^(alpha/2), the diagonal version of the same trade; rows by energy as prepare
  sorts them, so the outlier group is the top quarter.

The file still carries dense matrices (llama.cpp reads no other form yet), so llama-perplexity
measures what the structure costs in quality; what it would save in memory is d^2 -> d per matrix.
--alpha sets the strength of either (tqgguf/precondition.py's ALPHA, 0.5).
"""
import argparse
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))

import numpy as np  # noqa: E402

from tqgguf import precondition as pc, prepare  # noqa: E402


def diagonal_preconditioner(s_x: np.ndarray, s_w: np.ndarray, alpha: float = pc.ALPHA,
                            ridge: float = pc.RIDGE) -> tuple[np.ndarray, np.ndarray]:
    d = s_x.shape[0]
    sx = np.diag(s_x) + ridge * np.trace(s_x) / d
    sw = np.diag(s_w) + ridge * np.trace(s_w) / d
    p = (sw / sx) ** (alpha / 4)                       # p^2 = (s_w / s_x)^(alpha/2)
    order = np.argsort(-(p ** 2 * np.diag(s_x)), kind="stable")
    m = np.zeros((d, d))
    m[np.arange(d), order] = p[order]                  # a scaled permutation, rows by energy
    m /= np.sqrt(np.trace(m @ s_x @ m.T) / d)
    return m, np.linalg.inv(m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("stats")
    ap.add_argument("out")
    ap.add_argument("--structure", choices=["dense", "diagonal"], default="diagonal")
    ap.add_argument("--alpha", type=float, default=pc.ALPHA)
    a = ap.parse_args()
    build = diagonal_preconditioner if a.structure == "diagonal" else pc.head_preconditioner
    pc.head_preconditioner = lambda s_x, s_w: build(s_x, s_w, alpha=a.alpha)
    prepare.prepare_file(a.model, a.out, prepare.DEFAULT_SEED, ["tq2_5", "tq3_5"],
                         calibration=prepare.Calibration(stats=a.stats))
    print(a.out)


if __name__ == "__main__":
    main()
