"""Model inputs and outputs: NER label alignment, QA windows and span decoding, padding, MLM masking.

Examples (data.NerSentence, data.QAExample) become lists of token ids with what the loss needs; logits become words'
labels or answer spans again.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from .data import NerSentence, QAExample, QAPrediction

# ----------------------------------------------------------------------------------------------------------
# NER


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


# ----------------------------------------------------------------------------------------------------------
# Extractive QA


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
# Batches and masked language modelling


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
