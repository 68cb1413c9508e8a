#!/usr/bin/env python3
"""Make folder OLD hold what folder NEW holds, touching only what differs.

    python3 scripts/sync-tree.py NEW OLD

Files whose content differs (or that OLD lacks) are copied, with a new mtime and NEW's mode;
files OLD has and NEW lacks are removed; equal files keep their mtime (and take NEW's mode). build-llama.sh
--incremental syncs a new key's patched source tree into the kept one this way, so that make
rebuilds only what depends on the files that changed. Contents are compared, not marks: a
build that failed halfway leaves nothing that a later sync trusts.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys


def sync(new: str, old: str) -> tuple[int, int]:
    """(files copied, files removed)."""
    keep, copied, removed = set(), 0, 0
    for d, _, files in os.walk(new):
        for f in files:
            src = os.path.join(d, f)
            rel = os.path.relpath(src, new)
            keep.add(rel)
            dst = os.path.join(old, rel)
            if not (os.path.isfile(dst) and not os.path.islink(dst) and filecmp.cmp(src, dst, shallow=False)):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if os.path.lexists(dst):
                    os.remove(dst)  # a link, or a file of other content
                shutil.copyfile(src, dst)
                shutil.copymode(src, dst)
                copied += 1
            elif os.stat(src).st_mode != os.stat(dst).st_mode:
                shutil.copymode(src, dst)  # same content: the mtime stays
    for d, _, files in os.walk(old):
        for f in files:
            path = os.path.join(d, f)
            if os.path.relpath(path, old) not in keep:
                os.remove(path)
                removed += 1
    return copied, removed


def main() -> None:
    if len(sys.argv) != 3 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: sync-tree.py NEW OLD (NEW an existing folder)")
    copied, removed = sync(sys.argv[1], sys.argv[2])
    print(f"sync-tree.py: {copied} files copied, {removed} removed", file=sys.stderr)


if __name__ == "__main__":
    main()
