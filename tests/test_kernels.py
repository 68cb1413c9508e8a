"""The TQ CPU kernels (cpp/ggml/ggml-cpu-tq.c) on each SIMD path against the C core, through
scripts/check-kernels.sh (a small driver, no llama.cpp build): portable C, AVX2, the host's
native path, and NEON cross-compiled for aarch64 under qemu where Debian's tools are installed."""
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check-kernels.sh"


def _cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


def _skip_reason(path: str):
    x86 = platform.machine() in ("x86_64", "AMD64", "i686")
    if path != "neon" and not shutil.which("cc"):
        return "no C compiler (cc)"
    if path == "avx2" and not (x86 and {"avx2", "fma", "f16c"} <= _cpu_flags()):
        return "this CPU cannot run AVX2 code"
    if path == "neon":
        missing = [t for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64") if not shutil.which(t)]
        if missing:
            return f"{' and '.join(missing)} not installed (scripts/check-kernels.sh --install neon)"
    return None


@pytest.mark.parametrize("path", ["portable", "avx2", "native", "neon"])
def test_kernels_equal_the_c_core(path):
    reason = _skip_reason(path)
    if reason:
        pytest.skip(reason)
    r = subprocess.run(["bash", str(SCRIPT), path], capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert re.search(r"^\d+ passed, 0 failed$", r.stdout, re.M), out[-3000:]
    ran = re.search(r"^path: (\w+)$", r.stdout, re.M).group(1)
    # the path asked for was the one compiled, not a silent fallback to plain C
    if path != "native":
        assert ran == path, out
    else:
        assert ran in ("avx512", "avx2", "neon", "portable"), out
