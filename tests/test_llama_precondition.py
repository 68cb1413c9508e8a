"""Preconditioners in the patched llama.cpp (CPU): exact where they must be, and worth their keep."""
import os
from pathlib import Path

import numpy as np
import pytest
from gguf.constants import GGUFValueType as VT

import corrupt
from conftest import run_cli
from tqgguf import assets, metadata
from tqgguf.gguf_file import read_header
from tqgguf.harness import compare as cmp, llama as ll, logparse

pytestmark = pytest.mark.llama


@pytest.fixture(scope="session")
def llama_bin():
    folder = os.environ.get("TQGGUF_LLAMA_BIN")
    return Path(folder) if folder else ll.build()


@pytest.fixture(scope="module")
def calibrated(smollm2, tmp_path_factory):
    """SmolLM2 calibrated on the last 60 KB of the evaluation text for the tests' contexts (512
    positions): K centered, without and with the preconditioners."""
    d = tmp_path_factory.mktemp("precond")
    calib = d / "calib.txt"
    calib.write_text(assets.eval_text().read_text()[-60000:])
    out = {}
    for name, flag in (("plain", "--no-precondition"), ("precond", "--precondition")):
        out[name] = d / f"{name}.tq.gguf"
        run_cli("prepare", str(smollm2), "-o", str(out[name]), "--calibration", str(calib), flag,
                "--calibration-positions", "512", "-q", check=True)
    return out


def _perplexity(llama_bin, model, cache, *kld):
    """llama-perplexity over 2 chunks of 256 (`kld`: its --kl-divergence-base options)."""
    p = ll.run([llama_bin / "llama-perplexity", "-m", model, "-f", assets.eval_text(), "-c", 256, "--chunks", 2,
                "-fa", "on", "-ctk", cache, "-ctv", cache, "-t", 2, *kld], timeout=600)
    assert p.returncode == 0, p.output[-2000:]
    return logparse.parse_perplexity(p.output)


def _scaled_permutations(meta, kind, scale):
    """Per head P = scale * (the permutation that puts the head's outlier channels first, each
    group in order): with outliers 0..d/4-1 in P's space the cache holds scale times the rows it
    held without P, bit for bit."""
    d = meta.head_dim[kind]
    n_layer, n_kv = meta.n_layer, meta.n_kv_head
    p = np.zeros((n_layer, n_kv, d, d), np.float32)
    p_inv = np.zeros_like(p)
    for il in range(n_layer):
        for h in range(n_kv):
            o = meta.outliers[kind][il, h]
            order = np.concatenate([o, np.setdiff1d(np.arange(d), o)])
            p[il, h, np.arange(d), order] = scale
            p_inv[il, h, order, np.arange(d)] = 1 / scale
    return p, p_inv


def test_scaled_permutation_preconditioners_change_nothing_but_rounding(llama_bin, calibrated, tmp_path):
    # K by 4 (Q must get P^-T, a quarter), V by 2 (the output must get P^-1, a half); a
    # permutation that is not its own transpose catches a transpose left out or put in, and a
    # scale given to the wrong side multiplies scores by 16. Exactly, the cache would hold the
    # same rows; in f16 a power of two moves the transforms' subnormal entries, and TQ's rounding,
    # a discontinuous function of its input, is drawn anew by any change to it. So both models
    # must be as far from the f16 cache as each other, where a wrong transform is far worse.
    meta = metadata.read(read_header(calibrated["plain"]))
    n = meta.n_layer * meta.n_kv_head * 64 // 4
    edits = [corrupt.with_precond("k", *_scaled_permutations(meta, "k", 4.0)),
             corrupt.with_precond("v", *_scaled_permutations(meta, "v", 2.0)),
             corrupt.replace(metadata.k_outliers("k"), VT.ARRAY, np.tile(np.arange(16), n // 16), VT.INT32),
             corrupt.replace(metadata.k_outliers("v"), VT.ARRAY, np.tile(np.arange(16), n // 16), VT.INT32)]
    permuted = corrupt.rewrite(calibrated["plain"], tmp_path / "permuted.gguf",
                               lambda kvs: edits[3](edits[2](edits[1](edits[0](kvs)))))
    assert set(metadata.read(read_header(permuted)).precond) == {"k", "v"}
    f16 = tmp_path / "f16.bin"
    _perplexity(llama_bin, calibrated["plain"], "f16", "--kl-divergence-base", f16)
    for cache in ("tq3_5", "tq2_5"):
        kld = {name: _perplexity(llama_bin, model, cache, "--kl-divergence-base", f16, "--kl-divergence")["kld_mean"]
               for name, model in (("plain", calibrated["plain"]), ("permuted", permuted))}
        assert 1 / 1.5 < kld["permuted"] / kld["plain"] < 1.5, (cache, kld)


def test_preconditioners_lower_the_kld(llama_bin, calibrated, tmp_path):
    s = cmp.Settings(ctx=512, chunks=8)
    binary = llama_bin / "llama-perplexity"
    configs = [cmp.parse_config(c) for c in ("tq3_5", "tq2_5")]
    kld = {}
    for name, model in calibrated.items():
        for r in cmp.compare(model, assets.eval_text(), tmp_path / name, configs, s, binary):
            assert r["status"] == "ok", r
            kld[name, r["config"]] = r["kld_mean"]
    # docs/ablation.md (the preconditioner table): about 40% lower in the simulation; demand a sixth
    for cache in ("tq3_5", "tq2_5"):
        assert kld["precond", cache] < 0.85 * kld["plain", cache], kld
