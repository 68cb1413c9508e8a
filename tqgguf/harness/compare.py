"""`tqgguf compare`: every KV-cache configuration against an f16 cache, in one run.

llama-perplexity runs once with an f16 cache to save base logits, then once per
configuration against them (PPL, KL divergence, same top token). Bits per value are what
llama.cpp allocated for that run's cache, from its log: every ``llama_kv_cache`` size (K, V
and side buffers) over the values the cache holds (cells x the K/V row widths of the GGUF's
layers); the type table's value is kept beside it as a cross-check. Each run's log and result
are kept under OUT/runs/, so an interrupted comparison resumes where it stopped; a
configuration that fails is reported (its log kept) and the rest go on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from .. import blocks
from ..gguf_file import GGUFError, Header, read_header
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
        """Nominal: the type table's K and V bits averaged (the measured value is in the run's record)."""
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


# tokens a comparison evaluates by default: 40 chunks at c=512, 5 at c=4096 (the default text
# gives about 398k SmolLM2 tokens: 97 chunks at c=4096)
DEFAULT_TOKENS = 20480


def default_chunks(ctx: int) -> int:
    return max(1, DEFAULT_TOKENS // ctx)


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


# ---- bits per value, from llama.cpp's own allocation ------------------------------------------

MIB_BITS = 8 * 1024 * 1024


class MeasureError(Exception):
    """The log's caches cannot be matched to the model's layers; one line."""


@dataclass(frozen=True)
class KVShape:
    """The K and V values one cell holds in each layer that has a cache (from the GGUF header)."""
    k: tuple[int, ...]
    v: tuple[int, ...]

    def values(self, caches: list[dict]) -> tuple[int, int]:
        """K and V values the log's caches hold: cells x streams x the row widths of their layers
        (a sliding-window model's two caches share the layers between them)."""
        layers = sum(c["layers"] for c in caches)
        if layers > len(self.k):
            raise MeasureError(f"the log's caches cover {layers} layers, the model has {len(self.k)} "
                               "with a K/V cache: is it the model that ran?")
        out = []
        for widths in (self.k, self.v):
            if len(set(widths)) == 1:
                out.append(sum(c["cells"] * c["streams"] * c["layers"] for c in caches) * widths[0])
            elif len(caches) == 1 and layers == len(widths):
                out.append(caches[0]["cells"] * caches[0]["streams"] * sum(widths))
            else:
                raise MeasureError("K/V rows differ in width across layers and the log does not say which "
                                   "layers each cache holds")
        return out[0], out[1]


def _per_layer(hdr: Header, key: str, n_layer: int, default: int) -> list[int]:
    v = hdr.get(key)
    if v is None:
        return [default] * n_layer
    if isinstance(v, (list, tuple)) or hasattr(v, "shape"):
        if len(v) != n_layer:
            raise MeasureError(f"{key} has {len(v)} entries for {n_layer} layers")
        return [int(x) for x in v]
    return [int(v)] * n_layer


def kv_shape(hdr: Header) -> KVShape:
    """K and V row widths (KV heads x head size) of the layers that have a cache: llama.cpp's
    defaults (KV heads = heads, head size = width / heads) where a key is absent."""
    a = hdr.get("general.architecture")
    n_layer = hdr.get(f"{a}.block_count")
    if not isinstance(a, str) or not isinstance(n_layer, int):
        raise MeasureError("general.architecture or its block_count is missing: not a llama.cpp model GGUF?")
    if hdr.get(f"{a}.attention.kv_lora_rank") is not None:
        raise MeasureError(f"{a}: MLA caches (attention.kv_lora_rank) are not measured yet")
    heads = _per_layer(hdr, f"{a}.attention.head_count", n_layer, 0)
    kv_heads = _per_layer(hdr, f"{a}.attention.head_count_kv", n_layer, 0) \
        if hdr.get(f"{a}.attention.head_count_kv") is not None else heads
    n_embd = int(hdr.get(f"{a}.embedding_length", 0))
    default = n_embd // heads[0] if heads and heads[0] else 0
    dk = int(hdr.get(f"{a}.attention.key_length", default))
    dv = int(hdr.get(f"{a}.attention.value_length", default))
    cached = [h for h in kv_heads if h > 0]
    if not cached or dk <= 0 or dv <= 0:
        raise MeasureError(f"{a}: no layer with KV heads and a head size in the header")
    return KVShape(tuple(h * dk for h in cached), tuple(h * dv for h in cached))


def measure_bits(kv: dict, shape: KVShape) -> dict:
    """Bits per value of a run's cache from ``logparse.parse_kv_cache``: all it logs (K, V and
    side buffers) over the K and V values it holds; K and V bits from their tensors alone.
    ``*_pm``: the most the log's rounding of MiB to its printed decimals can move each value."""
    nk, nv = shape.values(kv["kv_caches"])
    caches, side = kv["kv_caches"], kv["kv_side"]
    total_pm = sum(c["mib_pm"] for c in caches) + sum(b["mib_pm"] for b in side)
    out = {
        "bits_per_value": (kv["kv_mib"] + kv["side_mib"]) * MIB_BITS / (nk + nv),
        "bits_per_value_pm": total_pm * MIB_BITS / (nk + nv),
        "k_bits": kv["k_mib"] * MIB_BITS / nk,
        "k_bits_pm": sum(c["k_mib_pm"] for c in caches) * MIB_BITS / nk,
        "kv_cells": [c["cells"] * c["streams"] for c in caches],
        "kv_layers": [c["layers"] for c in caches],
        "kv_values": nk + nv,
    }
    if nv:
        out.update(v_bits=kv["v_mib"] * MIB_BITS / nv, v_bits_pm=sum(c["v_mib_pm"] for c in caches) * MIB_BITS / nv)
    out["bits_per_value_nominal"] = (type_bits(kv["k_type"]) * nk + type_bits(kv["v_type"]) * nv) / (nk + nv)
    return out


def bits_warning(cfg: CacheConfig, rec: dict) -> str | None:
    """One line where the measured bits differ from the type table by more than the rounding
    allows: K's and V's tensors for any type, the whole cache for stock types (TQ adds its transforms)."""
    checks = [("K", rec["k_bits"], type_bits(cfg.k), rec["k_bits_pm"])]
    if "v_bits" in rec:
        checks.append(("V", rec["v_bits"], type_bits(cfg.v), rec["v_bits_pm"]))
    if not cfg.uses_tq:
        checks.append(("all", rec["bits_per_value"], rec["bits_per_value_nominal"], rec["bits_per_value_pm"]))
    off = [f"{what} {got:.4f} vs {want:.4f} (±{pm:.4f})" for what, got, want, pm in checks if abs(got - want) > pm + 1e-9]
    if not off:
        return None
    return f"{cfg.name}: measured bits per value differ from the type table: {'; '.join(off)}"


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


def _results(cfg: CacheConfig, output: str, shape: KVShape) -> tuple[dict, str | None]:
    """The log's numbers, with the bits per value measured from its KV-cache lines; an error
    line where a number is missing or the bits cannot be measured."""
    parsed = logparse.parse_perplexity(output)
    if logparse.missing(parsed, ["ppl", "kld_mean", "same_top", "kv_mib"]):
        return {}, logparse.first_error_line(output)
    rec = {k: parsed[k] for k in parsed if k not in ("k_type", "v_type")}
    try:
        rec.update(measure_bits(parsed, shape))
    except MeasureError as e:
        return rec, f"bits per value: {e}"
    warning = bits_warning(cfg, rec)
    if warning:
        rec["bits_warning"] = warning
    return rec, None


def run_config(cfg: CacheConfig, model: Path, text: Path, base: Path, out: Path, s: Settings, binary: Path,
               shape: KVShape) -> dict:
    fp = _fingerprint(model, text, s, binary)
    res_path = out / "runs" / f"{_slug(cfg.name)}.json"
    log = out / "runs" / f"{_slug(cfg.name)}.log"
    if res_path.exists():
        old = json.loads(res_path.read_text())
        if old.get("fingerprint") == fp and old.get("status") == "ok":
            if log.exists():  # measured again: a resumed run gets this version's bits
                found, error = _results(cfg, log.read_text(errors="replace"), shape)
                old = {k: v for k, v in old.items() if k != "bits_warning"}
                old.update(found, ctx=s.ctx)
                if error:
                    old.update(status="failed", error=error)
            return old
    for attempt in (1, 2):
        r = ll.run([binary, "-m", model, "-f", text, *s.args(), "-ctk", cfg.k, "-ctv", cfg.v,
                    "--kl-divergence-base", base, "--kl-divergence"], env=cfg.env, log=log)
        found, error = _results(cfg, r.output, shape)
        # llama.cpp's logger thread is not flushed at exit (common_log_main), so on a busy machine
        # a run that exits 0 can lose the end of its log, results included: run it once more
        if r.returncode != 0 or found:
            break
    rec = {"config": cfg.name, "k_type": cfg.k, "v_type": cfg.v, "rotation": "tq" if cfg.uses_tq else
           ("hadamard" if cfg.rot and cfg.k != "f16" else "none"), "ctx": s.ctx,
           "fingerprint": fp, "wall_s": round(r.wall_s, 1), "log": str(log), "attempts": attempt}
    rec.update(found)
    if r.returncode != 0 or error:
        rec.update(status="failed", error=error or logparse.first_error_line(r.output))
    else:
        rec["status"] = "ok"
    res_path.write_text(json.dumps(rec, indent=1))
    return rec


def compare(model: Path, text: Path, out: Path, configs: list[CacheConfig], s: Settings, binary: Path,
            progress: Callable[[str], None] = lambda name: None) -> list[dict]:
    try:
        shape = kv_shape(read_header(model))
    except (GGUFError, MeasureError) as e:
        raise CompareError(f"cannot count the KV values of {model}: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    base = run_base(model, text, out, s, binary)
    progress("f16 base logits")
    records = []
    for cfg in configs:
        records.append(run_config(cfg, model, text, base, out, s, binary, shape))
        progress(cfg.name)
    f16 = next((r for r in records if r["config"] == "f16" and r["status"] == "ok"), None)
    for r in records:
        if f16 and r["status"] == "ok":
            r["dppl_pct"] = 100.0 * (r["ppl"] / f16["ppl"] - 1.0)
    return records


# ---- reports --------------------------------------------------------------------------

COLUMNS = [("config", "cache K/V", "{}"), ("bits_per_value", "bits/value", "bits"), ("kv_bits", "K/V bits", "{}"),
           ("kv_mib_all", "KV MiB", "{:.1f}"), ("ppl", "PPL", "{:.4f}"), ("ppl_err", "±", "{:.4f}"),
           ("dppl_pct", "ΔPPL %", "{:+.2f}"), ("kld_mean", "mean KLD", "{:.5f}"), ("kld_p99", "KLD p99", "{:.4f}"),
           ("same_top", "same top %", "{:.2f}"), ("wall_s", "wall s", "{:.0f}")]


def _bits_pms(records: list[dict]) -> list[float]:
    return [r[k] for r in records if r["status"] == "ok" for k in ("bits_per_value_pm", "k_bits_pm", "v_bits_pm") if k in r]


def bits_decimals(records: list[dict]) -> int:
    """Decimals of bits per value that the log's rounding leaves meaningful (1 to 3)."""
    pms = _bits_pms(records)
    return min(3, max(1, math.floor(-math.log10(max(pms))))) if pms and max(pms) > 0 else 2


def markdown(records: list[dict], header: str = "") -> str:
    d = bits_decimals(records)
    lines = [header] if header else []
    lines.append("| " + " | ".join(c[1] for c in COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['config']} | — | failed: {r.get('error', '')} |" + " |" * (len(COLUMNS) - 3))
            continue
        row = dict(r, kv_mib_all=r["kv_mib"] + r.get("side_mib", 0.0))
        if "k_bits" in r:
            row["kv_bits"] = f"{r['k_bits']:.{d}f}/{r['v_bits']:.{d}f}" if "v_bits" in r else f"{r['k_bits']:.{d}f}/—"
        cells = [("{:.%df}" % d if fmt == "bits" else fmt).format(row[k]) if k in row else "" for k, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    pms = _bits_pms(records)
    if pms:
        lines += ["", "Bits per value: what llama.cpp allocated for the run's cache (its `llama_kv_cache` sizes: K, V "
                  "and side buffers such as TQ's transforms) over the values it holds (cells × K/V row widths of the "
                  "layers with a cache); K/V bits: the K and V tensors alone; KV MiB: all of it. "
                  f"The log's rounding of MiB leaves ±{max(pms):.{d + 1}f} bits at most; the type table's value is "
                  "`bits_per_value_nominal` in results.json."]
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
    ax.set_xlabel("bits per value (llama.cpp's allocation for the run: K, V and side buffers)")
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
