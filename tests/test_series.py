"""patches/: a self-contained series that carries cpp/ as it is (scripts/series.py)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERIES = ROOT / "scripts" / "series.py"


def _series(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(SERIES), *args], capture_output=True, text=True, cwd=cwd)


def test_the_series_carries_cpp_as_it_is():
    r = _series("check")
    assert r.returncode == 0, r.stderr


def test_a_stale_copy_is_named(tmp_path):
    # a copy of the repository's series and cpp/ in which one cpp/ file changed after refresh
    for sub in ("patches", "cpp", "scripts"):
        subprocess.run(["cp", "-r", str(ROOT / sub), str(tmp_path / sub)], check=True)
    (tmp_path / "cpp" / "tq.c").write_text((ROOT / "cpp" / "tq.c").read_text() + "\n// changed\n")
    r = subprocess.run([sys.executable, str(tmp_path / "scripts" / "series.py"), "check"], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip() == ("series.py: 0002-ggml-add-the-turboquant-kv-cache-types-tq2-5-and-tq3-5.patch does not "
                                "carry cpp/ as it is now: run scripts/series.py refresh")


def test_every_patch_has_a_truthful_dep3_header():
    names = (ROOT / "patches" / "series").read_text().split()
    assert [n[:4] for n in names] == [f"{i:04d}" for i in range(1, len(names) + 1)]
    assert names[0].startswith("0001-llama-fix-")  # the upstream fix stands first, alone
    for n in names:
        head = (ROOT / "patches" / n).read_text().split("\n---\n", 1)[0]
        for field in ("Description:", "Author:", "Forwarded:", "Last-Update:"):
            assert re.search(rf"^{field} \S", head, re.M), (n, field)
        # "not-needed" (never upstream) only with its reason
        assert not re.search(r"^Forwarded: not-needed\s*$", head, re.M), n
        assert "import-core" not in head, n
