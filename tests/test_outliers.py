"""Data-free outlier channels: planted high-energy channels are found; RoPE pairs stay together."""
import numpy as np

from tqgguf import outliers, prepare
from tqgguf.harness import synth
from tqgguf.gguf_file import read_header


def test_planted_channels_are_chosen(tmp_path):
    p = tmp_path / "planted.gguf"
    # K: two adjacent rope pairs (llama rope: (2i, 2i+1)); V: single channels
    planted_k, planted_v = [10, 11, 40, 41], [3, 7, 60]
    synth.write(p, synth.Shape(n_layer=3, planted={"k": planted_k, "v": planted_v}, planted_gain=6.0))
    hdr = read_header(p)
    meta = prepare.build_metadata(str(p), hdr, 0, ["tq2_5"])
    for layer in range(3):
        for h in range(2):
            assert set(planted_k) <= set(meta.outliers["k"][layer, h].tolist())
            assert set(planted_v) <= set(meta.outliers["v"][layer, h].tolist())


def test_k_outliers_keep_rope_pairs():
    energy = np.zeros(64)
    energy[[5, 20, 33]] = [10.0, 9.0, 8.0]
    norm = outliers.choose(energy, outliers.rope_units(64, 64, "llama", True), 16)
    assert {4, 5, 20, 21, 32, 33} <= set(norm.tolist())
    assert all((c ^ 1) in norm for c in norm)  # every chosen channel has its partner
    neox = outliers.choose(energy, outliers.rope_units(64, 64, "qwen2", True), 16)
    assert {5, 37, 20, 52, 1, 33} <= set(neox.tolist())
    assert all(((c + 32) % 64) in neox for c in neox)


def test_partial_rope_and_v_use_single_channels():
    units = outliers.rope_units(64, 32, "qwen2", True)
    assert (0, 16) in units and (40,) in units and len(sum(units, ())) == 64
    assert outliers.rope_units(64, 64, "llama", False) == [(c,) for c in range(64)]


def test_bias_counts_in_the_energy():
    w = np.ones((4, 8))
    e = outliers.channel_energy(w, None, np.array([0.0, 10.0, 0.0, 0.0]))
    assert np.argmax(e) == 1 and e[0] == 8.0


def test_choose_is_full_and_sorted_with_ties():
    got = outliers.choose(np.zeros(64), outliers.rope_units(64, 64, "llama", True), 16)
    assert got.tolist() == list(range(16))
