#!/usr/bin/env bash
# On the GPU machine's host CPU (no network there): issue #18's checks of the native CPU build on a
# CPU this machine lacks (AVX-512, AMX), in one call, each step's result in one line of a summary.
#
#   1. the CPU: lscpu, and whether it has AMX (amx_tile, amx_int8) and AVX-512 (f, bw, vl, vbmi2);
#      with neither, nothing here is new: stop (TQ_CPU_FORCE=1 goes on)
#   2. AMX in the build: the __AMX_*__ macros of -march=native alone (a stock native build) and
#      behind build-llama.sh's -mno-amx-* (in the order ggml's CMake puts them), and AMX
#      instructions in upstream's AMX matmul (ggml-cpu/amx/mmq.cpp) compiled both ways
#   3. check-kernels.sh native portable: which SIMD path -march=native takes, its kernels against
#      the C core (seconds, no llama.cpp build)
#   4. build-llama.sh --src (.device/llama-src.tar.gz: make-device-src.sh), CPU only, native, only
#      test-tq-ops, llama-perplexity and llama-bench; AMX instructions in those binaries (expect 0);
#      test-tq-ops
#   5. llama-perplexity, repack on (llama.cpp's default: the run that crashed on AMX hosts), FA on,
#      caches f16 q4_0 tq2_5 tq3_5, on a random-weight model of SmolLM2-135M's shape (Q4_0 weights,
#      made and prepared data-free here: 93 MB, too big to carry): finite, no crash
#   6. bench_cpu.sh on that model: tg32 at depth TQ_BENCH_DEPTH [4096], for each of TQ_BENCH_THREADS ["16 4"]
#      (--repack 0, as on other machines), each begun only while TQ_DEADLINE_S [400] seconds since
#      the start leave 90 for it, and cut at that deadline
#
# From this machine (the `device` tool): first `bash scripts/make-device-src.sh` (or only its
# llama-src.tar.gz), then this script with carry [".device"]. Logs land in $OUT (or
# out/device-cpu) as logs.tar.gz (the tool brings back 8 files), the summary on stdout and in
# $OUT/summary.txt. TQ_BIN=DIR: skip the build, use DIR's tools (try this script here first).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/out/device-cpu}
logs=$(mktemp -d /tmp/device-cpu.XXXXXX)
mkdir -p "$out"
t0=$(date +%s)
deadline=${TQ_DEADLINE_S:-400}
elapsed() { echo $(( $(date +%s) - t0 )); }
say() { echo "$*" | tee -a "$out/summary.txt"; }
finish() { tar -C "$logs" -czf "$out/logs.tar.gz" . 2>/dev/null; say "== done at $(elapsed) s"; exit "${1:-0}"; }
amx_insns() { objdump -d --no-show-raw-insn "$1" 2>/dev/null | grep -c -E '\s(tdpb[a-z0-9]*|tileloadd[a-z0-9]*|tilestored|ldtilecfg|sttilecfg|tilezero|tilerelease)\s'; }

# 1. the CPU
{ lscpu; echo; grep -m1 '^flags' /proc/cpuinfo; } > "$logs/cpu.txt" 2>&1
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
have() { for f in "$@"; do case "$flags" in *" $f "*) printf '%s ' "$f" ;; esac; done; }
say "== CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) CPUs"
say "$(grep -E '^(Thread|Core|Socket|L2|L3|Hypervisor|Model:|CPU family)' "$logs/cpu.txt" 2>/dev/null | tr -s ' ' | paste -sd';')"
amx=$(have amx_tile amx_int8 amx_bf16 amx_fp16)
avx512=$(have avx512f avx512bw avx512vl avx512_vbmi2 avx512vbmi avx512_vnni avx512_bf16 avx512_fp16)
say "AMX flags: ${amx:-none} | AVX-512 flags: ${avx512:-none}"
if [ -z "$amx$avx512" ] && [ "${TQ_CPU_FORCE:-0}" != 1 ]; then
    say "neither AMX nor AVX-512: nothing new to check here"
    finish 0
fi

# 2. AMX with and without the build's flags
noamx=(-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
say "gcc: $(gcc --version | head -1)"
say "AMX macros: -march=native: $(gcc -march=native -dM -E - </dev/null | grep -c AMX)," \
    "-mno-amx-* -march=native: $(gcc "${noamx[@]}" -march=native -dM -E - </dev/null | grep -c AMX)," \
    "-march=native -mno-amx-*: $(gcc -march=native "${noamx[@]}" -dM -E - </dev/null | grep -c AMX)"
gcc "${noamx[@]}" -march=native -dM -E - </dev/null | grep -E '__AVX512(F|BW|VL|VBMI2)__|__AMX' > "$logs/macros-build.txt"
src=/tmp/tqgguf-src/llama.cpp
if [ ! -d "$src" ]; then # as device-cuda.sh: unpacked aside and renamed into place
    [ -f "$root/.device/llama-src.tar.gz" ] || { say "no .device/llama-src.tar.gz (run scripts/make-device-src.sh, carry .device)"; finish 1; }
    tmp=$(mkdir -p /tmp/tqgguf-src && mktemp -d /tmp/tqgguf-src/.unpack.XXXXXX)
    tar -C "$tmp" -xzf "$root/.device/llama-src.tar.gz"
    mv -T "$tmp/llama.cpp" "$src" 2>/dev/null || true
    rm -rf "$tmp"
fi
g=$src/ggml/src
mmq() { g++ -std=c++17 -O2 "$@" -I"$g/ggml-cpu" -I"$g" -I"$src/ggml/include" -c "$g/ggml-cpu/amx/mmq.cpp" -o "$logs/mmq-$#.o" \
            > "$logs/mmq-$#.log" 2>&1 && amx_insns "$logs/mmq-$#.o"; }
say "AMX instructions in upstream's amx/mmq.cpp: -march=native: $(mmq -march=native)," \
    "-mno-amx-* -march=native: $(mmq "${noamx[@]}" -march=native)"

# 3. the kernels against the C core (seconds: before the build)
bash "$root/scripts/check-kernels.sh" native portable > "$logs/check-kernels.txt" 2>&1
say "check-kernels: $(grep -E '^(==|path|[0-9]+ passed)' "$logs/check-kernels.txt" | paste -sd' ')"

# 4. the build
if [ -n "${TQ_BIN:-}" ]; then
    bin=$TQ_BIN
else
    prefix=$(bash "$root/scripts/build-llama.sh" --src "$src" --targets "test-tq-ops llama-perplexity llama-bench" \
             --jobs "$(nproc)" 2> "$logs/build.txt") || { cat "$logs/build.txt"; say "build failed at $(elapsed) s"; finish 1; }
    bin=$prefix/bin
fi
say "build: $(elapsed) s, $bin"
for b in llama-bench llama-perplexity test-tq-ops; do
    say "AMX instructions in $b: $(amx_insns "$bin/$b")"
done

"$bin/test-tq-ops" > "$logs/test-tq-ops.txt" 2>&1
say "test-tq-ops (rc $?): $(tail -1 "$logs/test-tq-ops.txt")"

# 5. perplexity with repack on, on a random-weight SmolLM2-135M-shaped model made here
model=/tmp/smollm2-135m-shape.gguf
export PYTHONPATH="$root:$src/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
py=python3
[ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python
if [ ! -f "$model.tq" ]; then
    "$py" -c "
from tqgguf.harness import synth
synth.write('$model', synth.Shape(n_layer=30, n_embd=576, n_head=9, n_kv_head=3, head_dim=64, n_ff=1536,
                                  n_vocab=49152, n_ctx_train=8192, weight_type='Q4_0'))" > "$logs/model.txt" 2>&1 &&
    "$py" -m tqgguf.cli prepare "$model" -o "$model.tq" --no-center-k -q >> "$logs/model.txt" 2>&1 ||
        { cat "$logs/model.txt"; say "model failed"; finish 1; }
fi
say "model: $(sha256sum "$model" "$model.tq" | awk '{print substr($1,1,16)}' | paste -sd' ') (sha256 of the synth file, the prepared one)"
text=$root/tqgguf/data/calibration.txt
for t in f16 q4_0 tq2_5 tq3_5; do
    timeout 120 "$bin/llama-perplexity" -m "$model.tq" -f "$text" -c 512 --chunks 4 -fa on -ctk $t -ctv $t \
        -t "$(nproc)" -lv 4 > "$logs/ppl-$t.txt" 2>&1
    say "ppl $t (rc $?): $(grep -a -m1 'Final estimate' "$logs/ppl-$t.txt" | sed 's/.*Final/Final/')"
done
say "ppl f16 weights: $(grep -a -o -E '[A-Za-z_]+ model buffer size *= *[0-9.]+ MiB' "$logs/ppl-f16.txt" | tr -s ' ' | paste -sd';')"
say "system_info: $(grep -a -m1 -o 'CPU : .*' "$logs/ppl-f16.txt")"

# 6. decode speed at depth 4096, each thread count cut at the deadline (its rows so far kept)
for th in ${TQ_BENCH_THREADS:-16 4}; do
    left=$(( deadline - $(elapsed) ))
    if [ "$left" -lt 90 ]; then
        say "bench -t $th: skipped, $(elapsed) s of $deadline gone"
        continue
    fi
    say "== bench -t $th (from $(elapsed) s)"
    TQGGUF_OUT=$logs/bench-t$th timeout "$left" bash "$root/scripts/bench_cpu.sh" --bin "$bin" --model "$model.tq" \
        --threads "$th" f16,q4_0,tq2_5,tq3_5 "${TQ_BENCH_DEPTH:-4096}" 3 2>> "$logs/bench-t$th.err" | tee -a "$out/summary.txt"
    [ "${PIPESTATUS[0]}" = 124 ] && say "cut at the deadline; rows so far (type t/s): $(python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip().endswith("}")]
print(", ".join("%s %.2f" % (r["type_k"], r["avg_ts"]) for r in rows))' \
        < "$logs/bench-t$th/bench_cpu.jsonl")"
done
finish 0
