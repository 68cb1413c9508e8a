#!/usr/bin/env bash
# CPU decode speed of TQ caches against stock ones: llama-bench, tg32 at depth 4096, FA on,
# on the default model (prepared), all types in one run, interleaved over repetitions so that
# a noisy machine hurts every type alike. A benchmark: it prints a table, it asserts nothing
# (llama-bench's rows are kept in OUT/bench_cpu.jsonl as they come, OUT = $TQGGUF_OUT or out).
#   scripts/bench_cpu.sh [--cpu native|avx2] [--bin DIR] [--model FILE] [--repack 0|1] [--threads N]
#                        [TYPES] [DEPTH] [ROUNDS]
#   TYPES (default q4_0,q8_0,tq3_5,tq2_5), DEPTH (4096), ROUNDS (3)
#   --cpu     which build of scripts/build-llama.sh (llama-bench only) [native]
#   --bin     a folder with llama-bench instead (e.g. $(scripts/build-llama.sh --cpu avx2 ...)/bin)
#   --model   a prepared model instead of the default one; with --bin, nothing is set up or fetched
#             (a machine without network: scripts/device-cpu.sh)
#   --repack  llama-bench --repack: repacking of the model's weights for the CPU's matmul [0]
#             (off by default: upstream's AMX repack crashes on some Intel hosts, and the KV cache
#             is never repacked, so every cache type is measured the same way)
#   --threads llama-bench -t [llama-bench's default]; on a machine shared with other jobs, -t 1:
#             2 threads on 2 busy cores spin at every op's barrier while the other is descheduled
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cpu=native bin="" model="" repack=0 threads=() pos=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) cpu=$2; shift ;;
        --bin) bin=$(cd "$2" && pwd); shift ;;
        --model) model=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift ;;
        --repack) repack=$2; shift ;;
        --threads) threads=(-t "$2"); shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) pos+=("$1") ;;
    esac
    shift
done
types=${pos[0]:-q4_0,q8_0,tq3_5,tq2_5} depth=${pos[1]:-4096} rounds=${pos[2]:-3}
[ -n "$bin" ] && [ -n "$model" ] || bash "$root/scripts/setup-env.sh"
cd "$root"
py=.venv/bin/python
[ -x "$py" ] || py=python3 # --bin and --model without setup: only the table needs Python
out=${TQGGUF_OUT:-out}; mkdir -p "$out"
[ -n "$bin" ] || bin=$(bash scripts/build-llama.sh --cpu "$cpu" --targets "llama-bench llama-tq-calibrate")/bin
if [ -n "$model" ]; then
    prepared=$model
else
    prepared="$out/SmolLM2-135M-Instruct.Q4_1.tq.gguf"
    [ -f "$prepared" ] || .venv/bin/tqgguf prepare "$($py -c 'from tqgguf import assets; print(assets.default_model())')" \
        -o "$prepared" --llama-bin "$bin" -q >/dev/null
fi
cpu_name=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
echo "CPU: ${cpu_name:-unknown} | llama-bench: $bin | --repack $repack | FA on | tg32 at depth $depth" >&2
for r in $(seq "$rounds"); do
    for t in ${types//,/ }; do
        "$bin/llama-bench" -m "$prepared" -fa 1 -ctk "$t" -ctv "$t" -p 0 -n 32 -d "$depth" -r 1 \
            --repack "$repack" "${threads[@]}" -o jsonl 2>/dev/null
    done
done | tee "$out/bench_cpu.jsonl" | "$py" -c '
import json, sys, statistics
rows = [json.loads(l) for l in sys.stdin if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["type_k"], []).append(r["avg_ts"])
base = statistics.median(by.get("q4_0", [float("nan")]))
print(f"| cache K/V | tg32 @ d'"$depth"' t/s (median of {len(next(iter(by.values())))}) | runs | speed vs q4_0 | time per token vs q4_0 |")
print("|---|---|---|---|---|")
for t, v in by.items():
    m = statistics.median(v)
    runs = ", ".join("%.1f" % x for x in v)
    print(f"| {t} | {m:.2f} | {runs} | {m / base:.2f}x | {base / m:.2f}x |")
print()
print("llama-bench build:", rows[0].get("build_commit"), "| CPU:", rows[0].get("cpu_info"), "| threads:", rows[0].get("n_threads"))
'
