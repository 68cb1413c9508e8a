"""`tqgguf prepare` / `inspect` on the real default model and on synthetic ones, and every refusal."""
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from tqgguf import calibrate, metadata, prepare
from tqgguf import precondition as pc
from tqgguf.harness import synth
from tqgguf.gguf_file import read_header


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _tensor_bytes(path):
    hdr = read_header(path)
    with open(path, "rb") as f:
        out = {}
        for t in hdr.tensors:
            f.seek(hdr.data_offset + t.offset)
            out[t.name] = (t.shape, t.type, f.read(t.nbytes))
    return out, hdr


def test_prepare_smollm2_copies_every_tensor_and_key(smollm2, prepared_smollm2):
    before, hdr_in = _tensor_bytes(smollm2)
    after, hdr_out = _tensor_bytes(prepared_smollm2)
    assert list(before) == list(after) and before == after
    kept = [kv.raw for kv in hdr_out.kvs if not kv.key.startswith(metadata.PREFIX)]
    assert kept == [kv.raw for kv in hdr_in.kvs]
    meta = metadata.read(hdr_out)
    assert (meta.n_layer, meta.n_kv_head, meta.head_dim) == (30, 3, {"k": 64, "v": 64})
    assert meta.outliers["k"].shape == (30, 3, 16)


def test_prepare_is_idempotent_and_leaves_the_input_alone(smollm2, prepared_smollm2, tmp_path):
    sha_in = _sha(smollm2)
    again = tmp_path / "again.gguf"
    run_cli("prepare", str(prepared_smollm2), "-o", str(again), "--no-center-k", "-q", check=True)
    assert _sha(again) == _sha(prepared_smollm2)
    assert _sha(smollm2) == sha_in


def test_inspect_shows_the_keys(prepared_smollm2):
    r = run_cli("inspect", str(prepared_smollm2), check=True)
    assert "30 layers x 3 KV heads, head size K 64, V 64" in r.stdout
    assert "tq2_5" in r.stdout and "2.750 bits/value" in r.stdout and "3.750 bits/value" in r.stdout
    assert "codebook d48.b2 (built in)" in r.stdout and re.search(r"checksum 0x[0-9a-f]{16}", r.stdout)
    assert f"first {prepare.K_EXACT_TOKENS} token(s) is kept unquantized" in r.stdout
    js = run_cli("inspect", "--json", str(prepared_smollm2), check=True)
    assert '"outliers"' in js.stdout and f'"k_exact_tokens": {prepare.K_EXACT_TOKENS}' in js.stdout
    assert f"last {prepare.WINDOW_TOKENS} token(s)" in r.stdout and f'"window_tokens": {prepare.WINDOW_TOKENS}' in js.stdout


@pytest.mark.parametrize("n", [0, 1, 32])
def test_exact_tokens_is_written_as_asked(tiny_model, tmp_path, n):
    out = tmp_path / "o.gguf"
    run_cli("prepare", str(tiny_model), "-o", str(out), "--exact-tokens", str(n), "--no-center-k",
            "--no-precondition", "-q", check=True)
    assert metadata.read(read_header(out)).k_exact_tokens == n


@pytest.mark.parametrize("n", [0, 1, 256])
def test_window_is_written_as_asked(tiny_model, tmp_path, n):
    out = tmp_path / "o.gguf"
    run_cli("prepare", str(tiny_model), "-o", str(out), "--window", str(n), "--no-center-k", "--no-precondition", "-q",
            check=True)
    assert metadata.read(read_header(out)).window_tokens == n


def test_window_beyond_its_maximum_is_refused(tiny_model, tmp_path):
    r = run_cli("prepare", str(tiny_model), "-o", str(tmp_path / "o.gguf"), "--window", "257", "-q")
    assert r.returncode != 0 and "window" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.gguf").exists()


def test_exact_tokens_beyond_the_sink_are_refused(tiny_model, tmp_path):
    r = run_cli("prepare", str(tiny_model), "-o", str(tmp_path / "o.gguf"), "--exact-tokens", "33", "-q")
    assert r.returncode != 0 and "exact-tokens" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.gguf").exists()


def test_in_place_and_default_output(tiny_model):
    r = run_cli("prepare", str(tiny_model), "-q", check=True)
    default = str(tiny_model)[:-5] + ".tq.gguf"
    assert r.stdout.strip() == default and os.path.exists(default)
    run_cli("prepare", str(tiny_model), "--in-place", "-q", check=True)
    assert _sha(tiny_model) == _sha(default)  # same seed and types: the same bytes
    assert not [p for p in os.listdir(os.path.dirname(default)) if p.endswith(".part")]


def test_seed_changes_only_seeds(tiny_model, tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    run_cli("prepare", str(tiny_model), "-o", str(a), "--seed", "1", "-q", check=True)
    run_cli("prepare", str(tiny_model), "-o", str(b), "--seed", "2", "-q", check=True)
    ma, mb = metadata.read(read_header(a)), metadata.read(read_header(b))
    assert not np.array_equal(ma.layer_seeds["k"], mb.layer_seeds["k"])
    assert np.array_equal(ma.outliers["k"], mb.outliers["k"])


def _no_build(tmp_path) -> dict:
    """An environment where no llama.cpp build is cached and none is named."""
    env = {k: v for k, v in os.environ.items() if k != "TQGGUF_LLAMA_BIN"}
    (tmp_path / "empty-cache").mkdir(exist_ok=True)
    return dict(env, TQGGUF_CACHE=str(tmp_path / "empty-cache"))


def test_without_a_build_prepare_says_so_in_one_line_and_stays_data_free(tiny_model, tmp_path):
    out = tmp_path / "o.gguf"
    r = run_cli("prepare", str(tiny_model), "-o", str(out), "-q", env=_no_build(tmp_path), check=True)
    notes = r.stderr.strip().splitlines()
    assert len(notes) == 1 and "no K centering" in notes[0] and "tqgguf build" in notes[0], r.stderr
    assert metadata.read(read_header(out)).k_center is None
    r = run_cli("prepare", str(tiny_model), "-o", str(out), "--no-center-k", "--no-precondition", "-q",
                env=_no_build(tmp_path), check=True)
    assert r.stderr == ""


def test_an_asked_for_calibration_without_a_build_is_refused(tiny_model, tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text("some text " * 100)
    out = tmp_path / "o.gguf"
    assert_one_line_error(run_cli("prepare", str(tiny_model), "-o", str(out), "--calibration", str(calib),
                                  env=_no_build(tmp_path)), "--calibration", "tqgguf build")
    assert not out.exists()


def _stats(shape: synth.Shape, seed=0, **change) -> calibrate.Stats:
    rng = np.random.default_rng(seed)
    L, H, d = shape.n_layer, shape.n_kv_head, shape.head_dim
    s = calibrate.Stats(arch="llama", n_layer=L, n_head=shape.n_head, n_kv_head=H, head_dim_k=d, head_dim_v=d,
                        ctx=64, tokens=np.arange(64, dtype=np.int32), k_rows=np.full(L, 64),
                        q_rows=np.full(L, 64 * shape.n_head // H), kq_scale=np.full(L, d ** -0.5, np.float32),
                        softcap=np.zeros(L, np.float32),
                        mean={k: rng.standard_normal((L, H, d)).astype(np.float32) for k in calibrate.KINDS},
                        cov={k: np.broadcast_to(np.eye(d, dtype=np.float32), (L, H, d, d)).copy()
                             for k in calibrate.KINDS})
    for k, v in change.items():
        setattr(s, k, v)
    return s


def test_stats_file_gives_the_k_centers(tiny_model, tmp_path):
    st = _stats(synth.Shape())
    calibrate.write(tmp_path / "stats.gguf", st)
    out = tmp_path / "o.gguf"
    run_cli("prepare", str(tiny_model), "-o", str(out), "--stats", str(tmp_path / "stats.gguf"), "-q",
            env=_no_build(tmp_path), check=True)
    assert np.array_equal(metadata.read(read_header(out)).k_center, st.mean["k"])


def test_stats_file_gives_the_preconditioners(tiny_model, tmp_path):
    st = _stats(synth.Shape())
    calibrate.write(tmp_path / "stats.gguf", st)
    out, plain = tmp_path / "o.gguf", tmp_path / "plain.gguf"
    for dst, flag in ((out, "--precondition"), (plain, "--no-precondition")):
        run_cli("prepare", str(tiny_model), "-o", str(dst), "--stats", str(tmp_path / "stats.gguf"), flag, "-q",
                env=_no_build(tmp_path), check=True)
    meta, without = metadata.read(read_header(out)), metadata.read(read_header(plain))
    assert set(meta.precond) == {"k", "v"} and without.precond == {}
    for kind in ("k", "v"):
        p, p_inv = meta.precond[kind]
        assert np.abs(p[1, 0].astype(np.float64) @ p_inv[1, 0] - np.eye(64)).max() < 1e-4
        # the outlier group is each head's first quarter, which P sorts by energy
        assert np.array_equal(meta.outliers[kind][1, 1], np.arange(16))
    # K: identity covariance against Q's second moment I + m m^T; V: against the planted W_o
    s_w = np.eye(64) + np.outer(st.mean["q"][0, 1], st.mean["q"][0, 1])
    want, _ = pc.head_preconditioner(st.cov["k"][0, 1].astype(np.float64), s_w)
    assert np.allclose(meta.precond["k"][0][0, 1], want, atol=1e-5)


@pytest.mark.parametrize("case, needle", [
    ("another model", "the model has 2 x 2 x 64"),
    ("a layer without rows", "no K rows for layer 1"),
    ("not finite", "not finite"),
    ("a model, not statistics", "not a llama-tq-calibrate statistics file"),
    ("not a gguf", "not a GGUF"),
])
def test_stats_that_do_not_fit_are_refused(tiny_model, tmp_path, case, needle):
    path = tmp_path / "stats.gguf"
    shape = synth.Shape()
    if case == "another model":
        calibrate.write(path, _stats(synth.Shape(n_layer=3)))
    elif case == "a layer without rows":
        calibrate.write(path, _stats(shape, k_rows=np.array([64, 0])))
    elif case == "not finite":
        st = _stats(shape)
        st.mean["k"][0, 0, 0] = np.nan
        calibrate.write(path, st)
    elif case == "a model, not statistics":
        shutil.copy(tiny_model, path)
    else:
        path.write_bytes(b"hello")
    out = tmp_path / "o.gguf"
    assert_one_line_error(run_cli("prepare", str(tiny_model), "-o", str(out), "--stats", str(path)), "--stats", needle)
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--stats", "S", "--calibration", "S"], "give one"),
    (["--stats", "S", "--no-center-k", "--no-precondition"], "drop --stats"),
])
def test_contradictory_calibration_options_are_refused(tiny_model, tmp_path, args, needle):
    (tmp_path / "S").write_text("x")
    args = [str(tmp_path / a) if a == "S" else a for a in args]
    assert_one_line_error(run_cli("prepare", str(tiny_model), "-o", str(tmp_path / "o.gguf"), *args), needle)


# ---- refusals: one line, non-zero exit, nothing written -----------------------------

def test_refuses_a_file_that_is_not_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert_one_line_error(run_cli("prepare", str(p)), "not a GGUF")
    assert not (tmp_path / "x.tq.gguf").exists()


def test_refuses_a_missing_file(tmp_path):
    assert_one_line_error(run_cli("prepare", str(tmp_path / "nope.gguf")), "cannot open")


@pytest.mark.parametrize("cut", [10, 200, 2000, -1000])
def test_refuses_a_truncated_gguf(tiny_model, tmp_path, cut):
    data = tiny_model.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[:cut])
    assert_one_line_error(run_cli("prepare", str(p)), "cut.gguf")
    assert not (tmp_path / "cut.tq.gguf").exists()


def test_refuses_an_unsupported_head_size(tmp_path):
    p = tmp_path / "h80.gguf"
    synth.write(p, synth.Shape(n_embd=320, n_head=4, n_kv_head=2, head_dim=80))
    assert_one_line_error(run_cli("prepare", str(p)), "unsupported head size", "80")


def test_refuses_output_equal_to_input(tiny_model):
    sha = _sha(tiny_model)
    assert_one_line_error(run_cli("prepare", str(tiny_model), "-o", str(tiny_model)), "--in-place")
    assert _sha(tiny_model) == sha


def test_refuses_unknown_types(tiny_model):
    assert_one_line_error(run_cli("prepare", str(tiny_model), "--types", "tq2_5,q4_0"), "unknown TQ type")


def test_disk_full_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    dst = tmp_path / "full.gguf"
    hdr = read_header(tiny_model)
    meta = prepare.build_metadata(str(tiny_model), hdr, 1, ["tq2_5"])

    def full(_n):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(prepare.PrepareError, match="disk full"):
        prepare.write_atomic(str(tiny_model), str(dst), prepare.with_metadata(hdr, meta), hdr, full)
    assert os.listdir(tmp_path) == [tiny_model.name]


def test_inspect_refuses_an_unprepared_model(tiny_model):
    assert_one_line_error(run_cli("inspect", str(tiny_model)), "tqgguf prepare")


# ---- the output: checked before any work, links kept, no temp file left behind --------

def _parts(*folders):
    return [p for d in folders for p in os.listdir(d) if p.startswith(".tqgguf-") and p.endswith(".part")]


def _unwritable(tmp_path, case):
    """(-o path, command prefix, needle) for an output folder that even root cannot write into."""
    if case == "missing folder":
        return tmp_path / "missing" / "out.gguf", [], "does not exist"
    if case == "under a file":
        (tmp_path / "file").write_text("")
        return tmp_path / "file" / "out.gguf", [], "not a folder"
    if case == "sysfs":  # the kernel lets nobody create files in /sys, root included
        if not os.path.isdir("/sys/kernel"):
            pytest.skip("no sysfs")
        try:
            os.close(os.open("/sys/.tqgguf-probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError:
            return Path("/sys/out.gguf"), [], "no permission"
        os.unlink("/sys/.tqgguf-probe")
        pytest.skip("/sys takes new files here")
    if case == "read-only mount":  # a read-only tmpfs in a mount namespace of the command's own
        ro = tmp_path / "ro"
        ro.mkdir()
        if not shutil.which("unshare"):
            pytest.skip("no unshare(1)")
        return ro / "out.gguf", ["unshare", "-m", "sh", "-c",
                                 f'mount -t tmpfs -o ro tmpfs "{ro}" 2>/dev/null || exit 77; exec "$@"', "sh"], \
            "read-only file system"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["missing folder", "under a file", "sysfs", "read-only mount"])
def test_refuses_an_unwritable_output(tiny_model, tmp_path, case):
    out, prefix, needle = _unwritable(tmp_path, case)
    r = subprocess.run([*prefix, sys.executable, "-m", "tqgguf.cli", "prepare", str(tiny_model), "-o", str(out)],
                       capture_output=True, text=True)
    if r.returncode == 77:
        pytest.skip("cannot mount in a mount namespace here")
    assert_one_line_error(r, needle, "choose another -o")
    assert r.returncode == 1 and not os.path.exists(out)


def test_an_unwritable_output_is_refused_before_any_work(tiny_model, tmp_path, monkeypatch):
    def work(*a, **kw):
        raise AssertionError("prepare worked before checking its output")

    monkeypatch.setattr(calibrate, "calibrate", work)
    monkeypatch.setattr(calibrate, "read", work)
    monkeypatch.setattr(prepare, "build_metadata", work)
    for cal in (prepare.Calibration(text="some text", tool=Path("llama-tq-calibrate")),
                prepare.Calibration(stats=str(tiny_model))):
        with pytest.raises(prepare.PrepareError, match="does not exist"):
            prepare.prepare_file(str(tiny_model), str(tmp_path / "missing" / "out.gguf"), 1, ["tq2_5"],
                                 calibration=cal)


def test_refuses_a_folder_as_output(tiny_model, tmp_path):
    assert_one_line_error(run_cli("prepare", str(tiny_model), "-o", str(tmp_path)), "is a folder", "tiny.tq.gguf")


def test_refuses_a_link_to_the_input_as_output(tiny_model, tmp_path):
    link = tmp_path / "link.gguf"
    link.symlink_to(tiny_model.name)
    sha = _sha(tiny_model)
    assert_one_line_error(run_cli("prepare", str(tiny_model), "-o", str(link)), "--in-place")
    assert link.is_symlink() and _sha(tiny_model) == sha


def test_in_place_on_a_link_prepares_its_target_and_keeps_the_link(tiny_model, tmp_path):
    want = tmp_path / "want.gguf"
    run_cli("prepare", str(tiny_model), "-o", str(want), "-q", check=True)
    links = tmp_path / "links"
    links.mkdir()
    link = links / "model.gguf"
    link.symlink_to(os.path.join("..", tiny_model.name))  # relative, in another folder
    r = run_cli("prepare", str(link), "--in-place", "-q", check=True)
    assert r.stdout.strip() == str(link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("..", tiny_model.name)
    assert _sha(tiny_model) == _sha(want)
    assert not _parts(tmp_path, links)


@pytest.mark.parametrize("target_exists", [True, False])
def test_output_through_a_link_writes_its_target(tiny_model, tmp_path, target_exists):
    store = tmp_path / "store"
    store.mkdir()
    target = store / "out.gguf"
    if target_exists:
        target.write_bytes(b"old")
        target.chmod(0o640)
    link = tmp_path / "out.gguf"
    link.symlink_to(target)
    run_cli("prepare", str(tiny_model), "-o", str(link), "-q", check=True)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert metadata.has_metadata(read_header(target))
    assert target.stat().st_mode & 0o777 == (0o640 if target_exists else 0o644)
    assert not _parts(tmp_path, store)


# A child that runs `tqgguf prepare` and sends itself SIGNAL (argv[1]) right after the first
# chunk of the output is written: a prepare killed mid-write, at a known point, without timing.
_KILLED_MID_WRITE = r"""
import contextlib, os, sys
import click
from tqgguf import cli, prepare

SIGNAL = int(sys.argv.pop(1))
prepare.COPY_CHUNK = 1 << 16  # many chunks: the signal lands with most of the copy still to do
progressbar = click.progressbar

@contextlib.contextmanager
def killing_bar(*args, label="", **kw):
    with progressbar(*args, label=label, **kw) as bar:
        if label.startswith("writing"):
            bar.update = lambda n: os.kill(os.getpid(), SIGNAL)
        yield bar

click.progressbar = killing_bar
cli.main(prog_name="tqgguf")
"""


def _default_signals():
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # `cmd &` in a script ignores SIGINT
        signal.signal(s, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_mid_write_removes_the_temp_file(tiny_model, tmp_path, sig):
    out = tmp_path / "out.gguf"
    r = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(int(sig)), "prepare", str(tiny_model),
                        "-o", str(out), "--no-center-k", "-q"],
                       capture_output=True, text=True, preexec_fn=_default_signals)
    assert not _parts(tmp_path) and not out.exists()
    assert r.returncode == -sig  # ended by the signal itself: a shell reports 128 + its number
    assert_one_line_error(r, f"interrupted by {sig.name}", f"{out} was not written")


def test_a_signal_during_calibration_removes_the_temp_file_and_spares_the_input(tiny_model, tmp_path):
    # the statistics file is a FIFO nobody writes: prepare waits on it, its temp file open
    fifo = tmp_path / "stats.gguf"
    os.mkfifo(fifo)
    sha = _sha(tiny_model)
    p = subprocess.Popen([sys.executable, "-m", "tqgguf.cli", "prepare", str(tiny_model), "--in-place",
                          "--stats", str(fifo), "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 60  # a bound for a broken prepare, not a guess at timing
        while not _parts(tmp_path):
            assert p.poll() is None, p.communicate()[1]
            assert time.monotonic() < deadline, "prepare made no temp file before reading its statistics"
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert not _parts(tmp_path) and _sha(tiny_model) == sha
    assert p.returncode == -signal.SIGTERM
    assert_one_line_error(subprocess.CompletedProcess(p.args, p.returncode, "", err),
                          "interrupted by SIGTERM", f"{tiny_model} is unchanged")


def _temp_name(pid, host=None):
    """A temp file name as prepare makes it: .tqgguf-HOST-PID-RANDOM.part."""
    host = host or re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
    return f".tqgguf-{host}-{pid}-{secrets.token_hex(4)}.part"


def test_the_next_prepare_removes_temp_files_of_dead_writers_only(tiny_model, tmp_path):
    dead, dead2 = subprocess.Popen(["true"]), subprocess.Popen(["true"])
    dead.wait(), dead2.wait()  # their PIDs are free now (and will not come round again during this test)
    stale = tmp_path / _temp_name(dead.pid)
    stale.write_bytes(b"\0" * 4096)
    live = tmp_path / _temp_name(os.getpid())  # this test process: alive
    live.write_bytes(b"x")
    other_host = tmp_path / _temp_name(dead.pid, host="elsewhere.example")  # its PIDs mean nothing here
    other_host.write_bytes(b"x")
    locked = tmp_path / _temp_name(dead2.pid)
    locked.write_bytes(b"x")
    with open(locked, "rb") as f:  # locked: a writer alive in another PID namespace, say
        fcntl.flock(f, fcntl.LOCK_EX)
        r = run_cli("prepare", str(tiny_model), "-o", str(tmp_path / "out.gguf"), "--no-center-k", check=True)
    assert sorted(_parts(tmp_path)) == sorted(p.name for p in (live, other_host, locked))
    assert "removed 1 temp file(s)" in r.stderr
