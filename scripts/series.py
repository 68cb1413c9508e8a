#!/usr/bin/env python3
"""The llama.cpp patch series (patches/) and the C core it carries (cpp/), kept in step.

    scripts/series.py refresh         rewrite the new-file hunks of patches/ from cpp/
    scripts/series.py check           exit 1, naming the file, if a patch's copy of cpp/ is stale
    scripts/series.py checkout DIR    the pinned llama.cpp as a git repo in DIR, a commit a patch
    scripts/series.py export DIR      patches/ from DIR's commits after the tag `pin`

The series is self-contained: applied alone to the pin (`patch -p1` or `git am`-free `git apply`
in order) it gives the whole tree that scripts/build-llama.sh builds. Files that tqgguf adds to
llama.cpp live once, in cpp/, and enter the series as new-file hunks of the patch that NEW_FILES
names; `refresh` regenerates those hunks and `check` (run by the tests) refuses a stale one. To
change an upstream file: `checkout`, edit and commit (or `git commit --fixup` and rebase),
`export`, then `refresh` if you edited a cpp/ copy there (cpp/ wins: copy your edit back first).
"""
from __future__ import annotations

import datetime
import hashlib
import re
import subprocess
import sys
import tarfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
patches = root / "patches"

# cpp/ source -> (path in llama.cpp, the patch that adds it: the start of its file name)
NEW_FILES = {
    "cpp/ggml/ggml-tq.h": ("ggml/include/ggml-tq.h", "0002"),
    "cpp/tq.h": ("ggml/src/turboquant/tq.h", "0002"),
    "cpp/tq.c": ("ggml/src/turboquant/tq.c", "0002"),
    "cpp/tq_codebook.c": ("ggml/src/turboquant/tq_codebook.c", "0002"),
    "cpp/tq_rotation.c": ("ggml/src/turboquant/tq_rotation.c", "0002"),
    "cpp/ggml/ggml-tq-impl.h": ("ggml/src/turboquant/ggml-tq-impl.h", "0002"),
    "cpp/ggml/ggml-tq.c": ("ggml/src/turboquant/ggml-tq.c", "0002"),
    "cpp/ggml/ggml-cpu-tq.c": ("ggml/src/turboquant/ggml-cpu-tq.c", "0003"),
    "cpp/tests/test-tq-ops.cpp": ("tests/test-tq-ops.cpp", "0004"),
    "cpp/llama/llama-tq.h": ("src/llama-tq.h", "0005"),
    "cpp/llama/llama-tq.cpp": ("src/llama-tq.cpp", "0005"),
    "cpp/tools/tq-calibrate.cpp": ("tools/tq-calibrate/tq-calibrate.cpp", "0008"),
}
for _src in sorted((root / "cpp" / "cuda").glob("*")):
    NEW_FILES[f"cpp/cuda/{_src.name}"] = (f"ggml/src/ggml-cuda/turboquant/{_src.name}", "0007")


def die(msg: str) -> None:
    print(f"series.py: {msg}", file=sys.stderr)
    sys.exit(1)


def series() -> list[Path]:
    return [patches / n for n in (patches / "series").read_text().split()]


def patch_for(prefix: str) -> Path:
    found = [p for p in series() if p.name.startswith(prefix + "-")]
    if len(found) != 1:
        die(f"no single patch {prefix}-* in patches/series")
    return found[0]


def new_file_hunk(dst: str, data: bytes) -> str:
    """A git new-file diff of ``data`` at ``dst`` (with the blob id git would give it)."""
    text = data.decode("utf-8")
    lines = text.splitlines(keepends=True)
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()[:7]
    out = [f"diff --git a/{dst} b/{dst}\n", "new file mode 100644\n", f"index 0000000..{blob}\n",
           "--- /dev/null\n", f"+++ b/{dst}\n", f"@@ -0,0 +1,{len(lines)} @@\n" if len(lines) != 1 else "@@ -0,0 +1 @@\n"]
    for line in lines:
        out.append("+" + line)
    if lines and not lines[-1].endswith("\n"):
        out.append("\n\\ No newline at end of file\n")
    return "".join(out)


def split_patch(text: str) -> tuple[str, list[str]]:
    """A patch's header (DEP-3, up to the first diff) and its per-file sections."""
    starts = [m.start() for m in re.finditer(r"^diff --git ", text, re.M)]
    if not starts:
        return text, []
    return text[:starts[0]], [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def section_path(section: str) -> str:
    return re.match(r"diff --git a/(\S+) b/(\S+)", section).group(2)


def refreshed(path: Path) -> str:
    """The patch at ``path`` with every new file of NEW_FILES that it carries taken from cpp/."""
    header, sections = split_patch(path.read_text())
    mine = {dst: src for src, (dst, num) in NEW_FILES.items() if path.name.startswith(num + "-")}
    kept = [s for s in sections if section_path(s) not in mine]
    added = [new_file_hunk(dst, (root / src).read_bytes()) for dst, src in sorted(mine.items())]
    return header + "".join(kept + added)


def cmd_refresh() -> None:
    for p in series():
        new = refreshed(p)
        if new != p.read_text():
            p.write_text(new)
            print(f"refreshed {p.name}")


def cmd_check() -> None:
    for p in series():
        if refreshed(p) != p.read_text():
            die(f"{p.name} does not carry cpp/ as it is now: run scripts/series.py refresh")
    carried = {section_path(s) for p in series() for s in split_patch(p.read_text())[1]}
    for src, (dst, _) in NEW_FILES.items():
        if dst not in carried:
            die(f"{src} is in no patch")


def git(repo: Path, *args: str, **kw) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, **kw).stdout


def subject_and_body(header: str) -> tuple[str, str]:
    m = re.match(r"Description: (.*)\n((?: .*\n)*)", header)
    if not m:
        die("a patch header has no DEP-3 Description")
    body = "\n".join("" if l.strip() == "." else l[1:] for l in m.group(2).splitlines())
    return m.group(1), body


def cmd_checkout(dest: Path) -> None:
    if dest.exists():
        die(f"{dest} exists")
    sys.path.insert(0, str(root))
    from tqgguf import assets
    sdist = assets.fetch(assets.LLAMA_SDIST)
    prefix = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers() if m.name.startswith(prefix) and m.name != prefix + ".git"]
        for m in members:
            m.name = m.name[len(prefix):]
        tf.extractall(dest, members=members, filter="tar")
    git(dest, "init", "-q")
    ident = ["-c", "user.name=tqgguf developers", "-c", "user.email=tqgguf@invalid"]
    git(dest, "add", "-A")
    git(dest, *ident, "commit", "-q", "-m", "upstream 0c1e570 as vendored in llama-cpp-python 0.3.36")
    git(dest, "tag", "pin")
    for p in series():
        git(dest, "apply", "--index", str(p))
        subject, body = subject_and_body(split_patch(p.read_text())[0])
        git(dest, *ident, "commit", "-q", "-m", subject + ("\n\n" + body if body else ""))
    print(dest)


def cmd_export(repo: Path) -> None:
    commits = git(repo, "rev-list", "--reverse", "pin..HEAD").split()
    old = {p.name[:4]: p for p in patches.glob("[0-9][0-9][0-9][0-9]-*.patch")}
    names = []
    for i, c in enumerate(commits, 1):
        subject = git(repo, "log", "-1", "--format=%s", c).strip()
        body = git(repo, "log", "-1", "--format=%b", c).strip()
        num = f"{i:04d}"
        slug = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")[:60]
        if num in old:  # headers are edited in patches/, not in commit messages
            prev = old.pop(num)
            header = split_patch(prev.read_text())[0]
            prev.unlink()
        else:
            desc = "".join(" " + (l if l.strip() else ".") + "\n" for l in body.splitlines())
            header = (f"Description: {subject}\n{desc}Author: tqgguf developers\nForwarded: no\n"
                      f"Last-Update: {datetime.date.today().isoformat()}\n---\n")
        diff = git(repo, "show", "--format=", "--no-color", "--no-ext-diff", c)
        name = f"{num}-{slug}.patch"
        (patches / name).write_text(header + diff)
        names.append(name)
    for p in old.values():
        p.unlink()
    (patches / "series").write_text("".join(n + "\n" for n in names))
    print("\n".join(names))


def main() -> None:
    args = sys.argv[1:]
    if args == ["refresh"]:
        cmd_refresh()
    elif args == ["check"]:
        cmd_check()
    elif len(args) == 2 and args[0] == "checkout":
        cmd_checkout(Path(args[1]))
    elif len(args) == 2 and args[0] == "export":
        cmd_export(Path(args[1]))
    else:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
