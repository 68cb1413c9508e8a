#!/usr/bin/env python3
"""Compile the TQ CUDA sources for several GPU architectures (no GPU needed).

    python3 scripts/check-cuda-archs.py [--archs 75,80,86,89,90] [--tree DIR] [--jobs N] [FILE.cu ...]

Each of cpp/cuda/*.cu (or the FILEs named) is compiled as a multi-architecture build of
ggml-cuda compiles it (nvcc, real code for each architecture, ggml-cuda's flags) inside a
patched llama.cpp tree (scripts/build-llama.sh --tree-only, or --tree DIR for one made before),
without building the rest of ggml-cuda. A PTX instruction that an architecture lacks and no
guard keeps from it (mma.cuh, cp-async.cuh, common.cuh's *_AVAILABLE) is an error here.
Prints one line per file; exit status 1 if any fails.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INCLUDES = ["ggml/include", "ggml/src", "ggml/src/ggml-cuda", "ggml/src/turboquant", "ggml/src/ggml-cuda/turboquant"]
FLAGS = ["-std=c++17", "-O3", "-use_fast_math", "-extended-lambda", "-DGGML_USE_CUDA"]  # ggml-cuda's CMakeLists


def cublas_stub() -> str:
    """The few cuBLAS names common.cuh needs, where nvcc comes without cuBLAS (sass-mix.py's)."""
    spec = importlib.util.spec_from_file_location("sass_mix", ROOT / "tools/gpu/sass-mix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CUBLAS_STUB


def compile_one(src: Path, tree: Path, stub: Path, archs: list[str], out: Path) -> tuple[str, float, str]:
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    cmd = ["nvcc", *FLAGS, *gencode, f"-I{stub}", *[f"-I{tree / i}" for i in INCLUDES], "-c", str(src), "-o", str(out)]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    errors = [ln for ln in (r.stderr + r.stdout).splitlines() if "error" in ln.lower()]
    return src.name, time.monotonic() - t0, "" if r.returncode == 0 else "\n".join(errors[:5] or [r.stderr[-500:]])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="sources under cpp/cuda (default: all *.cu)")
    ap.add_argument("--archs", default="75,80,86,89,90", help="compute capabilities, comma-separated")
    ap.add_argument("--tree", type=Path, help="a patched tree (build-llama.sh --tree-only DIR made DIR/llama.cpp)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    archs = [x.strip() for x in a.archs.split(",") if x.strip()]
    if shutil.which("nvcc") is None:
        sys.exit("check-cuda-archs.py: no nvcc on PATH")
    names = a.files or sorted(p.name for p in (ROOT / "cpp/cuda").glob("*.cu"))
    with tempfile.TemporaryDirectory() as tmp:
        if a.tree:
            tree = a.tree.resolve()
        else:
            r = subprocess.run(["bash", str(ROOT / "scripts/build-llama.sh"), "--tree-only", tmp], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"check-cuda-archs.py: build-llama.sh --tree-only failed: {r.stderr.strip().splitlines()[-1:]}")
            tree = Path(r.stdout.strip().splitlines()[-1])
        cu = tree / "ggml/src/ggml-cuda/turboquant"
        missing = [n for n in names if not (cu / n).is_file()]
        if missing:
            sys.exit(f"check-cuda-archs.py: not in {cu}: {', '.join(missing)}")
        stub = Path(tmp) / "stub"
        stub.mkdir()
        (stub / "cublas_v2.h").write_text(cublas_stub())
        failed = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            jobs = [pool.submit(compile_one, cu / n, tree, stub, archs, Path(tmp) / f"{n}.o") for n in names]
            for j in jobs:
                name, secs, err = j.result()
                if err:
                    failed += 1
                    print(f"{name}: FAILED ({secs:.0f} s)\n{err}", flush=True)
                else:
                    print(f"{name}: ok ({secs:.0f} s)", flush=True)
    sm = ", ".join(f"sm_{x}" for x in archs)
    if failed:
        print(f"{failed} of {len(names)} TQ sources fail to compile for {sm}")
        return 1
    print(f"all {len(names)} TQ sources compile for {sm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
