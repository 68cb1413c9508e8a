"""`tqgguf recall`: needle-in-a-haystack recall (llama-passkey) per KV-cache configuration.

llama-passkey hides "The pass key is N" at a chosen depth of repeated filler text and asks
for it back; a run counts as recalled when the text it generates holds N as a whole number
(not "393844" for 39384). Every (configuration, length, depth) cell is run once per seed,
the same seeds for every configuration, so configurations see the same prompts; a cell
reports how many of its seeds recalled. Each run is cached under OUT/recall-runs/ (one file
per configuration, length, depth and seed) like the perplexity comparison, so an
interrupted or widened grid reruns only what is new.
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
FIRST_SEED = 1234  # seed i of a grid is FIRST_SEED + i
DEFAULT_SEEDS = 3
REFERENCE = "f16"  # the configuration the others are held to

_SUFFIX = "What is the pass key? The pass key is"  # the end of llama-passkey's prompt; the answer follows
_DECODED = re.compile(r"\n[^\n]*\bdecoded \d+ tokens in")


def seeds(n: int) -> list[int]:
    """The seeds of an n-seed grid: the same for every configuration."""
    return [FIRST_SEED + i for i in range(n)]


def parse_answer(output: str) -> dict:
    """A llama-passkey log -> {"passkey", "answer", "recalled"}, or {} where it names no passkey."""
    m = re.search(r"passkey = (\d+), inserted at position", output)
    if not m:
        return {}
    rest = output[m.end():]
    at = rest.find(_SUFFIX)
    answer = None
    if at >= 0:
        answer = rest[at + len(_SUFFIX):]
        end = _DECODED.search(answer)
        answer = (answer[:end.start()] if end else answer).strip()
    key = m.group(1)
    recalled = answer is not None and re.search(rf"(?<!\d){key}(?!\d)", answer) is not None
    return {"passkey": int(key), "answer": answer, "recalled": recalled}


def run_one(binary: Path, model: Path, cfg: CacheConfig, n_tokens: int, depth: float, out: Path,
            seed: int = FIRST_SEED, threads: int | None = None, ngl: int = 0) -> dict:
    """One llama-passkey run, or its cached record from an earlier one."""
    n_junk = max(2, n_tokens // JUNK_TOKENS)
    pos = min(n_junk - 1, int(depth * n_junk))
    tag = f"{cfg.name.replace('/', '+')}-{n_tokens}-{int(depth * 100)}-s{seed}"
    res_path = out / f"{tag}.json"
    if res_path.exists():
        return json.loads(res_path.read_text())
    cmd = [binary, "-m", model, "--junk", n_junk, "--pos", pos, "--seed", seed, "-c", n_tokens + 512,
           "-fa", "on", "-ctk", cfg.k, "-ctv", cfg.v, "-ngl", ngl] + (["-t", threads] if threads else [])
    r = ll.run(cmd, env=cfg.env, log=out / f"{tag}.log")
    parsed = parse_answer(r.output)
    if r.returncode != 0 or not parsed:
        rec = {"status": "failed", "error": first_error_line(r.output)}
    else:
        rec = {"status": "ok", **parsed}
    rec.update(config=cfg.name, n_tokens=n_tokens, depth=depth, seed=seed, wall_s=round(r.wall_s, 1))
    res_path.write_text(json.dumps(rec))
    return rec


def cell(runs: list[dict]) -> dict:
    """A (configuration, length, depth) cell from its runs, one a seed: how many recalled, of how many."""
    first = runs[0]
    ok = [r for r in runs if r["status"] == "ok"]
    return {"config": first["config"], "n_tokens": first["n_tokens"], "depth": first["depth"],
            "recalled": sum(r["recalled"] for r in ok), "ok": len(ok), "seeds": len(runs), "runs": runs}


def recall(binary: Path, model: Path, configs: list[CacheConfig], out: Path, lengths=DEFAULT_LENGTHS,
           depths=DEFAULT_DEPTHS, n_seeds: int = DEFAULT_SEEDS,
           progress: Callable[[str], None] = lambda s: None, **kw) -> list[dict]:
    """Every cell of the grid, in order; progress is called once a run (cached or not)."""
    runs = out / "recall-runs"
    runs.mkdir(parents=True, exist_ok=True)
    cells = []
    for cfg in configs:
        for n in lengths:
            for d in depths:
                done = []
                for s in seeds(n_seeds):
                    done.append(run_one(binary, model, cfg, n, d, runs, seed=s, **kw))
                    progress(f"{cfg.name} {n} @{d} seed {s}")
                cells.append(cell(done))
    return cells


def _shown(c: dict | None) -> str:
    if c is None:
        return "—"
    if c["ok"] == 0:
        return "err"
    failed = c["seeds"] - c["ok"]
    return f"{c['recalled']}/{c['seeds']}" + (f" ({failed} err)" if failed else "")


def _recalled_seeds(c: dict) -> set[int]:
    return {r["seed"] for r in c["runs"] if r["status"] == "ok" and r["recalled"]}


def against_reference(cells: list[dict], reference: str = REFERENCE) -> dict[str, dict]:
    """Per configuration, the cells where it recalled every seed the reference recalled:
    {config: {"kept": k, "cells": n, "short": [(n_tokens, depth, its k/N, reference's k/N)]}};
    {} without the reference. Only cells both have count, and only where every run of the
    reference answered (a crashed seed says nothing about what it would recall)."""
    ref = {(c["n_tokens"], c["depth"]): c for c in cells if c["config"] == reference and c["ok"] == c["seeds"]}
    if not any(c["config"] == reference for c in cells):
        return {}
    out = {c["config"]: {"kept": 0, "cells": 0, "short": []} for c in cells if c["config"] != reference}
    for c in cells:
        r = ref.get((c["n_tokens"], c["depth"]))
        if c["config"] == reference or r is None:
            continue
        o = out[c["config"]]
        o["cells"] += 1
        if _recalled_seeds(r) <= _recalled_seeds(c):
            o["kept"] += 1
        else:
            o["short"].append((c["n_tokens"], c["depth"], _shown(c), _shown(r)))
    return out


def seed_ignored(cells: list[dict]) -> bool:
    """True where every cell with two or more answered seeds got one passkey for all of them:
    a llama-passkey that ignores --seed, so the seeds repeat one prompt."""
    keys = [{r["passkey"] for r in c["runs"] if r["status"] == "ok"} for c in cells]
    multi = [k for c, k in zip(cells, keys) if c["ok"] >= 2]
    return bool(multi) and all(len(k) == 1 for k in multi)


def markdown(cells: list[dict], lengths, depths, header: str = "") -> str:
    cols = [(n, d) for n in lengths for d in depths]
    lines = [header] if header else []
    lines.append("| cache K/V | " + " | ".join(f"{n} @{d:.0%}" for n, d in cols) + " | recall |")
    lines.append("|---" * (len(cols) + 2) + "|")
    for cfg in dict.fromkeys(c["config"] for c in cells):
        row = {(c["n_tokens"], c["depth"]): c for c in cells if c["config"] == cfg}
        total = f"{sum(c['recalled'] for c in row.values())}/{sum(c['ok'] for c in row.values())}"
        lines.append(f"| {cfg} | " + " | ".join(_shown(row.get(col)) for col in cols) + f" | {total} |")
    vs = against_reference(cells)
    if vs:
        lines += ["", f"Cells where a configuration recalled every seed that {REFERENCE} recalled:", ""]
        for cfg, o in vs.items():
            short = "; short at " + ", ".join(f"{n} @{d:.0%} ({k} vs {r})" for n, d, k, r in o["short"]) \
                if o["short"] else ""
            lines.append(f"- {cfg}: {o['kept']}/{o['cells']}{short}")
    if seed_ignored(cells):
        lines += ["", "Warning: llama-passkey hid the same pass key for every seed: this build ignores --seed, "
                      "so each cell's seeds repeat one prompt."]
    return "\n".join(lines) + "\n"
