"""tools/gpu/kernel-times.py: per-kernel sums from Nsight Compute's CSV, and --window, which keeps
only the decode tokens after a prefill to some depth (device-cuda.sh prof, TQ_PROF_DEPTH)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu" / "kernel-times.py"


def ncu_csv(path: Path, kernels: list[tuple[str, float]]) -> None:
    """An ncu --csv log: a banner line, then one row per kernel (durations in ns)."""
    rows = ['==PROF== Connected to process 1', '"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"']
    rows += [f'"{i}","{name}","gpu__time_duration.sum","nsecond","{ns:,.0f}"' for i, (name, ns) in enumerate(kernels)]
    path.write_text("\n".join(rows) + "\n")


def run(*args: str) -> str:
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_sums_and_window(tmp_path):
    csv = tmp_path / "run.csv"
    # a prefill's kernels (long), then two decode tokens of two kernels each
    ncu_csv(csv, [("prefill_mm", 5000), ("prefill_fa", 7000), ("attn", 1000), ("merge", 2000), ("attn", 1500), ("merge", 2500)])
    whole = run(str(csv))
    assert whole.splitlines()[0] == "6 kernels, 19.0 µs"
    assert "prefill_fa" in whole
    decode = run(str(csv), "--window", "4", "--last", "2")
    lines = decode.splitlines()
    assert lines[0] == "4 kernels, 7.0 µs"
    assert "prefill" not in decode
    attn = next(ln for ln in lines if ln.startswith("attn"))
    assert attn.split()[1:] == ["2", "2.5", "1.25"]  # count, total, mean
    assert lines[-1].split() == ["4.00", "(sum)"]  # the last two kernels: 1.5 + 2.5 µs


def test_no_csv_is_one_line_error(tmp_path):
    bad = tmp_path / "empty.csv"
    bad.write_text("no profile here\n")
    r = subprocess.run([sys.executable, str(SCRIPT), str(bad)], capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip() == f"kernel-times.py: no ncu CSV in {bad}"
