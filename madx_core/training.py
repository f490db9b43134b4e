"""Training routines of MAD-X: language adapters (MLM), task adapters (NER, QA), and the baselines.

One plain PyTorch loop serves every method; what differs is which parameters it updates (`set_trainable`) and the
adapter stack it passes to forward:

    language adapter    Stack(lang)             MLM on target-language text, backbone + MLM head frozen
    task adapter        Stack(src_lang, task)   labelled source data, the language adapter frozen
    MAD-X -LAD          Stack(task)             as above without a language adapter
    full fine-tuning    no adapters             the whole backbone + head (the "XLM-R" baseline of the paper)
    MLM-TRG             no adapters             full MLM fine-tuning on target text, then full task fine-tuning

Every run is seeded, reports progress through a callback, can be cancelled between steps, and writes its output
directory atomically (it appears whole at the end, or not at all). Here: the loop, the presets, task adapters and
full fine-tuning; language adapters and MLM-TRG are in mlm.py; processes, devices and checkpoints in distributed.py
(`batch_size` is the global batch of all processes; only the main process reports progress and writes files).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from . import distributed as dist
from .adapterhub import save_head
from .adapters import AdapterConfig, Stack
from .atomic import atomic_dir
from .model import AdapterModel
from .tasks import Task, get_task

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
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (distributed.resolve_precision): autocast for the forward
    # pass; weights and optimiser stay fp32
    grad_accum: int = 1  # forward passes per optimiser step (per process): batch_size is split, not multiplied
    checkpoint: str | None = None  # file for the resumable state (written atomically), None: no checkpoints
    checkpoint_every: int = 0  # write the checkpoint every N optimiser steps (0: never)
    resume: bool = False  # continue from `checkpoint` when it exists


# Named presets: every training default is stated here once; the CLI, the transfer runner and the app start from
# these and override with dataclasses.replace(PRESET, ...).
# The recipe of the shipped language adapters (configs/transfer.json) and train-lang's default: 400 MLM steps of 16
# sequences of at most 128 tokens at learning rate 1e-4 (the paper's rate), rf 2 with NICE.
LANGUAGE_ADAPTER = TrainConfig(steps=400, batch_size=16, learning_rate=1e-4)
LANGUAGE_ADAPTER_SHAPE = AdapterConfig(reduction_factor=2, inv_adapter="nice")
TASK_ADAPTER = TrainConfig(learning_rate=5e-4)  # a task adapter and its head (MAD-X, MAD-X -LAD)
TASK_ADAPTER_SHAPE = AdapterConfig(reduction_factor=16)
FULL_FINE_TUNING = TrainConfig(learning_rate=3e-5)  # the whole backbone and a new head: the paper's baseline
MLM_FULL = TrainConfig(learning_rate=2e-5)  # MLM-TRG's first stage: the whole backbone, MLM on target text


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    trainable_parameters: int = 0
    total_parameters: int = 0
    stopped_early: bool = False
    processes: int = 1  # the world size the run used
    precision: str = "fp32"  # the autocast precision it used ("auto" resolved)
    resumed_from: int = 0  # the step a resumed run started at (0: a fresh run)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# The loop


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
    features: list[dict],  # or an mlm.TextStream, read while training
    step_fn: Callable[..., torch.Tensor],
    config: TrainConfig,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Optimise the model's trainable parameters on shuffled batches of `features`; `step_fn` returns the loss.

    `step_fn(batch)` returns the mean loss of a batch. When the batch is shared out (several processes, or
    grad_accum > 1), it is called as `step_fn(batch, rows)` with the global batch and a slice of it, and its `weight`
    attribute, if any, says how many tokens the loss averaged over (default: the rows); the shares' losses are summed
    with those weights and divided by the global total, so the update equals the one of the whole batch.
    """
    stream = features if hasattr(features, "next_batch") else None  # an mlm.TextStream: read as it trains
    if stream is None and not features:
        raise ValueError("no training examples")
    if stream is not None and config.epochs:
        raise ValueError("streamed text has no known length: give a number of steps, not epochs")
    if config.grad_accum < 1:
        raise ValueError("grad_accum must be at least 1")
    state = dist.process_state()
    world, rank = (1, 0) if state is None else (state.num_processes, state.process_index)
    main = rank == 0
    generator = seed_everything(config.seed)
    device = dist.train_device(config.device, state)
    config = replace(config, precision=dist.resolve_precision(config.precision, device))
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if config.epochs:
        total = max(1, round(config.epochs * math.ceil(len(features) / config.batch_size)))
    else:
        total = config.steps
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = int(total * config.warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
    )
    # fp16 needs its gradients scaled so that small ones do not underflow; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    params_count = sum(p.numel() for p in params)
    result = TrainResult(0, 0.0, trainable_parameters=params_count, processes=world, precision=config.precision)
    result.total_parameters = sum(p.numel() for p in model.parameters())
    parts = world * config.grad_accum
    key = dist.run_key(config, total, stream.fingerprint() if stream else len(features), world)
    checkpoint = Path(config.checkpoint) if config.checkpoint else None
    first, done_before, batches = 0, 0.0, []
    if state is not None:
        from accelerate.utils import broadcast

        # Same seed, same code: the new adapter is already equal everywhere; the broadcast makes it a guarantee.
        for p in params:
            p.data.copy_(broadcast(p.data.contiguous(), from_process=0))
        # Dropout differs per process (each sees other rows); process 0 keeps the single-process stream.
        torch.manual_seed(config.seed + 1_000_003 * rank)
    if checkpoint is not None and config.resume and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved["key"] != key:
            diff = ", ".join(f"{k} {saved['key'].get(k)} -> {v}" for k, v in key.items() if saved["key"].get(k) != v)
            raise ValueError(f"checkpoint {checkpoint.name} is from another run ({diff}); delete it or change --out")
        with torch.no_grad():
            for name, p in named:
                p.copy_(saved["params"][name])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        generator.set_state(saved["generator"])
        if stream is not None:
            stream.load_state_dict(saved["batches"], config.batch_size)
        else:
            batches = saved["batches"]
        if hasattr(step_fn, "load_state_dict"):
            step_fn.load_state_dict(saved["step_fn"])
        dist.set_rng_state(saved["rng"][rank], device)
        first, done_before, result.losses = saved["step"], saved["seconds"], list(saved["losses"])
        result.steps = result.resumed_from = first
    model.train()
    start = time.perf_counter()
    try:
        for step in range(first, total):
            stop = should_stop is not None and should_stop()
            if state is not None and should_stop is not None:  # all must agree to stop, or the others wait forever
                from accelerate.utils import reduce

                stop = bool(reduce(torch.tensor([float(stop)], device=device), "sum").item())
            if stop:
                raise Cancelled(f"cancelled at step {step} of {total}")
            if stream is not None:
                batch = stream.next_batch(config.batch_size)
            else:
                if not batches:  # a new epoch: reshuffle
                    batches = epoch_batches(features, config.batch_size, generator, config.group_by_length)
                batch = [features[i] for i in batches.pop()]
            if parts == 1:  # the plain path, exactly as before scale-out
                with dist.autocast(device, config.precision):
                    loss = step_fn(batch)
                scaler.scale(loss).backward()
                step_loss = loss.item()
            else:
                step_loss = dist.shared_backward(
                    step_fn, batch, parts, world, rank, config.precision, device, scaler, params
                )
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps, result.seconds = step + 1, done_before + time.perf_counter() - start
            result.losses.append(step_loss)
            if main and progress is not None and (step % config.log_every == 0 or step + 1 == total):
                progress({"step": step + 1, "total": total, "loss": result.losses[-1], "elapsed": result.seconds})
            if checkpoint is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
                if step + 1 < total:
                    dist.write_checkpoint(
                        checkpoint,
                        state,
                        main,
                        device,
                        key,
                        step + 1,
                        result,
                        named,
                        optimizer,
                        schedule,
                        scaler,
                        generator,
                        stream.state_dict() if stream is not None else [list(b) for b in batches],
                        step_fn,
                    )
            over = config.time_limit_s is not None and result.seconds > config.time_limit_s
            if state is not None and config.time_limit_s is not None:  # the main process's clock decides for all
                from accelerate.utils import broadcast

                over = bool(broadcast(torch.tensor([float(over)], device=device), from_process=0).item())
            if over:
                result.stopped_early = step + 1 < total
                break
    finally:
        model.eval()
        model.requires_grad_(False)
    return result


def finish_run(config: TrainConfig) -> None:
    """After the output is written: wait for every process, then delete the checkpoint the run no longer needs."""
    dist.wait_for_everyone()
    if config.checkpoint and dist.is_main_process():
        Path(config.checkpoint).unlink(missing_ok=True)


def train_adapter(model, name, features, step_fn, config, out_dir, with_head, progress, should_stop) -> TrainResult:
    """run_training for the new adapter `name`: deleted again if the run is cancelled, else saved (with its head or
    not) into `out_dir` by the main process."""
    try:
        result = run_training(model, features, step_fn, config, progress, should_stop)
    except Cancelled:
        model.delete_adapter(name)
        raise
    if out_dir is not None and dist.is_main_process():
        model.save_adapter(out_dir, name, with_head=with_head)
    finish_run(config)
    return result


# ----------------------------------------------------------------------------------------------------------
# Task adapters and full fine-tuning (the tasks themselves are in tasks.py; language adapters in mlm.py)


class _TaskStep:
    """The task's loss on a batch, or on rows of it; `adapters` may be a callable that picks the stack per batch."""

    def __init__(self, model: AdapterModel, tokenizer, task: Task, adapters, head: str) -> None:
        self.model, self.tokenizer, self.task, self.adapters, self.head = model, tokenizer, task, adapters, head
        self.weight = 0  # labelled tokens (NER) or examples (QA) in the last loss
        self._stack: tuple | None = None  # (batch, stack): one stack per global batch, however it is shared out

    def __call__(self, batch: list[dict], rows: slice | None = None) -> torch.Tensor:
        if self._stack is None or self._stack[0] is not batch:
            self._stack = (batch, self.adapters() if callable(self.adapters) else self.adapters)
        part = batch[rows] if rows is not None else batch
        loss, self.weight = self.task.loss(self.model, part, self.tokenizer.pad_token_id, self._stack[1], self.head)
        return loss

    def state_dict(self) -> dict:
        draw = getattr(self.adapters, "draw", None)  # the random source of a multi-language pool, if any
        return {"draw": draw.getstate()} if draw is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "draw" in state:
            self.adapters.draw.setstate(state["draw"])


def _over(lang: str | None, name: str) -> Stack:
    """Task adapter `name` on language adapter `lang`, or alone (None: MAD-X -LAD)."""
    return Stack(name) if lang is None else Stack(lang, name)


class _PoolStack:
    """One stack per batch: a language adapter drawn from the pool under the task adapter (seeded, resumable); a
    None in the pool draws the task adapter alone."""

    def __init__(self, pool: list[str | None], name: str, draw: random.Random) -> None:
        self.pool, self.name, self.draw = pool, name, draw

    def __call__(self) -> Stack:
        return _over(self.draw.choice(self.pool), self.name)


def train_task_adapter(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    examples: list,
    name: str,
    *,
    lang_adapter: str | list[str | None] | None = None,
    labels: list[str] | None = None,
    adapter_config: AdapterConfig | None = None,
    start_from: str | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train task adapter `name` (+ its head) stacked on the frozen language adapter `lang_adapter` (MAD-X).

    With lang_adapter=None this is the MAD-X -LAD ablation: the task adapter alone on the backbone. With a list of
    language adapters, each batch is stacked on one of them drawn at random (None: on none): a variant beyond the paper,
    in which the task adapter learns to read the output of several language adapters instead of the source language's
    alone. `start_from` names a loaded task adapter with its head (same shape and labels) whose weights training
    continues from, instead of a random start.
    """
    task = get_task(task)
    pool = [lang_adapter] if isinstance(lang_adapter, str) else list(lang_adapter or [])
    for la in pool:
        if la is not None and la not in model.adapters:
            raise ValueError(f"language adapter {la!r} is not loaded")
    if start_from is not None and (start_from == name or start_from not in model.heads):
        raise ValueError(f"start_from must be another task adapter loaded with its head, not {start_from!r}")
    config = config or replace(TASK_ADAPTER)
    labels = labels or task.labels(examples)
    features = task.features(tokenizer, examples, labels, min(config.max_length, model.max_tokens))
    seed_everything(config.seed)
    shape = adapter_config or (None if start_from else replace(TASK_ADAPTER_SHAPE))
    model.add_adapter(name, shape, overwrite=True, init_from=start_from)
    task.add_head(model, name, labels)
    if start_from is not None:
        if model.heads[name].config != model.heads[start_from].config:
            model.delete_adapter(name)
            raise ValueError(f"the head of {start_from!r} does not fit this task and its labels")
        model.heads[name].load_state_dict(model.heads[start_from].state_dict())
    model.set_trainable(adapters=[name], heads=[name])
    if len(pool) > 1:
        stack = _PoolStack(pool, name, random.Random(config.seed + 2))
    else:
        stack = _over(pool[0] if pool else None, name)
    step = _TaskStep(model, tokenizer, task, stack, name)
    return train_adapter(model, name, features, step, config, out_dir, True, progress, should_stop)


def train_full(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    examples: list,
    head: str,
    *,
    labels: list[str] | None = None,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Full fine-tuning of the backbone and a new head: the paper's baseline."""
    task = get_task(task)
    config = config or replace(FULL_FINE_TUNING)
    labels = labels or task.labels(examples)
    features = task.features(tokenizer, examples, labels, min(config.max_length, model.max_tokens))
    seed_everything(config.seed)
    task.add_head(model, head, labels)
    model.set_trainable(heads=[head], backbone=True)
    return run_training(model, features, _TaskStep(model, tokenizer, task, None, head), config, progress, should_stop)


def save_full_model(model: AdapterModel, tokenizer, head: str, out_dir: str | Path) -> None:
    """Save a fully fine-tuned backbone (transformers format) with its head in `head/`, atomically."""

    with atomic_dir(out_dir) as tmp:
        model.backbone.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_head(model, head, tmp / "head")
