#!/usr/bin/env bash
# Build llama.cpp (pinned: the llama-cpp-python 0.3.36 sdist, upstream 0c1e570) with tqgguf's
# patch series (self-contained: it carries cpp/ as new files; scripts/series.py), and install its
# tools into PREFIX/bin.
#
#   scripts/build-llama.sh [--cuda] [--asan] [--cpu native|avx2] [--src DIR] [--prefix DIR] [--jobs N]
#                          [--tree-only DIR]
#
#   --cuda        also build the CUDA backend, for the GPUs present (nvidia-smi's compute_cap, e.g.
#                 "86;90"); CUDA_ARCHS overrides that (a CMAKE_CUDA_ARCHITECTURES list: CUDA_ARCHS=86,
#                 CUDA_ARCHS="80;86;89;90", CUDA_ARCHS=80-virtual for PTX only, compiled by the driver)
#   --asan        AddressSanitizer build (a separate cache entry)
#   --cpu avx2    a portable x86 build for AVX2 CPUs (GGML_NATIVE=OFF; AVX, AVX2, FMA, F16C, BMI2 and
#                 nothing newer, whatever this CPU has); default: native (-march=native)
#   --src DIR     start from your own checkout of upstream 0c1e570 instead of the sdist (it is copied)
#   --prefix DIR  where bin/ goes [default: ~/.cache/tqgguf/llama/<key>]
#   --tree-only DIR  write the patched source tree to DIR/llama.cpp and stop
#   --targets "T..." build only these of the tools (default: all of them, listed below)
#   --check       build nothing: print PREFIX if this build is cached and complete, else exit 3
#   --incremental build in one work folder per option set, kept after the build: a new key syncs
#                 its patched tree into it by content, so make rebuilds only the files that changed
#                 (the GPU machine, which has no ccache: several kernel versions in one call)
#
# The build is cached under a key made of the pin, the patches, cpp/ and the options: a second
# call with nothing changed prints PREFIX in seconds. PREFIX/.complete is written last, so an
# interrupted build is never taken for a finished one. Prints PREFIX on stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cuda=0 asan=0 cpu=native src="" prefix="" jobs=$(nproc) tree_only="" incremental=0 targets="" check=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cuda) cuda=1 ;;
        --asan) asan=1 ;;
        --cpu) cpu=$2; shift ;;
        --src) src=$(cd "$2" && pwd); shift ;;
        --prefix) prefix=$2; shift ;;
        --jobs|-j) jobs=$2; shift ;;
        --tree-only) tree_only=$2; shift ;;
        --incremental) incremental=1 ;;
        --check) check=1 ;;
        --targets) targets=$2; shift ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-llama.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
die() { echo "build-llama.sh: error: $*" >&2; exit 1; }
log() { echo "build-llama.sh: $*" >&2; }
case "$cpu" in native|avx2) ;; *) die "unknown --cpu $cpu (native or avx2)" ;; esac

cache=${TQGGUF_CACHE:-$HOME/.cache/tqgguf}
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
UPSTREAM=0c1e570
ALL_TARGETS="llama-cli llama-server llama-perplexity llama-bench llama-passkey llama-quantize llama-tq-calibrate test-backend-ops test-tq-ops test-save-load-state ggml-rpc-server"
TARGETS=${targets:-$ALL_TARGETS}
for t in $TARGETS; do
    case " $ALL_TARGETS " in *" $t "*) ;; *) die "unknown target $t (one of: $ALL_TARGETS)" ;; esac
done

# CUDA architectures: $CUDA_ARCHS, else those of the GPUs present (a card without code for its
# architecture in the binary cannot run ggml's kernels); part of the cache key
archs=""
if [ "$cuda" = 1 ] && [ -z "$tree_only" ]; then
    archs=${CUDA_ARCHS:-}
    if [ -z "$archs" ]; then
        caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' .' | grep -E '^[0-9]+$' | sort -un | paste -sd';' || true)
        [ -n "$caps" ] || die "--cuda: no NVIDIA GPU found (nvidia-smi) to build for; set CUDA_ARCHS, e.g. CUDA_ARCHS=86 or CUDA_ARCHS=\"80;86;89;90\""
        archs=$caps
    fi
fi
key=$( { echo "$SDIST_SHA256 cuda=$cuda asan=$asan cpu=$cpu archs=$archs targets=$TARGETS";
         cd "$root"; cat patches/series; for p in $(cat patches/series); do cat "patches/$p"; done;
         find cpp -type f | LC_ALL=C sort | xargs cat; cat scripts/build-llama.sh; } | sha256sum | cut -c1-16)
[ -n "$src" ] && key="$key-src"
prefix=${prefix:-$cache/llama/$key}
if [ "$check" = 1 ]; then
    [ -f "$prefix/.complete" ] && [ "$(cat "$prefix/.complete")" = "$key" ] || exit 3
    echo "$prefix"
    exit 0
fi
# One call per key at a time (they share the work folder below): a second one waits here, then
# finds the build cached, or builds it itself if the first failed. An incremental work folder is
# shared by every key of its option set: one build in it at a time.
opts_key=$(echo "$SDIST_SHA256 cuda=$cuda asan=$asan cpu=$cpu archs=$archs src=${src:+1}" | sha256sum | cut -c1-16)
[ -n "$tree_only" ] && incremental=0
lock=$key
[ "$incremental" = 1 ] && lock=incr-$opts_key
mkdir -p "$cache/llama-work"
if command -v flock >/dev/null; then
    exec 9>"$cache/llama-work/$lock.lock"
    flock 9
fi
if [ -z "$tree_only" ] && [ -f "$prefix/.complete" ] && [ "$(cat "$prefix/.complete")" = "$key" ]; then
    for t in $TARGETS; do [ -x "$prefix/bin/$t" ] || die "cached build $prefix lacks bin/$t: delete $prefix and run again"; done
    echo "$prefix"
    exit 0
fi

if [ "$incremental" = 1 ]; then
    work=$cache/llama-work/incr-$opts_key # kept: its build/ is what the next key starts from
    stage=$work/stage                      # the new key's patched tree, then synced into $work/llama.cpp
else
    work=$cache/llama-work/$key
    stage=$work
    rm -rf "$work"
fi
rm -rf "$stage"
mkdir -p "$stage"
if [ -n "$src" ]; then
    if git -C "$src" rev-parse HEAD >/dev/null 2>&1; then
        head=$(git -C "$src" rev-parse HEAD)
        case "$head" in $UPSTREAM*) ;; *) die "$src is at commit ${head:0:12}, the patches are for upstream $UPSTREAM";; esac
    fi
    log "copying $src"
    mkdir -p "$stage/llama.cpp"
    tar -C "$src" --exclude=./.git --exclude='./build*' -cf - . | tar -C "$stage/llama.cpp" -xf -
else
    bash "$root/scripts/setup-env.sh"
    sdist=$("$root/.venv/bin/python" -c 'from tqgguf import assets; print(assets.fetch(assets.LLAMA_SDIST))')
    log "unpacking $(basename "$sdist")"
    tar -C "$stage" -xzf "$sdist" llama_cpp_python-0.3.36/vendor/llama.cpp
    mv "$stage/llama_cpp_python-0.3.36/vendor/llama.cpp" "$stage/llama.cpp"
    rmdir -p "$stage/llama_cpp_python-0.3.36/vendor" 2>/dev/null || true
    rm -f "$stage/llama.cpp/.git"
fi
tree=$stage/llama.cpp

# patch(1), or git apply where it is missing (the GPU machine's image)
if command -v patch >/dev/null; then
    apply_check() { patch -d "$tree" -p1 --dry-run --batch --forward -s < "$1" >/dev/null 2>&1; }
    apply_why()   { patch -d "$tree" -p1 --dry-run --batch --forward < "$1" | grep -i "fail\|reject" | head -5 >&2 || true; }
    apply_do()    { patch -d "$tree" -p1 --batch --forward -s < "$1"; }
else
    apply_check() { (cd "$tree" && git apply --check "$1" 2>/dev/null); }
    apply_why()   { (cd "$tree" && git apply --check "$1" 2>&1 | head -5 >&2) || true; }
    apply_do()    { (cd "$tree" && git apply "$1"); }
fi
for p in $(cat "$root/patches/series"); do
    if ! apply_check "$root/patches/$p"; then
        apply_why "$root/patches/$p"
        die "patch $p does not apply to $( [ -n "$src" ] && echo "$src" || echo "the pinned sdist"): is it upstream $UPSTREAM?"
    fi
    apply_do "$root/patches/$p"
done
if [ -n "$tree_only" ]; then
    mkdir -p "$tree_only"
    rm -rf "$tree_only/llama.cpp"
    mv "$tree" "$tree_only/llama.cpp"
    rm -rf "$work"
    log "patched source tree in $tree_only/llama.cpp"
    echo "$tree_only/llama.cpp"
    exit 0
fi

if [ "$incremental" = 1 ]; then
    # changed files get a new mtime (make rebuilds what depends on them), equal ones keep theirs
    python3 "$root/scripts/sync-tree.py" "$tree" "$work/llama.cpp"
    rm -rf "$stage"
    tree=$work/llama.cpp
fi
opts=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=ON
      -DLLAMA_BUILD_UI=OFF -DGGML_RPC=ON
      # the sdist has no .git: name the build (llama-bench's "build:", the logs' build info) by the
      # upstream commit and this build's key (patches, cpp/, scripts)
      "-DLLAMA_BUILD_COMMIT=$UPSTREAM+tq.$key")
if [ "$cpu" = avx2 ]; then
    # what most x86 desktops and laptops have (Intel client CPUs, AMD Zen 2/3): no AVX-512
    opts+=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
else
    opts+=(-DGGML_NATIVE=ON)
fi
# Upstream's AMX matmul (ggml-cpu/amx) segfaults on some Sapphire-Rapids-class hosts (llama.cpp
# issue #20824, never fixed upstream), and -march=native turns it on wherever the CPU has AMX.
# Explicit -mno-amx-* wins over -march=native in GCC and clang whatever the order, so the build
# is the same on every x86 host: the AMX buffer type is never compiled in.
case "$(uname -m)" in
    x86_64|i?86) opts+=("-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
                        "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16") ;;
esac
# ccache (the test extra puts one in .venv) with paths relative to the work folder: a new cache
# key rebuilds only what changed
export CCACHE_BASEDIR="$work" CCACHE_NOHASHDIR=1
ccache=$(command -v ccache || true)
[ -z "$ccache" ] && [ -x "$root/.venv/bin/ccache" ] && ccache=$root/.venv/bin/ccache
[ -n "$ccache" ] && opts+=("-DCMAKE_C_COMPILER_LAUNCHER=$ccache" "-DCMAKE_CXX_COMPILER_LAUNCHER=$ccache" "-DCMAKE_CUDA_COMPILER_LAUNCHER=$ccache")
[ "$cuda" = 1 ] && opts+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$archs")
[ "$asan" = 1 ] && opts+=(-DLLAMA_SANITIZE_ADDRESS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
log "configuring ($([ "$cuda" = 1 ] && echo "CUDA for $archs" || echo CPU), cpu=$cpu$([ "$asan" = 1 ] && echo ", ASan"))"
cmake -S "$tree" -B "$work/build" "${opts[@]}" > "$work/configure.log" 2>&1 || { tail -20 "$work/configure.log" >&2; die "cmake configure failed (log: $work/configure.log)"; }
log "building $TARGETS with $jobs jobs (a few minutes; log: $work/build.log)"
# shellcheck disable=SC2086
cmake --build "$work/build" -j "$jobs" --target $TARGETS > "$work/build.log" 2>&1 || { grep -m5 -B2 -A5 "error" "$work/build.log" >&2 || tail -30 "$work/build.log" >&2; die "build failed (log: $work/build.log)"; }

rm -rf "$prefix"
mkdir -p "$prefix/bin"
for t in $TARGETS; do cp "$work/build/bin/$t" "$prefix/bin/"; done
[ "$incremental" = 1 ] || rm -rf "$work"
echo "$key" > "$prefix/.complete"
log "installed into $prefix/bin"
echo "$prefix"
