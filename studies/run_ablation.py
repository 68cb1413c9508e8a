#!/usr/bin/env python3
"""The ablation tables of docs/ablation.md: TurboQuant's choices on real K/V rows of a model.

    .venv/bin/python scripts/ablation.py [--model PREPARED.gguf] [--tokens 512] [--out out/ablation.md]

Runs the model's forward pass in numpy on the start of the project's evaluation text
(studies/capture.py), then quantizes its K and/or V rows each way (studies/ablation.py) and reports the
relative error of the attention output, mean and worst over layers. Default model: SmolLM2-135M,
prepared (its turboquant.* metadata gives the seeds and prepare's outlier channels).
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

from studies import ablation as ab
from studies import capture  # noqa: E402
from tqgguf import assets, metadata, outliers as outl  # noqa: E402
from tqgguf.gguf_file import read_header  # noqa: E402

V = ab.Variant


def _arch(path: str) -> str:
    return next(str(kv.value) for kv in read_header(path).kvs if kv.key == "general.architecture")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a prepared llama or qwen2 GGUF [default: SmolLM2-135M, prepared]")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--out", default="out/ablation.md")
    ap.add_argument("--split-only", action="store_true", help="only table 2b (outlier share and bit pairs)")
    a = ap.parse_args()
    model = a.model or ab.default_model(root / "out")
    meta = metadata.read(read_header(model))
    text = Path(assets.eval_text()).read_text()[: 60 * a.tokens]
    t0 = time.time()
    ids, layers, top1 = capture.capture(model, text, a.tokens)
    d = layers[0].k.shape[2]
    arch = _arch(model)
    ctx = ab.Context(meta.layer_seeds, meta.outliers, outl.rope_units(d, d, arch, True))

    out = []
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out.append(f"Model `{Path(model).name}`, {len(ids)} tokens of the evaluation text (greedy tokenization; the numpy "
               f"forward pass predicts {100 * top1:.1f}% of next tokens), {len(layers)} layers, head {d}. "
               f"Error: ||O - O_hat|| / ||O|| of the attention output, mean (worst) over layers. "
               f"Commit {commit}, {platform.machine()}, {os.cpu_count()} cores.\n")

    def row(label, v, which=("k", "v", "kv")):
        cells = [label, f"{v.bits_per_value(d):.2f}"]
        for w in ("k", "v", "kv"):
            if w not in which:
                cells.append("—")
                continue
            e = ab.errors(layers, v if "k" in w else None, v if "v" in w else None, ctx)
            cells.append(f"{e.mean():.3f} ({e.max():.3f})")
        return "| " + " | ".join(cells) + " |"

    head = "| variant | bits/value | K only | V only | K and V |\n|---|---|---|---|---|"

    if a.split_only:
        out.append("\n### 2b. Outlier share and bit pairs\n")
        out.append(f"The split in general form (`Variant(kind=\"split\")`): the `share` channels of largest energy in "
                   f"these rows (table 2: as good as prepare's data-free choice) at the first bit width, the rest at the "
                   f"second, each group rotated (Hadamard for powers of two, else Haar) with its own f16 norm. Head {d}: "
                   f"shares {d // 8}/{d // 4}/{3 * d // 8} are 16/32/48 of 128.\n")
        out.append(head)
        out.append(row("no split, mse 2 bits", V("", "plain", 2)))
        out.append(row("no split, mse 3 bits", V("", "plain", 3)))
        for share in (d // 8, d // 4, 3 * d // 8):
            for hi, lo in ((3, 2), (4, 2), (4, 3)):
                out.append(row(f"{share} of {d} at {hi} bits, rest {lo}", V("", "split", lo, share=share, bits_hi=hi)))
        out.append(row("tq2_5 (16 of 64 per block at 3 bits, rest 2)", V("", "tq2_5")))
        out.append(row("tq3_5 (16 of 64 per block at 4 bits, rest 3)", V("", "tq3_5")))
        out.append(f"\n({time.time() - t0:.0f} s)")
        ab.write_report(a.out, out)
        return

    out.append("\n### 1. TurboQuant_mse vs TurboQuant_prod (QJL) at equal bits\n")
    out.append("One randomized Hadamard rotation of the whole head, plain stored norm; prod spends one of its bits "
               "on the 1-bit QJL sketch of the residual (and a second f16 norm).\n")
    out.append(head)
    for b in (2, 3, 4):
        out.append(row(f"mse {b} bits", V("", "plain", b)))
        out.append(row(f"prod {b} bits ({b - 1} mse + 1 QJL)", V("", "prod", b)))

    out.append("\n### 2. Outlier split: which channels get the extra bit\n")
    out.append("tq2_5 / tq3_5 blocks (16 of 64 slots at one bit more). `weights`: prepare's data-free choice "
               "(the default); `calib`: the channels of largest energy in these very rows (an upper bound for "
               "calibration on text); `random`: a fixed random quarter. No split: the plain rows of table 1.\n")
    out.append(head)
    for t in ("tq2_5", "tq3_5"):
        for o in ("weights", "calib", "random"):
            out.append(row(f"{t}, outliers {o}", V("", t, outliers=o)))

    out.append("\n### 3. Rotation\n")
    out.append(head)
    out.append(row("mse 3 bits, randomized Hadamard", V("", "plain", 3, rot="hadamard")))
    out.append(row("mse 3 bits, dense Haar", V("", "plain", 3, rot="haar")))
    out.append(row("tq2_5, per-layer seeds (default)", V("", "tq2_5")))
    out.append(row("tq2_5, one seed for all layers", V("", "tq2_5", per_layer_seed=False)))

    out.append("\n### 4. Scale (norm) rule of a group\n")
    out.append("`norm`: the reconstruction keeps the group's length (default); `plain`: the paper's stored norm; "
               "`lsq`: least squared error.\n")
    out.append(head)
    for t in ("tq2_5", "tq3_5"):
        for r in ab.SCALE_RULES:
            out.append(row(f"{t}, scale {r}", V("", t, rule=r)))

    out.append("\n### 5. Centering: subtract the head's mean row before quantizing\n")
    out.append("Exact in attention: for K, q·(k−μ) differs from q·k by the same q·μ for every key, which softmax "
               "ignores; for V, Σp(v−μ)+μ = Σpv since Σp = 1. μ (one row per layer and head, from calibration text) "
               "would live in the model's metadata, not the cache. Here μ is the mean of these rows.\n")
    out.append(head)
    for t in ("tq2_5", "tq3_5"):
        out.append(row(f"{t}", V("", t)))
        out.append(row(f"{t}, centered", V("", t, center=True)))

    out.append("\n### 6. Bits between K and V at the same average\n")
    out.append("| K | V | average bits/value | error, K and V |\n|---|---|---|---|")
    pairs = [(V("", "tq2_5"), V("", "tq2_5")), (V("", "plain", 2), V("", "plain", 3)), (V("", "plain", 3), V("", "plain", 2)),
             (V("", "tq3_5"), V("", "tq2_5")), (V("", "tq2_5"), V("", "tq3_5")), (V("", "plain", 3), V("", "plain", 3)),
             (V("", "tq3_5", center=True), V("", "plain", 2)), (V("", "tq3_5", center=True), V("", "tq2_5"))]
    for vk, vv in pairs:
        e = ab.errors(layers, vk, vv, ctx)
        nm = lambda v: (v.kind if v.kind != "plain" else f"mse {v.bits}") + (" centered" if v.center else "")
        out.append(f"| {nm(vk)} | {nm(vv)} | {(vk.bits_per_value(d) + vv.bits_per_value(d)) / 2:.2f} | {e.mean():.3f} ({e.max():.3f}) |")

    out.append("\n### 7. Error by layer (tq2_5 K only, V exact)\n")
    e = ab.errors(layers, V("", "tq2_5"), None, ctx)
    ec = ab.errors(layers, V("", "tq2_5", center=True), None, ctx)
    out.append("| layer | " + " | ".join(str(i) for i in range(len(e))) + " |")
    out.append("|---|" + "---|" * len(e))
    out.append("| tq2_5 | " + " | ".join(f"{x:.2f}" for x in e) + " |")
    out.append("| centered | " + " | ".join(f"{x:.2f}" for x in ec) + " |")
    out.append(f"\n({time.time() - t0:.0f} s)")
    ab.write_report(a.out, out)


if __name__ == "__main__":
    main()
