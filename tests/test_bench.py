"""`tqgguf bench`: llama-bench's jsonl and log parsed into a table with ratios to f16."""
import stat
import sys
from pathlib import Path

from tqgguf.harness import bench

DATA = Path(__file__).parent / "data"


def _fake_llama_bench(tmp_path, script_body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "llama-bench"
    exe.write_text(f"#!{sys.executable}\nimport sys, pathlib\n{script_body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_run_config_reads_real_cuda_output(tmp_path):
    # an excerpt of a real run (H200, 8B shape, tq2_5): the jsonl records and the KV-cache lines
    bin_dir = _fake_llama_bench(tmp_path, f"sys.stdout.write(pathlib.Path({str(DATA / 'llama-bench-cuda-tq2_5.log')!r}).read_text())")
    res = bench.run_config(bin_dir, "m.gguf", "tq2_5", [0, 16384, 65536], 2048, 64, 1, 99, tmp_path / "logs")
    assert res.error is None
    assert len(res.rows) == 6
    assert res.kv_mib == 1452.0  # the deepest context's cache, 2.75/16 of f16's 8448 MiB
    assert round(bench._cell(res.rows, "tg64", 65536), 1) == 105.8
    assert round(bench._cell(res.rows, "pp2048", 16384), 1) == 6551.0
    assert (tmp_path / "logs" / "tq2_5.log").exists()


def test_a_failing_configuration_is_reported(tmp_path):
    bin_dir = _fake_llama_bench(tmp_path, "sys.stderr.write('main: error: unknown cache type\\n'); sys.exit(1)")
    res = bench.run_config(bin_dir, "m.gguf", "q8_0/tq2_5", [0], 64, 8, 1, 0, tmp_path)
    assert res.error and "error" in res.error
    assert (tmp_path / "q8_0+tq2_5.log").exists()


def _rows(pp, tg):
    return [{"n_prompt": 512, "n_gen": 0, "n_depth": 0, "avg_ts": pp},
            {"n_prompt": 0, "n_gen": 32, "n_depth": 0, "avg_ts": tg}]


def test_table_gives_ratios_to_f16_of_the_same_run():
    results = [bench.BenchResult("f16", _rows(100.0, 50.0), 16.0),
               bench.BenchResult("tq2_5", _rows(80.0, 75.0), 2.75),
               bench.BenchResult("q4_0", [], None, "it crashed")]
    md = bench.table(results, [0], 512, 32)
    assert "| tq2_5 | 80.0 (0.80×) | 75.0 (1.50×) | 2.8 |" in md
    assert "| q4_0 | failed | failed | failed |" in md
    assert "q4_0 failed: it crashed" in md
