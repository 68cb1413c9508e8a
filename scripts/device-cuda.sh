#!/usr/bin/env bash
# On the GPU machine: build the patched llama.cpp with CUDA, then test it and/or time it.
#
#   scripts/device-cuda.sh test    test-backend-ops (TQ ops and every FA case, CUDA vs CPU), compute-sanitizer
#   scripts/device-cuda.sh bench   tqgguf bench on a random-weight Llama-3-8B-shaped model (made there)
#
# From this machine (the `device` tool): first `bash scripts/make-device-src.sh`, then run this
# script with carry [".device"]. The build is cached under ~/.cache/tqgguf like any other, so a
# second call on a still-warm machine skips it. Results land in $OUT (or out/device).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
step=${1:?usage: device-cuda.sh test|bench [tqgguf bench options]}
shift
out=${OUT:-$root/out/device}
mkdir -p "$out"
src=/tmp/tqgguf-src/llama.cpp
if [ ! -d "$src" ]; then
    [ -f "$root/.device/llama-src.tar.gz" ] || { echo "device-cuda.sh: no .device/llama-src.tar.gz (run scripts/make-device-src.sh, carry .device)" >&2; exit 1; }
    mkdir -p /tmp/tqgguf-src && tar -C /tmp/tqgguf-src -xzf "$root/.device/llama-src.tar.gz"
fi
t0=$(date +%s)
prefix=$(bash "$root/scripts/build-llama.sh" --cuda --src "$src" --jobs "$(nproc)")
echo "build: $(( $(date +%s) - t0 )) s, $prefix"
bin=$prefix/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
export PYTHONPATH="$root:$src/gguf-py${PYTHONPATH:+:$PYTHONPATH}"

case "$step" in
test)
    # every TQ case of SET_ROWS/GET_ROWS/CPY/FLASH_ATTN_EXT, CUDA against the CPU backend
    "$bin/test-backend-ops" -b CUDA0 -o SET_ROWS,GET_ROWS,CPY,FLASH_ATTN_EXT -p 'tq[23]_5' > "$out/tbo-tq.log" 2>&1 || true
    grep -a -E "FAIL|tests passed|Backend CUDA0" "$out/tbo-tq.log" | tail -15 || true
    # memcheck over the TQ kernels (a subset: the sanitizer is slow)
    compute-sanitizer --tool memcheck --print-limit 10 "$bin/test-backend-ops" -b CUDA0 -o SET_ROWS,GET_ROWS,CPY,FLASH_ATTN_EXT \
        -p 'tq2_5.*(hsk=128|ne=\[256)' > "$out/memcheck.log" 2>&1 || true
    grep -a -E "ERROR SUMMARY|tests passed|FAIL" "$out/memcheck.log" | tail -5 || true
    if [ "${TQ_ALL_FA:-0}" = 1 ]; then # every upstream FA case too (minutes)
        "$bin/test-backend-ops" -b CUDA0 -o FLASH_ATTN_EXT -j 8 > "$out/tbo-fa.log" 2>&1 || true
        grep -a -E "FAIL|tests passed" "$out/tbo-fa.log" | tail -8 || true
    fi
    ;;
bench)
    model=/tmp/llama3-8b-shape.gguf
    if [ ! -f "$model.tq" ]; then
        python3 -c "
from tqgguf import synth
synth.write('$model', synth.Shape(n_layer=32, n_embd=4096, n_head=32, n_kv_head=8, head_dim=128, n_ff=14336,
                                  n_vocab=128256, n_ctx_train=131072, weight_type='Q4_0'))"
        python3 -m tqgguf.cli prepare "$model" -o "$model.tq" -q
    fi
    python3 -m tqgguf.cli bench "$model.tq" --llama-bin "$bin" --out "$out/bench" -q "$@"
    ;;
*) echo "device-cuda.sh: unknown step $step" >&2; exit 2 ;;
esac
