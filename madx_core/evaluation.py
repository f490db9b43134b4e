"""Inference and evaluation: NER on words or free text, extractive QA, and their scores.

Zero-shot transfer is only a different `adapters=` argument: evaluate Stack(target_lang, task) with the task adapter
that was trained on Stack(source_lang, task).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from . import data as D
from . import features as F
from . import metrics as M
from .adapters import Stack
from .model import AdapterModel


@torch.no_grad()
def feature_logits(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    features: list[dict],
    adapters: Stack | None,
    head: str,
    batch_size: int = 32,
) -> list[torch.Tensor]:
    """Logits per feature, unpadded. Features are batched in length order so that padding stays small."""
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    out: list[torch.Tensor | None] = [None] * len(features)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        keys = ("input_ids", "attention_mask")
        b = F.pad_batch([features[i] for i in idx], tokenizer.pad_token_id, keys, model.device)
        logits = model(b["input_ids"], b["attention_mask"], adapters=adapters, head=head).logits.float().cpu()
        for row, i in enumerate(idx):
            out[i] = logits[row, : len(features[i]["input_ids"])]
    return out


def resolve_head(model: AdapterModel, adapters: Stack | None, head: str | None) -> str:
    head = head or (adapters.last() if adapters is not None else None)
    if head is None or head not in model.heads:
        loaded = ", ".join(sorted(model.heads)) or "none"
        raise ValueError(f"no task head {head!r} to run; loaded heads: {loaded}")
    return head


# ----------------------------------------------------------------------------------------------------------
# NER


def predict_ner(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: list[list[str]],
    adapters: Stack | str | None = None,
    head: str | None = None,
    max_length: int = 128,
    batch_size: int = 32,
) -> tuple[list[list[str]], list[list[float]]]:
    """A label and its probability for every word of every pre-split sentence."""
    stack = Stack.of(adapters)
    head = resolve_head(model, stack, head)
    id2label = model.heads[head].config.id2label
    dummy = [D.NerSentence(tokens=s, labels=["O"] * len(s)) for s in sentences]
    features = F.encode_ner(tokenizer, dummy, {"O": 0}, max_length=min(max_length, model.max_tokens))
    logits = feature_logits(model, tokenizer, features, stack, head, batch_size)
    return F.ner_word_predictions(features, logits, id2label, [len(s) for s in sentences])


def evaluate_ner(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: list[D.NerSentence],
    adapters: Stack | str | None = None,
    head: str | None = None,
    batch_size: int = 32,
) -> tuple[dict, list[list[str]]]:
    """seqeval entity-level scores on labelled sentences, and the predicted labels."""
    if not sentences:
        raise ValueError("no NER sentences to evaluate")
    predicted, _ = predict_ner(model, tokenizer, [s.tokens for s in sentences], adapters, head, batch_size=batch_size)
    scores = M.ner_scores([s.labels for s in sentences], predicted)
    scores["examples"] = len(sentences)
    return scores, predicted


@dataclass
class Entity:
    text: str
    label: str
    start: int  # character offsets in the input text
    end: int
    score: float


def tag_text(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    adapters: Stack | str | None = None,
    head: str | None = None,
) -> list[Entity]:
    """NER on free text: split into words, tag (long texts are windowed, never cut), group B-/I- tags into entities."""
    words = D.split_words(text)
    if not words:
        return []
    labels, probs = predict_ner(model, tokenizer, [[w for w, _, _ in words]], adapters, head)
    entities: list[Entity] = []
    current: list[int] = []

    def close() -> None:
        if current:
            first, last = words[current[0]], words[current[-1]]
            label = labels[0][current[0]][2:]
            score = sum(probs[0][i] for i in current) / len(current)
            entities.append(Entity(text[first[1] : last[2]], label, first[1], last[2], float(score)))
            current.clear()

    for i, tag in enumerate(labels[0]):
        if tag.startswith("B-") or (tag.startswith("I-") and (not current or labels[0][current[0]][2:] != tag[2:])):
            close()
            current.append(i)
        elif tag.startswith("I-"):
            current.append(i)
        else:
            close()
    close()
    return entities


# ----------------------------------------------------------------------------------------------------------
# Extractive QA


def predict_qa(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[D.QAExample],
    adapters: Stack | str | None = None,
    head: str | None = None,
    max_length: int = 384,
    stride: int = 128,
    batch_size: int = 16,
) -> dict:
    """The best answer span for every example, over all windows of its context."""
    stack = Stack.of(adapters)
    head = resolve_head(model, stack, head)
    max_length = min(max_length, model.max_tokens)
    features = F.prepare_qa_features(tokenizer, examples, max_length=max_length, stride=stride, train=False)
    logits = feature_logits(model, tokenizer, features, stack, head, batch_size)
    starts = [x[:, 0] for x in logits]
    ends = [x[:, 1] for x in logits]
    return F.decode_qa(examples, features, starts, ends)


def evaluate_qa(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[D.QAExample],
    adapters: Stack | str | None = None,
    head: str | None = None,
    lang: str | None = None,
) -> tuple[dict, dict[str, str]]:
    """SQuAD exact match and F1 (percent), and the predicted answer texts by question id."""
    if not examples:
        raise ValueError("no QA examples to evaluate")
    predictions = predict_qa(model, tokenizer, examples, adapters, head)
    answers = {qid: p.text for qid, p in predictions.items()}
    scores = M.squad_scores(answers, examples, lang=lang)
    scores["examples"] = len(examples)
    return scores, answers


def answer_question(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    context: str,
    adapters: Stack | str | None = None,
    head: str | None = None,
):
    """Answer one question about one context (any length: the context is windowed)."""
    if not question.strip() or not context.strip():
        raise ValueError("both a question and a context are needed")
    example = D.QAExample(id="q", title="", context=context, question=question, answers=[])
    return predict_qa(model, tokenizer, [example], adapters, head)["q"]
