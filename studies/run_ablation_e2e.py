#!/usr/bin/env python3
"""Table 8 of docs/ablation.md: mean KLD end to end for configurations with and without kernels.

    .venv/bin/python scripts/ablation_e2e.py [--model PREPARED.gguf] [--chunks 8] [--ctx 512] [--out out/ablation-e2e.md]

The numpy forward pass (studies/capture.py) runs each chunk of the evaluation text once with exact
K/V and once per configuration with K/V as that cache gives them back (studies/kvsim.py); the table
gives the mean KL divergence over the second half of each chunk. K centers come from the last
60 KB of the same text (disjoint from the chunks, which come from its start), as
`tqgguf prepare --calibration` computes them; the rows "on the packaged text" use what
`tqgguf prepare` stores by default.
"""
import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))

import numpy as np  # noqa: E402

from studies import ablation as ab, capture, kvsim  # noqa: E402
from tqgguf import assets, metadata, outliers as outl, prepare  # noqa: E402
from tqgguf.gguf_file import read_header  # noqa: E402

V = ab.Variant


def bits(how, d: int) -> float:
    if how is None or how == "f16":
        return 16.0
    if how == "q4_0":
        return 4.5
    return how.bits_per_value(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a prepared llama or qwen2 GGUF [default: SmolLM2-135M, prepared]")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--out", default="out/ablation-e2e.md")
    ap.add_argument("--only", help="names of the rows to run, separated by semicolons [default: all]")
    ap.add_argument("--tokens-from", help="a llama-perplexity --kl-divergence-base file: its chunks (the model's "
                                          "own tokenizer, llama-perplexity's chunking) instead of greedy tokenization")
    a = ap.parse_args()
    model = a.model or ab.default_model(root / "out")
    meta = metadata.read(read_header(model))
    text = Path(assets.eval_text()).read_text()
    t0 = time.time()
    centers = capture.k_centers(model, text[-60_000:])
    packaged = capture.k_centers(model, prepare.CALIBRATION_TEXT.read_text())  # the packaged text, as prepare uses
    m = capture.load(model)
    token_chunks = (kvsim.chunks_from_kld_base(a.tokens_from, a.chunks) if a.tokens_from
                    else kvsim.chunks(m, text, a.ctx, a.chunks))
    d = m.w("token_embd.weight").shape[1] // m.n_head
    ctx = ab.Context(meta.layer_seeds, meta.outliers, outl.rope_units(d, d, m.arch, True))

    C = kvsim.Cache
    caches = [
        C("f16", "f16", "f16"),
        C("q4_0 (rotated, upstream)", "q4_0", "q4_0"),
        C("plain mse 2 bits", V("", "plain", 2), V("", "plain", 2)),
        C("plain mse 3 bits", V("", "plain", 3), V("", "plain", 3)),
        C("plain mse 4 bits", V("", "plain", 4), V("", "plain", 4)),
        C("plain, K 3 bits, V 2 bits", V("", "plain", 3), V("", "plain", 2)),
        C("plain, K 4 bits, V 3 bits", V("", "plain", 4), V("", "plain", 3)),
        C("plain, K 3 bits centered, V 2 bits", V("", "plain", 3), V("", "plain", 2), centers),
        C("plain, K 4 bits centered, V 3 bits", V("", "plain", 4), V("", "plain", 3), centers),
        C("tq2_5", V("", "tq2_5"), V("", "tq2_5")),
        C("tq2_5, K centered", V("", "tq2_5"), V("", "tq2_5"), centers),
        C("tq2_5, K centered on the packaged text", V("", "tq2_5"), V("", "tq2_5"), packaged),
        C("tq2_5, K centered, scale lsq", V("", "tq2_5", rule="lsq"), V("", "tq2_5", rule="lsq"), centers),
        C("tq3_5", V("", "tq3_5"), V("", "tq3_5")),
        C("tq3_5, K centered", V("", "tq3_5"), V("", "tq3_5"), centers),
        C("tq3_5, K centered on the packaged text", V("", "tq3_5"), V("", "tq3_5"), packaged),
        C("tq3_5, K centered, scale lsq", V("", "tq3_5", rule="lsq"), V("", "tq3_5", rule="lsq"), centers),
        C("K tq3_5 centered, V tq2_5", V("", "tq3_5"), V("", "tq2_5"), centers),
        C("tq2_5, K centered, last 128 tokens f16", V("", "tq2_5"), V("", "tq2_5"), centers, window=128),
        C("tq3_5, K centered, last 128 tokens f16", V("", "tq3_5"), V("", "tq3_5"), centers, window=128),
    ]
    if a.only:
        keep = {n.strip() for n in a.only.split(";")}
        caches = [c for c in caches if c.name in keep]
    total = len(token_chunks) * len(caches)
    done = [0]

    def progress():
        done[0] += 1
        print(f"\r{done[0]}/{total} forward passes ({time.time() - t0:.0f} s)", end="", file=sys.stderr, flush=True)

    exact_top1 = []  # of each chunk's exact pass; chunk 1's goes into the report
    results = kvsim.evaluate(m, token_chunks, caches, ctx, progress,
                             on_exact=lambda ids, logits: exact_top1.append(capture.top1(logits, ids)))
    print(file=sys.stderr)
    base_top1 = exact_top1[0]

    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = [f"Model `{Path(model).name}` ({m.n_layer} layers, head {d}), {a.chunks} chunks of {a.ctx} tokens from the start "
           f"of the evaluation text ({'tokens of ' + Path(a.tokens_from).name if a.tokens_from else 'greedy tokenization'}; top-1 of the exact pass on chunk 1: {100 * base_top1:.1f}%), "
           f"KLD against exact K/V over the second half of each chunk. Commit {commit}, {platform.machine()}, "
           f"{os.cpu_count()} cores, {time.time() - t0:.0f} s.\n",
           "| cache (K and V) | bits/value (K+V average) | mean KLD (± s.e.) | same top-1 |", "|---|---|---|---|"]
    for c, r in zip(caches, results):
        b = (bits(c.k, d) + bits(c.v, d)) / 2
        # the window's tokens cost f16 instead of b bits: over a context of n tokens, 128 (16 - b) / n more per value
        note = f" + 128 tokens at f16: {b + 128 * (16 - b) / 4096:.2f} at 4K, {b + 128 * (16 - b) / 32768:.2f} at 32K" if c.window else ""
        out.append(f"| {c.name} | {b:.2f}{note} | {r.kld:.4f} ± {r.kld_sem:.4f} | {100 * r.same_top1:.1f}% |")
    kld = {c.name: r.kld for c, r in zip(caches, results)}
    if {"plain mse 2 bits", "plain mse 3 bits", "plain mse 4 bits"} <= kld.keys():
        b2, b3, b4 = (bits(V("", "plain", n), d) for n in (2, 3, 4))
        interp = lambda lo, hi, blo, bhi, b: float(np.exp(np.interp(b, [blo, bhi], [np.log(kld[lo]), np.log(kld[hi])])))
        p275 = interp("plain mse 2 bits", "plain mse 3 bits", b2, b3, 2.75)
        p375 = interp("plain mse 3 bits", "plain mse 4 bits", b3, b4, 3.75)
        out.append(f"\nThe plain configuration at the TQ types' bits (log-linear between its integer bit widths): "
                   f"{p275:.4f} at 2.75 bits/value, {p375:.4f} at 3.75.")
        for name, ref in (("tq2_5", p275), ("tq2_5, K centered", p275), ("tq2_5, K centered on the packaged text", p275),
                          ("tq3_5", p375), ("tq3_5, K centered", p375), ("tq3_5, K centered on the packaged text", p375)):
            if name in kld:
                out.append(f"- {name}: {kld[name]:.4f}, {100 * (1 - kld[name] / ref):+.0f}% lower than plain at the same bits")
    ab.write_report(a.out, out)

if __name__ == "__main__":
    main()
