"""Random-weight GGUFs of any shape that llama.cpp loads, written tensor by tensor.

For tests (small models with planted outlier channels, odd head sizes, big files, and one of
each architecture in ARCHS for calibration through llama.cpp) and for speed work (an 8B-shaped
model built on the GPU machine, where real models cannot travel). Memory stays flat: each
tensor is generated, written and dropped. The vocabulary is a SentencePiece one (llama.cpp's
"llama" tokenizer) of single characters with byte fallback, so any text tokenizes.
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
    n_vocab: int = 384  # >= 354: specials, 256 byte tokens, the space and printable ASCII
    n_ctx_train: int = 4096
    weight_type: str = "F16"  # F32, F16 or Q4_0
    # channels (per KV head, per layer) whose K/V rows get this gain: known outliers for tests
    planted: dict[str, list[int]] = field(default_factory=dict)
    planted_gain: float = 8.0


def _tensor_info(name: str, shape: tuple[int, ...], qtype: QT, offset: int) -> TensorInfo:
    raw = _encode_string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
    raw += struct.pack("<IQ", qtype, offset)
    return TensorInfo(name, shape, int(qtype), offset, raw)


# architectures write() knows, and what each adds to llama's tensors (llama.cpp's loaders, src/models/)
ARCHS = ("llama", "qwen2", "qwen3", "gemma3", "phi3")


def _tensors(s: Shape, arch: str = "llama"):
    """(name, ggml shape (ne0 first), kind) of every tensor of ``arch``, in file order."""
    dq, dkv = s.n_head * s.head_dim, s.n_kv_head * s.head_dim
    yield "token_embd.weight", (s.n_embd, s.n_vocab), "w"
    for l in range(s.n_layer):
        p = f"blk.{l}."
        yield p + "attn_norm.weight", (s.n_embd,), "norm"
        if arch == "phi3":  # fused Q, K, V
            yield p + "attn_qkv.weight", (s.n_embd, dq + 2 * dkv), "qkv"
        else:
            yield p + "attn_q.weight", (s.n_embd, dq), "w"
            yield p + "attn_k.weight", (s.n_embd, dkv), "k"
            yield p + "attn_v.weight", (s.n_embd, dkv), "v"
        if arch == "qwen2":  # Q, K and V biases (Qwen2's large K bias is the hard case for K centering)
            yield p + "attn_q.bias", (dq,), "bias"
            yield p + "attn_k.bias", (dkv,), "k_bias"
            yield p + "attn_v.bias", (dkv,), "bias"
        if arch in ("qwen3", "gemma3"):  # per-head Q and K norms
            yield p + "attn_q_norm.weight", (s.head_dim,), "norm"
            yield p + "attn_k_norm.weight", (s.head_dim,), "norm"
        yield p + "attn_output.weight", (dq, s.n_embd), "w"
        if arch == "gemma3":
            yield p + "post_attention_norm.weight", (s.n_embd,), "norm"
        yield p + "ffn_norm.weight", (s.n_embd,), "norm"
        if arch == "phi3":  # fused gate and up
            yield p + "ffn_up.weight", (s.n_embd, 2 * s.n_ff), "w"
        else:
            yield p + "ffn_gate.weight", (s.n_embd, s.n_ff), "w"
            yield p + "ffn_up.weight", (s.n_embd, s.n_ff), "w"
        yield p + "ffn_down.weight", (s.n_ff, s.n_embd), "w"
        if arch == "gemma3":
            yield p + "post_ffw_norm.weight", (s.n_embd,), "norm"
    yield "output_norm.weight", (s.n_embd,), "norm"
    if arch != "gemma3":  # gemma3 ties its output to the embeddings
        yield "output.weight", (s.n_embd, s.n_vocab), "w"


def _data(s: Shape, shape, kind: str, qtype: QT, rng: np.random.Generator) -> bytes:
    if kind == "norm":
        return np.ones(shape, dtype=np.float32).tobytes()
    if kind in ("bias", "k_bias"):
        scale = 2.0 if kind == "k_bias" else 0.1
        return (rng.standard_normal(shape, dtype=np.float32) * scale).tobytes()
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


def _vocab(n: int) -> tuple[list[str], list[int]]:
    """A SentencePiece vocabulary llama.cpp accepts: <unk>, <s>, </s>, the 256 byte tokens
    <0x00>..<0xFF> (byte fallback: any text tokenizes), the space piece and printable ASCII, then
    placeholders. Tokens and their types (1 normal, 2 unknown, 3 control, 6 byte)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581"] + \
        [chr(c) for c in range(33, 127)]
    types = [2, 3, 3] + [6] * 256 + [1] * 95
    if n < len(tokens):
        raise ValueError(f"a synthetic model needs n_vocab >= {len(tokens)}, not {n}")
    tokens += [f"<t{i}>" for i in range(len(tokens), n)]
    types += [1] * (n - len(types))
    return tokens, types


def _arch_kvs(s: Shape, arch: str) -> list:
    if arch == "gemma3":  # sliding windows of 64 tokens on every other layer, from layer 0
        return [make_kv("gemma3.attention.sliding_window", VT.UINT32, 64),
                make_kv("gemma3.attention.sliding_window_pattern", VT.UINT32, 2)]
    if arch in ("qwen2", "qwen3"):
        return [make_kv(f"{arch}.rope.freq_base", VT.FLOAT32, 1e6)]
    return []


def write(path: str | os.PathLike, s: Shape, seed: int = 0, arch: str = "llama") -> None:
    """Write a random model of architecture ``arch`` (one of ARCHS; another name gets llama's
    tensors under that name) and shape ``s`` to ``path``."""
    rng = np.random.default_rng(seed)
    wtype = QT[s.weight_type]
    tokens, types = _vocab(s.n_vocab)
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
        make_kv("tokenizer.ggml.tokens", VT.ARRAY, tokens, VT.STRING),
        make_kv("tokenizer.ggml.scores", VT.ARRAY, np.zeros(s.n_vocab, dtype=np.float32), VT.FLOAT32),
        make_kv("tokenizer.ggml.token_type", VT.ARRAY, np.array(types, dtype=np.int32), VT.INT32),
        make_kv("tokenizer.ggml.bos_token_id", VT.UINT32, 1),
        make_kv("tokenizer.ggml.eos_token_id", VT.UINT32, 2),
        make_kv("tokenizer.ggml.unknown_token_id", VT.UINT32, 0),
    ] + _arch_kvs(s, arch)
    infos, offset = [], 0
    specs = list(_tensors(s, arch))
    for name, shape, kind in specs:
        qtype = QT.F32 if kind in ("norm", "bias", "k_bias") else wtype
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
