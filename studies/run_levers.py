#!/usr/bin/env python3
"""Fidelity levers (issue 21) in the numpy forward pass: preconditioners and attention-sink tokens.

    .venv/bin/python studies/run_levers.py MODEL.tq.gguf BASE.kld [--chunks 1] [--configs SPEC] [--out FILE]

MODEL is prepared with --no-precondition: the rows without a preconditioner take its data-free
outlier channels, which a preconditioned file replaces by P's first quarter.

BASE.kld is a llama-perplexity --kl-divergence-base file of the same model: its chunks give the
model's own tokens (studies/kvsim.py). Each configuration stores K and V the way a TQ cache would
(the C core's exact blocks), optionally through a preconditioner P per head (tqgguf/precondition.py
at strength alpha; statistics from 1024 tokens of prepare's packaged calibration text, numpy pass),
optionally keeping the first `sink` tokens' K (and V) exact and, for each query, the `window` most
recent tokens' K (and V) exact (a recent window, as KIVI and the TurboQuant paper's code keep one);
the table gives the mean KL divergence against exact K/V over the second half of each chunk.
"""
import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))

import numpy as np  # noqa: E402

from studies import capture, kvsim  # noqa: E402
from tqgguf import _core, codebook, metadata, precondition as pc, prepare, reference  # noqa: E402
from tqgguf.gguf_file import read_header  # noqa: E402


@dataclass
class Side:
    """How one side (K or V) is stored: a TQ type, "p2" (no block exists: 2-bit codes for all 64
    values of a block and one f16 scale, 2.25 bits, in the same rotated and preconditioned
    coordinates), "q4_0" (rotated, upstream) or None (exact);
    the preconditioner's strength (0: none); K only: centered on the calibration mean."""
    type: str | None
    alpha: float = 0.0
    center: bool = False


@dataclass
class Config:
    name: str
    k: Side
    v: Side
    sink: int = 0          # the first tokens stay exact...
    sink_side: str = "kv"  # ...on these sides
    window: int = 0        # each query's most recent tokens stay exact...
    window_side: str = "kv"  # ...on these sides...
    window_ubatch: int = 0   # ...or a ring of the cache's last cells, ubatches of this many tokens...
    window_ring_only: bool = False  # ...without the ubatch's own rows (kvsim.window_keys)

    def bits(self) -> float:
        b = {"tq2_5": 2.75, "tq3_5": 3.75, "p2": 2.25, "q4_0": 4.5, None: 16.0}
        return (b[self.k.type] + b[self.v.type]) / 2


def parse(spec: str) -> Config:
    """NAME=KTYPE:KALPHA:VTYPE:VALPHA[:SINK[:SIDES[:WINDOW[:SIDES[:UBATCH[:ring]]]]]], K centered
    whenever it is a TQ type (UBATCH and ring: kvsim.window_keys)."""
    name, rest = spec.split("=")
    f = rest.split(":")
    kt, ka, vt, va = f[0], float(f[1]), f[2], float(f[3])
    sink = int(f[4]) if len(f) > 4 else 0
    sides = f[5] if len(f) > 5 else "kv"
    window = int(f[6]) if len(f) > 6 else 0
    window_sides = f[7] if len(f) > 7 else "kv"
    ubatch = int(f[8]) if len(f) > 8 else 0
    ring_only = len(f) > 9 and f[9] == "ring"
    return Config(name, Side(kt, ka, kt.startswith("tq") or kt == "p2"), Side(vt, va), sink, sides, window, window_sides,
                  ubatch, ring_only)


DEFAULT = ";".join([
    "q4_0 (rotated)=q4_0:0:q4_0:0",
    "tq3_5=tq3_5:0:tq3_5:0",
    "tq3_5, K preconditioned=tq3_5:0.5:tq3_5:0",
    "tq3_5, K and V preconditioned=tq3_5:0.5:tq3_5:0.5",
    "tq3_5, K and V preconditioned at full strength=tq3_5:1:tq3_5:1",
    "tq3_5, K and V preconditioned, first token exact=tq3_5:0.5:tq3_5:0.5:1",
    "tq3_5, K and V preconditioned, first 4 tokens' K exact=tq3_5:0.5:tq3_5:0.5:4:k",
    "tq3_5, first 4 tokens exact=tq3_5:0:tq3_5:0:4",
    "tq2_5=tq2_5:0:tq2_5:0",
    "tq2_5, K and V preconditioned=tq2_5:0.5:tq2_5:0.5",
    "tq2_5, K and V preconditioned, first 4 tokens exact=tq2_5:0.5:tq2_5:0.5:4",
    "K tq3_5, V tq2_5, both preconditioned=tq3_5:0.5:tq2_5:0.5",
])

# A recent window on top of the defaults (preconditioned, K centered, the first 4 tokens' K exact)
WINDOW = ";".join([
    "q4_0 (rotated)=q4_0:0:q4_0:0",
    "tq3_5 (the default)=tq3_5:0.5:tq3_5:0.5:4:k",
    "tq3_5, last 128 tokens' K and V exact=tq3_5:0.5:tq3_5:0.5:4:k:128:kv",
    "tq2_5 (the default)=tq2_5:0.5:tq2_5:0.5:4:k",
    "tq2_5, last 128 tokens' K and V exact=tq2_5:0.5:tq2_5:0.5:4:k:128:kv",
    "tq2_5, last 128 tokens' K exact=tq2_5:0.5:tq2_5:0.5:4:k:128:k",
    "tq2_5, last 32 tokens' K and V exact=tq2_5:0.5:tq2_5:0.5:4:k:32:kv",
    "tq2_5, last 8 tokens' K and V exact=tq2_5:0.5:tq2_5:0.5:4:k:8:kv",
    "tq2_5, last 16 tokens' K and V exact=tq2_5:0.5:tq2_5:0.5:4:k:16:kv",
    "tq2_5, last 64 tokens' K and V exact=tq2_5:0.5:tq2_5:0.5:4:k:64:kv",
    "K tq3_5, V tq2_5=tq3_5:0.5:tq2_5:0.5:4:k",
    "K tq3_5, V tq2_5, last 32 tokens' K and V exact=tq3_5:0.5:tq2_5:0.5:4:k:32:kv",
])
# What llama.cpp could give: a ring of the cache's last 32 cells, with and without each ubatch's
# own rows exact, in perplexity's 512-token ubatches and at decode (one token per ubatch)
RING = ";".join([
    "tq2_5, last 32 tokens' K and V exact=tq2_5:0.5:tq2_5:0.5:4:k:32:kv",
    "tq2_5, ring of the last 32 cells, 512-token ubatches=tq2_5:0.5:tq2_5:0.5:4:k:32:kv:512:ring",
    "tq2_5, ring of 32 cells and the ubatch's own rows, 512-token ubatches=tq2_5:0.5:tq2_5:0.5:4:k:32:kv:512",
    "tq2_5, ring of 32 cells and the ubatch's own rows, one token per ubatch=tq2_5:0.5:tq2_5:0.5:4:k:32:kv:1",
])
# The window without the preconditioners (K centered, the first 4 tokens' K exact)
WINDOW_NOPRE = ";".join([
    "tq2_5, K centered, no preconditioner, first 4 tokens' K exact=tq2_5:0:tq2_5:0:4:k",
    "tq2_5, K centered, no preconditioner, last 32 tokens' K and V exact=tq2_5:0:tq2_5:0:4:k:32:kv",
    "tq2_5, K centered, no preconditioner, last 128 tokens' K and V exact=tq2_5:0:tq2_5:0:4:k:128:kv",
])
# Below 2.75 bits: 2-bit blocks without the outlier split (no such block exists), with the window
LOW = ";".join([
    "tq2_5, last 32 tokens' K and V exact=tq2_5:0.5:tq2_5:0.5:4:k:32:kv",
    "p2, last 32 tokens' K and V exact=p2:0.5:p2:0.5:4:k:32:kv",
    "p2, last 16 tokens' K and V exact=p2:0.5:p2:0.5:4:k:16:kv",
    "K tq2_5, V p2, last 32 tokens' K and V exact=tq2_5:0.5:p2:0.5:4:k:32:kv",
])
PRESETS = {"levers": DEFAULT, "window": WINDOW, "window-nopre": WINDOW_NOPRE, "ring": RING, "low": LOW}

def _plain_blocks(z: np.ndarray, bits: int, n: int = 64) -> np.ndarray:
    """Rows [T, d] through blocks of n values at `bits` bits each, one f16 scale a block: the TQ
    group rule (cpp/tq.c: codes by the Lloyd-Max codebook of dimension n, the scale keeping the
    group's length) with no outlier split."""
    c = codebook.scaled_f32(n, bits).astype(np.float64)
    mid = (c[1:] + c[:-1]) / 2
    g = z.reshape(-1, n).astype(np.float64)
    norm = np.sqrt((g * g).sum(1, keepdims=True))
    y = g * (np.sqrt(n) / np.where(norm > 0, norm, 1.0))
    q = c[np.searchsorted(mid, y)]
    scale = (norm / np.sqrt((q * q).sum(1, keepdims=True))).astype(np.float16).astype(np.float64)
    return (q * scale).reshape(z.shape)


class Study:
    def __init__(self, model: str):
        self.meta = metadata.read(read_header(model))
        if self.meta.precond:
            raise SystemExit(f"{model} has preconditioners: prepare it with --no-precondition for this study")
        self.m = capture.load(model)
        m = self.m
        self.d = m.w("token_embd.weight").shape[1] // m.n_head
        self.r = m.n_head // m.n_kv
        self.stats = self._statistics()
        self.pre = {}

    def _statistics(self):
        """Per layer and KV head: Q's second moment (its query group), K's mean and covariance,
        V's second moment, over prepare's calibration text."""
        m, d, r = self.m, self.d, self.r
        ids = capture.tokenize_greedy(m.vocab, prepare.CALIBRATION_TEXT.read_text(), prepare.CENTER_TOKENS)
        out = []

        def grab(il, q, k, v):
            q, k, v = (a.astype(np.float64) for a in (q, k, v))
            row = []
            for h in range(m.n_kv):
                qs = q[:, h * r:(h + 1) * r].reshape(-1, d)
                row.append(dict(q=qs.T @ qs / len(qs), k_mu=k[:, h].mean(0), k=np.cov(k[:, h].T, bias=True),
                                v=v[:, h].T @ v[:, h] / len(v)))
            out.append(row)
            return capture.attention(q, k, v, capture.causal_mask(len(q)))

        capture.forward(m, ids, grab, dtype=np.float32)
        return out

    def _wo(self, il, h):
        d, r = self.d, self.r
        w = self.m.w(f"blk.{il}.attn_output.weight").astype(np.float64)
        return sum(w[:, j * d:(j + 1) * d].T @ w[:, j * d:(j + 1) * d] for j in range(h * r, (h + 1) * r))

    def precond(self, kind, il, h, alpha):
        key = (kind, il, h, alpha)
        if key not in self.pre:
            s = self.stats[il][h]
            s_x, s_w = (s["k"], s["q"]) if kind == "k" else (s["v"], self._wo(il, h))
            self.pre[key] = pc.head_preconditioner(s_x, s_w, alpha=alpha)
        return self.pre[key]

    def stored(self, side: Side, kind: str, x: np.ndarray, il: int, h: int) -> np.ndarray:
        """Rows [T, d] of one KV head as that cache gives them back."""
        if side.type is None:
            return x
        if side.type == "q4_0":
            return kvsim._q4_0_rotated(x)
        mu = self.stats[il][h]["k_mu"] if side.center else 0.0
        y = x - mu
        d = self.d
        if side.alpha > 0:
            p, p_inv = self.precond(kind, il, h, side.alpha)
            y = y @ p.T
            out = pc.outlier_channels(1, 1, d)[0, 0]
        else:
            p_inv, out = None, self.meta.outliers[kind][il, h]
        t = np.asarray(_core.head_transform(d, int(self.meta.layer_seeds[kind][il]), h, out.astype(np.int32)))
        if side.type == "p2":
            zq = _plain_blocks((y @ t.T).astype(np.float32), 2)
        else:
            hi, lo = reference.codebooks_for(side.type)
            z = (y @ t.T).astype(np.float32).ravel()
            zq = np.asarray(_core.dequantize_row(side.type, _core.quantize_row(side.type, z, hi, lo), hi, lo), np.float32)
        back = zq.astype(np.float64).reshape(y.shape) @ t
        return (back @ p_inv.T if p_inv is not None else back) + mu

    def attend(self, c: Config):
        m, d, r = self.m, self.d, self.r

        def attend(il, q, k, v):
            q, k, v = (a.astype(np.float64) for a in (q, k, v))
            T = len(q)
            kh = np.stack([self.stored(c.k, "k", k[:, h], il, h) for h in range(m.n_kv)], 1)
            vh = np.stack([self.stored(c.v, "v", v[:, h], il, h) for h in range(m.n_kv)], 1)
            if c.sink:
                kh[:c.sink] = k[:c.sink] if "k" in c.sink_side else kh[:c.sink]
                vh[:c.sink] = v[:c.sink] if "v" in c.sink_side else vh[:c.sink]
            if c.window:
                kx = k if "k" in c.window_side else kh
                vx = v if "v" in c.window_side else vh
                return kvsim.attention_window(q, kx, kh, vx, vh, c.window, c.window_ubatch, c.window_ring_only)
            return capture.attention(q, kh, vh, capture.causal_mask(T))
        return attend


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("base")
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--configs", default="levers",
                    help=f"NAME=KTYPE:KALPHA:VTYPE:VALPHA[:SINK[:SIDES[:WINDOW[:SIDES[:UBATCH[:ring]]]]]];... "
                         f"or a preset: {', '.join(PRESETS)}")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t0 = time.time()
    study = Study(a.model)
    configs = [parse(s) for s in PRESETS.get(a.configs, a.configs).split(";") if s]
    chunks = kvsim.chunks_from_kld_base(a.base, a.chunks)
    kl = {c.name: [] for c in configs}
    for ids in chunks:
        base = capture.forward(study.m, ids, dtype=np.float32)
        half = len(ids) // 2
        for c in configs:
            logits = capture.forward(study.m, ids, study.attend(c), dtype=np.float32)
            kl[c.name].append(kvsim.kl_divergence(base[half:], logits[half:]))
            print(f"{c.name}: {np.concatenate(kl[c.name]).mean():.4f} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"Model `{Path(a.model).name}`, {a.chunks} chunk(s) of {len(chunks[0])} tokens of {Path(a.base).name} "
             f"(llama-perplexity's chunks of the evaluation text), KLD against exact K/V over the second half of each "
             f"chunk. Commit {commit}, {platform.machine()}, {os.cpu_count()} cores, {time.time() - t0:.0f} s.\n",
             "| cache (K and V) | bits/value | mean KLD (± s.e.) |", "|---|---|---|"]
    for c in configs:
        k = np.concatenate(kl[c.name])
        lines.append(f"| {c.name} | {c.bits():.2f} | {k.mean():.4f} ± {k.std(ddof=1) / np.sqrt(len(k)):.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
