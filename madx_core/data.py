"""Data for MAD-X: CoNLL NER, SQuAD-format QA, plain text; label alignment, QA windows and span decoding, MLM masking.

The same loaders read the shared research data and a user's own files.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

# ----------------------------------------------------------------------------------------------------------
# Files


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary sibling and os.replace: readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_utf8(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise ValueError(f"{path.name} is a binary file, not UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path.name} is not UTF-8 text (byte {e.start})") from None


def read_text(path: str | Path) -> list[str]:
    """Unlabelled text: one sentence or paragraph per line; blank lines dropped."""
    return [line.strip() for line in _read_utf8(path).splitlines() if line.strip()]


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=1))


# ----------------------------------------------------------------------------------------------------------
# NER


@dataclass
class NerSentence:
    tokens: list[str]
    labels: list[str]


def read_conll(path: str | Path, label_map: dict[str, str] | None = None) -> list[NerSentence]:
    """CoNLL NER: `token ... label` per line (label = last column), blank line between sentences."""
    sentences, tokens, labels = [], [], []
    for n, line in enumerate(_read_utf8(path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("-DOCSTART-"):
            if tokens:
                sentences.append(NerSentence(tokens, labels))
                tokens, labels = [], []
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{Path(path).name} line {n}: expected 'token label', got {line[:40]!r}")
        label = parts[-1]
        if label != "O" and not re.fullmatch(r"[BIES]-.+", label):
            raise ValueError(f"{Path(path).name} line {n}: {label!r} is not an IOB2 label")
        tokens.append(parts[0])
        labels.append(label_map.get(label, label) if label_map else label)
    if tokens:
        sentences.append(NerSentence(tokens, labels))
    if not sentences:
        raise ValueError(f"{Path(path).name} holds no sentences")
    return sentences


def restrict_labels(sentences: list[NerSentence], keep: set[str]) -> list[NerSentence]:
    """Turn entity types outside `keep` into O (MasakhaNER's DATE has no counterpart in English CoNLL)."""
    return [
        NerSentence(s.tokens, [lab if lab == "O" or lab[2:] in keep else "O" for lab in s.labels]) for s in sentences
    ]


def label_list(sentences: list[NerSentence]) -> list[str]:
    """All labels in a stable order: O, then B-/I- pairs sorted by entity type."""
    types = sorted({lab[2:] for s in sentences for lab in s.labels if lab != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def encode_ner(
    tokenizer: PreTrainedTokenizerBase, sentences: list[NerSentence], label2id: dict[str, int], max_length: int = 128
) -> list[dict]:
    """Tokenise words; the first sub-token of each word carries its label, the rest -100 (ignored by the loss).

    A sentence longer than max_length sub-tokens is split into several windows on word boundaries, so no word is lost.
    """
    enc = tokenizer([s.tokens for s in sentences], is_split_into_words=True, add_special_tokens=False)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    budget = max_length - 2
    features = []
    for si, sentence in enumerate(sentences):
        ids, word_ids = enc["input_ids"][si], enc.word_ids(si)
        # Group sub-token positions by word, then pack whole words into windows.
        windows, start = [], 0
        while start < len(ids):
            end = min(start + budget, len(ids))
            if end < len(ids):  # back up to a word boundary unless one word alone is longer than the window
                while end > start and word_ids[end] == word_ids[end - 1]:
                    end -= 1
                if end == start:
                    end = min(start + budget, len(ids))
            windows.append((start, end))
            start = end
        for start, end in windows:
            wids = word_ids[start:end]
            labels = []
            for k, w in enumerate(wids):
                first = k + start == 0 or word_ids[k + start - 1] != w
                label = sentence.labels[w]
                labels.append(label2id.get(label, 0) if first else -100)
            features.append(
                {
                    "input_ids": [cls, *ids[start:end], sep],
                    "attention_mask": [1] * (end - start + 2),
                    "labels": [-100, *labels, -100],
                    "word_ids": [None, *wids, None],
                    "sentence": si,
                }
            )
    return features


def ner_word_predictions(
    features: list[dict], logits: list[torch.Tensor], id2label: dict[int, str], lengths: list[int]
) -> tuple[list[list[str]], list[list[float]]]:
    """A label and its probability for every word, read off its first sub-token. Words with no sub-token get O.

    `lengths` is the number of words of every sentence.
    """
    labels = [["O"] * n for n in lengths]
    probs = [[1.0] * n for n in lengths]
    for f, x in zip(features, logits, strict=True):
        p = torch.softmax(x.float(), dim=-1)
        best = p.argmax(-1).tolist()
        prev = None
        for pos, w in enumerate(f["word_ids"]):
            if w is not None and w != prev:
                labels[f["sentence"]][w] = id2label[best[pos]]
                probs[f["sentence"]][w] = float(p[pos, best[pos]])
            prev = w
    return labels, probs


def write_conll(path: str | Path, sentences_tokens: list[list[str]], predicted_labels: list[list[str]]) -> None:
    """Predictions as `token label` lines, a blank line between sentences (written atomically)."""
    blocks = [
        "\n".join(f"{t} {lab}" for t, lab in zip(toks, labs, strict=True))
        for toks, labs in zip(sentences_tokens, predicted_labels, strict=True)
    ]
    atomic_write_text(path, "\n\n".join(blocks) + "\n")


# Scripts written without spaces between words: each character is a "word" for free-text NER.
_NO_SPACE = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_NO_SPACE}]|[^\W{_NO_SPACE}]+(?:['’\-][^\W{_NO_SPACE}]+)*|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Free text -> (word, start, end) with character offsets.

    Letters and digits form words, punctuation marks stand alone, and in scripts without spaces (Chinese, Japanese,
    Thai, Burmese, Khmer, Lao) every character is a word. Control characters are skipped.
    """
    return [
        (m.group(), m.start(), m.end())
        for m in _WORD.finditer(text)
        if not unicodedata.category(m.group()[0]).startswith("C")
    ]


# ----------------------------------------------------------------------------------------------------------
# Extractive QA


@dataclass
class QAExample:
    id: str
    title: str
    context: str
    question: str
    answers: list[dict] = field(default_factory=list)  # [{"text": ..., "answer_start": ...}]
    article: int = 0  # index of the article in its file: XQuAD's files are parallel, so indices match


@dataclass
class QAPrediction:
    text: str
    score: float  # probability of the span under the window's start and end softmax
    start: int  # character offsets in the context; -1 when no answer
    end: int


def read_squad(path: str | Path) -> list[QAExample]:
    """SQuAD 1.1 JSON (XQuAD uses the same format)."""
    try:
        raw = json.loads(_read_utf8(path))
        examples = []
        for a, article in enumerate(raw["data"]):
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    examples.append(
                        QAExample(
                            str(qa["id"]),
                            article.get("title", ""),
                            para["context"],
                            qa["question"],
                            list(qa.get("answers", [])),
                            a,
                        )
                    )
    except json.JSONDecodeError as e:
        raise ValueError(f"{Path(path).name} is not valid JSON ({e})") from None
    except (KeyError, TypeError) as e:
        raise ValueError(f"{Path(path).name} is not SQuAD-format JSON (missing {e})") from None
    if not examples:
        raise ValueError(f"{Path(path).name} holds no questions")
    return examples


def split_by_article(examples: list[QAExample], eval_fraction: float = 0.5, seed: int = 0):
    """Split by article index (not by title: titles are translated), the same articles in every XQuAD language."""
    articles = sorted({e.article for e in examples})
    rng = random.Random(seed)
    shuffled = articles[:]
    rng.shuffle(shuffled)
    held_out = set(shuffled[: round(len(articles) * eval_fraction)])
    return [e for e in examples if e.article not in held_out], [e for e in examples if e.article in held_out]


def prepare_qa_features(
    tokenizer: PreTrainedTokenizerBase,
    examples: list[QAExample],
    max_length: int = 384,
    stride: int = 128,
    train: bool = True,
) -> list[dict]:
    """Question + context windows (only the context is cut, with `stride` tokens of overlap), keeping offsets.

    For training, each window's start/end positions are the answer's tokens, or 0 (the first token) when the answer
    is not inside that window.
    """
    # Very long questions are cut to half the window (like SQuAD's max_query_length), so context still fits.
    limit = max_length // 2
    questions = [e.question.strip() for e in examples]
    q_enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    questions = [
        q if len(ids) <= limit else q[: offs[limit - 1][1]]
        for q, ids, offs in zip(questions, q_enc["input_ids"], q_enc["offset_mapping"], strict=True)
    ]
    # The overlap must leave room for new context in every window.
    stride = min(stride, (max_length - limit) // 3)
    enc = tokenizer(
        questions,
        [e.context for e in examples],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    features = []
    for i, ids in enumerate(enc["input_ids"]):
        ex_index = enc["overflow_to_sample_mapping"][i]
        seq = enc.sequence_ids(i)
        context = examples[ex_index].context
        offsets = [_trim(context, o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq, strict=True)]
        feature = {
            "input_ids": ids,
            "attention_mask": enc["attention_mask"][i],
            "offset_mapping": offsets,
            "example_index": ex_index,
        }
        if train:
            feature["start_positions"], feature["end_positions"] = _answer_tokens(examples[ex_index], offsets)
        features.append(feature)
    return features


def _trim(text: str, offset: tuple[int, int]) -> tuple[int, int]:
    """SentencePiece pieces carry the space before a word ("▁word"); keep answer spans free of it."""
    a, b = offset
    while a < b and text[a].isspace():
        a += 1
    return a, b


def _answer_tokens(example: QAExample, offsets: list) -> tuple[int, int]:
    if not example.answers:
        return 0, 0
    start_char = example.answers[0]["answer_start"]
    end_char = start_char + len(example.answers[0]["text"])
    ctx = [k for k, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > start_char or offsets[ctx[-1]][1] < end_char:
        return 0, 0
    start = next(k for k in ctx if offsets[k][1] > start_char)
    end = next(k for k in reversed(ctx) if offsets[k][0] < end_char)
    return start, end


def decode_qa(
    examples: list[QAExample],
    features: list[dict],
    start_logits: list[torch.Tensor],
    end_logits: list[torch.Tensor],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, QAPrediction]:
    """The best context span of every example over all its windows (by start + end logit)."""
    best: dict[int, tuple[float, QAPrediction]] = {}
    for f, s_logits, e_logits in zip(features, start_logits, end_logits, strict=True):
        ex = examples[f["example_index"]]
        offsets = f["offset_mapping"]
        s_logp, e_logp = torch.log_softmax(s_logits.float(), -1), torch.log_softmax(e_logits.float(), -1)
        starts = torch.topk(s_logits, min(n_best, len(s_logits))).indices.tolist()
        ends = torch.topk(e_logits, min(n_best, len(e_logits))).indices.tolist()
        for s in starts:
            for e in ends:
                if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(s_logits[s] + e_logits[e])
                if f["example_index"] not in best or score > best[f["example_index"]][0]:
                    a, b = offsets[s][0], offsets[e][1]
                    prob = float(torch.exp(s_logp[s] + e_logp[e]))
                    best[f["example_index"]] = (score, QAPrediction(ex.context[a:b], prob, a, b))
    return {ex.id: best[i][1] if i in best else QAPrediction("", 0.0, -1, -1) for i, ex in enumerate(examples)}


# ----------------------------------------------------------------------------------------------------------
# Hub datasets: `hf:DATASET[:CONFIG][:SPLIT]` wherever a file is accepted, e.g. hf:unimelb-nlp/wikiann:sw:test


def is_hub_spec(source: str | Path) -> bool:
    return str(source).startswith("hf:")


def _hub_dataset(spec: str, default_split: str):
    """Download a Hub dataset split (only when the Hub is reachable; offline this fails at once, naming it)."""
    from .backbones import hub_reachable

    name, config, split = (spec[3:].split(":") + ["", ""])[:3]
    if not name:
        raise ValueError(f"{spec!r}: expected hf:DATASET[:CONFIG][:SPLIT]")
    if not hub_reachable():
        raise ConnectionError(f"dataset {name!r} needs the Hugging Face Hub, which cannot be reached (offline)")
    from datasets import load_dataset

    return load_dataset(name, config or None, split=split or default_split)


def ner_from_dataset(ds) -> list[NerSentence]:
    """NER sentences from a `datasets` table with `tokens` and ClassLabel tags (WikiANN, MasakhaNER, CoNLL)."""
    column = next((c for c in ("ner_tags", "tags", "labels") if c in ds.column_names), None)
    if "tokens" not in ds.column_names or column is None:
        raise ValueError(f"dataset has no tokens/ner_tags columns (columns: {', '.join(ds.column_names)})")
    names = ds.features[column].feature.names
    bad = [n for n in names if n != "O" and not re.fullmatch(r"[BIES]-.+", n)]
    if bad:
        raise ValueError(f"dataset labels {bad[:3]} are not IOB2")
    return [NerSentence(list(r["tokens"]), [names[t] for t in r[column]]) for r in ds if r["tokens"]]


def squad_from_dataset(ds) -> list[QAExample]:
    """QA examples from a SQuAD-format `datasets` table.

    Without titles (XQuAD on the Hub) each context counts as an article, numbered in order of appearance; XQuAD's
    languages stay parallel, so split_by_article still holds the same contexts out in every language.
    """
    key = "title" if "title" in ds.column_names else "context"
    articles: dict[str, int] = {}
    examples = []
    for r in ds:
        article = articles.setdefault(r[key], len(articles))
        spans = zip(r["answers"]["text"], r["answers"]["answer_start"], strict=True)
        answers = [{"text": t, "answer_start": s} for t, s in spans]
        examples.append(QAExample(str(r["id"]), r.get("title", ""), r["context"], r["question"], answers, article))
    return examples


def texts_from_dataset(ds) -> list[str]:
    """Lines of unlabelled text from a `datasets` table's `text` column."""
    if "text" not in ds.column_names:
        raise ValueError(f"dataset has no 'text' column (columns: {', '.join(ds.column_names)})")
    return [t.strip() for t in ds["text"] if t and t.strip()]


def load_ner(source: str | Path) -> list[NerSentence]:
    """A CoNLL file or `hf:DATASET[:CONFIG][:SPLIT]`."""
    return ner_from_dataset(_hub_dataset(source, "train")) if is_hub_spec(source) else read_conll(source)


def load_squad(source: str | Path) -> list[QAExample]:
    """A SQuAD JSON file or `hf:DATASET[:CONFIG][:SPLIT]`."""
    return squad_from_dataset(_hub_dataset(source, "train")) if is_hub_spec(source) else read_squad(source)


def load_texts(source: str | Path) -> list[str]:
    """A plain text file or `hf:DATASET[:CONFIG][:SPLIT]` with a `text` column."""
    return texts_from_dataset(_hub_dataset(source, "train")) if is_hub_spec(source) else read_text(source)


# ----------------------------------------------------------------------------------------------------------
# Batches


def pad_batch(
    features: list[dict], pad_id: int, keys: tuple[str, ...], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Pad a list of tokenised features to the longest one (dynamic padding keeps short NER batches cheap)."""
    length = max(len(f["input_ids"]) for f in features)
    batch = {}
    for key in keys:
        fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}.get(key, 0)
        if isinstance(features[0][key], int):
            batch[key] = torch.tensor([f[key] for f in features])
        else:
            batch[key] = torch.tensor([list(f[key]) + [fill] * (length - len(f[key])) for f in features])
    return {k: v.to(device) for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------------------
# Masked language modelling


def mask_tokens(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose 15% of the tokens; of those 80% -> <mask>, 10% -> random token, 10% unchanged.

    labels are -100 except at the chosen positions; every row gets at least one (if it has a maskable token).
    """
    special = special_tokens_mask.bool()
    probs = torch.full(input_ids.shape, mlm_probability)
    chosen = torch.bernoulli(probs, generator=generator).bool() & ~special
    # Rows where nothing was drawn: take one random maskable position, so every example teaches something.
    empty = ~chosen.any(dim=1) & (~special).any(dim=1)
    if empty.any():
        scores = torch.rand(input_ids.shape, generator=generator).masked_fill(special, -1.0)
        pick = scores.argmax(dim=1)
        chosen[empty, pick[empty]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    inputs = input_ids.clone()
    to_mask = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & chosen
    inputs[to_mask] = mask_token_id
    to_random = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool() & chosen & ~to_mask
    inputs[to_random] = torch.randint(vocab_size, input_ids.shape, generator=generator)[to_random]
    return inputs, labels
