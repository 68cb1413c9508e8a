"""The turboquant.* schema: it round-trips, and each malformed key is refused with one line."""
import numpy as np
import pytest

import corrupt
from conftest import assert_one_line_error, run_cli
from tqgguf import metadata, prepare
from tqgguf.gguf_file import read_header


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tqgguf.harness import synth
    d = tmp_path_factory.mktemp("meta")
    src = d / "m.gguf"
    synth.write(src, synth.Shape(n_layer=2))
    run_cli("prepare", str(src), "-o", str(d / "m.tq.gguf"), "-q", check=True)
    return d / "m.tq.gguf"


def test_round_trip(prepared):
    meta = metadata.read(read_header(prepared))
    kvs = {kv.key: kv for kv in meta.to_kvs()}
    again = {kv.key: kv for kv in read_header(prepared).kvs if kv.key.startswith(metadata.PREFIX)}
    assert {k: v.raw for k, v in kvs.items()} == {k: v.raw for k, v in again.items()}
    assert meta.types == ["tq2_5", "tq3_5"] and meta.head_dim == {"k": 64, "v": 64}


CORRUPTIONS = corrupt.cases(n_layer=2, n_kv=2, head_dim=64)


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_malformed_metadata_is_refused(prepared, tmp_path, case):
    edit, needle = CORRUPTIONS[case]
    bad = corrupt.rewrite(prepared, tmp_path / "bad.gguf", edit)
    with pytest.raises(metadata.MetadataError, match=None) as e:
        metadata.read(read_header(bad))
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert_one_line_error(run_cli("inspect", str(bad)), needle)


@pytest.mark.parametrize("case", sorted(corrupt.unsealed_cases()))
def test_metadata_changed_after_prepare_is_refused(prepared, tmp_path, case):
    edit, needle = corrupt.unsealed_cases()[case]
    bad = corrupt.rewrite(prepared, tmp_path / "bad.gguf", edit, reseal=False)
    assert_one_line_error(run_cli("inspect", str(bad)), needle)


def test_checksum_covers_every_turboquant_record_and_nothing_else(prepared):
    kvs = read_header(prepared).kvs
    base = metadata.checksum(kvs)
    assert base == read_header(prepared).get(metadata.K_CHECKSUM)
    # a change to the model's own keys does not touch it; reordering records does not either
    other = [kv for kv in kvs if not kv.key.startswith(metadata.PREFIX)]
    assert metadata.checksum(other[:1] + kvs[::-1]) == base
    for kv in kvs:
        if kv.key.startswith(metadata.PREFIX) and kv.key != metadata.K_CHECKSUM:
            flipped = bytearray(kv.raw)
            flipped[-1] ^= 1
            edited = [k if k is not kv else metadata.KV(kv.key, kv.type, kv.value, kv.elem_type, bytes(flipped))
                      for k in kvs]
            assert metadata.checksum(edited) != base, kv.key


def test_k_center_round_trips(tmp_path):
    from tqgguf.harness import synth
    from tqgguf.gguf_file import read_header
    src = tmp_path / "m.gguf"
    synth.write(src, synth.Shape(n_layer=2))
    hdr = read_header(src)
    meta = prepare.build_metadata(str(src), hdr, 7, ["tq2_5"])
    meta.k_center = np.arange(2 * 2 * 64, dtype=np.float32).reshape(2, 2, 64) / 100
    meta.calibration_positions = 4096
    meta.k_exact_tokens = 4
    out = tmp_path / "c.gguf"
    prepare.write_atomic(str(src), str(out), prepare.with_metadata(hdr, meta), hdr, lambda n: None)
    back = metadata.read(read_header(out))
    assert np.array_equal(back.k_center, meta.k_center) and back.calibration_positions == 4096
    assert back.k_exact_tokens == 4
    meta.k_exact_tokens = 0  # none: no key at all (files without it read as before)
    assert metadata.K_K_EXACT not in {kv.key for kv in meta.to_kvs()}


def test_window_round_trips(tmp_path):
    from tqgguf.harness import synth
    src = tmp_path / "m.gguf"
    synth.write(src, synth.Shape(n_layer=2))
    hdr = read_header(src)
    meta = prepare.build_metadata(str(src), hdr, 7, ["tq2_5"])
    meta.window_tokens = 32
    out = tmp_path / "w.gguf"
    prepare.write_atomic(str(src), str(out), prepare.with_metadata(hdr, meta), hdr, lambda n: None)
    assert metadata.read(read_header(out)).window_tokens == 32
    meta.window_tokens = 0  # none: no key at all
    assert metadata.K_WINDOW not in {kv.key for kv in meta.to_kvs()}


def test_preconditioners_round_trip(tmp_path):
    from tqgguf.harness import synth
    src = tmp_path / "m.gguf"
    synth.write(src, synth.Shape(n_layer=2))
    hdr = read_header(src)
    meta = prepare.build_metadata(str(src), hdr, 7, ["tq2_5"])
    rng = np.random.default_rng(3)
    p = rng.standard_normal((2, 2, 64, 64)) / 8 + np.eye(64)
    meta.precond = {"v": (p, np.linalg.inv(p))}
    out = tmp_path / "p.gguf"
    prepare.write_atomic(str(src), str(out), prepare.with_metadata(hdr, meta), hdr, lambda n: None)
    back = metadata.read(read_header(out))
    assert set(back.precond) == {"v"} and read_header(out).get(metadata.K_VERSION) == 3
    assert np.array_equal(back.precond["v"][0], p.astype(np.float32))
    assert np.array_equal(back.precond["v"][1], np.linalg.inv(p).astype(np.float32))


def test_format_2_without_preconditioners_still_reads(prepared, tmp_path):
    def to_format_2(kvs):
        kvs = [kv for kv in kvs if ".precond" not in kv.key]
        return corrupt.replace(metadata.K_VERSION, metadata.VT.UINT32, 2)(kvs)
    old = corrupt.rewrite(prepared, tmp_path / "v2.gguf", to_format_2)
    assert metadata.read(read_header(old)).precond == {}
