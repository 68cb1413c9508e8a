"""The TQ CUDA sources compile for Turing (sm_75) inside the patched llama.cpp tree: the oldest
architecture a multi-arch build of the TQ kernels takes, where an Ampere-only PTX instruction
(cp.async, m16n8k16, TF32 mma) without its guard is an error. Needs nvcc, no GPU; skipped
without nvcc. scripts/check-cuda-archs.py checks sm_75, 80, 86, 89 and 90 (minutes on 2 cores)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH")
def test_tq_cuda_sources_compile_for_sm_75_in_the_patched_llama_tree():
    r = subprocess.run([sys.executable, str(ROOT / "scripts/check-cuda-archs.py"), "--archs", "75"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TQ sources compile for sm_75" in r.stdout.splitlines()[-1]
