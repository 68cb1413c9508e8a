#!/usr/bin/env python3
"""A stand-in for llama-perplexity in the harness tests: replays real logs (tests/data/).

Environment: FAKE_CALLS (a file that gets one line per call), FAKE_CRASH (a cache type whose
run exits 1 like a crash), FAKE_SHORT=1 (answer like a text that is too short).
"""
import os
import pathlib
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
log = (data / "perplexity-kld-tq2_5.log").read_text()
sys.stderr.write(log.replace("K (tq2_5)", f"K ({ctk})").replace("V (tq2_5)", f"V ({ctv})"))
