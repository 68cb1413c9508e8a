#!/usr/bin/env bash
# Pack git refs as variants for scripts/device-cuda.sh (TQ_VARIANT=NAME on the GPU machine): each
# ref's cpp/ and patches/ as .device/variants/NAME.tar.gz, NAME being the ref with '/' as '-'
# (built with this checkout's scripts). Then carry .device, and build several versions of the
# kernels in one call.
#
#   bash tools/gpu/make-device-variants.sh wip/decode-epilogue wip/tokens-trigger-late
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -gt 0 ] || { echo "usage: make-device-variants.sh REF..." >&2; exit 2; }
mkdir -p "$root/.device/variants"
for ref in "$@"; do
    sha=$(git -C "$root" rev-parse --verify --quiet --short=12 "$ref^{commit}") || { echo "make-device-variants.sh: no commit $ref" >&2; exit 1; }
    name=${ref//\//-}
    tmp=$(mktemp -d)
    git -C "$root" archive "$ref" cpp patches | tar -C "$tmp" -xf -
    echo "$ref $sha" > "$tmp/.variant"
    tar -C "$tmp" -czf "$root/.device/variants/$name.tar.gz.part" .
    mv "$root/.device/variants/$name.tar.gz.part" "$root/.device/variants/$name.tar.gz"
    rm -rf "$tmp"
    echo "$name: $ref at $sha"
done
