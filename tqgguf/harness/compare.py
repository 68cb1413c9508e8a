"""`tqgguf compare`: every KV-cache configuration against an f16 cache, in one run.

llama-perplexity runs once with an f16 cache to save base logits, then once per
configuration against them (PPL, KL divergence, same top token, KV MiB from the log).
Each run's log and result are kept under OUT/runs/, so an interrupted comparison resumes
where it stopped; a configuration that fails is reported (its log kept) and the rest go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from .. import blocks
from . import logparse
from . import llama as ll


@dataclass(frozen=True)
class CacheConfig:
    """A K/V cache pair; ``rot`` False turns upstream's Hadamard rotation off (stock types only)."""
    k: str
    v: str
    rot: bool = True

    @property
    def name(self) -> str:
        base = self.k if self.k == self.v else f"{self.k}/{self.v}"
        return base if self.rot else base + "-norot"

    @property
    def uses_tq(self) -> bool:
        return self.k in blocks.TYPES or self.v in blocks.TYPES

    @property
    def env(self) -> dict:
        return {} if self.rot else {"LLAMA_ATTN_ROT_DISABLE": "1"}

    def bits_per_value(self) -> float:
        return (type_bits(self.k) + type_bits(self.v)) / 2


def type_bits(name: str) -> float:
    """Bits per value of a cache type, all scales counted."""
    if name in blocks.TYPES:
        return blocks.layout(name).bits_per_value
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[name.upper()]]
    return size * 8 / block


def parse_config(text: str) -> CacheConfig:
    """`q4_0`, `q4_0-norot`, `q8_0/tq2_5` (K/V) -> CacheConfig; ValueError with one line otherwise."""
    rot = not text.endswith("-norot")
    body = text[: -len("-norot")] if not rot else text
    k, _, v = body.partition("/")
    v = v or k
    for t in (k, v):
        try:
            type_bits(t)
        except (KeyError, ValueError):
            raise ValueError(f"unknown cache type {t!r} in {text!r} (e.g. f16, q8_0, q4_0, tq2_5, q8_0/tq2_5, q4_0-norot)") from None
    if not rot and (k in blocks.TYPES or v in blocks.TYPES):
        raise ValueError(f"{text!r}: -norot is for stock types (TQ types always use their own rotation)")
    return CacheConfig(k, v, rot)


STOCK = ["q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"]
DEFAULT_CONFIGS = (["f16"] + STOCK + [t + "-norot" for t in STOCK] +
                   ["tq3_5", "tq2_5", "q8_0/tq2_5", "q8_0/tq3_5", "tq3_5/tq2_5", "q4_0/tq2_5"])


@dataclass
class Settings:
    ctx: int = 512
    chunks: int = 40
    threads: int | None = None
    ngl: int = 0
    flash_attn: str = "on"
    extra: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        # -lv 4: the KV-cache size lines are logged at "trace" level in this llama.cpp
        a = ["-c", self.ctx, "--chunks", self.chunks, "-fa", self.flash_attn, "-ngl", self.ngl, "-lv", 4]
        if self.threads:
            a += ["-t", self.threads]
        return a + self.extra


class CompareError(Exception):
    pass


def _fingerprint(model: Path, text: Path, s: Settings, binary: Path) -> str:
    st_m, st_t, st_b = model.stat(), text.stat(), binary.stat()
    key = json.dumps([str(model.resolve()), st_m.st_size, st_m.st_mtime_ns, str(text.resolve()), st_t.st_size,
                      st_t.st_mtime_ns, str(binary.resolve()), st_b.st_mtime_ns, asdict(s)])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _slug(name: str) -> str:
    return name.replace("/", "+")


def _check_chunks(out: str, s: Settings) -> None:
    need = re.search(r"you need at least (\d+) tokens", out)
    if need:
        raise CompareError(f"the text is too short: llama-perplexity needs at least {need.group(1)} tokens for -c {s.ctx}")
    chunks = re.findall(r"over (\d+) chunks", out)
    if chunks and int(chunks[-1]) < s.chunks:
        raise CompareError(f"the text is too short for {s.chunks} chunks of {s.ctx} tokens: it gives {chunks[-1]}; "
                           "pass fewer --chunks or a longer --text")


def run_base(model: Path, text: Path, out: Path, s: Settings, binary: Path) -> Path:
    """The f16-cache run that saves base logits (cached by fingerprint)."""
    fp = _fingerprint(model, text, s, binary)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    base = out / "runs" / f"base-{fp}.kld"
    done = out / "runs" / f"base-{fp}.json"
    if base.exists() and done.exists():
        return base
    r = ll.run([binary, "-m", model, "-f", text, *s.args(), "-ctk", "f16", "-ctv", "f16",
                "--kl-divergence-base", base], log=out / "runs" / "base.log")
    _check_chunks(r.output, s)
    if r.returncode != 0 or not base.exists():
        raise CompareError(f"the f16 base run failed: {logparse.first_error_line(r.output)} (log: {out / 'runs' / 'base.log'})")
    done.write_text(json.dumps({"fingerprint": fp, "wall_s": r.wall_s}))
    return base


def run_config(cfg: CacheConfig, model: Path, text: Path, base: Path, out: Path, s: Settings, binary: Path) -> dict:
    fp = _fingerprint(model, text, s, binary)
    res_path = out / "runs" / f"{_slug(cfg.name)}.json"
    if res_path.exists():
        old = json.loads(res_path.read_text())
        if old.get("fingerprint") == fp and old.get("status") == "ok":
            return old
    log = out / "runs" / f"{_slug(cfg.name)}.log"
    r = ll.run([binary, "-m", model, "-f", text, *s.args(), "-ctk", cfg.k, "-ctv", cfg.v,
                "--kl-divergence-base", base, "--kl-divergence"], env=cfg.env, log=log)
    rec = {"config": cfg.name, "k_type": cfg.k, "v_type": cfg.v, "rotation": "tq" if cfg.uses_tq else
           ("hadamard" if cfg.rot and cfg.k != "f16" else "none"),
           "bits_per_value": cfg.bits_per_value(), "fingerprint": fp, "wall_s": round(r.wall_s, 1), "log": str(log)}
    parsed = logparse.parse_perplexity(r.output)
    need = ["ppl", "kld_mean", "same_top", "kv_mib"]
    if r.returncode != 0 or logparse.missing(parsed, need):
        rec.update(status="failed", error=logparse.first_error_line(r.output))
    else:
        rec.update(status="ok", **{k: parsed[k] for k in parsed if k not in ("k_type", "v_type")})
    res_path.write_text(json.dumps(rec, indent=1))
    return rec


def compare(model: Path, text: Path, out: Path, configs: list[CacheConfig], s: Settings, binary: Path,
            progress: Callable[[str], None] = lambda name: None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    base = run_base(model, text, out, s, binary)
    progress("f16 base logits")
    records = []
    for cfg in configs:
        records.append(run_config(cfg, model, text, base, out, s, binary))
        progress(cfg.name)
    f16 = next((r for r in records if r["config"] == "f16" and r["status"] == "ok"), None)
    for r in records:
        if f16 and r["status"] == "ok":
            r["dppl_pct"] = 100.0 * (r["ppl"] / f16["ppl"] - 1.0)
    return records


# ---- reports --------------------------------------------------------------------------

COLUMNS = [("config", "cache K/V", "{}"), ("bits_per_value", "bits/value", "{:.2f}"), ("kv_mib", "KV MiB", "{:.1f}"),
           ("ppl", "PPL", "{:.4f}"), ("ppl_err", "±", "{:.4f}"), ("dppl_pct", "ΔPPL %", "{:+.2f}"),
           ("kld_mean", "mean KLD", "{:.5f}"), ("kld_p99", "KLD p99", "{:.4f}"), ("same_top", "same top %", "{:.2f}"),
           ("wall_s", "wall s", "{:.0f}")]


def markdown(records: list[dict], header: str = "") -> str:
    lines = [header] if header else []
    lines.append("| " + " | ".join(c[1] for c in COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['config']} | {r['bits_per_value']:.2f} | failed: {r.get('error', '')} |" + " |" * (len(COLUMNS) - 3))
            continue
        cells = [fmt.format(r[k]) if k in r else "" for k, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pareto_front(records: list[dict]) -> list[dict]:
    """Configurations no other beats on both bits per value and mean KLD (f16 itself excluded)."""
    ok = [r for r in records if r["status"] == "ok" and r["config"] != "f16"]
    front = [r for r in ok if not any(o["bits_per_value"] <= r["bits_per_value"] and o["kld_mean"] <= r["kld_mean"]
                                      and (o["bits_per_value"], o["kld_mean"]) != (r["bits_per_value"], r["kld_mean"])
                                      for o in ok)]
    return sorted(front, key=lambda r: r["bits_per_value"])


def plot(records: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r["status"] == "ok" and r["config"] != "f16" and r["kld_mean"] > 0]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for r in ok:
        tq = "tq" in r["config"]
        ax.scatter(r["bits_per_value"], r["kld_mean"], marker="*" if tq else "o", s=120 if tq else 40,
                   color="tab:red" if tq else ("tab:gray" if r["config"].endswith("-norot") else "tab:blue"), zorder=3)
        ax.annotate(r["config"], (r["bits_per_value"], r["kld_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = [r for r in pareto_front(records) if r["kld_mean"] > 0]
    ax.plot([r["bits_per_value"] for r in front], [r["kld_mean"] for r in front], "--", color="black", lw=1,
            label="Pareto front", zorder=2)
    ax.set_yscale("log")
    ax.set_xlabel("bits per value (K and V averaged, all scales counted)")
    ax.set_ylabel("mean KL divergence vs f16 cache (log)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write_reports(records: list[dict], out: Path, meta: dict) -> None:
    header = (f"Model `{meta['model']}`, text `{meta['text']}`, c={meta['ctx']}, {meta['chunks']} chunks, "
              f"FA {meta['flash_attn']}, ngl {meta['ngl']}; KLD against the f16 cache. {meta.get('machine', '')}\n")
    (out / "results.md").write_text(markdown(records, header))
    (out / "results.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    plot(records, out / "pareto.png", f"{Path(meta['model']).name}: KLD vs bits per value (c={meta['ctx']}, "
                                      f"{meta['chunks']} chunks)")
