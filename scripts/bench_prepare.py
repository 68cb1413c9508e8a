#!/usr/bin/env python3
"""Prepare throughput on a >= 1 GB random-weight GGUF, against a plain `cp` of the same file.

    .venv/bin/python scripts/bench_prepare.py [--dir DIR] [--keep]

Prints both wall times and their ratio (a benchmark: it asserts nothing).
"""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

from tqgguf.harness import synth

# Llama-style, 12 layers of width 2048 with 4 KV heads of 128, f16: about 1.1 GB.
SHAPE = synth.Shape(n_layer=12, n_embd=2048, n_head=16, n_kv_head=4, head_dim=128, n_ff=8192,
                    n_vocab=32000, weight_type="F16")


def timed(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to put the files (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        src = os.path.join(d, "big.gguf")
        synth.write(src, SHAPE)
        size = os.path.getsize(src)
        subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # same page-cache state for both
        t_cp = timed(["cp", src, os.path.join(d, "copy.gguf")])
        os.unlink(os.path.join(d, "copy.gguf"))
        t_prep = timed([sys.executable, "-m", "tqgguf.cli", "prepare", src, "-o", os.path.join(d, "out.gguf"), "-q"])
    print(f"file: {size / 1e9:.2f} GB random-weight llama ({SHAPE.n_layer} layers, f16), "
          f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"cp:      {t_cp:6.2f} s  ({size / t_cp / 1e9:.2f} GB/s)")
    print(f"prepare: {t_prep:6.2f} s  ({size / t_prep / 1e9:.2f} GB/s)")
    print(f"prepare / cp = {t_prep / t_cp:.2f}")


if __name__ == "__main__":
    main()
