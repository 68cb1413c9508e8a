"""The comparison harness: log parsing on real llama.cpp output, resume, reports, every error."""
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from tqgguf.harness import compare as cmp, logparse

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
    model, text = tmp_path / "m.gguf", tmp_path / "t.txt"
    model.write_bytes(b"x")
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
    assert recs[2]["k_type"] == "tq2_5" and recs[2]["bits_per_value"] == 2.75
    again = cmp.compare(model, text, out, _configs("f16", "q4_0", "tq2_5", "q8_0"), s, FAKE)
    assert len(calls.read_text().splitlines()) == 5  # only q8_0 is new
    assert [r["config"] for r in again] == ["f16", "q4_0", "tq2_5", "q8_0"]
    cmp.write_reports(again, out, {"model": "m", "text": "t", "ctx": 128, "chunks": 2, "flash_attn": "on", "ngl": 0})
    table = (out / "results.md").read_text()
    assert "| tq2_5 | 2.75 |" in table and (out / "pareto.png").stat().st_size > 10000
    js = json.loads((out / "results.json").read_text())
    assert {r["config"] for r in js["records"]} == {"f16", "q4_0", "tq2_5", "q8_0"}
    for field in ("ppl", "ppl_err", "dppl_pct", "kld_mean", "kld_p99", "same_top", "kv_mib", "bits_per_value", "wall_s"):
        assert all(field in r for r in js["records"]), field


def test_a_crashing_configuration_is_reported_and_the_rest_go_on(fake, tmp_path, monkeypatch):
    calls, model, text = fake
    monkeypatch.setenv("FAKE_CRASH", "q4_0")
    recs = cmp.compare(model, text, tmp_path / "out", _configs("f16", "q4_0", "tq2_5"), cmp.Settings(chunks=2, ctx=128), FAKE)
    assert [r["status"] for r in recs] == ["ok", "failed", "ok"]
    assert "Segmentation fault" in recs[1]["error"] and Path(recs[1]["log"]).exists()
    assert "failed:" in cmp.markdown(recs)


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
