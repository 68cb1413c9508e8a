"""The comparison harness: log parsing on real llama.cpp output, resume, reports, every error."""
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from gguf.constants import GGUFValueType as VT

from tqgguf.gguf_file import Header, make_kv, read_header
from tqgguf.harness import compare as cmp, logparse, synth

DATA = Path(__file__).parent / "data"
FAKE = Path(__file__).parent / "fake_llama_perplexity.py"


def test_parse_kld_run():
    r = logparse.parse_perplexity((DATA / "perplexity-kld-tq2_5.log").read_text())
    assert r["ppl"] == 49.964347 and r["ppl_err"] == 12.606229
    assert r["ppl_base"] == 25.927567
    assert r["kld_mean"] == 0.816504 and r["kld_mean_err"] == 0.076191
    assert r["kld_p99"] == 3.676165
    assert r["same_top"] == 49.206 and r["same_top_err"] == 4.472
    assert (r["kv_mib"], r["k_mib"], r["v_mib"], r["k_type"], r["v_type"]) == (15.47, 7.73, 7.73, "tq2_5", "tq2_5")
    # one cache of 256 cells in each of 16 streams; the CPU KV buffer line holds the same K and V
    assert [(c["cells"], c["streams"], c["layers"]) for c in r["kv_caches"]] == [(256, 16, 30)]
    assert r["kv_side"] == [{"name": "TurboQuant transforms", "mib": 5.62, "mib_pm": 0.005}]


def test_parse_two_caches_of_a_sliding_window_model():
    """gemma3 (synth.py, 4 layers): a full cache and a sliding-window one, each with its transforms;
    the iswa lines (`size = 1024 cells`) and the KV buffer lines are not sizes of their own."""
    log = (DATA / "perplexity-gemma3-swa-tq.log").read_text()
    r = logparse.parse_kv_cache(log)
    assert [(c["cells"], c["streams"], c["layers"], c["k_mib"], c["v_mib"]) for c in r["kv_caches"]] == \
        [(1024, 2, 2, 0.23, 0.17), (768, 2, 2, 0.18, 0.13)]
    assert r["kv_mib"] == pytest.approx(0.71) and r["side_mib"] == pytest.approx(0.50)
    assert [b["name"] for b in r["kv_side"]] == ["TurboQuant transforms"] * 2
    assert (r["k_type"], r["v_type"]) == ("tq3_5", "tq2_5")
    # only the last llama_context's caches count: a log that made one before is not summed twice
    assert logparse.parse_kv_cache(log + log) == r
    assert logparse.kv_cache_sizes(log) == [0.41, 0.30]


def test_side_buffers_a_later_patch_logs_are_counted():
    log = ("llama_context: constructing llama_context\n"
           "llama_kv_cache:        CPU KV buffer size =     2.00 MiB\n"
           "llama_kv_cache: recent tokens (f16) =    0.125 MiB (128 cells)\n"
           "llama_kv_cache: size =    2.00 MiB (   512 cells,   2 layers,  1/1 seqs), K (q4_0):    1.00 MiB, V (q4_0):    1.00 MiB\n")
    r = logparse.parse_kv_cache(log)
    assert r["kv_side"] == [{"name": "recent tokens (f16)", "mib": 0.125, "mib_pm": 0.0005}]


def _smollm2_shaped(path: Path) -> Path:
    """SmolLM2-135M's KV geometry (30 layers, 3 KV heads of 64), little else."""
    synth.write(path, synth.Shape(n_layer=30, n_embd=64, n_head=9, n_kv_head=3, head_dim=64, n_ff=64))
    return path


def test_bits_from_the_log_and_the_gguf(tmp_path):
    kv = logparse.parse_kv_cache((DATA / "perplexity-kld-tq2_5.log").read_text())
    shape = cmp.kv_shape(read_header(_smollm2_shaped(tmp_path / "m.gguf")))
    b = cmp.measure_bits(kv, shape)
    assert b["kv_values"] == 2 * 256 * 16 * 30 * 192 and b["kv_cells"] == [4096] and b["kv_layers"] == [30]
    assert abs(b["k_bits"] - 2.75) <= b["k_bits_pm"] and abs(b["v_bits"] - 2.75) <= b["v_bits_pm"]
    assert b["k_bits_pm"] == pytest.approx(0.005 * cmp.MIB_BITS / (256 * 16 * 30 * 192))
    # the transforms are part of the cache: 5.62 MiB beside 15.47 make 3.75 bits at this context
    assert b["bits_per_value"] == pytest.approx((15.47 + 5.62) * cmp.MIB_BITS / b["kv_values"])
    assert abs(b["bits_per_value"] - 3.75) <= b["bits_per_value_pm"] and b["bits_per_value_nominal"] == 2.75
    assert cmp.bits_warning(cmp.parse_config("tq2_5"), b) is None


def test_bits_of_two_caches(tmp_path):
    synth.write(tmp_path / "g.gguf", synth.Shape(n_layer=4), arch="gemma3")  # the model that wrote the log
    kv = logparse.parse_kv_cache((DATA / "perplexity-gemma3-swa-tq.log").read_text())
    b = cmp.measure_bits(kv, cmp.kv_shape(read_header(tmp_path / "g.gguf")))
    assert b["kv_cells"] == [2048, 1536] and b["kv_values"] == 2 * (2048 + 1536) * 2 * 128
    assert abs(b["k_bits"] - 3.75) <= b["k_bits_pm"] and abs(b["v_bits"] - 2.75) <= b["v_bits_pm"]
    assert cmp.bits_warning(cmp.parse_config("tq3_5/tq2_5"), b) is None


def test_a_model_that_does_not_match_the_log(tmp_path):
    kv = logparse.parse_kv_cache((DATA / "perplexity-kld-tq2_5.log").read_text())
    two_heads = synth.Shape(n_layer=30, n_embd=64, n_head=8, n_kv_head=2, head_dim=64, n_ff=64)
    synth.write(tmp_path / "a.gguf", two_heads)
    b = cmp.measure_bits(kv, cmp.kv_shape(read_header(tmp_path / "a.gguf")))
    assert "K 4.12" in cmp.bits_warning(cmp.parse_config("tq2_5"), b)  # 3/2 of 2.75: the wrong row width
    synth.write(tmp_path / "b.gguf", synth.Shape(n_layer=20, n_kv_head=3, n_head=3))
    with pytest.raises(cmp.MeasureError, match="30 layers"):
        cmp.measure_bits(kv, cmp.kv_shape(read_header(tmp_path / "b.gguf")))


def _header(**kvs) -> Header:
    a = "jamba"
    items = [make_kv("general.architecture", VT.STRING, a), make_kv(f"{a}.block_count", VT.UINT32, 4),
             make_kv(f"{a}.embedding_length", VT.UINT32, 256), make_kv(f"{a}.attention.head_count", VT.UINT32, 4)]
    for key, v in kvs.items():
        items.append(make_kv(f"{a}.attention.{key}", VT.ARRAY, v, VT.UINT32) if isinstance(v, list)
                     else make_kv(f"{a}.attention.{key}", VT.UINT32, v))
    return Header(version=3, kvs=items)


@pytest.mark.parametrize("kvs,k,v", [
    ({}, (256,) * 4, (256,) * 4),                                           # llama.cpp's defaults: 4 heads of 64
    ({"head_count_kv": 2, "key_length": 128, "value_length": 96}, (256,) * 4, (192,) * 4),
    ({"head_count_kv": [0, 2, 0, 4]}, (128, 256), (128, 256)),              # recurrent layers: no cache
])
def test_kv_shape(kvs, k, v):
    s = cmp.kv_shape(_header(**kvs))
    assert (s.k, s.v) == (k, v)


def test_values_of_layers_of_different_widths():
    s = cmp.KVShape((128, 256), (128, 256))
    one = [{"cells": 512, "streams": 1, "layers": 2}]
    assert s.values(one) == (512 * 384, 512 * 384)
    with pytest.raises(cmp.MeasureError, match="which"):
        s.values([{"cells": 512, "streams": 1, "layers": 1}, {"cells": 128, "streams": 1, "layers": 1}])


def test_default_chunks_keep_the_tokens():
    assert (cmp.default_chunks(512), cmp.default_chunks(4096), cmp.default_chunks(32768)) == (40, 5, 1)


def test_parse_base_run():
    r = logparse.parse_perplexity((DATA / "perplexity-base-f16.log").read_text())
    assert "ppl" in r and "kld_mean" not in r
    assert r["k_type"] == "f16" and r["kv_mib"] > 0


def test_error_lines():
    assert "tqgguf prepare" in logparse.first_error_line((DATA / "perplexity-unprepared.log").read_text())


def test_parse_bench_markdown():
    rows = logparse.parse_bench_markdown((DATA / "llama-bench.md").read_text())
    assert [r["test"] for r in rows] == ["pp32", "tg8"]
    assert rows[1]["type_k"] == "tq2_5" and rows[1]["tps"] > 0


@pytest.mark.parametrize("text,k,v,rot,bits", [
    ("q4_0", "q4_0", "q4_0", True, 4.5), ("q4_0-norot", "q4_0", "q4_0", False, 4.5),
    ("q8_0/tq2_5", "q8_0", "tq2_5", True, (8.5 + 2.75) / 2), ("tq3_5", "tq3_5", "tq3_5", True, 3.75),
    ("f16", "f16", "f16", True, 16.0), ("iq4_nl", "iq4_nl", "iq4_nl", True, 4.5),
])
def test_parse_config(text, k, v, rot, bits):
    c = cmp.parse_config(text)
    assert (c.k, c.v, c.rot, c.bits_per_value(), c.name) == (k, v, rot, bits, text)


@pytest.mark.parametrize("bad", ["q9_0", "tq2_5-norot", "q4_0/zz"])
def test_parse_config_refuses(bad):
    with pytest.raises(ValueError):
        cmp.parse_config(bad)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    calls.touch()
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    model, text = _smollm2_shaped(tmp_path / "m.gguf"), tmp_path / "t.txt"
    text.write_text("y")
    return calls, model, text


def _configs(*names):
    return [cmp.parse_config(n) for n in names]


def test_compare_resumes_without_rerunning(fake, tmp_path):
    calls, model, text = fake
    out = tmp_path / "out"
    s = cmp.Settings(chunks=2, ctx=128)
    recs = cmp.compare(model, text, out, _configs("f16", "q4_0", "tq2_5"), s, FAKE)
    assert [r["status"] for r in recs] == ["ok"] * 3 and len(calls.read_text().splitlines()) == 4
    assert recs[2]["k_type"] == "tq2_5" and recs[2]["bits_per_value_nominal"] == 2.75
    assert [round(r["bits_per_value"], 2) for r in recs] == [16.0, 4.5, 3.75]  # tq2_5 with its transforms
    assert not any("bits_warning" in r for r in recs)
    # a resumed run measures its bits again from the kept log
    rec = json.loads((out / "runs" / "q4_0.json").read_text())
    (out / "runs" / "q4_0.json").write_text(json.dumps({k: v for k, v in rec.items() if "bits" not in k}))
    again = cmp.compare(model, text, out, _configs("f16", "q4_0", "tq2_5", "q8_0"), s, FAKE)
    assert len(calls.read_text().splitlines()) == 5  # only q8_0 is new
    assert [r["config"] for r in again] == ["f16", "q4_0", "tq2_5", "q8_0"]
    assert again[1]["bits_per_value"] == recs[1]["bits_per_value"]
    cmp.write_reports(again, out, {"model": "m", "text": "t", "ctx": 128, "chunks": 2, "flash_attn": "on", "ngl": 0})
    table = (out / "results.md").read_text()
    assert "| tq2_5 | 3.75 | 2.75/2.75 | 21.1 |" in table and "| q4_0 | 4.50 | 4.50/4.50 | 25.3 |" in table
    assert "c=128" in table.splitlines()[0] and "±0.002 bits" in table
    assert (out / "pareto.png").stat().st_size > 10000
    js = json.loads((out / "results.json").read_text())
    assert {r["config"] for r in js["records"]} == {"f16", "q4_0", "tq2_5", "q8_0"}
    for field in ("ppl", "ppl_err", "dppl_pct", "kld_mean", "kld_p99", "same_top", "kv_mib", "side_mib", "bits_per_value",
                  "bits_per_value_pm", "bits_per_value_nominal", "k_bits", "v_bits", "kv_cells", "wall_s"):
        assert all(field in r for r in js["records"]), field


def test_a_type_larger_than_its_blocks_is_one_warning(fake, tmp_path, monkeypatch):
    calls, model, text = fake
    monkeypatch.setenv("FAKE_PAD", "q4_0")
    recs = cmp.compare(model, text, tmp_path / "out", _configs("q8_0", "q4_0"), cmp.Settings(chunks=2, ctx=128), FAKE)
    assert "bits_warning" not in recs[0]
    assert recs[1]["bits_warning"].startswith("q4_0: measured bits per value differ from the type table: K 4.54")
    assert "\n" not in recs[1]["bits_warning"] and "all 4.54" in recs[1]["bits_warning"]


def test_a_crashing_configuration_is_reported_and_the_rest_go_on(fake, tmp_path, monkeypatch):
    calls, model, text = fake
    monkeypatch.setenv("FAKE_CRASH", "q4_0")
    recs = cmp.compare(model, text, tmp_path / "out", _configs("f16", "q4_0", "tq2_5"), cmp.Settings(chunks=2, ctx=128), FAKE)
    assert [r["status"] for r in recs] == ["ok", "failed", "ok"]
    assert "Segmentation fault" in recs[1]["error"] and Path(recs[1]["log"]).exists()
    assert "| q4_0 | — | failed:" in cmp.markdown(recs)


def test_a_run_whose_log_lost_its_end_runs_once_more(fake, tmp_path, monkeypatch):
    calls, model, text = fake
    monkeypatch.setenv("FAKE_CUT", "q4_0")
    recs = cmp.compare(model, text, tmp_path / "out", _configs("q4_0", "q8_0"), cmp.Settings(chunks=2, ctx=128), FAKE)
    assert [(r["status"], r["attempts"]) for r in recs] == [("ok", 2), ("ok", 1)]
    assert len(calls.read_text().splitlines()) == 4  # base, q4_0 twice, q8_0


def test_text_too_short_is_one_clear_error(fake, tmp_path, monkeypatch):
    calls, model, text = fake
    monkeypatch.setenv("FAKE_SHORT", "1")
    with pytest.raises(cmp.CompareError, match="too short"):
        cmp.compare(model, text, tmp_path / "out", _configs("f16"), cmp.Settings(), FAKE)


def test_cli_missing_binary(prepared_smollm2, tmp_path):
    r = run_cli("compare", str(prepared_smollm2), "--text", str(DATA / "llama-bench.md"), "--llama-bin", str(tmp_path),
                "--out", str(tmp_path / "o"), "-q")
    assert_one_line_error(r, "llama-perplexity not found", "scripts/build-llama.sh")


def test_cli_unprepared_model_for_tq_configs(smollm2, tmp_path):
    r = run_cli("compare", str(smollm2), "--configs", "f16,tq2_5", "--llama-bin", str(tmp_path),
                "--out", str(tmp_path / "o"), "-q")
    assert_one_line_error(r, "no TurboQuant metadata", "tqgguf prepare")


def test_cli_unknown_config(smollm2, tmp_path):
    r = run_cli("compare", str(smollm2), "--configs", "q4_0,q3_x", "--out", str(tmp_path / "o"), "-q")
    assert_one_line_error(r, "unknown cache type")


def test_recall_markdown():
    from tqgguf.harness import recall as rc
    recs = [{"config": "tq2_5", "n_tokens": 1024, "depth": 0.5, "status": "ok", "recalled": True},
            {"config": "tq2_5", "n_tokens": 2048, "depth": 0.5, "status": "ok", "recalled": False},
            {"config": "q4_0", "n_tokens": 1024, "depth": 0.5, "status": "failed", "error": "x"}]
    table = rc.markdown(recs, (1024, 2048), (0.5,))
    assert "| tq2_5 | ✓ | ✗ | 1/2 |" in table
    assert "| q4_0 | err | — | 0/0 |" in table
