"""scripts/sync-tree.py, which build-llama.sh --incremental uses to put a new key's source tree
into the kept build folder: changed files get new content and a new mtime, equal files keep
theirs (so make rebuilds only what changed), files gone are removed, modes follow."""

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "sync-tree.py"
OLD_TIME = 1_000_000_000  # 2001: older than anything the sync writes


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def test_sync_touches_only_what_differs(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    write(new / "same.c", "int a;\n")
    write(new / "sub" / "changed.cu", "int b = 2;\n")
    write(new / "sub" / "added.h", "#pragma once\n")
    write(new / "tool.sh", "echo\n", 0o755)
    write(old / "same.c", "int a;\n")
    write(old / "sub" / "changed.cu", "int b = 1;\n")
    write(old / "gone.c", "int c;\n")
    write(old / "tool.sh", "echo\n", 0o644)  # same content, another mode
    for f in old.rglob("*"):
        if f.is_file():
            os.utime(f, (OLD_TIME, OLD_TIME))

    r = subprocess.run([sys.executable, str(SCRIPT), str(new), str(old)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 removed" in r.stderr

    assert sorted(str(p.relative_to(old)) for p in old.rglob("*") if p.is_file()) == [
        "same.c", "sub/added.h", "sub/changed.cu", "tool.sh"]
    assert (old / "sub" / "changed.cu").read_text() == "int b = 2;\n"
    assert (old / "same.c").stat().st_mtime == OLD_TIME  # untouched: make keeps its objects
    assert (old / "sub" / "changed.cu").stat().st_mtime > OLD_TIME
    assert (old / "tool.sh").stat().st_mode & stat.S_IXUSR  # same content, NEW's mode,
    assert (old / "tool.sh").stat().st_mtime == OLD_TIME    # and its mtime kept


def test_sync_twice_is_a_no_op(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    write(new / "a.c", "x\n")
    for _ in range(2):
        r = subprocess.run([sys.executable, str(SCRIPT), str(new), str(old)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert "0 files copied, 0 removed" in r.stderr


def test_missing_source_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope"), str(tmp_path / "old")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip() == "usage: sync-tree.py NEW OLD (NEW an existing folder)"
