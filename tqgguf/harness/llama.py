"""Finding and running the patched llama.cpp tools."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tqgguf/harness/llama.py
BUILD_SCRIPT = ROOT / "scripts" / "build-llama.sh"


class LlamaError(Exception):
    """A one-line problem with the llama.cpp tools."""


def build(cuda: bool = False, quiet: bool = False) -> Path:
    """Build (or find in the cache) the patched llama.cpp; returns its bin/ folder."""
    if not BUILD_SCRIPT.exists():
        raise LlamaError("scripts/build-llama.sh is not here: run from a tqgguf checkout, or pass --llama-bin DIR")
    cmd = ["bash", str(BUILD_SCRIPT)] + (["--cuda"] if cuda else [])
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if quiet else None, text=True)
    if r.returncode != 0:
        raise LlamaError("building llama.cpp failed (run scripts/build-llama.sh to see why)")
    return Path(r.stdout.strip().splitlines()[-1]) / "bin"


def cached_build(cuda: bool = False, targets: str | None = None) -> Path | None:
    """The bin/ folder of the cached build of this checkout (pin, patches, cpp/; all tools, or only
    ``targets``), or None where it is not built yet: never builds (scripts/build-llama.sh --check)."""
    if not BUILD_SCRIPT.exists():
        return None
    cmd = ["bash", str(BUILD_SCRIPT), "--check"] + (["--cuda"] if cuda else []) + \
        (["--targets", targets] if targets else [])
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        return None
    return Path(r.stdout.strip().splitlines()[-1]) / "bin"


def find_built(name: str, bin_dir: str | os.PathLike | None) -> Path | None:
    """A tool from --llama-bin / $TQGGUF_LLAMA_BIN (LlamaError if it is not there), else from the
    cached build if there is one, else None: never builds."""
    folder = bin_dir or os.environ.get("TQGGUF_LLAMA_BIN")
    if folder:
        path = Path(folder) / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            src = "--llama-bin" if bin_dir else "$TQGGUF_LLAMA_BIN"
            raise LlamaError(f"{name} not found in {folder} ({src}): build it with `scripts/build-llama.sh` "
                             "(or `tqgguf build`), which builds it since patch 0008")
        return path
    # the full build, else one of this tool alone (build-llama.sh --targets NAME: minutes, not ten)
    for built in (cached_build(), cached_build(targets=name)):
        if built is not None and (built / name).is_file():
            return built / name
    return None


def find_bin(name: str, bin_dir: str | os.PathLike | None) -> Path:
    """A tool from --llama-bin / $TQGGUF_LLAMA_BIN, else from the cached build (built if needed)."""
    folder = bin_dir or os.environ.get("TQGGUF_LLAMA_BIN")
    path = Path(folder) / name if folder else build(quiet=True) / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise LlamaError(f"{name} not found in {path.parent}: build it with `scripts/build-llama.sh` "
                         "(or `tqgguf build`) and pass its bin/ folder with --llama-bin")
    return path


@dataclass
class Run:
    cmd: list[str]
    returncode: int
    output: str
    wall_s: float


def run(cmd: list, env: dict | None = None, log: Path | None = None, timeout: float | None = None) -> Run:
    """Run a tool, stdout and stderr together; the log is written even when it fails."""
    cmd = [str(c) for c in cmd]
    full_env = dict(os.environ, **(env or {}))
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", timeout=timeout)
        code, out = r.returncode, r.stdout
    except subprocess.TimeoutExpired as e:
        code, out = -9, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\n[tqgguf] timed out after {timeout} s\n"
    wall = time.perf_counter() - t
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("$ " + " ".join(cmd) + "\n" + "".join(f"# {k}={v}\n" for k, v in (env or {}).items()) + out)
    return Run(cmd, code, out, wall)
