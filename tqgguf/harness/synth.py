"""Random-weight llama-architecture GGUFs of any shape, written tensor by tensor.

For tests (small models with planted outlier channels, odd head sizes, big files)
and for speed work (an 8B-shaped model built on the GPU machine, where real models
cannot travel). Memory stays flat: each tensor is generated, written and dropped.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as QT, GGUFValueType as VT

from ..gguf_file import Header, TensorInfo, _align, _encode_string, header_bytes, make_kv


@dataclass
class Shape:
    n_layer: int = 2
    n_embd: int = 256
    n_head: int = 4
    n_kv_head: int = 2
    head_dim: int = 64
    n_ff: int = 512
    n_vocab: int = 256
    n_ctx_train: int = 4096
    weight_type: str = "F16"  # F32, F16 or Q4_0
    # channels (per KV head, per layer) whose K/V rows get this gain: known outliers for tests
    planted: dict[str, list[int]] = field(default_factory=dict)
    planted_gain: float = 8.0


def _tensor_info(name: str, shape: tuple[int, ...], qtype: QT, offset: int) -> TensorInfo:
    raw = _encode_string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
    raw += struct.pack("<IQ", qtype, offset)
    return TensorInfo(name, shape, int(qtype), offset, raw)


def _tensors(s: Shape):
    """(name, ggml shape (ne0 first), kind) of every tensor, in file order."""
    dq, dkv = s.n_head * s.head_dim, s.n_kv_head * s.head_dim
    yield "token_embd.weight", (s.n_embd, s.n_vocab), "w"
    for l in range(s.n_layer):
        p = f"blk.{l}."
        yield p + "attn_norm.weight", (s.n_embd,), "norm"
        yield p + "attn_q.weight", (s.n_embd, dq), "w"
        yield p + "attn_k.weight", (s.n_embd, dkv), "k"
        yield p + "attn_v.weight", (s.n_embd, dkv), "v"
        yield p + "attn_output.weight", (dq, s.n_embd), "w"
        yield p + "ffn_norm.weight", (s.n_embd,), "norm"
        yield p + "ffn_gate.weight", (s.n_embd, s.n_ff), "w"
        yield p + "ffn_up.weight", (s.n_embd, s.n_ff), "w"
        yield p + "ffn_down.weight", (s.n_ff, s.n_embd), "w"
    yield "output_norm.weight", (s.n_embd,), "norm"
    yield "output.weight", (s.n_embd, s.n_vocab), "w"


def _data(s: Shape, shape, kind: str, qtype: QT, rng: np.random.Generator) -> bytes:
    if kind == "norm":
        return np.ones(shape, dtype=np.float32).tobytes()
    rows, cols = int(np.prod(shape[1:])), shape[0]
    if qtype == QT.Q4_0:
        # random nibbles with a fixed small f16 scale: valid blocks, cheap to make
        block, size = GGML_QUANT_SIZES[QT.Q4_0]
        n_blocks = rows * cols // block
        b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
        b[:, :2] = np.frombuffer(np.float16(0.5 / np.sqrt(cols)).tobytes(), dtype=np.uint8)
        return b.tobytes()
    w = rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)
    if kind in s.planted:
        for h in range(s.n_kv_head):
            for c in s.planted[kind]:
                w[h * s.head_dim + c] *= s.planted_gain
    return w.astype(np.float16 if qtype == QT.F16 else np.float32).tobytes()


def _vocab(n: int) -> list[str]:
    """Placeholder tokens, except single printable characters and GPT-2's space and newline
    (Ġ, Ċ) from id 3 on: enough for `tqgguf prepare` to tokenize a calibration text."""
    tokens = [f"<t{i}>" for i in range(n)]
    chars = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]
    tokens[3:3 + len(chars)] = chars[:max(0, n - 3)]
    return tokens[:n]


def write(path: str | os.PathLike, s: Shape, seed: int = 0, arch: str = "llama") -> None:
    """Write a random llama-architecture model of shape ``s`` to ``path``."""
    rng = np.random.default_rng(seed)
    wtype = QT[s.weight_type]
    kvs = [
        make_kv("general.architecture", VT.STRING, arch),
        make_kv("general.name", VT.STRING, "tqgguf synthetic"),
        make_kv(f"{arch}.block_count", VT.UINT32, s.n_layer),
        make_kv(f"{arch}.context_length", VT.UINT32, s.n_ctx_train),
        make_kv(f"{arch}.embedding_length", VT.UINT32, s.n_embd),
        make_kv(f"{arch}.feed_forward_length", VT.UINT32, s.n_ff),
        make_kv(f"{arch}.attention.head_count", VT.UINT32, s.n_head),
        make_kv(f"{arch}.attention.head_count_kv", VT.UINT32, s.n_kv_head),
        make_kv(f"{arch}.attention.key_length", VT.UINT32, s.head_dim),
        make_kv(f"{arch}.attention.value_length", VT.UINT32, s.head_dim),
        make_kv(f"{arch}.rope.dimension_count", VT.UINT32, s.head_dim),
        make_kv(f"{arch}.attention.layer_norm_rms_epsilon", VT.FLOAT32, 1e-5),
        make_kv(f"{arch}.vocab_size", VT.UINT32, s.n_vocab),
        make_kv("tokenizer.ggml.model", VT.STRING, "llama"),
        make_kv("tokenizer.ggml.tokens", VT.ARRAY, _vocab(s.n_vocab), VT.STRING),
        make_kv("tokenizer.ggml.scores", VT.ARRAY, np.zeros(s.n_vocab, dtype=np.float32), VT.FLOAT32),
        make_kv("tokenizer.ggml.token_type", VT.ARRAY, np.full(s.n_vocab, 1, dtype=np.int32), VT.INT32),
        make_kv("tokenizer.ggml.bos_token_id", VT.UINT32, 1),
        make_kv("tokenizer.ggml.eos_token_id", VT.UINT32, 2),
    ]
    infos, offset = [], 0
    specs = list(_tensors(s))
    for name, shape, kind in specs:
        qtype = QT.F32 if kind == "norm" else wtype
        t = _tensor_info(name, shape, qtype, offset)
        infos.append(t)
        offset = _align(offset + t.nbytes, 32)
    hdr = Header(version=3, kvs=kvs, tensors=infos, alignment=32)
    tmp = f"{path}.part"
    with open(tmp, "wb") as f:
        head = header_bytes(hdr)
        f.write(head)
        for (name, shape, kind), t in zip(specs, infos):
            f.seek(len(head) + t.offset)
            f.write(_data(s, shape, kind, QT(t.type), rng))
        f.truncate(len(head) + offset)
    os.replace(tmp, path)
