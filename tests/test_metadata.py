"""The turboquant.* schema: it round-trips, and each malformed key is refused with one line."""
import numpy as np
import pytest
from gguf.constants import GGUFValueType as VT

from conftest import assert_one_line_error, run_cli
from tqgguf import metadata
from tqgguf.gguf_file import Header, header_bytes, make_kv, read_header


def _rewrite(src, dst, edit):
    """Copy a prepared GGUF with the KV list passed through ``edit`` (a test helper for corruption)."""
    hdr = read_header(src)
    new = Header(version=hdr.version, kvs=edit(list(hdr.kvs)), tensors=hdr.tensors, alignment=hdr.alignment)
    with open(src, "rb") as f:
        f.seek(hdr.data_offset)
        data = f.read()
    dst.write_bytes(header_bytes(new) + data)
    return dst


def _replace(key, vtype, value, elem=None):
    def edit(kvs):
        return [make_kv(key, vtype, value, elem) if kv.key == key else kv for kv in kvs]
    return edit


def _drop(key):
    return lambda kvs: [kv for kv in kvs if kv.key != key]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tqgguf import synth
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


n_out = 2 * 2 * 16  # layers x kv heads x (64 / 4)
CORRUPTIONS = {
    "missing version": (_drop(metadata.K_VERSION), metadata.K_VERSION),
    "future version": (_replace(metadata.K_VERSION, VT.UINT32, 99), "tqgguf prepare"),
    "version as string": (_replace(metadata.K_VERSION, VT.STRING, "1"), "wrong type"),
    "head dim 80": (_replace(metadata.k_head_dim("k"), VT.UINT32, 80), "multiple of 64"),
    "absurd layers": (_replace(metadata.K_LAYERS, VT.UINT32, 2**31), "out of range"),
    "seeds too short": (_replace(metadata.k_layer_seeds("v"), VT.ARRAY, [1], VT.UINT64), "elements"),
    "seeds wrong type": (_replace(metadata.k_layer_seeds("v"), VT.ARRAY, [1.0, 2.0], VT.FLOAT32), "wrong type"),
    "outliers short": (_replace(metadata.k_outliers("k"), VT.ARRAY, np.arange(5), VT.INT32), "elements"),
    "outliers range": (_replace(metadata.k_outliers("k"), VT.ARRAY, np.arange(n_out) + 100, VT.INT32), "sorted"),
    "outliers repeat": (_replace(metadata.k_outliers("k"), VT.ARRAY, np.zeros(n_out), VT.INT32), "sorted"),
    "codebook nan": (_replace(metadata.k_codebook(48, 2), VT.ARRAY, [np.nan, 0, 1, 2], VT.FLOAT32), "finite"),
    "codebook short": (_replace(metadata.k_codebook(48, 2), VT.ARRAY, [0.0, 1.0], VT.FLOAT32), "elements"),
    "codebook wrong": (_replace(metadata.k_codebook(48, 2), VT.ARRAY, [-2.0, -1.0, 1.0, 2.0], VT.FLOAT32),
                       "Lloyd-Max"),
    "type bits": (_replace(metadata.k_type_bits("tq2_5"), VT.ARRAY, [4, 2], VT.UINT32), "tq2_5"),
    "unknown type": (_replace(metadata.K_TYPES, VT.ARRAY, ["tq9_9"], VT.STRING), "unknown TQ"),
    "block size": (_replace(metadata.K_BLOCK, VT.UINT32, 32), metadata.K_BLOCK),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_malformed_metadata_is_refused(prepared, tmp_path, case):
    edit, needle = CORRUPTIONS[case]
    bad = _rewrite(prepared, tmp_path / "bad.gguf", edit)
    with pytest.raises(metadata.MetadataError, match=None) as e:
        metadata.read(read_header(bad))
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert_one_line_error(run_cli("inspect", str(bad)), needle)
