"""Calibration statistics from llama.cpp's own graph: llama-tq-calibrate and the file it writes.

`llama-tq-calibrate` (cpp/tools/tq-calibrate.cpp, built with the patch series) runs a model over
a text and writes, per layer and KV head, the mean and covariance of K after RoPE, of V and of Q
(pooled over the head's query group) to a GGUF file; docs/calibration.md describes it. This
module owns that file's key and tensor names, runs the tool and reads the file. `tqgguf
prepare` takes the K means as turboquant.k.center; the rest is there for query-aware work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf.constants import GGMLQuantizationType

from .gguf_file import GGUFError, Header, TensorReader, read_header

TOOL = "llama-tq-calibrate"
FORMAT_VERSION = 1

# key names (GGUF metadata of the statistics file)
K_VERSION = "tqcal.format_version"
K_ARCH = "tqcal.architecture"
K_LAYERS = "tqcal.layer_count"
K_HEADS = "tqcal.head_count"
K_KV_HEADS = "tqcal.kv_head_count"
K_HEAD_DIM_K = "tqcal.k.head_dim"
K_HEAD_DIM_V = "tqcal.v.head_dim"
K_TOKENS = "tqcal.token_count"
K_CTX = "tqcal.ctx"
K_POSITIONS = "tqcal.positions"  # positions the statistics span (sequences replayed at later starts)
K_K_ROWS = "tqcal.k_rows"        # [u32] per layer: K rows counted (0: a layer without a KV cache)
K_Q_ROWS = "tqcal.q_rows"        # [u32] per layer: query rows counted (tokens x query heads)
K_KQ_SCALE = "tqcal.kq_scale"    # [f32] per layer: the attention's score scale
K_SOFTCAP = "tqcal.softcap"      # [f32] per layer: logit soft-capping (0: none)
# tensors: {k,v,q}.mean (n_layer, n_kv_head, d) and {k,v,q}.cov (n_layer, n_kv_head, d, d), f32;
# tokens (n,) i32: the token ids the statistics were taken over
T_TOKENS = "tqcal.tokens"
KINDS = ("k", "v", "q")


def t_mean(kind: str) -> str:
    return f"tqcal.{kind}.mean"


def t_cov(kind: str) -> str:
    return f"tqcal.{kind}.cov"


class StatsError(ValueError):
    """A statistics file that is not one, or not for this model: one line for the user."""


class ToolError(RuntimeError):
    """llama-tq-calibrate refused or failed: ``why`` is its one line."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass
class Stats:
    arch: str
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim_k: int
    head_dim_v: int
    ctx: int
    tokens: np.ndarray          # (n,) int32
    k_rows: np.ndarray          # (n_layer,) rows of K counted per layer
    q_rows: np.ndarray
    kq_scale: np.ndarray        # (n_layer,)
    softcap: np.ndarray
    mean: dict                  # kind -> (n_layer, n_kv_head, d) float32
    cov: dict                   # kind -> (n_layer, n_kv_head, d, d) float32
    positions: int = 0          # positions 0..positions-1 were seen (files before the key: ctx)


def _value(hdr: Header, key: str):
    v = hdr.get(key)
    if v is None:
        raise StatsError(f"{key} is missing")
    return v


def read(path: str | os.PathLike) -> Stats:
    """The statistics in ``path``; StatsError (one line) if it is not such a file."""
    try:
        hdr = read_header(path)
    except GGUFError as e:
        raise StatsError(str(e)) from None
    if hdr.get(K_VERSION) is None:
        raise StatsError(f"{path} is not a llama-tq-calibrate statistics file (no {K_VERSION})")
    tensors = TensorReader(path, hdr)
    try:
        v = int(_value(hdr, K_VERSION))
        if v != FORMAT_VERSION:
            raise StatsError(f"format {v}; this version reads format {FORMAT_VERSION}")
        u = lambda key: int(_value(hdr, key))
        s = Stats(arch=str(_value(hdr, K_ARCH)), n_layer=u(K_LAYERS), n_head=u(K_HEADS),
                  n_kv_head=u(K_KV_HEADS), head_dim_k=u(K_HEAD_DIM_K),
                  head_dim_v=u(K_HEAD_DIM_V), ctx=u(K_CTX), tokens=np.zeros(0, np.int32),
                  k_rows=np.asarray(_value(hdr, K_K_ROWS), dtype=np.int64),
                  q_rows=np.asarray(_value(hdr, K_Q_ROWS), dtype=np.int64),
                  kq_scale=np.asarray(_value(hdr, K_KQ_SCALE), dtype=np.float32),
                  softcap=np.asarray(_value(hdr, K_SOFTCAP), dtype=np.float32),
                  mean={}, cov={})
        s.positions = int(hdr.get(K_POSITIONS, s.ctx))
        t = hdr.tensor(T_TOKENS)
        if t is None:
            raise StatsError(f"tensor {T_TOKENS} is missing")
        if t.type != GGMLQuantizationType.I32:
            raise StatsError(f"tensor {T_TOKENS} is not I32")
        s.tokens = np.frombuffer(tensors.raw(T_TOKENS), dtype="<i4").astype(np.int32)
        for kind in KINDS:
            d = s.head_dim_v if kind == "v" else s.head_dim_k
            for name, shape, into in ((t_mean(kind), (s.n_layer, s.n_kv_head, d), s.mean),
                                      (t_cov(kind), (s.n_layer, s.n_kv_head, d, d), s.cov)):
                a = tensors.get(name)
                if a is None:
                    raise StatsError(f"tensor {name} is missing")
                if a.size != int(np.prod(shape)):
                    raise StatsError(f"tensor {name} has {a.size} values, not {int(np.prod(shape))}")
                into[kind] = a.reshape(shape).copy()
    except (StatsError, GGUFError, TypeError, ValueError) as e:
        raise StatsError(f"{path}: not a statistics file tqgguf can read: {e}") from None
    for name, a in (("k_rows", s.k_rows), ("q_rows", s.q_rows)):
        if a.shape != (s.n_layer,):
            raise StatsError(f"{path}: {name} has {a.size} entries for {s.n_layer} layers")
    return s


def write(path: str | os.PathLike, s: Stats) -> None:
    """Write ``s`` as llama-tq-calibrate does (tests, and statistics made or merged elsewhere)."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch=s.arch, use_temp_file=False)
    w.kv_data[0].pop("general.architecture", None)  # a statistics file, not a model
    w.add_uint32(K_VERSION, FORMAT_VERSION)
    w.add_string(K_ARCH, s.arch)
    for key, v in ((K_LAYERS, s.n_layer), (K_HEADS, s.n_head), (K_KV_HEADS, s.n_kv_head),
                   (K_HEAD_DIM_K, s.head_dim_k), (K_HEAD_DIM_V, s.head_dim_v), (K_TOKENS, len(s.tokens)),
                   (K_CTX, s.ctx), (K_POSITIONS, s.positions or s.ctx)):
        w.add_uint32(key, int(v))
    w.add_array(K_K_ROWS, [int(x) for x in s.k_rows])
    w.add_array(K_Q_ROWS, [int(x) for x in s.q_rows])
    w.add_array(K_KQ_SCALE, [float(x) for x in s.kq_scale])
    w.add_array(K_SOFTCAP, [float(x) for x in s.softcap])
    for kind in ("k", "v", "q"):
        w.add_tensor(t_mean(kind), np.ascontiguousarray(s.mean[kind], dtype=np.float32))
        w.add_tensor(t_cov(kind), np.ascontiguousarray(s.cov[kind], dtype=np.float32))
    w.add_tensor(T_TOKENS, np.asarray(s.tokens, dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


_LIVE: set = set()  # this process's running tools and their temp folders, for terminate_live()


def run(tool: Path, model: str, text: str | os.PathLike, out: str | os.PathLike, n_tokens: int = 1024,
        threads: int | None = None, ngl: int = 0, min_tokens: int = 16, positions: int = 0,
        extra: list[str] | None = None) -> None:
    """Run llama-tq-calibrate on the text file ``text``; ToolError with its one line where it
    refuses or fails. ``positions``: replay the sequence at later starts so that the statistics
    span positions 0..positions-1 (0: once, from position 0)."""
    cmd = [str(tool), "-m", str(model), "-f", str(text), "-o", str(out), "-n", str(n_tokens),
           "--min-tokens", str(min_tokens), "-ngl", str(ngl), "-p", str(positions)]
    if threads:
        cmd += ["-t", str(threads)]
    cmd += extra or []
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    except OSError as e:
        raise ToolError(f"cannot run {tool}: {e.strerror}") from None
    _LIVE.add(p)
    try:
        _, err = p.communicate()
    finally:
        _LIVE.discard(p)
    if p.returncode != 0:
        lines = [l for l in err.splitlines() if l.startswith(f"{TOOL}: error: ")]
        why = lines[-1][len(f"{TOOL}: error: "):] if lines else \
            f"{TOOL} failed (exit status {p.returncode}): " + (err.strip().splitlines() or ["no output"])[-1]
        raise ToolError(why)


def calibrate(tool: Path, model: str, text: str, **kw) -> Stats:
    """Run the tool over ``text`` (the text itself) through a temporary folder, and read its file."""
    d = tempfile.mkdtemp(prefix="tqgguf-cal-")
    _LIVE.add(d)
    try:
        (Path(d) / "text.txt").write_text(text)
        try:
            run(tool, model, Path(d) / "text.txt", Path(d) / "stats.gguf", **kw)
        except ToolError as e:
            raise ToolError(e.why.replace(str(Path(d) / "text.txt"), "the calibration text")) from None
        return read(Path(d) / "stats.gguf")
    finally:
        shutil.rmtree(d, ignore_errors=True)
        _LIVE.discard(d)


def terminate_live() -> None:
    """Stop this process's running tools and remove their temp folders: for a signal handler."""
    for x in list(_LIVE):
        if isinstance(x, subprocess.Popen):
            with contextlib.suppress(OSError):
                x.kill()
                x.wait()
    for x in list(_LIVE):
        if isinstance(x, str):
            shutil.rmtree(x, ignore_errors=True)
    _LIVE.clear()
