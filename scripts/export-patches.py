#!/usr/bin/env python3
"""Write patches/ from a llama.cpp git checkout whose commits on top of BASE are the series.

    scripts/export-patches.py REPO BASE

For each commit after BASE, patches/NNNN-<slug>.patch gets a DEP-3 header and the commit's
diff. The header of an existing patch with the same number is kept (edit headers there);
a new patch gets one from the commit message. patches/series lists them in order.
The C core (ggml/src/turboquant, src/llama-tq.*, tests/test-tq-ops.cpp) is never committed
in REPO: scripts/import-core.sh copies it from cpp/ at build time.
"""
import datetime
import pathlib
import re
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parent.parent
repo, base = sys.argv[1], sys.argv[2]
out = root / "patches"


def git(*args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout


commits = git("rev-list", "--reverse", f"{base}..HEAD").split()
old = {p.name[:4]: p for p in out.glob("[0-9][0-9][0-9][0-9]-*.patch")}
names = []
for i, c in enumerate(commits, 1):
    subject = git("log", "-1", "--format=%s", c).strip()
    body = git("log", "-1", "--format=%b", c).strip()
    slug = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")[:60]
    num = f"{i:04d}"
    if num in old:
        prev = old.pop(num)
        text = prev.read_text()
        header = text[: text.index("diff --git")]
        prev.unlink()
    else:
        desc = "\n".join(" " + (l if l.strip() else ".") for l in body.splitlines()) if body else ""
        header = (f"Description: {subject}\n{desc}\n" if desc else f"Description: {subject}\n")
        header += ("Author: tqgguf developers\nForwarded: not-needed\n"
                   f"Last-Update: {datetime.date.today().isoformat()}\n---\n")
    diff = git("show", "--format=", "--no-color", "--no-ext-diff", c)
    name = f"{num}-{slug}.patch"
    (out / name).write_text(header + diff)
    names.append(name)
for p in old.values():
    p.unlink()
(out / "series").write_text("".join(n + "\n" for n in names))
print("\n".join(names))
