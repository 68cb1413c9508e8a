"""Numbers out of llama.cpp's logs: perplexity, KL divergence, KV-cache size, bench tables.

Each parser takes the whole text a tool printed (stdout and stderr together) and returns
only what it found; ``missing`` lists what a caller needed and did not get.
"""

from __future__ import annotations

import re

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"

# `llama_kv_cache: size =  120.00 MiB (  4096 cells,  30 layers,  1/1 seqs), K (f16):   60.00 MiB, V (f16):   60.00 MiB`
_KV = re.compile(r"llama_kv_cache: size = +" + _NUM + r" MiB \(.*?\), K \((\w+)\): +" + _NUM +
                 r" MiB, V \((\w+)\): +" + _NUM + r" MiB")
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


def parse_kv_cache(text: str) -> dict:
    """KV-cache MiB (summed over caches, e.g. a sliding-window model's two) and the K/V types."""
    rows = _KV.findall(text)
    if not rows:
        return {}
    return {
        "kv_mib": sum(float(r[0]) for r in rows),
        "k_mib": sum(float(r[2]) for r in rows),
        "v_mib": sum(float(r[4]) for r in rows),
        "k_type": rows[0][1],
        "v_type": rows[0][3],
    }


def kv_cache_sizes(text: str) -> list[float]:
    """Every KV-cache size (MiB) a log reports, one per cache made, in order."""
    return [float(r[0]) for r in _KV.findall(text)]


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
