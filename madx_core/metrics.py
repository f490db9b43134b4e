"""Scores: seqeval entity-level F1 for NER, SQuAD exact match / F1 for extractive QA."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score


def ner_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level precision, recall, F1 (seqeval's default, CoNLL-style matching of IOB2 chunks) and F1 per type."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred, strict=True)):
        raise ValueError("gold and predicted label sequences differ in length")
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    per_type = {k: round(v["f1-score"], 4) for k, v in report.items() if not k.endswith("avg")}
    return {
        "precision": precision_score(gold, pred, zero_division=0),
        "recall": recall_score(gold, pred, zero_division=0),
        "f1": f1_score(gold, pred, zero_division=0),
        "per_type_f1": per_type,
    }


# SQuAD v1.1's official normalisation (lower case, no punctuation, no English articles, single spaces), extended
# as in MLQA: Unicode punctuation is removed too, and for Chinese/Japanese every CJK character is its own token.
_PUNCT = set(string.punctuation)
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def normalize_answer(text: str, lang: str | None = None) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT and not unicodedata.category(ch).startswith("P"))
    if lang in (None, "en"):
        text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _tokens(text: str, lang: str | None) -> list[str]:
    normal = normalize_answer(text, lang)
    if lang in ("zh", "ja"):
        normal = _CJK.sub(r" \1 ", normal)
    return normal.split()


def _f1(prediction: str, gold: str, lang: str | None) -> float:
    p, g = _tokens(prediction, lang), _tokens(gold, lang)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], examples: list, lang: str | None = None) -> dict:
    """Exact match and F1 in percent, each the max over the gold answers, averaged over questions."""
    em = f1 = 0.0
    for ex in examples:
        golds = [a["text"] for a in ex.answers] or [""]
        pred = predictions.get(ex.id, "")
        em += max(float(normalize_answer(pred, lang) == normalize_answer(g, lang)) for g in golds)
        f1 += max(_f1(pred, g, lang) for g in golds)
    n = max(1, len(examples))
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}
