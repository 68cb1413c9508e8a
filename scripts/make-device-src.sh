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
echo "$root/.device/llama-src.tar.gz"
