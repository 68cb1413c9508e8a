#!/usr/bin/env python3
"""A stand-in for llama-perplexity in the harness tests: replays real logs (tests/data/).

The KLD run replays SmolLM2's tq2_5 log with the cache types asked for and the K/V MiB that
llama.cpp would print for them (the transforms line only for a TQ type).
Environment: FAKE_CALLS (a file that gets one line per call), FAKE_CRASH (a cache type whose
run exits 1 like a crash), FAKE_SHORT=1 (answer like a text that is too short), FAKE_PAD (a
cache type whose tensors come out 1% larger than its blocks, like an allocation with padding),
FAKE_CUT (a cache type whose first run loses the end of its log and exits 0, as llama.cpp's
unflushed logger does on a busy machine).
"""
import os
import pathlib
import re
import sys

data = pathlib.Path(__file__).parent / "data"
args = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(" ".join(args) + "\n")
ctk = args[args.index("-ctk") + 1]
ctv = args[args.index("-ctv") + 1]
if os.environ.get("FAKE_SHORT"):
    sys.stderr.write((data / "perplexity-short-text.log").read_text())
    sys.exit(0)
if "--kl-divergence" not in args:
    pathlib.Path(args[args.index("--kl-divergence-base") + 1]).write_bytes(b"logits")
    sys.stderr.write((data / "perplexity-base-f16.log").read_text())
    sys.exit(0)
if ctk == os.environ.get("FAKE_CRASH"):
    sys.stderr.write("0.00.1 I llama_context: constructing llama_context\nSegmentation fault\n")
    sys.exit(139)

BITS = {"f16": 16, "q8_0": 8.5, "q5_1": 6, "q5_0": 5.5, "q4_1": 5, "q4_0": 4.5, "iq4_nl": 4.5,
        "tq3_5": 3.75, "tq2_5": 2.75}
VALUES = 256 * 16 * 30 * 3 * 64  # the replayed cache: cells x streams x layers x KV heads x head size


def mib(t):
    return VALUES * BITS[t] / 8 / 2**20 * (1.01 if t == os.environ.get("FAKE_PAD") else 1)


k, v = mib(ctk), mib(ctv)
size = (f"llama_kv_cache: size = {k + v:7.2f} MiB (   256 cells,  30 layers, 16/16 seqs), "
        f"K ({ctk}): {k:7.2f} MiB, V ({ctv}): {v:7.2f} MiB")
log = re.sub(r"llama_kv_cache: size = .*", size, (data / "perplexity-kld-tq2_5.log").read_text())
if not (ctk.startswith("tq") or ctv.startswith("tq")):
    log = re.sub(r".*TurboQuant transforms.*\n", "", log)
if ctk == os.environ.get("FAKE_CUT") and sum(f"-ctk {ctk} " in l for l in open(os.environ["FAKE_CALLS"])) == 1:
    log = log[:log.index("chunk ")]
sys.stderr.write(log)
