"""Language adapters: masked language modelling on unlabelled text (and MLM-TRG's full MLM fine-tuning).

A MAD-X language adapter is trained on Stack(lang) with the backbone and its MLM head frozen; the loss is computed
only at the masked positions. Text is a list of lines, or a TextStream that reads files lazily (beyond memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from .adapters import AdapterConfig, Stack
from .features import mask_tokens, pad_batch
from .model import MLM_HEAD, AdapterModel
from .training import (
    LANGUAGE_ADAPTER,
    LANGUAGE_ADAPTER_SHAPE,
    MLM_FULL,
    Progress,
    TrainConfig,
    TrainResult,
    epoch_batches,
    run_training,
    seed_everything,
    train_adapter,
)


def mlm_features(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[dict]:
    """Tokenise lines; long lines are cut into several max_length pieces rather than truncated away."""
    enc = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        return_overflowing_tokens=True,
        stride=0,
        return_special_tokens_mask=True,
    )
    return [
        {"input_ids": ids, "special_tokens_mask": special}
        for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True)
        if len(ids) > 2
    ]


def pack_features(features: list[dict], max_length: int) -> list[dict]:
    """Neighbouring lines concatenated, whole, into rows of at most max_length tokens (RoBERTa's FULL-SENTENCES).

    Fewer, fuller rows: a batch of short lines then costs a full row's step and carries several lines each. Attention
    crosses the lines of a row, which changes the objective a little. Measured against length-grouped unpacked rows
    (bench.precision_loss, Swahili, bf16): the same tokens per second (1,314 against 1,328: a step's cost grows with
    its tokens, and grouping already leaves little padding), and at as many tokens, 40 steps instead of 100, a
    held-out loss 0.46 higher. So only that benchmark uses it.
    """
    rows: list[dict] = []
    ids: list[int] = []
    special: list[int] = []
    for feature in features:
        if ids and len(ids) + len(feature["input_ids"]) > max_length:
            rows.append({"input_ids": ids, "special_tokens_mask": special})
            ids, special = [], []
        ids += feature["input_ids"]
        special += feature["special_tokens_mask"]
    if ids:
        rows.append({"input_ids": ids, "special_tokens_mask": special})
    return rows


class TextStream:
    """Unlabelled text read and tokenised lazily from local files, for corpora larger than memory.

    Lines are read `buffer_lines` at a time (files in order, then again from the start), tokenised, shuffled and
    length-grouped within that buffer by a seeded generator, and handed out a batch at a time; only one buffer is ever
    in memory. Its position (file, byte offset, the generator before the buffer's shuffle, batches taken) is small,
    so a checkpoint resumes in the middle of a pass.
    """

    def __init__(self, paths: list[str | Path], buffer_lines: int = 10_000, seed: int = 0) -> None:
        self.paths = [Path(p) for p in paths]
        for path in self.paths:
            if not path.is_file():
                raise FileNotFoundError(f"file not found: {path}")
        self.buffer_lines, self.seed = buffer_lines, seed
        self.tokenizer, self.max_length, self.group = None, 128, True
        self.generator = torch.Generator().manual_seed(seed + 3)
        self.position = (0, 0)  # (file index, byte offset) of the next unread line
        self.start, self.start_generator, self.taken, self.passes = (0, 0), self.generator.get_state(), 0, 0
        self.batches: list[list[dict]] = []
        self._batch_size = 1
        self.most_lines_held = 0  # the largest buffer so far, in lines (never more than buffer_lines)

    def bind(self, tokenizer, max_length: int, group: bool) -> TextStream:
        self.tokenizer, self.max_length, self.group = tokenizer, max_length, group
        return self

    def fingerprint(self) -> list:
        """What a checkpoint must agree on: the files, by name and size."""
        return [[p.name, p.stat().st_size] for p in self.paths]

    def _read_lines(self) -> list[str]:
        """Up to buffer_lines non-blank lines from the current position; stops at the end of the last file."""
        lines: list[str] = []
        index, offset = self.position
        while index < len(self.paths) and len(lines) < self.buffer_lines:
            with self.paths[index].open("rb") as f:
                f.seek(offset)
                while len(lines) < self.buffer_lines:
                    raw = f.readline()
                    if not raw:
                        break
                    text = raw.decode("utf-8")
                    text = (text.lstrip("\ufeff") if offset == 0 else text).strip()
                    offset = f.tell()
                    if text:
                        lines.append(text)
            if len(lines) < self.buffer_lines:  # this file is done
                index, offset = index + 1, 0
        self.position = (index, offset)
        return lines

    def _fill(self) -> None:
        wraps = 0
        while True:
            if self.position[0] == len(self.paths):  # the end of a pass: from the first file again
                wraps += 1
                if wraps > 1:
                    raise ValueError("no usable text in " + ", ".join(p.name for p in self.paths))
                self.position, self.passes = (0, 0), self.passes + 1
            self.start, self.start_generator, self.taken = self.position, self.generator.get_state(), 0
            lines = self._read_lines()
            self.most_lines_held = max(self.most_lines_held, len(lines))
            features = mlm_features(self.tokenizer, lines, self.max_length) if lines else []
            if features:
                order = epoch_batches(features, self._batch_size, self.generator, self.group)
                self.batches = [[features[i] for i in b] for b in order]
                return

    def next_batch(self, batch_size: int) -> list[dict]:
        self._batch_size = batch_size
        if not self.batches:
            self._fill()
        self.taken += 1
        return self.batches.pop()

    def state_dict(self) -> dict:
        return {
            "start": list(self.start),
            "generator": self.start_generator,
            "taken": self.taken,
            "passes": self.passes,
        }

    def load_state_dict(self, state: dict, batch_size: int) -> None:
        """Re-read the buffer the checkpoint was in, shuffle it as then, and skip the batches already taken."""
        self._batch_size = batch_size
        self.position, self.passes = tuple(state["start"]), state["passes"]
        self.generator.set_state(state["generator"])
        self._fill()
        for _ in range(state["taken"]):
            self.next_batch(batch_size)


# The anchored variant's weight, chosen on the sw/ha/pcm NER dev sets: swap - keep English was -0.5 at 10, 0.0 at 30,
# +0.5 at 100 and +0.5 at 300 (a tie; 100 keeps more of the language) (README, Results)
ANCHOR_WEIGHT = 100.0
# train_language_adapter's anchor that keeps a new adapter near the backbone's own layer outputs (no adapter at all)
ANCHOR_BACKBONE = "backbone"


class _MLMStep:
    """MLM loss of a batch, or of rows of it; logits are computed only at the masked positions (see model.forward).

    Masks are drawn on the CPU from the run's generator for the whole global batch at once, so a seed gives the same
    masks on every device, with any number of processes and any grad_accum.

    With an `anchor_weight` > 0 (a variant beyond the paper), the loss adds anchor_weight x the mean over layers and
    real tokens of 1 - cos(states with `adapters`, states with the `anchor` stack), on the same masked input: the new
    adapter learns its language while its every layer's output stays near where the anchor (e.g. the source
    language's adapter; None: the frozen backbone alone) puts them, the space the task adapters were trained in.
    """

    def __init__(
        self,
        model: AdapterModel,
        tokenizer,
        adapters: Stack | None,
        generator: torch.Generator,
        vocab=None,
        anchor: Stack | None = None,
        anchor_weight: float = 0.0,
    ) -> None:
        self.model, self.tokenizer, self.adapters, self.generator = model, tokenizer, adapters, generator
        self.vocab = None if vocab is None else vocab.to(model.device)  # softmax over these token ids only
        self.anchor, self.anchor_weight = anchor, anchor_weight
        self.weight = 0  # masked tokens in the last loss
        self._masked: tuple | None = None  # (batch, inputs, attention_mask, labels) of the current global batch

    def __call__(self, batch: list[dict], rows: slice | None = None) -> torch.Tensor:
        if self._masked is None or self._masked[0] is not batch:
            pad_id = self.tokenizer.pad_token_id
            b = pad_batch(batch, pad_id, ("input_ids", "special_tokens_mask"))
            attention_mask = (b["input_ids"] != pad_id).long()
            special = b["special_tokens_mask"].bool() | ~attention_mask.bool()
            inputs, labels = mask_tokens(
                b["input_ids"], special, self.tokenizer.mask_token_id, len(self.tokenizer), generator=self.generator
            )
            self._masked = (batch, inputs, attention_mask, labels)
        _, inputs, attention_mask, labels = self._masked
        rows = rows or slice(None)
        inputs, attention_mask, labels = inputs[rows], attention_mask[rows], labels[rows]
        self.weight = int((labels != -100).sum())
        device = self.model.device
        inputs, attention_mask = inputs.to(device), attention_mask.to(device)
        out = self.model(
            inputs,
            attention_mask,
            adapters=self.adapters,
            head=MLM_HEAD,
            labels=labels.to(device),
            vocab=self.vocab,
            all_layers=self.anchor_weight > 0,
        )
        if self.anchor_weight <= 0:
            return out.loss
        with torch.no_grad():
            target = self.model.encode(inputs, attention_mask, adapters=self.anchor, all_layers=True)
        real = attention_mask.bool()
        cos = torch.nn.functional.cosine_similarity(out.layer_states[:, real].float(), target[:, real].float(), dim=-1)
        return out.loss + self.anchor_weight * (1 - cos).mean()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def mlm_step_fn(
    model: AdapterModel, tokenizer, adapters: Stack | None, generator: torch.Generator, vocab=None, **anchor
) -> _MLMStep:
    """A loss function for MLM batches (callable as step(batch) or step(batch, rows)); `vocab`: see text_vocab;
    `anchor` / `anchor_weight`: see _MLMStep."""
    return _MLMStep(model, tokenizer, adapters, generator, vocab, **anchor)


def text_vocab(features: list[dict]) -> torch.Tensor:
    """The sorted ids of every token in `features`: the vocabulary subset of a language's own text.

    A softmax over it instead of all 250k tokens makes a step cheaper, but it is another objective (a token the text
    never uses is never pushed down), so it is only an option of this function, judged by the held-out loss with the
    full softmax: bench.precision_loss measured 2.56x fp32's speed in bf16 on Swahili, but a full-softmax held-out
    loss of 9.76 against 7.77 (no adapter: 9.80). The adapter learns the subset's objective and not the language's,
    so neither the CLI nor the transfer runs use it.
    """
    return torch.unique(torch.cat([torch.as_tensor(f["input_ids"]) for f in features]))


def train_language_adapter(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str] | TextStream,
    lang: str,
    *,
    adapter_config: AdapterConfig | None = None,
    start_from: str | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    vocab_subset: bool = False,
    pack: bool = False,
    anchor: str | None = None,
    anchor_weight: float = ANCHOR_WEIGHT,
) -> TrainResult:
    """Train a MAD-X language adapter named `lang` with MLM on `texts` (backbone and MLM head frozen).

    `texts` is a list of lines, or a TextStream that reads and tokenises its files lazily (corpora beyond memory).
    `start_from` names a loaded language adapter (e.g. the source language's) whose weights the new one starts from,
    instead of MAD-X's random initialisation. `vocab_subset` puts the softmax over the tokens of `texts` only (see
    text_vocab; not for a TextStream); `pack` trains on rows of several whole lines (see pack_features; not for a
    TextStream). `anchor` names a loaded adapter whose layer outputs the new one is kept near,
    with `anchor_weight` (a variant beyond the paper; see _MLMStep), or is ANCHOR_BACKBONE: the frozen backbone's
    own outputs, for task adapters trained with no language adapter (-LAD's).
    """
    if model.lm_head is None:
        raise ValueError("this backbone has no masked-LM head, so it cannot train a language adapter")
    config = config or replace(LANGUAGE_ADAPTER)
    if start_from is None:
        adapter_config = adapter_config or replace(LANGUAGE_ADAPTER_SHAPE)
    max_length = min(config.max_length, model.max_tokens)
    if (vocab_subset or pack) and isinstance(texts, TextStream):
        raise ValueError("vocab_subset and pack need the text in memory (a list of lines), not a stream")
    if isinstance(texts, TextStream):
        features = texts.bind(tokenizer, max_length, config.group_by_length)
    else:
        features = mlm_features(tokenizer, [t for t in texts if t.strip()], max_length)
        if not features:
            raise ValueError(f"no usable text for language {lang!r}")
        if pack:
            features = pack_features(features, max_length)
    if anchor not in (None, ANCHOR_BACKBONE) and anchor not in model.adapters:
        raise ValueError(f"unknown anchor adapter {anchor!r}")
    seed_everything(config.seed)
    model.add_adapter(lang, adapter_config, overwrite=True, init_from=start_from)
    model.set_trainable(adapters=[lang])
    vocab = text_vocab(features) if vocab_subset else None
    generator = torch.Generator().manual_seed(config.seed + 1)
    target = None if anchor in (None, ANCHOR_BACKBONE) else Stack(anchor)  # None: the backbone's own outputs
    anchored = {} if anchor is None else {"anchor": target, "anchor_weight": anchor_weight}
    step = mlm_step_fn(model, tokenizer, Stack(lang), generator, vocab, **anchored)
    return train_adapter(model, lang, features, step, config, out_dir, False, progress, should_stop)


def train_mlm_full(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """MLM-TRG's first stage: fine-tune the whole backbone with MLM on target-language text."""
    config = config or replace(MLM_FULL)
    features = mlm_features(tokenizer, [t for t in texts if t.strip()], min(config.max_length, model.max_tokens))
    model.set_trainable(backbone=True)
    step = mlm_step_fn(model, tokenizer, None, torch.Generator().manual_seed(config.seed + 1))
    return run_training(model, features, step, config, progress, should_stop)
