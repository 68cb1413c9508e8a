#!/usr/bin/env bash
# CPU decode speed of TQ caches against stock ones: llama-bench, tg32 at depth 4096, FA on,
# on the default model (prepared), all types in one run, interleaved over repetitions so that
# a noisy machine hurts every type alike. A benchmark: it prints a table, it asserts nothing.
#   scripts/bench_cpu.sh [TYPES (default q4_0,q8_0,tq3_5,tq2_5)] [DEPTH (4096)] [ROUNDS (3)]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
types=${1:-q4_0,q8_0,tq3_5,tq2_5} depth=${2:-4096} rounds=${3:-3}
bash "$root/scripts/setup-env.sh"
cd "$root"
out=${TQGGUF_OUT:-out}; mkdir -p "$out"
model=$(.venv/bin/python -c 'from tqgguf import assets; print(assets.default_model())')
prepared="$out/SmolLM2-135M-Instruct.Q4_1.tq.gguf"
[ -f "$prepared" ] || .venv/bin/tqgguf prepare "$model" -o "$prepared" -q >/dev/null
bin=$(bash scripts/build-llama.sh)/bin
for r in $(seq "$rounds"); do
    for t in ${types//,/ }; do
        "$bin/llama-bench" -m "$prepared" -fa 1 -ctk "$t" -ctv "$t" -p 0 -n 32 -d "$depth" -r 1 -o jsonl 2>/dev/null
    done
done | .venv/bin/python -c '
import json, sys, statistics
rows = [json.loads(l) for l in sys.stdin if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["type_k"], []).append(r["avg_ts"])
base = statistics.median(by.get("q4_0", [float("nan")]))
print(f"| cache K/V | tg32 @ d'"$depth"' t/s (median of {len(next(iter(by.values())))}) | runs | vs q4_0 |")
print("|---|---|---|---|")
for t, v in by.items():
    m = statistics.median(v)
    runs = ", ".join("%.1f" % x for x in v)
    print(f"| {t} | {m:.2f} | {runs} | {m / base:.2f}x |")
print()
print("llama-bench build:", rows[0].get("build_commit"), "| CPU:", rows[0].get("cpu_info"), "| threads:", rows[0].get("n_threads"))
'
