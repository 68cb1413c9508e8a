"""Calibration through llama.cpp (llama-tq-calibrate): the same K means as the numpy forward pass on
the real models, every architecture of the table calibrated and then run with TQ caches, and the
refusals. Needs the patched build (scripts/build-llama.sh; $TQGGUF_LLAMA_BIN for your own)."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from studies import capture
from tqgguf import assets, calibrate, metadata, prepare
from tqgguf.gguf_file import read_header
from tqgguf.harness import llama as ll, synth

pytestmark = pytest.mark.llama


@pytest.fixture(scope="session")
def llama_bin() -> Path:
    folder = os.environ.get("TQGGUF_LLAMA_BIN")
    return Path(folder) if folder else ll.build()


@pytest.fixture(scope="session")
def tool(llama_bin) -> Path:
    return llama_bin / calibrate.TOOL


def _env(llama_bin) -> dict:
    return dict(os.environ, TQGGUF_LLAMA_BIN=str(llama_bin))


# --- the same statistics as the numpy forward pass --------------------------------------------

# llama.cpp quantizes the activations of a quantized matmul (q8_1 / q8_K), numpy keeps them in f32:
# the K means agree to ~0.3% (median over heads; 0.8% at most on SmolLM2), far from the 30-100%
# a wrong RoPE, norm, bias or head mapping gives
REL_TOL = 0.02


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2", "qwen2.5-coder-0.5b"])
def test_k_means_equal_the_numpy_forward_pass(model, tool, smollm2, tmp_path):
    path = str(smollm2 if model == "smollm2" else assets.second_model())
    n = 256
    out = tmp_path / "stats.gguf"
    calibrate.run(tool, path, prepare.CALIBRATION_TEXT, out, n_tokens=n)
    st = calibrate.read(out)
    assert len(st.tokens) == n and (st.k_rows == n).all()
    # the numpy pass on the very tokens llama.cpp ran (its own tokenizer, BOS included)
    m = capture.load(path, keep_weights=False)
    ids = [int(t) for t in st.tokens]
    ks = []

    def attend(il, q, k, v):
        ks.append(k.astype(np.float64))
        return capture.attention(q, k, v, capture.causal_mask(len(ids)))

    capture.forward(m, ids, attend, dtype=np.float32)
    ref = np.stack([k.mean(0) for k in ks])                      # (n_layer, n_kv, d)
    got = st.mean["k"].astype(np.float64)
    assert got.shape == ref.shape
    rel = np.linalg.norm(got - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert rel.max() < REL_TOL, (rel.max(), np.unravel_index(rel.argmax(), rel.shape))
    # the second moments too: each head's total K variance (the covariance's trace)
    var = np.stack([k.var(0).sum(-1) for k in ks])
    got_var = np.trace(st.cov["k"], axis1=-2, axis2=-1)
    assert np.allclose(got_var, var, rtol=3 * REL_TOL), np.abs(got_var / var - 1).max()


# --- every architecture of the table ----------------------------------------------------------

ARCH_SHAPES = {
    "llama": synth.Shape(),
    "qwen2": synth.Shape(),                                            # Q/K/V biases
    "qwen3": synth.Shape(),                                            # per-head Q/K norms
    "gemma3": synth.Shape(n_layer=3, n_head=2, n_kv_head=1, head_dim=256),  # head 256, sliding windows
    "phi3": synth.Shape(),                                             # fused QKV and gate/up
}


@pytest.fixture(scope="module")
def prepared_archs(tmp_path_factory, llama_bin):
    """Each architecture: a random-weight model, prepared (calibrated through llama.cpp)."""
    d = tmp_path_factory.mktemp("archs")
    out = {}
    for arch, shape in ARCH_SHAPES.items():
        src = d / f"{arch}.gguf"
        synth.write(src, shape, arch=arch)
        dst = d / f"{arch}.tq.gguf"
        r = run_cli("prepare", str(src), "-o", str(dst), "-q", env=_env(llama_bin))
        out[arch] = (src, dst, r)
    return out


@pytest.mark.parametrize("arch", list(ARCH_SHAPES))
def test_prepare_calibrates_the_architecture(arch, prepared_archs, tool, tmp_path):
    src, dst, r = prepared_archs[arch]
    assert r.returncode == 0 and r.stderr == "", r.stderr
    shape = ARCH_SHAPES[arch]
    meta = metadata.read(read_header(dst))
    assert meta.k_center.shape == (shape.n_layer, shape.n_kv_head, shape.head_dim)
    assert np.isfinite(meta.k_center).all() and np.abs(meta.k_center).max() > 0
    # prepare's centers are the tool's K means over the packaged text, replayed over its positions
    calibrate.run(tool, str(src), prepare.CALIBRATION_TEXT, tmp_path / "s.gguf",
                  positions=prepare.CALIBRATION_POSITIONS)
    st = calibrate.read(tmp_path / "s.gguf")
    assert np.array_equal(meta.k_center, st.mean["k"])
    n = len(st.tokens)
    rows = n + (-(-prepare.CALIBRATION_POSITIONS // n) - 1) * (n - 1)  # the replays leave out their first token
    assert (st.k_rows == rows).all() and meta.calibration_positions == prepare.CALIBRATION_POSITIONS
    assert (st.q_rows == rows * shape.n_head // shape.n_kv_head).all()
    for kind in calibrate.KINDS:  # covariances: symmetric, non-negative diagonal
        c = st.cov[kind]
        assert np.allclose(c, np.swapaxes(c, -1, -2)) and (np.diagonal(c, axis1=-2, axis2=-1) >= -1e-4).all()


@pytest.mark.parametrize("arch", list(ARCH_SHAPES))
@pytest.mark.parametrize("cache", ["tq2_5", "tq3_5"])
def test_tq_caches_run_on_the_architecture(arch, cache, prepared_archs, llama_bin, tmp_path):
    _, dst, r = prepared_archs[arch]
    assert r.returncode == 0, r.stderr
    assert np.isfinite(_perplexity_logits(llama_bin, dst, prepare.CALIBRATION_TEXT, 128, cache, tmp_path)).all()


def _perplexity_logits(llama_bin, model, text, ctx, cache, tmp_path) -> np.ndarray:
    """llama-perplexity over 2 chunks with a ``cache`` KV cache; per scored token, the two floats its
    --kl-divergence-base file stores (the log-softmax's scale and minimum: finite iff the logits
    are). The file, not the log: the pinned llama.cpp's logger may lose its last lines at exit
    (a leaked singleton, upstream issue 22142), which on these tiny models was half the runs."""
    out = tmp_path / f"logits-{cache}.bin"
    p = ll.run([llama_bin / "llama-perplexity", "-m", model, "-f", text, "-c", ctx, "--chunks", 2, "-fa", "on",
                "-ctk", cache, "-ctv", cache, "-t", 2, "--kl-divergence-base", out], timeout=600)
    assert p.returncode == 0, p.output[-2000:]
    raw = out.read_bytes()
    assert raw[:8] == b"_logits_", p.output[-2000:]
    n_ctx, n_vocab, n_chunk = np.frombuffer(raw[8:20], dtype=np.int32)
    rows = np.frombuffer(raw[20 + 4 * n_ctx * n_chunk:], dtype=np.uint16).reshape(-1, 2 * ((n_vocab + 1) // 2) + 4)
    assert len(rows) == n_chunk * (n_ctx - 1 - n_ctx // 2) > 0
    return rows[:, :4].copy().view(np.float32)


def test_a_context_far_from_the_calibrated_one_is_warned_of(llama_bin, tmp_path):
    """prepare records the positions it calibrated for; llama.cpp warns at a context 2x off."""
    src, dst = tmp_path / "m.gguf", tmp_path / "m.tq.gguf"
    synth.write(src, synth.Shape(), arch="llama")
    run_cli("prepare", str(src), "-o", str(dst), "--calibration-positions", "512", "--calibration-tokens", "128",
            "-q", env=_env(llama_bin), check=True)
    assert metadata.read(read_header(dst)).calibration_positions == 512
    warned = {}
    for ctx in (128, 512):
        p = ll.run([llama_bin / "llama-perplexity", "-m", dst, "-f", prepare.CALIBRATION_TEXT, "-c", ctx,
                    "--chunks", 1, "-fa", "on", "-ctk", "tq3_5", "-ctv", "tq3_5", "-t", 2], timeout=600)
        assert p.returncode == 0, p.output[-2000:]
        warned[ctx] = "calibrated for a context of 512 positions, this one has" in p.output
    assert warned == {128: True, 512: False}, warned


# --- the real models end to end ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2", "qwen2.5-coder-0.5b"])
def test_prepare_calibrates_the_real_model_and_tq_caches_run(model, smollm2, llama_bin, tmp_path):
    src = smollm2 if model == "smollm2" else assets.second_model()
    dst = tmp_path / "m.tq.gguf"
    run_cli("prepare", str(src), "-o", str(dst), "-q", env=_env(llama_bin), check=True)
    meta = metadata.read(read_header(dst))
    assert meta.k_center is not None and np.isfinite(meta.k_center).all()
    assert np.isfinite(_perplexity_logits(llama_bin, dst, assets.eval_text(), 256, "tq3_5", tmp_path)).all()


# --- refusals ----------------------------------------------------------------------------------

def test_an_architecture_llama_cpp_cannot_run_is_refused_in_one_line(llama_bin, tmp_path):
    src = tmp_path / "other.gguf"
    synth.write(src, synth.Shape(), arch="nosucharch")
    out = tmp_path / "o.gguf"
    r = run_cli("prepare", str(src), "-o", str(out), env=_env(llama_bin))
    assert_one_line_error(r, "llama.cpp cannot load", "nosucharch")
    assert r.returncode == 1 and not out.exists()


@pytest.mark.parametrize("text", ["", "ab"])
def test_a_text_that_gives_too_few_tokens_is_refused_in_one_line(text, llama_bin, tmp_path):
    src = tmp_path / "m.gguf"
    synth.write(src, synth.Shape())
    calib = tmp_path / "calib.txt"
    calib.write_text(text)
    out = tmp_path / "o.gguf"
    r = run_cli("prepare", str(src), "-o", str(out), "--calibration", str(calib), env=_env(llama_bin))
    assert_one_line_error(r, "--calibration", "tokens")
    assert r.returncode == 1 and not out.exists()


def test_calibrate_writes_a_stats_file_that_prepare_takes(llama_bin, tmp_path):
    src = tmp_path / "m.gguf"
    synth.write(src, synth.Shape(), arch="qwen3")
    stats = tmp_path / "stats.gguf"
    run_cli("calibrate", str(src), "-o", str(stats), "--calibration-tokens", "200", env=_env(llama_bin), check=True)
    st = calibrate.read(stats)
    assert st.arch == "qwen3" and len(st.tokens) == 200
    assert st.positions == prepare.CALIBRATION_POSITIONS and (st.k_rows == 200 + 20 * 199).all()  # 21 runs
    out = tmp_path / "o.gguf"
    run_cli("prepare", str(src), "-o", str(out), "--stats", str(stats), "-q", check=True)
    assert np.array_equal(metadata.read(read_header(out)).k_center, st.mean["k"])


def test_replays_at_later_positions_keep_the_hidden_states(tool, tmp_path):
    """-p replays the tokens at later starts: V (no RoPE) is the same rows again, K the same rows
    turned (same norms), and the replays leave their first token, the attention sink, out."""
    src = tmp_path / "m.gguf"
    synth.write(src, synth.Shape(), arch="llama")
    n, span = 64, 192                     # starts 0, 64, 128: the first run and two replays
    runs = {}
    for name, kw in (("once", dict(n_tokens=n)), ("replayed", dict(n_tokens=n, positions=span)),
                     ("sink", dict(n_tokens=1, min_tokens=1))):
        calibrate.run(tool, str(src), prepare.CALIBRATION_TEXT, tmp_path / f"{name}.gguf", **kw)
        runs[name] = calibrate.read(tmp_path / f"{name}.gguf")
    once, replayed, sink = runs["once"], runs["replayed"], runs["sink"]
    rows = n + 2 * (n - 1)
    assert (replayed.k_rows == rows).all() and replayed.positions == span and once.positions == n
    assert (replayed.q_rows == rows * once.q_rows // n).all()

    def expected(first_run, first_token):   # the first run, and twice the run less its first token
        return (n * first_run + 2 * (n * first_run - first_token)) / rows

    def second_moment_trace(st, kind):
        return np.trace(st.cov[kind], axis1=-2, axis2=-1) + (st.mean[kind].astype(np.float64) ** 2).sum(-1)

    want_v = expected(once.mean["v"].astype(np.float64), sink.mean["v"].astype(np.float64))
    err = np.linalg.norm(replayed.mean["v"] - want_v, axis=-1) / np.linalg.norm(want_v, axis=-1)
    assert err.max() < 1e-3, err.max()
    want_k = expected(second_moment_trace(once, "k"), second_moment_trace(sink, "k"))
    assert np.allclose(second_moment_trace(replayed, "k"), want_k, rtol=1e-3)
    # ... while K's mean moved: the replays see it turned by their positions
    moved = np.linalg.norm(replayed.mean["k"] - expected(once.mean["k"], sink.mean["k"]), axis=-1)
    assert moved.max() > 1e-2 * np.linalg.norm(once.mean["k"], axis=-1).max()


def test_the_tool_refuses_in_one_line(tool, tmp_path):
    for args, needle in (([], "-m MODEL"), (["-m", tmp_path / "none.gguf", "-f", tmp_path / "none.txt", "-o", "x"],
                                            "cannot read"), (["--bogus"], "unknown option")):
        r = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
        assert_one_line_error(r, needle)
