"""Data for MAD-X: CoNLL NER, SQuAD-format QA and plain text, from files or `hf:` Hub datasets.

The same loaders read the shared research data and a user's own files. Turning examples into model inputs (label
alignment, QA windows, padding, MLM masking) and logits back into predictions is in features.py.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_write_text

# ----------------------------------------------------------------------------------------------------------
# Files


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
