"""Speed of every KV-cache type side by side: llama-bench prefill and decode at several depths.

One llama-bench process per cache configuration, all in one call of `run`, so that every figure
of a table comes from the same machine, build and session. Ratios are to the f16 cache of the
same run. A benchmark, not a test: it reports, it asserts nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import llama, logparse
from .compare import parse_config

DEFAULT_CONFIGS = ["f16", "q8_0", "q4_0", "tq3_5", "tq2_5", "q8_0/tq2_5", "tq3_5/tq2_5"]


@dataclass
class BenchResult:
    config: str
    rows: list[dict] = field(default_factory=list)  # llama-bench's jsonl records
    kv_mib: float | None = None                      # largest KV cache it made (llama.cpp's log)
    error: str | None = None


def run_config(bin_dir, model, config: str, depths: list[int], n_prompt: int, n_gen: int, reps: int,
               ngl: int, log_dir: Path) -> BenchResult:
    cfg = parse_config(config)
    cmd = [str(llama.find_bin("llama-bench", bin_dir)), "-m", str(model), "-ngl", str(ngl), "-fa", "1",
           "-ctk", cfg.k, "-ctv", cfg.v, "-p", str(n_prompt), "-n", str(n_gen),
           "-d", ",".join(map(str, depths)), "-r", str(reps), "-o", "jsonl", "-v"]
    log = log_dir / (cfg.name.replace("/", "+") + ".log")
    r = llama.run(cmd, env=cfg.env, log=log)
    rows = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    res = BenchResult(config, rows)
    sizes = logparse.kv_cache_sizes(r.output)
    res.kv_mib = max(sizes) if sizes else None
    if r.returncode != 0 or not rows:
        res.error = logparse.first_error_line(r.output) or f"llama-bench exited with {r.returncode} (log: {log})"
    return res


def _cell(rows: list[dict], test: str, depth: int) -> float | None:
    for r in rows:
        kind = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
        if kind == test and r.get("n_depth", 0) == depth:
            return r["avg_ts"]
    return None


def table(results: list[BenchResult], depths: list[int], n_prompt: int, n_gen: int) -> str:
    """Markdown: t/s and the ratio to f16 for each test and depth, and KV MiB."""
    tests = [f"pp{n_prompt}", f"tg{n_gen}"]
    base = next((r for r in results if r.config == "f16" and not r.error), None)
    head = ["cache K/V"] + [f"{t} @ d{d}" for t in tests for d in depths] + ["KV MiB (deepest)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        if res.error:
            lines.append(f"| {res.config} | " + " | ".join(["failed"] * (len(head) - 1)) + " |")
            continue
        cells = [res.config]
        for t in tests:
            for d in depths:
                v = _cell(res.rows, t, d)
                b = _cell(base.rows, t, d) if base else None
                cells.append("—" if v is None else (f"{v:.1f} ({v / b:.2f}×)" if b else f"{v:.1f}"))
        cells.append("—" if res.kv_mib is None else f"{res.kv_mib:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    first = next((r.rows[0] for r in results if r.rows), {})
    lines.append("")
    lines.append(f"GPU: {first.get('gpu_info', '?')} | CPU: {first.get('cpu_info', '?')} | "
                 f"build: {first.get('build_commit', '?')} | model: {first.get('model_type', '?')} "
                 f"({first.get('model_size', 0) / 2**30:.2f} GiB) | ngl {first.get('n_gpu_layers', '?')}, FA on, "
                 f"{first.get('n_batch', '?')}/{first.get('n_ubatch', '?')} batch/ubatch")
    for res in results:
        if res.error:
            lines.append(f"- {res.config} failed: {res.error}")
    return "\n".join(lines) + "\n"
