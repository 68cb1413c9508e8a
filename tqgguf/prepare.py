"""`tqgguf prepare`: add TurboQuant metadata to a GGUF, copying everything else to the byte.

The output is the input's header with every ``turboquant.*`` key replaced (others
kept in order, byte for byte), then the input's data section copied verbatim in
chunks: memory stays flat however large the model is. The file appears under its
final name only when complete (temp file in the same folder, fsync, rename).

The temp file is created before any work, so an output that cannot be written is
refused at once; its name carries the host and PID of its writer, which holds a
lock on it, so a later prepare into the same folder can remove what a killed one
left (TempOutput, remove_stale_temps).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import blocks, calibrate, metadata, outliers, rotation
from . import precondition as pc
from .gguf_file import GGUFError, Header, TensorReader, header_bytes, read_header

DEFAULT_SEED = 0x7A5EED  # any fixed value; recorded in the file, so it is never implicit
COPY_CHUNK = 16 << 20


class PrepareError(Exception):
    """A refusal with one line for the user."""


@dataclass
class ModelShape:
    arch: str
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim_k: int
    head_dim_v: int
    n_rot: int


def _scalar_or_uniform(hdr: Header, key: str, what: str):
    v = hdr.get(key)
    if v is None:
        return None
    if isinstance(v, (list, np.ndarray)):
        vals = set(int(x) for x in v)
        if len(vals) != 1:
            raise PrepareError(f"{what} varies across layers ({key}); TQ caches need it uniform")
        return vals.pop()
    return int(v)


def model_shape(hdr: Header) -> ModelShape:
    arch = hdr.get("general.architecture")
    if not isinstance(arch, str):
        raise PrepareError("general.architecture is missing: is this a llama.cpp model GGUF?")
    a = arch

    def need(key, what):
        v = _scalar_or_uniform(hdr, key.format(a=a), what)
        if v is None:
            raise PrepareError(f"{key.format(a=a)} is missing: cannot tell the model's {what}")
        return v

    n_layer = need("{a}.block_count", "layer count")
    n_embd = need("{a}.embedding_length", "width")
    n_head = need("{a}.attention.head_count", "head count")
    n_kv = _scalar_or_uniform(hdr, f"{a}.attention.head_count_kv", "KV head count") or n_head
    if n_head <= 0 or n_kv <= 0:
        raise PrepareError(f"{a}: head counts must be positive (got {n_head} / {n_kv})")
    dk = _scalar_or_uniform(hdr, f"{a}.attention.key_length", "K head size") or n_embd // n_head
    dv = _scalar_or_uniform(hdr, f"{a}.attention.value_length", "V head size") or n_embd // n_head
    n_rot = _scalar_or_uniform(hdr, f"{a}.rope.dimension_count", "rope size") or dk
    for kind, d in (("K", dk), ("V", dv)):
        if d <= 0 or d % blocks.BLOCK:
            raise PrepareError(f"unsupported head size: {kind} heads of {d}; TQ types need a multiple "
                               f"of {blocks.BLOCK} (64, 128, 256, ...)")
    return ModelShape(a, n_layer, n_head, n_kv, dk, dv, n_rot)


def build_metadata(path: str, hdr: Header, seed: int, types: list[str],
                   progress: Callable[[int], None] = lambda n: None) -> metadata.TQMeta:
    shape = model_shape(hdr)
    reader = TensorReader(path, hdr)
    k_seeds, v_seeds = rotation.layer_seeds(seed, shape.n_layer)
    outs = {"k": [], "v": []}
    for layer in range(shape.n_layer):
        for kind, d in (("k", shape.head_dim_k), ("v", shape.head_dim_v)):
            outs[kind].append(outliers.layer_outliers(reader, layer, kind, shape.n_kv_head, d,
                                                      shape.n_head, shape.head_dim_k, shape.arch, shape.n_rot))
        progress(1)
    return metadata.TQMeta(
        seed=seed, types=types, n_layer=shape.n_layer, n_kv_head=shape.n_kv_head,
        head_dim={"k": shape.head_dim_k, "v": shape.head_dim_v},
        layer_seeds={"k": np.array(k_seeds, dtype=np.uint64), "v": np.array(v_seeds, dtype=np.uint64)},
        outliers={k: np.stack(v).astype(np.int32) for k, v in outs.items()},
    )


def with_metadata(hdr: Header, meta: metadata.TQMeta) -> Header:
    """``hdr`` with its turboquant.* keys replaced by ``meta``'s, appended after the others."""
    kept = [kv for kv in hdr.kvs if not kv.key.startswith(metadata.PREFIX)]
    return Header(version=hdr.version, kvs=kept + meta.to_kvs(), tensors=hdr.tensors,
                  alignment=hdr.alignment, data_offset=hdr.data_offset, file_size=hdr.file_size)


def default_output(src: str) -> str:
    stem = src[:-5] if src.endswith(".gguf") else src
    return stem + ".tq.gguf"


TEMP_PREFIX = ".tqgguf-"
TEMP_SUFFIX = ".part"
# .tqgguf-HOST-PID-RANDOM.part; HOST may itself contain '-', PID and RANDOM never do
_TEMP_RE = re.compile(r"^\.tqgguf-(?P<host>.+)-(?P<pid>[0-9]+)-[0-9a-f]{8}\.part$")
_LIVE_TEMPS: set[str] = set()  # this process's unfinished temp files, for remove_live_temps()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user's process
        return True
    return True


def _os_error(dst: str, folder: str, e: OSError, creating: bool = False) -> PrepareError:
    """One line for an OSError met while writing dst through a temp file in folder
    (``creating``: while creating that temp file, where the folder is what is wrong)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return PrepareError(f"disk full while writing {dst}; nothing was written")
    if not creating:
        return PrepareError(f"cannot write {dst}: {e.strerror}")
    if e.errno == errno.ENOENT and not os.path.isdir(folder):
        return PrepareError(f"cannot write {dst}: folder {folder} does not exist; create it or choose another -o")
    if e.errno == errno.ENOTDIR:
        return PrepareError(f"cannot write {dst}: {folder} is not a folder; choose another -o")
    if e.errno in (errno.EACCES, errno.EPERM):
        return PrepareError(f"cannot write {dst}: no permission to create files in {folder}; choose another -o")
    if e.errno == errno.EROFS:
        return PrepareError(f"cannot write {dst}: {folder} is on a read-only file system; choose another -o")
    return PrepareError(f"cannot write {dst}: cannot create a file in {folder} ({e.strerror}); choose another -o")


def remove_stale_temps(folder: str) -> list[tuple[str, int]]:
    """Remove the temp files that killed prepares (SIGKILL, power loss) left in folder.

    A temp file is stale when its name says this host, the PID in it is not a live
    process, and nobody holds its lock (a writer locks its temp file for its whole
    life; the kernel drops the lock when the writer dies, however it dies). Either
    test alone could be fooled: a PID is reused, or another PID namespace on this host
    writes into the same folder; a lock never outlives its process. Files of other
    hosts are never touched. Returns (path, bytes) of each file removed.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    me = _host()
    for name in names:
        m = _TEMP_RE.match(name)
        if not m or m["host"] != me or _pid_alive(int(m["pid"])):
            continue
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a writer lives
            if not os.path.samestat(st, os.lstat(path)):
                continue  # the name now belongs to another file
            os.unlink(path)
            removed.append((path, st.st_size))
        except OSError:
            continue  # locked (a live writer), or no locks on this file system: keep it
        finally:
            os.close(fd)
    return removed


class TempOutput:
    """The file prepare is writing: a locked temp file beside its destination, created at once.

    Creating it is the check that the output can be written, so it comes before any
    work. ``dst`` as given is what the user named; ``path`` is the file that commit()
    replaces: dst with symbolic links followed, so that a link stays a link and its
    target gets the new bytes. Use as a context manager: leaving it without commit()
    removes the temp file. Once its own exists, it removes the stale temp files of dead
    writers in the same folder (``removed``: their paths and sizes).
    """

    def __init__(self, dst: str):
        self.dst = dst
        self.path = os.path.realpath(dst)
        self.folder = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise PrepareError(f"output {dst} is a folder; give the file to write, e.g. "
                               f"{os.path.join(dst, 'model.tq.gguf')}")
        self.tmp = ""
        self.committed = False
        while True:
            tmp = os.path.join(self.folder, f"{TEMP_PREFIX}{_host()}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
            _LIVE_TEMPS.add(tmp)  # before it exists: a signal between open and add would leak it
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                break
            except FileExistsError:
                _LIVE_TEMPS.discard(tmp)  # a stale one of a previous process with this PID: never ours
            except OSError as e:
                _LIVE_TEMPS.discard(tmp)
                raise _os_error(dst, self.folder, e, creating=True) from None
        self.tmp = tmp
        self.file = os.fdopen(fd, "wb")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no locks on this file system: then no prepare takes this file for stale
        self.removed = remove_stale_temps(self.folder)

    def commit(self) -> None:
        """Flush, fsync and rename the temp file onto ``path``, keeping an existing file's mode."""
        self.file.flush()
        os.fsync(self.file.fileno())
        try:
            mode = os.stat(self.path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.fchmod(self.file.fileno(), mode)
        os.replace(self.tmp, self.path)
        self.committed = True
        _LIVE_TEMPS.discard(self.tmp)
        self.file.close()
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def discard(self) -> None:
        if self.committed:
            return
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)
        _LIVE_TEMPS.discard(self.tmp)

    def __enter__(self) -> "TempOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def remove_live_temps() -> None:
    """Remove this process's unfinished temp files: for a signal handler that then exits."""
    for tmp in list(_LIVE_TEMPS):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _LIVE_TEMPS.clear()


def write_atomic(src: str, dst: "str | TempOutput", new_hdr: Header, old_hdr: Header,
                 progress: Callable[[int], None] = lambda n: None) -> None:
    """Write header + src's data section to dst (a path, or a TempOutput already open) atomically."""
    with contextlib.ExitStack() as stack:
        out = dst if isinstance(dst, TempOutput) else stack.enter_context(TempOutput(dst))
        try:
            with open(src, "rb") as inp:
                out.file.write(header_bytes(new_hdr))
                inp.seek(old_hdr.data_offset)
                while chunk := inp.read(COPY_CHUNK):
                    out.file.write(chunk)
                    progress(len(chunk))
            out.commit()
        except BaseException as e:
            out.discard()
            if isinstance(e, OSError):
                raise _os_error(out.dst, out.folder, e) from None
            raise


def parse_types(text: str) -> list[str]:
    types = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not types:
        raise PrepareError("--types is empty")
    for t in types:
        if t not in blocks.TYPES:
            raise PrepareError(f"unknown TQ type {t!r} (known: {', '.join(blocks.TYPES)})")
    return sorted(set(types))


def resolve_output(src: str, out: str | None, in_place: bool) -> str:
    if in_place:
        if out is not None and os.path.realpath(out) != os.path.realpath(src):
            raise PrepareError("--in-place and -o name different files; give one of them")
        return src
    dst = out or default_output(src)
    if os.path.isdir(dst):
        raise PrepareError(f"output {dst} is a folder; name the file, e.g. -o "
                           f"{os.path.join(dst, os.path.basename(default_output(src)))}")
    if os.path.exists(dst) and os.path.samefile(dst, src) or os.path.realpath(dst) == os.path.realpath(src):
        raise PrepareError(f"output {dst} is the input; pass --in-place to modify the model itself")
    return dst


@contextlib.contextmanager
def _no_progress(label: str, length: int):
    yield lambda n: None


# K centering is on by default (docs/ablation.md, tables 5 and 8: it is the lever that puts the
# TQ types ahead of the plain configuration); its calibration text ships with the package:
# 12 KB of Django's reference docs (BSD-3-Clause), disjoint from the evaluation text. The K rows
# come from llama.cpp itself (llama-tq-calibrate, tqgguf/calibrate.py, docs/calibration.md).
CALIBRATION_TEXT = Path(__file__).parent / "data" / "calibration.txt"
CENTER_TOKENS = 1024
MIN_CENTER_TOKENS = 16
# The cache stores K after RoPE, whose statistics depend on the positions they are seen at: the
# calibration replays its tokens at later start positions so that they span those of a context
# this long (llama-tq-calibrate -p; docs/ablation.md, "Calibration positions").
CALIBRATION_POSITIONS = 4096
# The attention sink: a sequence's first tokens take a large share of most rows' attention, so
# their K's rounding moves the most probability; llama.cpp keeps these cells' K unquantized too
# (docs/ablation.md, section 10).
K_EXACT_TOKENS = 4
# The recent window: each query's last tokens, whose K and V the attention reads unquantized
# (llama.cpp keeps a ring of the last ones written beside the cache); the errors of the keys a
# query weighs most are gone, for a few f16 rows per stream (docs/ablation.md, "A recent window").
WINDOW_TOKENS = 32


class CalibrationError(PrepareError):
    """K centering cannot run on this model with this text; ``why`` says why in a few words."""

    def __init__(self, why: str):
        super().__init__(f"cannot center K: {why}")
        self.why = why


@dataclass
class Calibration:
    """Where the K centers come from: a statistics file made elsewhere (``stats``), or
    llama-tq-calibrate (``tool``) run over ``text`` (the text itself)."""
    stats: str | None = None
    text: str | None = None
    tool: Path | None = None
    n_tokens: int = CENTER_TOKENS
    threads: int | None = None
    ngl: int = 0
    positions: int = CALIBRATION_POSITIONS


def k_centers_from(stats: "calibrate.Stats", shape: ModelShape, where: str = "the statistics") -> np.ndarray:
    """The K centers (n_layer, n_kv_head, d) of ``stats``, checked against the model's shape."""
    got = (stats.n_layer, stats.n_kv_head, stats.head_dim_k)
    want = (shape.n_layer, shape.n_kv_head, shape.head_dim_k)
    if got != want:
        raise CalibrationError(f"{where} are for {got[0]} layers x {got[1]} KV heads x K heads of {got[2]} "
                               f"({stats.arch}), the model has {want[0]} x {want[1]} x {want[2]}")
    empty = [i for i, n in enumerate(stats.k_rows) if n == 0]
    if empty:
        raise CalibrationError(f"{where} hold no K rows for layer {empty[0]} (llama.cpp keeps no K cache there)")
    centers = stats.mean["k"]
    if not np.isfinite(centers).all():
        raise CalibrationError(f"{where} hold K means that are not finite")
    return centers.astype(np.float32)


def k_centers(path: str, text: str, tool: Path, n_tokens: int = CENTER_TOKENS, **kw) -> np.ndarray:
    """The mean K row (after RoPE) of each layer and KV head over ``text``, as llama.cpp computes
    it: (n_layer, n_kv_head, d). Raises CalibrationError where it cannot run."""
    return k_centers_from(_run_tool(path, Calibration(text=text, tool=tool, n_tokens=n_tokens, **kw)),
                          model_shape(read_model_header(path)))


def _run_tool(src: str, cal: Calibration) -> "calibrate.Stats":
    try:
        return calibrate.calibrate(cal.tool, src, cal.text, n_tokens=cal.n_tokens, threads=cal.threads, ngl=cal.ngl,
                                   min_tokens=MIN_CENTER_TOKENS, positions=cal.positions)
    except calibrate.ToolError as e:
        raise CalibrationError(e.why) from None


def prepare_file(src: str, dst: "str | TempOutput", seed: int, types: list[str], progress=_no_progress,
                 calibration: Calibration | None = None, center: bool = True, precondition: bool = True,
                 exact_tokens: int = K_EXACT_TOKENS, window_tokens: int = WINDOW_TOKENS) -> None:
    """Read src, choose the metadata, write dst atomically: the whole of `tqgguf prepare`.

    ``dst``: a path, or a TempOutput the caller opened (and so checked) already; a path is
    opened before any work, so an output that cannot be written is refused at once.
    ``progress(label, length)`` is a context manager yielding an update(n) callable, one per stage.
    ``calibration``: where the statistics come from: with ``center`` the K centers
    (turboquant.k.center), with ``precondition`` the K and V preconditioners (precondition.py);
    None: neither. ``exact_tokens``: turboquant.k.exact_tokens (0: none). ``window_tokens``:
    turboquant.window_tokens (0: none).
    Where it cannot give them, CalibrationError (one line).
    """
    hdr = read_model_header(src)
    shape = model_shape(hdr)
    with contextlib.ExitStack() as stack:
        out = dst if isinstance(dst, TempOutput) else stack.enter_context(TempOutput(dst))
        stats, where = None, "the statistics"
        if calibration is not None and calibration.stats is not None:  # refuse before any work
            try:
                stats = calibrate.read(calibration.stats)
            except calibrate.StatsError as e:
                raise CalibrationError(str(e)) from None
            where = f"the statistics in {calibration.stats}"
            k_centers_from(stats, shape, where)
        elif calibration is not None:
            with progress("calibrating (llama.cpp)", 1) as update:
                stats = _run_tool(src, calibration)
                update(1)
        centers = k_centers_from(stats, shape, where) if stats is not None and center else None
        with progress("choosing outlier channels", shape.n_layer) as update:
            meta = build_metadata(src, hdr, seed, types, update)
        meta.k_center = centers
        meta.k_exact_tokens = exact_tokens
        meta.window_tokens = window_tokens
        if stats is not None and (center or precondition):
            meta.calibration_positions = int(stats.positions)
        if stats is not None and precondition:
            with progress("preconditioners", 2) as update:
                meta.precond = preconditioners(src, hdr, shape, stats, where)
                for kind in meta.precond:
                    d = meta.head_dim[kind]
                    meta.outliers[kind] = pc.outlier_channels(shape.n_layer, shape.n_kv_head, d)
                meta.outlier_method = "precond"  # P's most energetic rows, for both kinds
                update(2)
        with progress("writing " + os.path.basename(out.dst), hdr.file_size - hdr.data_offset) as update:
            write_atomic(src, out, with_metadata(hdr, meta), hdr, update)


def preconditioners(src: str, hdr: Header, shape: ModelShape, stats: "calibrate.Stats",
                    where: str = "the statistics") -> dict:
    """K's and V's (P, P^-1) from the statistics and the model's output projections."""
    if stats.n_head != shape.n_head or stats.head_dim_v != shape.head_dim_v:
        raise CalibrationError(f"{where} are for {stats.n_head} query heads and V heads of {stats.head_dim_v}, "
                               f"the model has {shape.n_head} and {shape.head_dim_v}")
    reader = TensorReader(src, hdr)
    w_o = []
    for il in range(shape.n_layer):
        w = reader.get(f"blk.{il}.attn_output.weight")
        if w is None:
            raise CalibrationError(f"blk.{il}.attn_output.weight is missing: cannot weigh V by the output projection")
        w_o.append(w)
    try:
        k = pc.k_preconditioner(stats)
        v = pc.v_preconditioner(stats, w_o)
    except pc.PreconditionError as e:
        raise CalibrationError(f"{where}: {e}") from None
    return {"k": (k.p, k.p_inv), "v": (v.p, v.p_inv)}


def read_model_header(path: str) -> Header:
    try:
        return read_header(path)
    except GGUFError as e:
        raise PrepareError(str(e)) from None
