#!/usr/bin/env bash
# On the GPU machine: build the patched llama.cpp with CUDA, then test it and/or time it.
#
#   scripts/device-cuda.sh test     test-backend-ops (the TQ ops and FA cases, transform chains with ggml-cuda's fusion
#                                   off and on, CUDA vs CPU; TQ_ALL_FA=1: every FA case too), then memcheck (TQ_MEMCHECK=0: not)
#   scripts/device-cuda.sh memcheck compute-sanitizer over the TQ kernels and the transform chains
#   scripts/device-cuda.sh perf     test-backend-ops perf: decode attention alone at 16K/64K/256K per cache type,
#                                   and f16/tq2_5/tq3_5 in a KV cache's layout at 16K/64K
#   scripts/device-cuda.sh ppl      perplexity/KLD of a real small model: CPU vs one GPU vs -sm layer on all GPUs,
#                                   through prefill (512-token ubatches) and decode (one token at a time)
#   scripts/device-cuda.sh bench    tqgguf bench on a random-weight Llama-3-8B-shaped model (made there)
#   scripts/device-cuda.sh ncu      Nsight Compute on the tq2_5 decode kernel at 64K (speed of light, occupancy, stalls)
#   scripts/device-cuda.sh prof     every kernel's own time in a decode token and a 512-token ubatch, f16 vs TQ
#
# Settings: TQ_PERF_QUICK=1 (perf: head 128 at decode, 16K and 64K only), TQ_PROF_DEPTH=N and
# TQ_PROF_CONFIGS="f16:1 tq2_5:1" (prof: decode at depth N; cache:fusion[:exact tokens], fusion 0
# running with upstream's GGML_CUDA_DISABLE_FUSION=1), TQ_PROF_PP_DEPTH=N (prof: the 512-token
# ubatch at depth N), CUDA_ARCHS (build-llama.sh: default the card's;
# CUDA_ARCHS=80-virtual builds PTX only, which the driver compiles: the kernels Ampere cards run),
# TQ_NCU_KV=N (ncu's KV length), TQ_BUILD_TARGETS="test-backend-ops llama-bench" (build the
# tools of several steps at once; by default a step builds the one it runs).
#
# From this machine (the `device` tool): first `bash scripts/make-device-src.sh`, then run this
# script with carry [".device"]. The build is cached under ~/.cache/tqgguf like any other, so a
# second call on a still-warm machine skips it. Results land in $OUT (or out/device).
#
# TQ_VARIANT=NAME runs the step on another version of the kernels and patches: the git ref that
# `bash tools/gpu/make-device-variants.sh REF...` packed as .device/variants/NAME.tar.gz (its cpp/
# and patches/), in a copy of this repo (this repo's scripts). Builds are incremental: after one
# full build, each variant recompiles only what it changes. One card: one after another, e.g.
#   bash scripts/device-cuda.sh perf; TQ_VARIANT=wip-decode-epilogue bash scripts/device-cuda.sh perf
# On several cards, steps may run at once, each on its own card (CUDA_VISIBLE_DEVICES); their
# builds then take turns in the one work folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
step=${1:?usage: device-cuda.sh test|memcheck|perf|ppl|bench|ncu|prof [tqgguf bench options]}
shift
case "$step" in # before the build: a typo should not cost one
test|memcheck|perf|ppl|bench|ncu|prof) ;;
*) echo "device-cuda.sh: unknown step $step" >&2; exit 2 ;;
esac

if [ -n "${TQ_VARIANT:-}" ]; then
    pack=$root/.device/variants/$TQ_VARIANT.tar.gz
    [ -f "$pack" ] || { echo "device-cuda.sh: no $pack (run tools/gpu/make-device-variants.sh, carry .device)" >&2; exit 1; }
    v=/tmp/tqgguf-variant/$TQ_VARIANT
    if [ ! -d "$v" ]; then # this repo with the variant's files, made aside and renamed into place
        tmp=$(mkdir -p /tmp/tqgguf-variant && mktemp -d "/tmp/tqgguf-variant/.$TQ_VARIANT.XXXXXX")
        tar -C "$root" --exclude=./.device --exclude=./.git --exclude=./.venv --exclude=./out -cf - . | tar -C "$tmp" -xf -
        rm -rf "$tmp/cpp" "$tmp/patches"
        tar -C "$tmp" -xzf "$pack"
        ln -s "$root/.device" "$tmp/.device"
        mv -T "$tmp" "$v" 2>/dev/null || rm -rf "$tmp" # another call made it first
    fi
    echo "variant $TQ_VARIANT: $(cat "$v/.variant")"
    TQ_VARIANT="" exec bash "$v/scripts/device-cuda.sh" "$step" "$@"
fi

out=${OUT:-$root/out/device}
mkdir -p "$out"
src=/tmp/tqgguf-src/llama.cpp
if [ ! -d "$src" ]; then # unpacked aside and renamed into place: calls may run at once
    [ -f "$root/.device/llama-src.tar.gz" ] || { echo "device-cuda.sh: no .device/llama-src.tar.gz (run scripts/make-device-src.sh, carry .device)" >&2; exit 1; }
    tmp=$(mkdir -p /tmp/tqgguf-src && mktemp -d /tmp/tqgguf-src/.unpack.XXXXXX)
    tar -C "$tmp" -xzf "$root/.device/llama-src.tar.gz"
    mv -T "$tmp/llama.cpp" "$src" 2>/dev/null || true
    rm -rf "$tmp"
fi
t0=$(date +%s)
# incremental: a variant built after another rebuilds only the files that differ (a decode-kernel
# variant: 28 s, against 317-437 s for a full build on the 16-core H200 machine)
# and only the tool the step runs (a step after another links one more)
case "$step" in
test|memcheck|perf|ncu) tools=test-backend-ops ;;
bench|prof) tools="llama-bench llama-tq-calibrate" ;; # the bench model calibrated: Q's own transform, K's offset
ppl) tools=llama-perplexity ;;
esac
tools=${TQ_BUILD_TARGETS:-$tools} # e.g. "test-backend-ops llama-bench": one build for several steps
prefix=$(bash "$root/scripts/build-llama.sh" --cuda --incremental --targets "$tools" --src "$src" --jobs "$(nproc)")
echo "build: $(( $(date +%s) - t0 )) s, $prefix"
bin=$prefix/bin
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
export PYTHONPATH="$root:$src/gguf-py${PYTHONPATH:+:$PYTHONPATH}"

# A random-weight model with Llama-3-8B's layer shape and N layers, prepared (made once per
# machine); prints the prepared file. K centers from 128 tokens: the weights are random, this
# only puts the centering's add in the graph. A second argument X prepares the same weights
# with --exact-tokens X instead of prepare's default (another file).
llama3_shape() {
    local model=/tmp/llama3-8b-shape-$1l.gguf prepared=/tmp/llama3-8b-shape-$1l.gguf.tq exact=()
    if [ -n "${2:-}" ]; then
        prepared=/tmp/llama3-8b-shape-$1l.gguf.x$2.tq
        exact=(--exact-tokens "$2")
    fi
    exec 8>"$model.lock" # one maker at a time: concurrent steps wait and take its file
    command -v flock > /dev/null && flock 8
    if [ ! -f "$model" ]; then
        python3 -c "
from tqgguf.harness import synth
synth.write('$model.part', synth.Shape(n_layer=$1, n_embd=4096, n_head=32, n_kv_head=8, head_dim=128, n_ff=14336,
                                       n_vocab=128256, n_ctx_train=131072, weight_type='Q4_0'))" >&2 || exit 1
        mv "$model.part" "$model"
    fi
    if [ ! -f "$prepared" ]; then
        # K centers by llama-tq-calibrate on the GPU where this build has it (else data-free, one line)
        local cal=()
        [ -x "$bin/llama-tq-calibrate" ] && cal=(--llama-bin "$bin" --ngl 99)
        python3 -m tqgguf.cli prepare "$model" -o "$prepared" --calibration-tokens 128 "${cal[@]}" "${exact[@]}" -q >&2 || exit 1
    fi
    command -v flock > /dev/null && flock -u 8
    echo "$prepared"
}

# test-backend-ops' TQ transform and chain cases (tq-transform.cu, test_tq_attn_chain,
# test_tq_set_rows_chain, test_tq_layer_chain), run by test with the fusion off and on, and by
# memcheck with it on (as it is by default)
chains=(-o MUL_MAT,RESHAPE,SET_ROWS,TQ_TRANSFORM_TOKENS -p n_kv_head)

# memcheck over the TQ kernels: every quantize/get-rows case, every decode-kernel case at KV
# length 113 (the sanitizer is slow; the 512 cases run the same code on longer loops) and the
# transform chains
memcheck() {
    compute-sanitizer --tool memcheck --print-limit 10 "$bin/test-backend-ops" -b CUDA0 -o SET_ROWS,GET_ROWS,CPY,FLASH_ATTN_EXT \
        -p '(ROWS|CPY).*tq[23]_5|kv=113,nb=1,.*tq[23]_5' > "$out/memcheck.log" 2>&1 || true
    grep -a -E "ERROR SUMMARY|tests passed|FAIL" "$out/memcheck.log" | tail -5 || true
    compute-sanitizer --tool memcheck --print-limit 10 "$bin/test-backend-ops" -b CUDA0 "${chains[@]}" \
        > "$out/memcheck-chains.log" 2>&1 || true
    grep -a -E "ERROR SUMMARY|tests passed|FAIL" "$out/memcheck-chains.log" | tail -5 || true
}

case "$step" in
memcheck) memcheck ;;
test)
    # every TQ case of SET_ROWS/GET_ROWS/CPY/FLASH_ATTN_EXT, CUDA against the CPU backend (the
    # FA cases include K/V that are not 4-byte aligned, which take the unstaged decode)
    "$bin/test-backend-ops" -b CUDA0 -o SET_ROWS,GET_ROWS,CPY,FLASH_ATTN_EXT -p 'tq[23]_5' > "$out/tbo-tq.log" 2>&1 || true
    grep -a -E "FAIL|tests passed|Backend CUDA0|ggml_cuda_tq" "$out/tbo-tq.log" | tail -15 || true
    # the TQ transforms alone (tq-transform.cu: a token's, a ubatch's with its copy back and K's
    # offset) and the chains, with ggml-cuda's fusion (tq-fuse.cu among it) off and on
    GGML_CUDA_DISABLE_FUSION=1 "$bin/test-backend-ops" -b CUDA0 "${chains[@]}" > "$out/tbo-chains.log" 2>&1 || true
    grep -a -E "FAIL|tests passed" "$out/tbo-chains.log" | tail -5 || true
    "$bin/test-backend-ops" -b CUDA0 "${chains[@]}" > "$out/tbo-fused.log" 2>&1 || true
    grep -a -E "FAIL|tests passed" "$out/tbo-fused.log" | tail -5 || true
    [ "${TQ_MEMCHECK:-1}" = 1 ] && memcheck
    if [ "${TQ_ALL_FA:-0}" = 1 ]; then # every upstream FA case too (minutes)
        "$bin/test-backend-ops" -b CUDA0 -o FLASH_ATTN_EXT -j 8 > "$out/tbo-fa.log" 2>&1 || true
        grep -a -E "FAIL|tests passed" "$out/tbo-fa.log" | tail -8 || true
    fi
    ;;
perf)
    # the decode attention op alone (Llama-3-8B's shape), every cache type in one run; the TQ
    # transform of one token (hinted, and the same product unhinted) and of a 512-token ubatch;
    # a cache's conversion to f16
    # (TQ_PERF_QUICK=1: head 128 at decode, 16K and 64K only, not every head size, 256K and the
    # prefill cases)
    fa='nh=8,nr23=\[4,1\],kv=(16384|65536|262144)'
    [ "${TQ_PERF_QUICK:-0}" = 1 ] && fa='hsk=128,hsv=128,nh=8,nr23=\[4,1\],kv=(16384|65536),nb=1,'
    "$bin/test-backend-ops" perf -b CUDA0 -o FLASH_ATTN_EXT,MUL_MAT,CPY,TQ_TRANSFORM_TOKENS \
        -p "$fa"'|m=128,n=1,k=128,bs=\[8,1\],nr=\[4,1\]|d=128,n_kv_head=8|ne_src=\[1024,16384' \
        > "$out/perf.log" 2>&1 || true
    grep -a -E "FLASH_ATTN_EXT|MUL_MAT|CPY|TQ_TRANSFORM" "$out/perf.log" | grep -a "us/run" | sed -E 's/ +/ /g' || tail -20 "$out/perf.log"
    ;;
ppl)
    # a real model (make-device-src.sh: SmolLM2-135M, first 14 layers, Q4_0): f16-cache logits on one
    # GPU as the base, then tq2_5/tq3_5 on the CPU and on the GPU, in two passes:
    #   prefill  512-token ubatches (c 512, 40 chunks); also split by layer over every GPU
    #   decode   one token per ubatch (c 128, 8 chunks): the fused one-token layer, and with
    #            GGML_CUDA_DISABLE_FUSION=1 its separate kernels
    #   exact    contexts of 32 tokens, all of whose K is kept exact (turboquant.k.exact_tokens 32)
    #   window   contexts of 64 tokens, all within the recent window (turboquant.window_tokens 64)
    model=$root/.device/smollm2-14l.gguf text=$root/.device/text.txt
    [ -f "$model" ] || { echo "device-cuda.sh: no $model (run scripts/make-device-src.sh)" >&2; exit 1; }
    ngpu=$(nvidia-smi -L | wc -l)
    run() { local name=$1; shift; "$bin/llama-perplexity" "${common[@]}" --kl-divergence-base "$out/base-$pass.kld" --kl-divergence "$@" > "$out/ppl-$pass-$name.log" 2>&1 || echo "$pass $name failed"; }
    for pass in prefill decode; do
        if [ $pass = prefill ]; then
            common=(-m "$model" -f "$text" -fa on -c 512 --chunks 40 -b 512)
        else
            common=(-m "$model" -f "$text" -fa on -c 128 --chunks 8 -b 1 -ub 1)
        fi
        CUDA_VISIBLE_DEVICES=0 "$bin/llama-perplexity" "${common[@]}" -ngl 99 --kl-divergence-base "$out/base-$pass.kld" > "$out/ppl-$pass-base.log" 2>&1
        run f16-cpu -ngl 0 -dev none -t "$(nproc)"   # the CPU backend's own distance from the GPU base
        for t in tq2_5 tq3_5; do
            run "$t-cpu" -ctk $t -ctv $t -ngl 0 -dev none -t "$(nproc)"
            CUDA_VISIBLE_DEVICES=0 run "$t-gpu" -ctk $t -ctv $t -ngl 99
            if [ $pass = prefill ]; then
                [ "$ngpu" -gt 1 ] && run "$t-gpu-sm-layer" -ctk $t -ctv $t -ngl 99 -sm layer
            else
                CUDA_VISIBLE_DEVICES=0 GGML_CUDA_DISABLE_FUSION=1 run "$t-gpu-unfused" -ctk $t -ctv $t -ngl 99
            fi
        done
    done
    # the first cells' exact K rows (turboquant.k.exact_tokens): with 32 of them and contexts of
    # 32 tokens the K cache's type no longer matters (tq2_5 = tq3_5 to the digit; CPU: tests/test_llama_cpu.py)
    pass=exact
    python3 -m tqgguf.cli prepare "$model" -o /tmp/exact32.gguf --exact-tokens 32 --window 0 --no-center-k --no-precondition -q > /dev/null
    for ub in 512 1; do
        common=(-m /tmp/exact32.gguf -f "$text" -fa on -c 32 --chunks 16 -ub $ub)
        [ $ub = 512 ] && CUDA_VISIBLE_DEVICES=0 "$bin/llama-perplexity" "${common[@]}" -ngl 99 --kl-divergence-base "$out/base-$pass.kld" > "$out/ppl-$pass-base.log" 2>&1
        for t in tq2_5 tq3_5; do
            CUDA_VISIBLE_DEVICES=0 run "$t-ub$ub-gpu" -ctk $t -ctv f16 -ngl 99
        done
    done
    # the recent window (turboquant.window_tokens): one as long as the context (64) reads every K
    # and V unquantized, so tq2_5 = tq3_5 to the digit, from the ubatch's own rows (-ub 512) and
    # from the ring (-ub 1); CPU: tests/test_llama_cpu.py
    pass=window
    python3 -m tqgguf.cli prepare "$model" -o /tmp/window64.gguf --window 64 --exact-tokens 0 --no-center-k \
        --no-precondition -q > /dev/null
    for ub in 512 1; do
        common=(-m /tmp/window64.gguf -f "$text" -fa on -c 64 --chunks 16 -ub $ub)
        [ $ub = 512 ] && CUDA_VISIBLE_DEVICES=0 "$bin/llama-perplexity" "${common[@]}" -ngl 99 --kl-divergence-base "$out/base-$pass.kld" > "$out/ppl-$pass-base.log" 2>&1
        for t in tq2_5 tq3_5; do
            CUDA_VISIBLE_DEVICES=0 run "$t-ub$ub-gpu" -ctk $t -ctv $t -ngl 99
        done
    done
    for f in "$out"/ppl-*.log; do
        printf '%-36s %s | %s\n' "$(basename "$f" .log)" "$(grep -a -m1 -E '^Mean PPL|Final estimate' "$f" | tr -s ' ')" \
            "$(grep -a -m1 -E '^Mean +KLD' "$f" | tr -s ' ')"
    done
    ;;
ncu)
    command -v ncu > /dev/null || { echo "no ncu on this machine"; exit 0; }
    # TQ_NCU_KV=16384: at 16K a warp has 2 tiles, so the prologue and epilogue weigh as much as the loop
    ncu --kernel-name regex:k_tq_fattn_decode --launch-count 1 --section SpeedOfLight --section Occupancy \
        --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
        --section MemoryWorkloadAnalysis_Tables --section InstructionStats --section SourceCounters \
        --print-details all \
        "$bin/test-backend-ops" perf -b CUDA0 -o FLASH_ATTN_EXT -p "nh=8,nr23=\\[4,1\\],kv=${TQ_NCU_KV:-65536},.*type_K=tq2_5,type_V=tq2_5" \
        > "$out/ncu.txt" 2>&1 || true
    # stall reasons and shared-memory bank conflicts say whether the loop waits on the L1/shared
    # pipeline (the pair-table lookups, the byte loads) rather than on issue or DRAM; the source
    # counters name the instructions where warps stall most (by SASS offset: cuobjdump -sass of the
    # kernel's instance file, as sass-mix.py makes it, maps them)
    grep -a -E "Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Stall|Warp Cycles|Issued Ipc|Executed Ipc|L1/TEX Hit|L2 Hit|Bank|Wavefront|MIO" "$out/ncu.txt" | head -60
    ;;
prof)
    # Nsight Compute: each kernel's own duration in decode tokens and 512-token ubatches of a 4-layer
    # model with Llama-3-8B's layer shape, f16 against tq2_5 (ggml-cuda's fusion off and on); then llama-bench on
    # the same model without the profiler, whose time per token less the kernels' is what the
    # launches and the gaps between kernels cost
    command -v ncu > /dev/null || { echo "no ncu on this machine"; exit 0; }
    export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
    nc=(ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function)
    # TQ_PROF_DEPTH=16384: the decode tokens at that depth (its prefill is profiled too, then
    # dropped); TQ_PROF_CONFIGS: cache:fusion[:exact] (fusion 0: GGML_CUDA_DISABLE_FUSION=1;
    # exact: the model prepared with --exact-tokens exact, else with prepare's default)
    depth=${TQ_PROF_DEPTH:-0}
    for cfg in ${TQ_PROF_CONFIGS:-f16:1 tq2_5:0 tq2_5:1}; do
        IFS=: read -r t fuse exact <<< "$cfg"
        name=$t-fuse$fuse${exact:+-x$exact}
        model=$(llama3_shape 4 "$exact")
        lb=("$bin/llama-bench" -m "$model" -ngl 99 -fa 1)
        export GGML_CUDA_DISABLE_FUSION=$(( 1 - fuse ))
        # (the prefill to the depth in 4096-token ubatches: fewer kernels under the profiler)
        "${nc[@]}" "${lb[@]}" -ctk $t -ctv $t -p 0 -n 3 -d "$depth" -b 4096 -ub 4096 -r 1 > "$out/prof-tg-$name.csv" 2>&1 || true
        kinds=tg
        if [ "$depth" = 0 ]; then
            # TQ_PROF_PP_DEPTH=512: the 512-token ubatch after one that filled the first cells
            # (with exact K rows: a ubatch that writes none; its kernels and the fill's both count)
            "${nc[@]}" "${lb[@]}" -ctk $t -ctv $t -p 512 -n 0 -d "${TQ_PROF_PP_DEPTH:-0}" -ub 512 -r 1 --no-warmup \
                > "$out/prof-pp-$name.csv" 2>&1 || true
            kinds="tg pp"
        fi
        for k in $kinds; do
            echo "== $k $name"
            # (at a depth, only the last two decode tokens count: 82 kernels each on this 4-layer
            # model, as prof at depth 0 counted them for f16 and fused tq2_5)
            python3 "$root/tools/gpu/kernel-times.py" "$out/prof-$k-$name.csv" --last "$([ $k = tg ] && echo 60 || echo 0)" \
                --window "$([ $k = tg ] && [ "$depth" != 0 ] && echo 164 || echo 0)" \
                > "$out/prof-$k-$name.txt" || true
            head -14 "$out/prof-$k-$name.txt"
        done
        "${lb[@]}" -ctk $t -ctv $t -p 512 -n 64 -d "$depth" -r 3 2>&1 | grep -a -E "^\| .*(pp|tg)[0-9]" || true
    done
    unset GGML_CUDA_DISABLE_FUSION
    ;;
bench)
    model=$(llama3_shape 32)
    # one GPU: the figures are per card
    CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} python3 -m tqgguf.cli bench "$model" --llama-bin "$bin" --out "$out/bench" -q "$@"
    ;;
*) echo "device-cuda.sh: unknown step $step" >&2; exit 2 ;;
esac
