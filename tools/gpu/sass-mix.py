#!/usr/bin/env python3
"""Instruction mix of the TQ decode attention's main loop, from its SASS (no GPU needed).

    python3 tools/gpu/sass-mix.py [--d 128] [--k tq2_5] [--v tq2_5] [--arch sm_90] [--sass FILE] [--unstaged]

Compiles the decode kernel's instance file (cpp/cuda/tq-fattn-k-<K>.cu) inside a patched
llama.cpp tree (scripts/build-llama.sh --tree-only), disassembles it with cuobjdump/nvdisasm
(members of NVIDIA's PyPI wheels, pinned by sha256 and cached by tqgguf.assets), and counts the
instructions of the kernel's tile loop: one iteration is one warp's 32-key tile. The loop is
most of a decode block's time even at 16K (the phase clocks in docs/results/cuda-h200.md), so
instructions per tile is the figure a change to it should move. The count is static: code under
a branch not taken (the softcap's tanh) counts too. --sass FILE writes the loop's instructions.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tqgguf import assets  # noqa: E402  (the repo's package, also without an install)

TOOLS = {
    "cuobjdump": assets.Asset(
        name="cuda-cuobjdump-13.4.92/cuobjdump", requirement="nvidia-cuda-cuobjdump==13.4.92",
        dist_sha256="fb72ca80d0cdd8f5e8e232ce17d3c5aa2a37c3153bb8ef4e010010ed4fdef6c5",
        member="nvidia/cu13/bin/cuobjdump",
        sha256="617719e340b538da8fab1480e65d0540a692a4c1db3015d904daac646cc9c66a"),
    "nvdisasm": assets.Asset(
        name="cuda-nvdisasm-13.5.37/nvdisasm", requirement="nvidia-cuda-nvdisasm==13.5.37",
        dist_sha256="d3fdbdd49fa53e2e4aacd3db8259d052bd2b049ececdcb69e92e083c6728e7ca",
        member="nvidia/cu13/bin/nvdisasm",
        sha256="3bf19e7ab706ed8f68ecc2403d277b97dc110c52e0ac4c4f0c8eada5f7889c3c"),
}
TYPE_IDS = {"f16": 1, "q8_0": 8, "tq2_5": 43, "tq3_5": 44}  # ggml_type values in the patched ggml.h
# nvcc here has no cuBLAS headers; the instance files include common.cuh, which names a few
CUBLAS_STUB = """#pragma once
#include <stddef.h>
#include <cuda_runtime.h>
#define CUBLAS_VER_MAJOR 13
#define CUBLAS_VER_MINOR 0
typedef struct cublasContext * cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0 } cublasStatus_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 } cublasMath_t;
typedef enum { CUBLAS_COMPUTE_16F = 64, CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
const char * cublasGetStatusString(cublasStatus_t);
cublasStatus_t cublasCreate(cublasHandle_t *);
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t);
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t);
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *, size_t);
"""


def die(msg: str) -> None:
    sys.exit(f"sass-mix.py: {msg}")


def run(cmd: list[str], **kw) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        first = next((ln for ln in lines if "error" in ln), lines[-1] if lines else "")
        die(f"{Path(cmd[0]).name} failed: {first.strip()}")
    return r.stdout


def tools() -> dict[str, Path]:
    """cuobjdump and nvdisasm: members of NVIDIA's wheels, pinned and checked by tqgguf.assets.
    nvdisasm keeps its own name in a folder of its own: cuobjdump finds it on PATH."""
    out = {}
    for name, asset in TOOLS.items():
        exe = assets.fetch(asset)
        exe.chmod(0o755)
        out[name] = exe
    return out


def loop_mix(sass: str, function: str) -> tuple[list[str], collections.Counter]:
    """Instructions of `function`'s tile loop (the innermost loop with tensor-core instructions;
    divergent-shuffle fallbacks make larger ones) and their opcodes."""
    start = sass.find(f"Function : {function}")
    if start < 0:
        die(f"{function} not in the disassembly")
    end = sass.find("Function :", start + 1)
    ins = []
    for line in sass[start:end if end > 0 else None].splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            ins.append((int(m.group(1), 16), re.sub(r"^@!?U?P\w+\s+", "", m.group(2).strip())))
    loops = []
    for addr, text in ins:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            body = [t for a, t in ins if int(m.group(1), 16) <= a <= addr]
            if any(t.startswith("HMMA") for t in body):
                loops.append(body)
    if not loops:
        die(f"no loop with HMMA in {function}")
    body = min(loops, key=len)
    return body, collections.Counter(t.split()[0].split(".")[0] for t in body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=128, choices=[64, 128, 256])
    ap.add_argument("--k", default="tq2_5", choices=["tq2_5", "tq3_5", "f16", "q8_0"])
    ap.add_argument("--v", default="tq2_5", choices=["tq2_5", "tq3_5", "f16", "q8_0"])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--top", type=int, default=16)
    ap.add_argument("--sass", metavar="FILE", help="also write the loop's instructions to FILE")
    ap.add_argument("--unstaged", action="store_true", help="the instance without staged tiles (unaligned K/V, cards without cp.async)")
    a = ap.parse_args()
    if a.k in ("f16", "q8_0") and a.v in ("f16", "q8_0"):
        die("one of K and V must be a TQ type")
    if shutil.which("nvcc") is None:
        die("no nvcc on PATH")
    t = tools()
    env = dict(os.environ, PATH=f"{t['nvdisasm'].parent}:{os.environ['PATH']}")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(run(["bash", str(ROOT / "scripts/build-llama.sh"), "--tree-only", tmp]).strip().splitlines()[-1])
        stub = Path(tmp) / "stub"
        stub.mkdir()
        (stub / "cublas_v2.h").write_text(CUBLAS_STUB)
        src = tree / f"ggml/src/ggml-cuda/turboquant/tq-fattn-k-{a.k}.cu"
        cubin = Path(tmp) / "k.cubin"
        inc = ["ggml/include", "ggml/src", "ggml/src/ggml-cuda", "ggml/src/turboquant", "ggml/src/ggml-cuda/turboquant"]
        r = subprocess.run(["nvcc", "-std=c++17", f"-arch={a.arch}", "-O3", "-cubin", "-Xptxas", "-v", "-DGGML_USE_CUDA",
                            f"-I{stub}", *[f"-I{tree / i}" for i in inc], "-o", str(cubin), str(src)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            die(f"nvcc failed: {next((ln for ln in r.stderr.splitlines() if 'error' in ln), r.stderr[-300:]).strip()}")
        ptxas = r.stderr
        sass = run([str(t["cuobjdump"]), "-sass", str(cubin)], env=env)
    # the instance that runs: with staged tiles where the kernel has them (unless --unstaged)
    stem = f"_Z17k_tq_fattn_decodeILi{a.d}EL9ggml_type{TYPE_IDS[a.k]}ELS0_{TYPE_IDS[a.v]}E"
    staged, unstaged = f"{stem}Lb1EEv12tq_fa_params", f"{stem}Lb0EEv12tq_fa_params"
    fn = staged if not a.unstaged and staged in sass else unstaged
    body, mix = loop_mix(sass, fn)
    n = len(body)
    if a.sass:
        Path(a.sass).write_text("\n".join(body) + "\n")
    # ptxas -v: "Compiling entry function 'NAME'", then its spill and register lines
    info = ptxas[ptxas.find(f"'{fn}'"):]
    regs = re.search(r"Used (\d+) registers", info)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", info)
    # an iteration is one warp over 32 keys, i.e. 32 * 2d K/V values over 32 lanes
    print(f"k_tq_fattn_decode<{a.d}, {a.k}, {a.v}> ({a.arch}): {n} warp instructions per loop iteration "
          f"(32 keys), {n / (2 * a.d):.2f} lane instructions per K/V value; "
          f"{regs.group(1) if regs else '?'} registers, spills {spill.group(1) if spill else '?'}/"
          f"{spill.group(2) if spill else '?'} bytes stored/loaded")
    for op, c in mix.most_common(a.top):
        print(f"  {op:<10} {c:>5}")


if __name__ == "__main__":
    main()
