"""Numbers out of llama.cpp's logs: perplexity, KL divergence, KV-cache size, bench tables.

Each parser takes the whole text a tool printed (stdout and stderr together) and returns
only what it found; ``missing`` lists what a caller needed and did not get.
"""

from __future__ import annotations

import re

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"

# `llama_kv_cache: size =  120.00 MiB (  4096 cells,  30 layers,  1/1 seqs), K (f16):   60.00 MiB, V (f16):   60.00 MiB`
# cells are per stream: the cache holds cells x streams (the number after the slash) rows per layer
_KV = re.compile(r"llama_kv_cache: size = +(\d+(?:\.\d+)?) MiB \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) seqs\), "
                 r"K \((\w+)\): +(\d+(?:\.\d+)?) MiB, V \((\w+)\): +(\d+(?:\.\d+)?) MiB")
# any other size a cache logs, e.g. `llama_kv_cache: TurboQuant transforms =    5.62 MiB (beside the KV buffers)`
_KV_SIDE = re.compile(r"llama_kv_cache: +([^=\n]*?) += +(\d+(?:\.\d+)?) MiB")
# `llama_kv_cache:        CPU KV buffer size =    15.47 MiB`: the buffers that hold the K and V of the size line
_KV_BUFFER = re.compile(r"KV buffer size$")
_CONTEXT = "llama_context: constructing llama_context"
_PATTERNS = {
    "ppl": re.compile(r"Final estimate: PPL = " + _NUM + r" \+/- " + _NUM),
    "ppl_q": re.compile(r"Mean PPL\(Q\)\s+: +" + _NUM + r" ± +" + _NUM),
    "ppl_base": re.compile(r"Mean PPL\(base\)\s+: +" + _NUM + r" ± +" + _NUM),
    "kld_mean": re.compile(r"Mean +KLD: +" + _NUM + r" ± +" + _NUM),
    "kld_p99": re.compile(r"99\.0% +KLD: +" + _NUM),
    "kld_max": re.compile(r"Maximum KLD: +" + _NUM),
    "kld_median": re.compile(r"Median +KLD: +" + _NUM),
    "same_top": re.compile(r"Same top p: +" + _NUM + r" ± +" + _NUM + r" %"),
}


def parse_perplexity(text: str) -> dict:
    """PPL (±), KLD statistics, same-top-token % and KV-cache MiB from a llama-perplexity log."""
    out: dict = {}
    for name, pat in _PATTERNS.items():
        m = pat.findall(text)
        if not m:
            continue
        last = m[-1] if isinstance(m[-1], tuple) else (m[-1],)
        out[name] = float(last[0])
        if len(last) > 1:
            out[name + "_err"] = float(last[1])
    if "ppl_q" in out:  # a KLD run prints PPL(Q) instead of the final estimate
        out["ppl"], out["ppl_err"] = out.pop("ppl_q"), out.pop("ppl_q_err")
    out.update(parse_kv_cache(text))
    return out


def _mib(text: str) -> tuple[float, float]:
    """A MiB figure as printed and half a unit of its last digit (what the rounding can hide)."""
    decimals = len(text.partition(".")[2])
    return float(text), 0.5 * 10.0 ** -decimals


def parse_kv_cache(text: str) -> dict:
    """The KV cache llama.cpp allocated for the run: every ``llama_kv_cache`` line with a size.

    ``kv_caches``: one entry per cache (a sliding-window model makes two), with its MiB, cells
    per stream, streams, layers and the K/V MiB; ``kv_side``: every other size a cache logs
    (TurboQuant's transforms; whatever a later patch adds), except the ``KV buffer size`` lines,
    which hold the K and V the size line already counts. ``*_mib_pm``: what the printed decimals
    can hide. Only the last llama_context's lines count (a log may hold earlier, measuring ones).
    Sums: kv_mib (K + V), k_mib, v_mib, side_mib; k_type, v_type of the first cache.
    """
    run = text[text.rfind(_CONTEXT):] if _CONTEXT in text else text
    caches, side = [], []
    for line in run.splitlines():
        m = _KV.search(line)
        if m:
            (mib, mib_pm), (k_mib, k_pm), (v_mib, v_pm) = _mib(m[1]), _mib(m[7]), _mib(m[9])
            caches.append({"mib": mib, "mib_pm": mib_pm, "cells": int(m[2]), "layers": int(m[3]),
                           "seqs": int(m[4]), "streams": int(m[5]), "k_type": m[6], "k_mib": k_mib, "k_mib_pm": k_pm,
                           "v_type": m[8], "v_mib": v_mib, "v_mib_pm": v_pm})
            continue
        m = _KV_SIDE.search(line)
        if m and m[1] != "size" and not _KV_BUFFER.search(m[1].strip()):
            mib, pm = _mib(m[2])
            side.append({"name": m[1].strip(), "mib": mib, "mib_pm": pm})
    if not caches:
        return {}
    return {
        "kv_mib": sum(c["mib"] for c in caches),
        "k_mib": sum(c["k_mib"] for c in caches),
        "v_mib": sum(c["v_mib"] for c in caches),
        "side_mib": sum(b["mib"] for b in side),
        "k_type": caches[0]["k_type"],
        "v_type": caches[0]["v_type"],
        "kv_caches": caches,
        "kv_side": side,
    }


def kv_cache_sizes(text: str) -> list[float]:
    """Every KV-cache size (MiB) a log reports, one per cache made, in order."""
    return [float(m[1]) for m in _KV.finditer(text)]


def missing(result: dict, needed) -> list[str]:
    return [k for k in needed if k not in result]


def first_error_line(text: str) -> str:
    """The most telling error line of a failed run, for a one-line report."""
    for pat in (r"TQ\w* KV cache.*", r"tq\w+ KV cache.*", r".*tqgguf prepare.*", r".*error.*", r".*failed.*"):
        m = re.findall(pat, text, flags=re.IGNORECASE)
        if m:
            return m[-1].strip()
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1].strip() if lines else "no output"


# `| model | size | params | backend | threads | type_k | type_v | fa | test | t/s |`
def parse_bench_markdown(text: str) -> list[dict]:
    """Rows of llama-bench's markdown table as dicts; t/s split into mean and stdev."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells))
        if "t/s" in row:
            m = re.match(_NUM + r"\s*±\s*" + _NUM, row["t/s"])
            if m:
                row["tps"], row["tps_err"] = float(m.group(1)), float(m.group(2))
        rows.append(row)
    return rows
