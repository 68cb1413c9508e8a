#!/usr/bin/env python3
"""A stand-in for llama-passkey in the recall tests: replays a real log (tests/data/passkey-f16.log)
with a pass key drawn from --seed, as a llama-passkey that seeds its rand() from --seed would.

Environment: FAKE_CALLS (a file that gets one line per call), FAKE_MISS (comma-separated
CTK:SEED, or CTK:* for every seed, whose run answers a longer number that holds the key, the
way a model at the edge of its precision does), FAKE_CRASH (a cache type whose runs exit 1
like a crash), FAKE_SAME_KEY=1 (one pass key whatever the seed, as the pinned llama-passkey does).
"""
import os
import pathlib
import sys

log = (pathlib.Path(__file__).resolve().parent / "data" / "passkey-f16.log").read_text()
args = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(" ".join(args) + "\n")
ctk, seed = args[args.index("-ctk") + 1], args[args.index("--seed") + 1]
if ctk == os.environ.get("FAKE_CRASH"):
    sys.stderr.write("0.00.1 I llama_context: constructing llama_context\nSegmentation fault\n")
    sys.exit(139)
key = "39384" if os.environ.get("FAKE_SAME_KEY") else str(int(seed) * 7919 % 50000 + 1)
miss = {f"{ctk}:{seed}", f"{ctk}:*"} & set(os.environ.get("FAKE_MISS", "").split(","))
answer = f"{key}4. The pass key is {key}4" if miss else f"{key}. The pass key is {key[:-1]}"
log = log.replace("passkey = 39384", f"passkey = {key}")
log = log.replace("The pass key is 39384. The pass key is 3938", f"The pass key is {answer}")
sys.stdout.write(log)
