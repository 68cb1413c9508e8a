"""`tqgguf recall`: needle-in-a-haystack recall (llama-passkey) per KV-cache configuration.

llama-passkey hides "The pass key is N" at a chosen depth of repeated filler text and asks
for it back; a run counts as recalled when the generated text contains N. Every
(configuration, length, depth) is one run, with the same seed, so configurations see the
same prompts. Runs are cached under OUT/recall-runs/ like the perplexity comparison.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from . import llama as ll
from .compare import CacheConfig
from .logparse import first_error_line

JUNK_TOKENS = 26  # llama-passkey's filler line is ~26 tokens (SmolLM2 tokenizer)
DEFAULT_LENGTHS = (1024, 2048, 4096)
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)


def run_one(binary: Path, model: Path, cfg: CacheConfig, n_tokens: int, depth: float, out: Path,
            seed: int = 1234, threads: int | None = None, ngl: int = 0) -> dict:
    n_junk = max(2, n_tokens // JUNK_TOKENS)
    pos = min(n_junk - 1, int(depth * n_junk))
    tag = f"{cfg.name.replace('/', '+')}-{n_tokens}-{int(depth * 100)}"
    res_path = out / f"{tag}.json"
    if res_path.exists():
        return json.loads(res_path.read_text())
    cmd = [binary, "-m", model, "--junk", n_junk, "--pos", pos, "--seed", seed, "-c", n_tokens + 512,
           "-fa", "on", "-ctk", cfg.k, "-ctv", cfg.v, "-ngl", ngl] + (["-t", threads] if threads else [])
    r = ll.run(cmd, env=cfg.env, log=out / f"{tag}.log")
    m = re.search(r"passkey = (\d+), inserted at position", r.output)
    if r.returncode != 0 or not m:
        rec = {"status": "failed", "error": first_error_line(r.output)}
    else:
        answer = r.output[m.end():]
        rec = {"status": "ok", "passkey": int(m.group(1)), "recalled": m.group(1) in answer}
    rec.update(config=cfg.name, n_tokens=n_tokens, depth=depth, wall_s=round(r.wall_s, 1))
    res_path.write_text(json.dumps(rec))
    return rec


def recall(binary: Path, model: Path, configs: list[CacheConfig], out: Path, lengths=DEFAULT_LENGTHS,
           depths=DEFAULT_DEPTHS, progress: Callable[[str], None] = lambda s: None, **kw) -> list[dict]:
    runs = out / "recall-runs"
    runs.mkdir(parents=True, exist_ok=True)
    recs = []
    for cfg in configs:
        for n in lengths:
            for d in depths:
                recs.append(run_one(binary, model, cfg, n, d, runs, **kw))
                progress(f"{cfg.name} {n} @{d}")
    return recs


def markdown(recs: list[dict], lengths, depths, header: str = "") -> str:
    cols = [(n, d) for n in lengths for d in depths]
    lines = [header] if header else []
    lines.append("| cache K/V | " + " | ".join(f"{n} @{d:.0%}" for n, d in cols) + " | recall |")
    lines.append("|---" * (len(cols) + 2) + "|")
    for cfg in dict.fromkeys(r["config"] for r in recs):
        row = {(r["n_tokens"], r["depth"]): r for r in recs if r["config"] == cfg}
        cells = []
        for c in cols:
            r = row.get(c)
            cells.append("—" if r is None else ("err" if r["status"] != "ok" else ("✓" if r["recalled"] else "✗")))
        ok = [r for r in row.values() if r["status"] == "ok"]
        rate = f"{sum(r['recalled'] for r in ok)}/{len(ok)}"
        lines.append(f"| {cfg} | " + " | ".join(cells) + f" | {rate} |")
    return "\n".join(lines) + "\n"
