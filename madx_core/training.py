"""Training routines of MAD-X: language adapters (MLM), task adapters (NER, QA), and the baselines.

One plain PyTorch loop serves every method; what differs is which parameters it updates (`set_trainable`) and the
adapter stack it passes to forward:

    language adapter    Stack(lang)             MLM on target-language text, backbone + MLM head frozen
    task adapter        Stack(src_lang, task)   labelled source data, the language adapter frozen
    MAD-X -LAD          Stack(task)             as above without a language adapter
    full fine-tuning    no adapters             the whole backbone + head (the "XLM-R" baseline of the paper)
    MLM-TRG             no adapters             full MLM fine-tuning on target text, then full task fine-tuning

Every run is seeded, reports progress through a callback, can be cancelled between steps, and writes its output
directory atomically (it appears whole at the end, or not at all).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from . import data as D
from .adapters import AdapterConfig, Stack
from .hub_format import _atomic_dir, save_head
from .model import MLM_HEAD, AdapterModel

Progress = Callable[[dict], None]  # receives {"step", "total", "loss", "elapsed"} after every logged step


class Cancelled(Exception):
    """Raised when a run is stopped by its `should_stop` callback; nothing is written."""


@dataclass
class TrainConfig:
    """Optimisation settings with MAD-X's choices as defaults (Adam, linear decay)."""

    steps: int = 1000
    epochs: float | None = None  # if set, overrides steps
    batch_size: int = 16
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_length: int = 128
    seed: int = 0
    time_limit_s: float | None = None  # stop early, keeping what was learnt, when this wall-clock budget is spent
    group_by_length: bool = True  # batch examples of similar length together: far less padding to compute
    log_every: int = 5
    device: str = "auto"  # auto | cpu | cuda: where the model is trained (auto: cuda when available)
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast for the forward pass; weights and optimiser stay fp32


# The recipe of the shipped language adapters (configs/transfer.json) and the CLI's default for train-lang: 400 MLM
# steps of 16 sequences of at most 128 tokens at learning rate 1e-4 (the paper's rate), rf 2 with NICE.
LANG_ADAPTER_STEPS, LANG_ADAPTER_BATCH, LANG_ADAPTER_LR = 400, 16, 1e-4


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    trainable_parameters: int = 0
    total_parameters: int = 0
    stopped_early: bool = False


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' is the GPU when there is one, else the CPU; 'cuda' without a GPU is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for the forward pass (bf16 or fp16); fp32 runs as it is."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        yield


# ----------------------------------------------------------------------------------------------------------
# The loop


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


def epoch_batches(features: list[dict], batch_size: int, generator: torch.Generator, group: bool) -> list[list[int]]:
    """One epoch of shuffled batches; with `group`, each batch holds examples of similar length.

    Grouping as in transformers' LengthGroupedSampler: shuffle, cut into mega-batches of 50 batches, sort each by
    length, split into batches, then shuffle the batch order. Batches stay random, but padding nearly vanishes.
    """
    order = torch.randperm(len(features), generator=generator).tolist()
    if group:
        mega = 50 * batch_size
        order = [
            i
            for start in range(0, len(order), mega)
            for i in sorted(order[start : start + mega], key=lambda i: -len(features[i]["input_ids"]))
        ]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def run_training(
    model: AdapterModel,
    features: list[dict],
    step_fn: Callable[[list[dict]], torch.Tensor],
    config: TrainConfig,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Optimise the model's trainable parameters on shuffled batches of `features`; `step_fn` returns the loss."""
    if not features:
        raise ValueError("no training examples")
    generator = seed_everything(config.seed)
    device = resolve_device(config.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    per_epoch = math.ceil(len(features) / config.batch_size)
    total = max(1, round(config.epochs * per_epoch)) if config.epochs else config.steps
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = int(total * config.warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
    )
    # fp16 needs its gradients scaled so that small ones do not underflow; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    model.train()
    result = TrainResult(steps=0, seconds=0.0, trainable_parameters=sum(p.numel() for p in params))
    result.total_parameters = sum(p.numel() for p in model.parameters())
    start, batches = time.perf_counter(), []
    try:
        for step in range(total):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled at step {step} of {total}")
            if not batches:  # a new epoch: reshuffle
                batches = epoch_batches(features, config.batch_size, generator, config.group_by_length)
            with autocast(device, config.precision):
                loss = step_fn([features[i] for i in batches.pop()])
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps, result.seconds = step + 1, time.perf_counter() - start
            result.losses.append(loss.item())
            if progress is not None and (step % config.log_every == 0 or step + 1 == total):
                progress({"step": step + 1, "total": total, "loss": result.losses[-1], "elapsed": result.seconds})
            if config.time_limit_s is not None and result.seconds > config.time_limit_s:
                result.stopped_early = step + 1 < total
                break
    finally:
        model.eval()
        model.requires_grad_(False)
    return result


# ----------------------------------------------------------------------------------------------------------
# Language adapters: masked language modelling on unlabelled text


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


def mlm_step_fn(model: AdapterModel, tokenizer, adapters: Stack | None, generator: torch.Generator):
    """A loss function for MLM batches; logits are computed only at the masked positions (see model.forward)."""

    def step(batch: list[dict]) -> torch.Tensor:
        # Masks are drawn on the CPU from the run's generator, so a seed gives the same masks on every device.
        b = pad_batch(batch, tokenizer.pad_token_id, ("input_ids", "special_tokens_mask"))
        attention_mask = (b["input_ids"] != tokenizer.pad_token_id).long()
        special = b["special_tokens_mask"].bool() | ~attention_mask.bool()
        inputs, labels = D.mask_tokens(
            b["input_ids"], special, tokenizer.mask_token_id, len(tokenizer), generator=generator
        )
        device = model.device
        return model(
            inputs.to(device), attention_mask.to(device), adapters=adapters, head=MLM_HEAD, labels=labels.to(device)
        ).loss

    return step


def train_language_adapter(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    lang: str,
    adapter_config: AdapterConfig | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a MAD-X language adapter named `lang` with MLM on `texts` (backbone and MLM head frozen)."""
    if model.lm_head is None:
        raise ValueError("this backbone has no masked-LM head, so it cannot train a language adapter")
    config = config or TrainConfig(
        steps=LANG_ADAPTER_STEPS, batch_size=LANG_ADAPTER_BATCH, learning_rate=LANG_ADAPTER_LR
    )
    adapter_config = adapter_config or AdapterConfig(reduction_factor=2, inv_adapter="nice")
    features = mlm_features(tokenizer, [t for t in texts if t.strip()], min(config.max_length, model.max_tokens))
    if not features:
        raise ValueError(f"no usable text for language {lang!r}")
    seed_everything(config.seed)
    model.add_adapter(lang, adapter_config, overwrite=True)
    model.set_trainable(adapters=[lang])
    step = mlm_step_fn(model, tokenizer, Stack(lang), torch.Generator().manual_seed(config.seed + 1))
    try:
        result = run_training(model, features, step, config, progress, should_stop)
    except Cancelled:
        model.delete_adapter(lang)
        raise
    if out_dir is not None:
        model.save_adapter(out_dir, lang, with_head=False)
    return result


def train_mlm_full(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """MLM-TRG's first stage: fine-tune the whole backbone with MLM on target-language text."""
    config = config or TrainConfig(learning_rate=2e-5)
    features = mlm_features(tokenizer, [t for t in texts if t.strip()], min(config.max_length, model.max_tokens))
    model.set_trainable(backbone=True)
    step = mlm_step_fn(model, tokenizer, None, torch.Generator().manual_seed(config.seed + 1))
    return run_training(model, features, step, config, progress, should_stop)


# ----------------------------------------------------------------------------------------------------------
# Task adapters and full fine-tuning: NER and QA


def task_features(task: str, tokenizer, examples: list, labels: list[str] | None, max_length: int) -> list[dict]:
    """Tokenised training features for NER (aligned labels) or QA (answer token positions)."""
    if task == "ner":
        label2id = {label: i for i, label in enumerate(labels)}
        return D.encode_ner(tokenizer, examples, label2id, max_length=max_length)
    if task == "qa":
        return D.prepare_qa_features(tokenizer, examples, max_length=max_length, stride=128, train=True)
    raise ValueError(f"unknown task {task!r}; use 'ner' or 'qa'")


def task_step_fn(model: AdapterModel, tokenizer, task: str, adapters: Stack | Callable[[], Stack] | None, head: str):
    """A loss function for task batches; `adapters` may be a callable that picks the stack for each batch."""

    def step(batch: list[dict]) -> torch.Tensor:
        stack = adapters() if callable(adapters) else adapters
        if task == "ner":
            b = pad_batch(batch, tokenizer.pad_token_id, ("input_ids", "attention_mask", "labels"), model.device)
            return model(b["input_ids"], b["attention_mask"], adapters=stack, head=head, labels=b["labels"]).loss
        keys = ("input_ids", "attention_mask", "start_positions", "end_positions")
        b = pad_batch(batch, tokenizer.pad_token_id, keys, model.device)
        out = model(
            b["input_ids"],
            b["attention_mask"],
            adapters=stack,
            head=head,
            start_positions=b["start_positions"],
            end_positions=b["end_positions"],
        )
        return out.loss

    return step


def add_task_head(model: AdapterModel, task: str, name: str, labels: list[str] | None) -> None:
    if task == "ner":
        model.add_tagging_head(name, labels, overwrite=True)
    else:
        model.add_qa_head(name, overwrite=True)


def train_task_adapter(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    examples: list,
    name: str,
    lang_adapter: str | list[str] | None = None,
    labels: list[str] | None = None,
    adapter_config: AdapterConfig | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train task adapter `name` (+ its head) stacked on the frozen language adapter `lang_adapter` (MAD-X).

    With lang_adapter=None this is the MAD-X -LAD ablation: the task adapter alone on the backbone. With a list of
    language adapters, each batch is stacked on one of them drawn at random: a variant beyond the paper, in which the
    task adapter learns to read the output of several language adapters instead of the source language's alone.
    """
    pool = [lang_adapter] if isinstance(lang_adapter, str) else list(lang_adapter or [])
    for la in pool:
        if la not in model.adapters:
            raise ValueError(f"language adapter {la!r} is not loaded")
    config = config or TrainConfig(learning_rate=5e-4)
    labels = labels or (D.label_list(examples) if task == "ner" else None)
    features = task_features(task, tokenizer, examples, labels, min(config.max_length, model.max_tokens))
    seed_everything(config.seed)
    model.add_adapter(name, adapter_config or AdapterConfig(reduction_factor=16), overwrite=True)
    add_task_head(model, task, name, labels)
    model.set_trainable(adapters=[name], heads=[name])
    if len(pool) > 1:
        draw = random.Random(config.seed + 2)
        stack = lambda: Stack(draw.choice(pool), name)  # noqa: E731 - one stack per batch
    else:
        stack = Stack(pool[0], name) if pool else Stack(name)
    try:
        result = run_training(
            model, features, task_step_fn(model, tokenizer, task, stack, name), config, progress, should_stop
        )
    except Cancelled:
        model.delete_adapter(name)
        raise
    if out_dir is not None:
        model.save_adapter(out_dir, name)
    return result


def train_full(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    examples: list,
    head: str,
    labels: list[str] | None = None,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Full fine-tuning of the backbone and a new head: the paper's baseline."""
    config = config or TrainConfig(learning_rate=3e-5)
    labels = labels or (D.label_list(examples) if task == "ner" else None)
    features = task_features(task, tokenizer, examples, labels, min(config.max_length, model.max_tokens))
    seed_everything(config.seed)
    add_task_head(model, task, head, labels)
    model.set_trainable(heads=[head], backbone=True)
    return run_training(
        model, features, task_step_fn(model, tokenizer, task, None, head), config, progress, should_stop
    )


def save_full_model(model: AdapterModel, tokenizer, head: str, out_dir: str | Path) -> None:
    """Save a fully fine-tuned backbone (transformers format) with its head in `head/`, atomically."""

    def write(tmp: Path) -> None:
        model.backbone.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_head(model, head, tmp / "head")

    _atomic_dir(out_dir, write)
