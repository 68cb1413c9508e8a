#!/usr/bin/env bash
# Copy tqgguf's C core (cpp/) into a llama.cpp source tree, where the patch series expects it:
#   cpp/*.c, cpp/*.h, cpp/ggml/*.c, cpp/ggml/ggml-tq-impl.h -> ggml/src/turboquant/
#   cpp/ggml/ggml-tq.h                                      -> ggml/include/ggml-tq.h
#   cpp/cuda/*                                              -> ggml/src/ggml-cuda/turboquant/
#   cpp/llama/*                                             -> src/
#   cpp/tests/*.cpp                                         -> tests/
# The patches never carry a copy of this code: one source, compiled into tqgguf and into ggml.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:?usage: import-core.sh LLAMA_SRC_DIR}
mkdir -p "$src/ggml/src/turboquant"
cp "$root"/cpp/tq.h "$root"/cpp/tq.c "$root"/cpp/tq_rotation.c "$root"/cpp/tq_codebook.c "$src/ggml/src/turboquant/"
cp "$root"/cpp/ggml/ggml-tq.c "$root"/cpp/ggml/ggml-cpu-tq.c "$root"/cpp/ggml/ggml-tq-impl.h "$src/ggml/src/turboquant/"
cp "$root"/cpp/ggml/ggml-tq.h "$src/ggml/include/ggml-tq.h"
cp "$root"/cpp/llama/* "$src/src/"
cp "$root"/cpp/tests/*.cpp "$src/tests/"
if [ -d "$root/cpp/cuda" ]; then
    mkdir -p "$src/ggml/src/ggml-cuda/turboquant"
    cp "$root"/cpp/cuda/* "$src/ggml/src/ggml-cuda/turboquant/"
fi
