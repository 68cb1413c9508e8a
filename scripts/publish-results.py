#!/usr/bin/env python3
"""Copy a comparison's results into docs/results/ with how they were made.

    scripts/publish-results.py OUT_DIR NAME "COMMAND THAT MADE THEM" [--recall RECALL_DIR] [--commit REV]

Writes docs/results/NAME.md (command, commit, machine, the table, bits per value by head
size, the Pareto front) and docs/results/NAME.json / NAME.png.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

root = Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("name")
ap.add_argument("command")
ap.add_argument("--recall", default=None)
ap.add_argument("--commit", default=None, help="the commit whose build made the numbers [default: HEAD]")
a = ap.parse_args()
out = Path(a.out)
dst = root / "docs" / "results"
dst.mkdir(parents=True, exist_ok=True)
data = json.loads((out / "results.json").read_text())
commit = a.commit or subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def cpu_name() -> str:
    """The CPU's model name with its family/model and widest SIMD: "AMD EPYC" alone names several
    generations, and the SIMD path changes the f16 base's rounding, hence every KLD's noise."""
    try:
        info = dict(l.split(":", 1) for l in open("/proc/cpuinfo").read().split("\n\n")[0].splitlines() if ":" in l)
    except OSError:
        return platform.processor() or platform.machine()
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = set(info.get("flags", "").split())
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "NEON" if "asimd" in flags else "no AVX2"
    fam = f"family {info['cpu family']} model {info['model']}, " if "cpu family" in info and "model" in info else ""
    return f"{info.get('model name', platform.processor())} ({fam}{simd})"


cpu = cpu_name()

import sys
sys.path.insert(0, str(root))
from tqgguf.harness import compare as cmp  # noqa: E402

recs = data["records"]
front = cmp.pareto_front(recs)
lines = [
    f"# {a.name}",
    "",
    f"Command: `{a.command}`  ",
    f"tqgguf commit `{commit}`; llama.cpp: the pinned sdist (upstream 0c1e570) + `patches/` at that commit.  ",
    f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; CPU backend.  ",
    f"Model: `{Path(data['meta']['model']).name}`; text: `{Path(data['meta']['text']).name}` (assets.py); "
    f"c={data['meta']['ctx']}, {data['meta']['chunks']} chunks, flash attention {data['meta']['flash_attn']}; "
    "KLD and same-top-token against an f16 cache in the same run.",
    "",
    cmp.markdown(recs),
    "TQ's K/V bits are the same at head sizes 64, 128 and 256 (tq2_5: 22 bytes / 64 values = 2.75; "
    "tq3_5: 30 / 64 = 3.75); its bits per value add the transforms, a fixed cost per model that a longer "
    "context spreads thinner.",
    "",
    "Pareto front (no configuration has both fewer bits and lower KLD): "
    + ", ".join(f"{r['config']} ({r['bits_per_value']:.2f} b, KLD {r['kld_mean']:.4f})" for r in front) + ".",
    "",
    f"![KLD against bits per value]({a.name}.png)",
    "",
]
if a.recall:
    lines += ["## Needle-in-a-haystack recall (llama-passkey)", "", (Path(a.recall) / "recall.md").read_text(), ""]
(dst / f"{a.name}.md").write_text("\n".join(lines))
shutil.copyfile(out / "pareto.png", dst / f"{a.name}.png")
(dst / f"{a.name}.json").write_text(json.dumps(data, indent=1))
print(dst / f"{a.name}.md")
