#!/usr/bin/env bash
# Make .device/llama-src.tar.gz: the pinned llama.cpp source (the sdist's vendor/llama.cpp) without
# what a CUDA build never reads (models, docs, other backends), small enough (~9 MB) to travel to
# the GPU machine, where scripts/device-cuda.sh builds it with build-llama.sh --src.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup-env.sh"
sdist=$("$root/.venv/bin/python" -c 'from tqgguf import assets; print(assets.fetch(assets.LLAMA_SDIST))')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -C "$tmp" -xzf "$sdist" llama_cpp_python-0.3.36/vendor/llama.cpp
cd "$tmp/llama_cpp_python-0.3.36/vendor"
rm -rf llama.cpp/models llama.cpp/docs llama.cpp/benches llama.cpp/media llama.cpp/.github llama.cpp/.git
for b in virtgpu cann openvino webgpu et metal hexagon sycl vulkan opencl zdnn zendnn musa; do rm -rf "llama.cpp/ggml/src/ggml-$b"; done
mkdir -p "$root/.device"
tar -czf "$root/.device/llama-src.tar.gz.part" llama.cpp
mv "$root/.device/llama-src.tar.gz.part" "$root/.device/llama-src.tar.gz"

# A real model small enough to travel (the GPU-vs-CPU perplexity check of device-cuda.sh ppl):
# SmolLM2-135M with its first 14 of 30 layers, requantized to Q4_0 (~46 MB), and a text.
bin=$(bash "$root/scripts/build-llama.sh")/bin
model=$("$root/.venv/bin/python" -c 'from tqgguf import assets; print(assets.default_model())')
"$bin/llama-quantize" --allow-requantize --token-embedding-type q4_0 --prune-layers "$(seq -s, 14 29)" \
    "$model" "$tmp/smollm2-14l.gguf" Q4_0 2 > "$tmp/quantize.log" 2>&1 || { tail -5 "$tmp/quantize.log" >&2; exit 1; }
"$root/.venv/bin/python" -m tqgguf.cli prepare "$tmp/smollm2-14l.gguf" -o "$root/.device/smollm2-14l.gguf" \
    --llama-bin "$bin" -q
text=$("$root/.venv/bin/python" -c 'from tqgguf import assets; print(assets.eval_text())')
head -c 200000 "$text" > "$root/.device/text.txt"
ls -la "$root/.device"
