"""The comparison harness: log parsing on real llama.cpp output, resume, reports, every error."""
import json
import os
import shutil
import sys
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
    # the exact K rows of the first cells (turboquant.k.exact_tokens), as the patched cache logs them
    exact = "llama_kv_cache: TurboQuant exact K rows =    0.0879 MiB (the first 4 cells of each stream)\n"
    r = logparse.parse_kv_cache(log.replace("llama_kv_cache: size", exact + "llama_kv_cache: size"))
    assert r["kv_side"][-1] == {"name": "TurboQuant exact K rows", "mib": 0.0879, "mib_pm": 0.00005}
    assert r["side_mib"] == pytest.approx(0.125 + 0.0879)


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


def test_cli_notes_a_model_calibrated_for_another_context(fake, tmp_path):
    from tqgguf import prepare
    _, src, text = fake
    model = tmp_path / "m.tq.gguf"
    hdr = read_header(src)
    meta = prepare.build_metadata(str(src), hdr, 7, ["tq2_5"])
    meta.calibration_positions = 4096
    prepare.write_atomic(str(src), str(model), prepare.with_metadata(hdr, meta), hdr, lambda n: None)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llama-perplexity").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    (bin_dir / "llama-perplexity").chmod(0o755)
    note = "calibrated for a context of 4096 positions, this comparison runs 512: `tqgguf prepare " \
           "--calibration-positions 512` fits it"
    for ctx, configs, noted in ((512, "tq2_5", True), (4096, "tq2_5", False), (512, "q4_0", False)):
        r = run_cli("compare", str(model), "--text", str(text), "--configs", configs, "--ctx", str(ctx),
                    "--chunks", "2", "--llama-bin", str(bin_dir), "--out", str(tmp_path / f"o{ctx}{configs}"), "-q")
        assert r.returncode == 0, r.stderr
        assert (note in r.stderr) == noted, r.stderr


def test_cli_unknown_config(smollm2, tmp_path):
    r = run_cli("compare", str(smollm2), "--configs", "q4_0,q3_x", "--out", str(tmp_path / "o"), "-q")
    assert_one_line_error(r, "unknown cache type")


FAKE_PASSKEY = Path(__file__).parent / "fake_llama_passkey.py"


@pytest.fixture
def fake_passkey(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    calls.touch()
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    return calls


def _recall(tmp_path, configs, n_seeds, lengths=(1024,), depths=(0.1, 0.9)):
    from tqgguf.harness import recall as rc
    shown = []
    cells = rc.recall(FAKE_PASSKEY, tmp_path / "m.gguf", _configs(*configs), tmp_path / "out", lengths, depths,
                      n_seeds, progress=shown.append)
    return cells, shown


def _calls(calls):
    """(cache type, seed) of each call, in order."""
    out = []
    for line in calls.read_text().splitlines():
        a = line.split()
        out.append((a[a.index("-ctk") + 1], int(a[a.index("--seed") + 1])))
    return out


@pytest.mark.parametrize("text, key, answer, recalled", [
    ((DATA / "passkey-f16.log").read_text(), 39384, "39384. The pass key is 3938", True),
    ("main: passkey = 39384, inserted at position 6 / 12\n I  What is the pass key? The pass key is 393844\n",
     39384, "393844", False),  # the key inside a longer number is not recalled
    ("main: passkey = 7, inserted at position 6 / 12\n I  What is the pass key? The pass key is 8\n\n"
     "0.1 I main: decoded 7 tokens in 0.27 s\n", 7, "8", False),  # nor is a number in the timings
    ("main: passkey = 7, inserted at position 6 / 12\nSegmentation fault\n", 7, None, False),
])
def test_parse_passkey_answer(text, key, answer, recalled):
    from tqgguf.harness import recall as rc
    assert rc.parse_answer(text) == {"passkey": key, "answer": answer, "recalled": recalled}
    assert rc.parse_answer("llama_model_load: error loading model\n") == {}


@pytest.mark.parametrize("miss, n_seeds, counts", [
    ("", 1, {"f16": 1, "q4_0": 1, "tq2_5": 1}),
    ("", 3, {"f16": 3, "q4_0": 3, "tq2_5": 3}),
    ("tq2_5:1235", 3, {"f16": 3, "q4_0": 3, "tq2_5": 2}),
    ("tq2_5:1234,tq2_5:1236,q4_0:*", 3, {"f16": 3, "q4_0": 0, "tq2_5": 1}),
    ("f16:1237", 4, {"f16": 3, "q4_0": 4, "tq2_5": 4}),
])
def test_recall_runs_every_seed_and_counts_k_of_n(fake_passkey, tmp_path, monkeypatch, miss, n_seeds, counts):
    from tqgguf.harness import recall as rc
    monkeypatch.setenv("FAKE_MISS", miss)
    cells, shown = _recall(tmp_path, ("f16", "q4_0", "tq2_5"), n_seeds)
    seeds = list(range(1234, 1234 + n_seeds))
    assert rc.seeds(n_seeds) == seeds
    # the same seeds, in order, for every cell of every configuration
    assert _calls(fake_passkey) == [(t, s) for t in ("f16", "q4_0", "tq2_5") for _ in range(2) for s in seeds]
    assert len(shown) == 3 * 2 * n_seeds  # progress once a run
    assert shown[0] == "f16 1024 @0.1 seed 1234" and shown[-1] == f"tq2_5 1024 @0.9 seed {seeds[-1]}"
    assert [(c["config"], c["recalled"], c["ok"], c["seeds"]) for c in cells] == \
        [(t, counts[t], n_seeds, n_seeds) for t in ("f16", "q4_0", "tq2_5") for _ in range(2)]
    for c in cells:  # every seed's outcome, with its answer
        assert [r["seed"] for r in c["runs"]] == seeds
        assert all(isinstance(r["recalled"], bool) and str(r["passkey"]) in r["answer"] for r in c["runs"])
    assert len({r["passkey"] for r in cells[0]["runs"]}) == n_seeds  # each seed hides another key
    table = rc.markdown(cells, (1024,), (0.1, 0.9))
    for t, k in counts.items():
        assert f"| {t} | {k}/{n_seeds} | {k}/{n_seeds} | {2 * k}/{2 * n_seeds} |" in table


def test_recall_resumes_each_seed_from_its_own_run(fake_passkey, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MISS", "tq2_5:1235")
    first, _ = _recall(tmp_path, ("f16", "tq2_5"), 2)
    assert len(_calls(fake_passkey)) == 8
    runs = sorted(p.name for p in (tmp_path / "out" / "recall-runs").glob("*.json"))
    assert runs[:4] == ["f16-1024-10-s1234.json", "f16-1024-10-s1235.json", "f16-1024-90-s1234.json",
                        "f16-1024-90-s1235.json"]
    # a third seed and a third configuration: only their runs are new, the kept ones are read back
    monkeypatch.setenv("FAKE_MISS", "")
    again, shown = _recall(tmp_path, ("f16", "tq2_5", "q8_0"), 3)
    assert _calls(fake_passkey)[8:] == [("f16", 1236)] * 2 + [("tq2_5", 1236)] * 2 + [("q8_0", s) for s in
                                                                                     (1234, 1235, 1236)] * 2
    assert len(shown) == 18  # progress counts the kept runs too
    assert again[2]["runs"][:2] == first[2]["runs"] and again[2]["recalled"] == 2  # tq2_5 seed 1235 kept its miss


@pytest.mark.parametrize("configs, miss, lines", [
    (("f16", "q8_0", "tq2_5"), "", ["- q8_0: 2/2", "- tq2_5: 2/2"]),
    (("f16", "tq2_5"), "tq2_5:1235", ["- tq2_5: 0/2; short at 1024 @10% (2/3 vs 3/3), 1024 @90% (2/3 vs 3/3)"]),
    # a seed that f16 did not recall asks nothing of the others
    (("f16", "tq2_5"), "f16:1235,tq2_5:1235", ["- tq2_5: 2/2"]),
    (("tq2_5", "f16", "q4_0"), "f16:1234,q4_0:1235,q4_0:1236", ["- tq2_5: 2/2", "- q4_0: 0/2; short at"]),
    (("q8_0", "tq2_5"), "tq2_5:*", []),  # no f16, no comparison
])
def test_recall_against_f16(fake_passkey, tmp_path, monkeypatch, configs, miss, lines):
    from tqgguf.harness import recall as rc
    monkeypatch.setenv("FAKE_MISS", miss)
    cells, _ = _recall(tmp_path, configs, 3)
    table = rc.markdown(cells, (1024,), (0.1, 0.9))
    got = [line for line in table.splitlines() if line.startswith("- ")]
    assert len(got) == len(lines) and all(g.startswith(want) for g, want in zip(got, lines)), table
    assert ("every seed that f16 recalled" in table) == bool(lines)
    assert "- f16:" not in table


def test_recall_against_f16_cell_by_cell():
    from tqgguf.harness import recall as rc

    def c(cfg, n, recalled, failed=()):
        runs = [{"seed": s, "status": "failed" if s in failed else "ok", "recalled": s in recalled, "passkey": s,
                 "config": cfg, "n_tokens": n, "depth": 0.5} for s in (1, 2, 3)]
        return rc.cell(runs)
    cells = [c("f16", 1024, {1, 2}), c("f16", 2048, set()), c("f16", 4096, {3}),
             c("tq2_5", 1024, {1, 2, 3}), c("tq2_5", 2048, set()), c("tq2_5", 4096, set(), failed={3}),
             c("q4_0", 1024, {1}), c("q4_0", 4096, {3}),  # q4_0 has no 2048 cell
             c("f16", 8192, {1}, failed={2}), c("tq2_5", 8192, set())]  # nor counts a cell where f16 crashed
    vs = rc.against_reference(cells)
    assert vs == {"tq2_5": {"kept": 2, "cells": 3, "short": [(4096, 0.5, "0/3 (1 err)", "1/3")]},
                  "q4_0": {"kept": 1, "cells": 2, "short": [(1024, 0.5, "1/3", "2/3")]}}
    table = rc.markdown(cells, (1024, 2048, 4096, 8192), (0.5,))
    assert "| f16 | 2/3 | 0/3 | 1/3 | 1/3 (1 err) | 4/11 |" in table
    assert "| tq2_5 | 3/3 | 0/3 | 0/3 (1 err) | 0/3 | 3/11 |" in table
    assert "| q4_0 | 1/3 | — | 1/3 | — | 2/6 |" in table


def test_recall_a_crashing_configuration_shows_err(fake_passkey, tmp_path, monkeypatch):
    from tqgguf.harness import recall as rc
    monkeypatch.setenv("FAKE_CRASH", "q4_0")
    cells, _ = _recall(tmp_path, ("f16", "q4_0", "tq2_5"), 2)
    assert cells[2]["runs"][0]["status"] == "failed" and "Segmentation fault" in cells[2]["runs"][0]["error"]
    table = rc.markdown(cells, (1024,), (0.1, 0.9))
    assert "| q4_0 | err | err | 0/0 |" in table and "- q4_0: 0/2; short at" in table
    # a crashing reference: no cell to hold the others to, and the line says so
    monkeypatch.setenv("FAKE_CRASH", "f16")
    cells, _ = _recall(tmp_path / "again", ("f16", "tq2_5"), 2)
    assert "- tq2_5: 0/0" in rc.markdown(cells, (1024,), (0.1, 0.9))


@pytest.mark.parametrize("same_key, n_seeds, warned", [(True, 3, True), (True, 1, False), (False, 3, False)])
def test_recall_warns_when_the_seeds_repeat_one_prompt(fake_passkey, tmp_path, monkeypatch, same_key, n_seeds,
                                                      warned):
    from tqgguf.harness import recall as rc
    monkeypatch.setenv("FAKE_SAME_KEY", "1" if same_key else "")
    cells, _ = _recall(tmp_path, ("f16",), n_seeds)
    assert rc.seed_ignored(cells) == warned
    assert ("ignores --seed" in rc.markdown(cells, (1024,), (0.1, 0.9))) == warned


def test_cli_recall_with_seeds(fake_passkey, smollm2, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llama-passkey").symlink_to(FAKE_PASSKEY)
    monkeypatch.setenv("FAKE_MISS", "q4_0:1235")
    out = tmp_path / "o"
    r = run_cli("recall", str(smollm2), "--configs", "f16,q4_0", "--lengths", "1024", "--depths", "0.5",
                "--seeds", "2", "--llama-bin", str(bin_dir), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "seeds 1234–1235" in r.stdout and "| q4_0 | 1/2 | 1/2 |" in r.stdout
    assert "- q4_0: 0/1; short at 1024 @50% (1/2 vs 2/2)" in r.stdout
    assert (out / "recall.md").read_text() in r.stdout
    js = json.loads((out / "recall.json").read_text())
    assert [(c["config"], c["recalled"], c["seeds"]) for c in js] == [("f16", 2, 2), ("q4_0", 1, 2)]
    assert [(x["seed"], x["recalled"], x["answer"][:5] == str(x["passkey"])) for x in js[1]["runs"]] == \
        [(1234, True, True), (1235, False, True)]
    assert "llama-passkey runs" in r.stderr  # progress on stderr
    r = run_cli("recall", str(smollm2), "--configs", "f16", "--seeds", "0", "--llama-bin", str(bin_dir))
    assert r.returncode != 0 and "--seeds" in r.stderr
