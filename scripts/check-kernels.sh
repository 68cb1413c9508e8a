#!/usr/bin/env bash
# Build the TQ CPU kernels (cpp/ggml/ggml-cpu-tq.c) with the C core and a small driver
# (cpp/tests/test-tq-kernels.c, a stub ggml.h: no llama.cpp build) for one SIMD path, run it,
# and check the kernels against the C core. Seconds, not a llama.cpp build.
#
#   scripts/check-kernels.sh [--install] PATH...
#
#   native    the host compiler with -march=native (AVX-512 or AVX2 here, whichever the CPU has)
#   avx2      x86: -mavx2 -mfma -mf16c (GGML_NATIVE=OFF's AVX2 build); needs an AVX2 CPU to run
#   portable  no SIMD flags: the plain C path
#   neon      cross-compiled for aarch64 (aarch64-linux-gnu-gcc) and run under qemu-aarch64
#   --install first apt-get Debian's gcc-aarch64-linux-gnu and qemu-user (root)
#
# Each run prints the path the kernels were compiled for and ends with "N passed, M failed";
# the exit status is 0 when every path asked for passed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
install=0 paths=()
for a in "$@"; do
    case "$a" in
        --install) install=1 ;;
        native|avx2|portable|neon) paths+=("$a") ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check-kernels.sh: unknown argument $a (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#paths[@]} -gt 0 ] || paths=(native)
if [ "$install" = 1 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
srcs=("$root/cpp/tests/test-tq-kernels.c" "$root/cpp/ggml/ggml-cpu-tq.c"
      "$root/cpp/tq.c" "$root/cpp/tq_codebook.c" "$root/cpp/tq_rotation.c")
incs=(-I"$root/cpp/tests/kernels" -I"$root/cpp" -I"$root/cpp/ggml")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for p in "${paths[@]}"; do
    cc=${CC:-cc} flags=() run=()
    case "$p" in
        native)   flags=(-march=native) ;;
        avx2)     flags=(-mavx2 -mfma -mf16c) ;;
        portable) ;;
        neon)
            cc=aarch64-linux-gnu-gcc
            command -v "$cc" >/dev/null && command -v qemu-aarch64 >/dev/null ||
                { echo "check-kernels.sh: neon needs aarch64-linux-gnu-gcc and qemu-aarch64 (--install)" >&2; exit 1; }
            run=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
    esac
    # -Werror: a kernel that compiles with warnings on a path nobody runs here is a bug waiting
    "$cc" -std=gnu11 -O2 -Wall -Wextra -Werror "${flags[@]}" "${incs[@]}" "${srcs[@]}" -lm -o "$out/test-$p"
    echo "== $p ($cc ${flags[*]})"
    "${run[@]}" "$out/test-$p" || status=1
done
exit $status
