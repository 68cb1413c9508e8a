"""A streaming GGUF (v2/v3) header reader and writer.

Only the header is parsed; tensor data is never loaded. Every key/value pair and
every tensor-info record keeps its raw bytes, so a rewritten file repeats all it
did not change to the byte, and the data section can be copied verbatim (tensor
offsets are relative to it). Every length is checked against the file size, so a
truncated or corrupt file raises GGUFError with one line, never a MemoryError.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"

_SCALAR = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_NUMPY = {t: np.dtype(f) for t, f in _SCALAR.items()}


class GGUFError(Exception):
    """A file that is not a readable GGUF; the message is one line for the user."""


@dataclass
class KV:
    key: str
    type: GGUFValueType
    value: Any  # python scalar, str, or for arrays a list / numpy array
    elem_type: GGUFValueType | None = None
    raw: bytes = b""  # the whole record as it stands in the file (key included)


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: int
    offset: int
    raw: bytes = b""

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(self.type)]
        n = int(np.prod(self.shape, dtype=np.int64))
        return n // block * size


@dataclass
class Header:
    version: int
    kvs: list[KV] = field(default_factory=list)
    tensors: list[TensorInfo] = field(default_factory=list)
    alignment: int = DEFAULT_ALIGNMENT
    data_offset: int = 0
    file_size: int = 0

    def get(self, key: str, default=None):
        for kv in self.kvs:
            if kv.key == key:
                return kv.value
        return default

    def tensor(self, name: str) -> TensorInfo | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None


class _Cursor:
    """Bounded reads from a file: every length is checked against what is left."""

    def __init__(self, f: BinaryIO, size: int, path: str):
        self.f, self.size, self.path = f, size, path

    def read(self, n: int) -> bytes:
        if n < 0 or self.f.tell() + n > self.size:
            raise GGUFError(f"{self.path}: truncated or corrupt GGUF header (needs {n} bytes at offset {self.f.tell()})")
        return self.f.read(n)

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> tuple[str, bytes]:
        n_raw = self.read(8)
        raw = self.read(struct.unpack("<Q", n_raw)[0])
        try:
            return raw.decode("utf-8"), n_raw + raw
        except UnicodeDecodeError:
            raise GGUFError(f"{self.path}: a GGUF string is not valid UTF-8") from None


def _value_type(cur: _Cursor, code: int) -> GGUFValueType:
    try:
        return GGUFValueType(code)
    except ValueError:
        raise GGUFError(f"{cur.path}: unknown GGUF value type {code}") from None


def _read_value(cur: _Cursor, vtype: GGUFValueType):
    if vtype == GGUFValueType.STRING:
        return cur.string()[0], None
    if vtype == GGUFValueType.ARRAY:
        etype = _value_type(cur, cur.unpack("<I"))
        count = cur.unpack("<Q")
        if etype in _NUMPY:
            arr = np.frombuffer(cur.read(count * _NUMPY[etype].itemsize), dtype=_NUMPY[etype])
            return arr, etype
        if count > cur.size:  # each element takes at least one byte
            raise GGUFError(f"{cur.path}: array of {count} elements cannot fit in the file")
        return [_read_value(cur, etype)[0] for _ in range(count)], etype
    return cur.unpack(_SCALAR[vtype]), None


def read_header(path: str | os.PathLike) -> Header:
    """Parse the header of a GGUF file; raise GGUFError with one line if it is not one."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as e:
        raise GGUFError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        cur = _Cursor(f, size, path)
        if size < 24 or cur.read(4) != MAGIC:
            raise GGUFError(f"{path}: not a GGUF file (bad magic)")
        version = cur.unpack("<I")
        if version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {version} is not supported (2 or 3 are)")
        n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
        if n_tensors > size or n_kv > size:
            raise GGUFError(f"{path}: truncated or corrupt GGUF header (absurd counts)")
        hdr = Header(version=version, file_size=size)
        for _ in range(n_kv):
            start = f.tell()
            key, _ = cur.string()
            vtype = _value_type(cur, cur.unpack("<I"))
            value, etype = _read_value(cur, vtype)
            end = f.tell()
            f.seek(start)
            hdr.kvs.append(KV(key, vtype, value, etype, f.read(end - start)))
        for _ in range(n_tensors):
            start = f.tell()
            name, _ = cur.string()
            n_dims = cur.unpack("<I")
            if n_dims > 8:
                raise GGUFError(f"{path}: tensor {name!r} has {n_dims} dimensions")
            shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
            ttype, offset = cur.unpack("<I"), cur.unpack("<Q")
            end = f.tell()
            f.seek(start)
            hdr.tensors.append(TensorInfo(name, shape, ttype, offset, f.read(end - start)))
        align = hdr.get(ALIGNMENT_KEY, DEFAULT_ALIGNMENT)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise GGUFError(f"{path}: general.alignment {align!r} is not a power of two")
        hdr.alignment = align
        hdr.data_offset = _align(f.tell(), align)
    for t in hdr.tensors:
        try:
            nbytes = t.nbytes
        except (ValueError, KeyError):
            raise GGUFError(f"{path}: tensor {t.name!r} has unknown type {t.type}") from None
        if hdr.data_offset + t.offset + nbytes > size:
            raise GGUFError(f"{path}: truncated GGUF: tensor {t.name!r} ends past the end of the file "
                            f"({hdr.data_offset + t.offset + nbytes} > {size} bytes)")
    return hdr


class TensorReader:
    """A GGUF's tensors as float32 arrays [rows, row length], read through a memory map and
    dequantized (gguf-py) on each call; nothing is kept."""

    def __init__(self, path: str | os.PathLike, header: Header):
        self.path, self.header = os.fspath(path), header

    def raw(self, name: str) -> np.ndarray | None:
        """The bytes of tensor ``name`` as they stand in the file (a read-only memory map)."""
        t = self.header.tensor(name)
        if t is None:
            return None
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.header.data_offset + t.offset, shape=(t.nbytes,))

    def get(self, name: str) -> np.ndarray | None:
        t = self.header.tensor(name)
        if t is None:
            return None
        from gguf.quants import dequantize

        raw = self.raw(name)
        rows = int(np.prod(t.shape[1:], dtype=np.int64)) or 1
        try:
            data = dequantize(raw.reshape(rows, t.nbytes // rows), GGMLQuantizationType(t.type))
        except NotImplementedError:
            raise GGUFError(f"{self.path}: cannot read tensor {name!r} of type "
                            f"{GGMLQuantizationType(t.type).name}") from None
        return np.asarray(data, dtype=np.float32).reshape(rows, -1)


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


# ---- writing ------------------------------------------------------------------------

def _encode_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def encode_kv(key: str, vtype: GGUFValueType, value, elem_type: GGUFValueType | None = None) -> bytes:
    """The raw bytes of one key/value record."""
    out = io.BytesIO()
    out.write(_encode_string(key))
    out.write(struct.pack("<I", vtype))
    _encode_value(out, vtype, value, elem_type)
    return out.getvalue()


def _encode_value(out: BinaryIO, vtype, value, elem_type) -> None:
    if vtype == GGUFValueType.STRING:
        out.write(_encode_string(value))
    elif vtype == GGUFValueType.ARRAY:
        out.write(struct.pack("<IQ", elem_type, len(value)))
        if elem_type in _NUMPY:
            out.write(np.ascontiguousarray(value, dtype=_NUMPY[elem_type]).tobytes())
        else:
            for v in value:
                _encode_value(out, elem_type, v, None)
    else:
        out.write(struct.pack(_SCALAR[vtype], value))


def make_kv(key: str, vtype: GGUFValueType, value, elem_type: GGUFValueType | None = None) -> KV:
    return KV(key, vtype, value, elem_type, encode_kv(key, vtype, value, elem_type))


def header_bytes(hdr: Header) -> bytes:
    """The header of ``hdr`` (raw records as they are), padded to the data alignment."""
    out = io.BytesIO()
    out.write(MAGIC)
    out.write(struct.pack("<IQQ", hdr.version, len(hdr.tensors), len(hdr.kvs)))
    for kv in hdr.kvs:
        out.write(kv.raw)
    for t in hdr.tensors:
        out.write(t.raw)
    n = out.tell()
    out.write(b"\0" * (_align(n, hdr.alignment) - n))
    return out.getvalue()
