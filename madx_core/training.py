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

Scale out: under `accelerate launch` with N processes (CPU/gloo or GPUs/nccl), every process draws the same global
batch and computes its own share of it; one accelerate all-reduce per optimiser step sums the gradients, weighted by
the tokens (or examples) each share holds, so a run gives the same update as one process would on the whole batch.
`--batch-size` is that global batch; `grad_accum` splits each process's share into several forward passes. Only the
main process reports progress and writes files.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from . import data as D
from .adapterhub import save_head
from .adapters import AdapterConfig, Stack
from .atomic import atomic_dir, atomic_open
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
    grad_accum: int = 1  # forward passes per optimiser step (per process): batch_size is split, not multiplied
    checkpoint: str | None = None  # file for the resumable state (written atomically), None: no checkpoints
    checkpoint_every: int = 0  # write the checkpoint every N optimiser steps (0: never)
    resume: bool = False  # continue from `checkpoint` when it exists


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
    processes: int = 1  # the world size the run used
    resumed_from: int = 0  # the step a resumed run started at (0: a fresh run)


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


def _process_state():
    """accelerate's state when launched with several processes (it joins the process group), else None.

    A plain single-process run never imports accelerate, so it behaves exactly as it did before scale-out.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState takes the GPU path whenever LOCAL_RANK is set; without a GPU (or under --cpu) it must be told to
    # use the CPU, or it quietly runs every process alone.
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    return state if state.num_processes > 1 else None


def process_count() -> int:
    """How many processes train together (1 without `accelerate launch`)."""
    state = _process_state()
    return 1 if state is None else state.num_processes


def is_main_process() -> bool:
    """True in the process that logs and writes files (the only one without `accelerate launch`)."""
    state = _process_state()
    return state is None or state.is_main_process


def wait_for_everyone() -> None:
    """A barrier across processes (nothing in a single process): files written by the main one exist after it."""
    state = _process_state()
    if state is not None:
        state.wait_for_everyone()


def _train_device(config: TrainConfig, state) -> torch.device:
    """The device of this process: its own GPU under a multi-GPU launch, the CPU under `--cpu` or --device cpu."""
    if state is None or config.device == "cpu":
        return resolve_device(config.device)
    if config.device.startswith("cuda") and state.device.type != "cuda":
        raise ValueError("--device cuda was asked for, but accelerate launched these processes without a GPU")
    return state.device


def _shares(n: int, parts: int) -> list[slice]:
    """Cut n rows into `parts` contiguous slices whose sizes differ by at most one (some may be empty)."""
    size, extra = divmod(n, parts)
    bounds = [0]
    for k in range(parts):
        bounds.append(bounds[-1] + size + (k < extra))
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


def _step_weight(step_fn, rows: int) -> float:
    """The weight of the last loss: the tokens (MLM, NER) or examples (QA) it averaged over."""
    return float(getattr(step_fn, "weight", rows))


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _save_checkpoint(path: Path, state: dict) -> None:
    """torch.save through a temporary sibling and os.replace: a run killed while writing keeps the last whole one."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def _run_key(config: TrainConfig, total: int, data: int | list, world: int) -> dict:
    """What a checkpoint must agree on to be continued: the same run, on the same data, with as many processes."""
    return {
        "total": total,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "data": data,  # the number of features, or the streamed files with their sizes
        "processes": world,
        "grad_accum": config.grad_accum,
    }


def run_training(
    model: AdapterModel,
    features: list[dict] | TextStream,
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
    stream = features if isinstance(features, TextStream) else None
    if stream is None and not features:
        raise ValueError("no training examples")
    if stream is not None and config.epochs:
        raise ValueError("streamed text has no known length: give a number of steps, not epochs")
    if config.grad_accum < 1:
        raise ValueError("grad_accum must be at least 1")
    state = _process_state()
    world, rank = (1, 0) if state is None else (state.num_processes, state.process_index)
    main = rank == 0
    generator = seed_everything(config.seed)
    device = _train_device(config, state)
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
    result = TrainResult(steps=0, seconds=0.0, trainable_parameters=sum(p.numel() for p in params), processes=world)
    result.total_parameters = sum(p.numel() for p in model.parameters())
    parts = world * config.grad_accum
    key = _run_key(config, total, stream.fingerprint() if stream else len(features), world)
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
        _set_rng_state(saved["rng"][rank], device)
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
                with autocast(device, config.precision):
                    loss = step_fn(batch)
                scaler.scale(loss).backward()
                step_loss = loss.item()
            else:
                step_loss = _shared_backward(step_fn, batch, parts, world, rank, config, device, scaler, params)
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
                    _checkpoint(
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


def _shared_backward(step_fn, batch, parts, world, rank, config, device, scaler, params) -> float:
    """Backward this process's shares of the global batch, then all-reduce the weighted gradients; the mean loss."""
    from accelerate.utils import reduce

    loss_sum, weight = torch.zeros((), device=device), 0.0
    for rows in _shares(len(batch), parts)[rank::world]:  # share k*world + rank: this process's k-th forward pass
        if rows.stop == rows.start:
            continue  # the last, short batch of an epoch may leave a process nothing to do
        with autocast(device, config.precision):
            loss = step_fn(batch, rows)
        w = _step_weight(step_fn, rows.stop - rows.start)
        if w == 0:
            continue  # a share without a labelled token: its mean loss is NaN and it adds nothing
        scaler.scale(loss * w).backward()
        loss_sum, weight = loss_sum + loss.detach().float() * w, weight + w
    had_grad = [p.grad is not None for p in params]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat(
        [g.reshape(-1).float() for g in grads] + [loss_sum.reshape(1), torch.tensor([weight], device=device)]
    )
    if world > 1:
        flat = reduce(flat, "sum")  # one all-reduce per optimiser step: the gradients, the loss and the weight
    total_weight = max(float(flat[-1]), 1e-12)
    offset = 0
    for p, g, had in zip(params, grads, had_grad, strict=True):
        n = g.numel()
        part = flat[offset : offset + n]
        # A parameter no process used keeps no gradient, as in the plain path (AdamW then leaves it alone).
        p.grad = (part / total_weight).view_as(p).to(p.dtype) if had or part.any() else None
        offset += n
    return float(flat[-2]) / total_weight


def _checkpoint(
    path, state, main, device, key, step, result, named, optimizer, schedule, scaler, generator, batches, step_fn
) -> None:
    """Write everything a resumed run needs to take the same next step: weights, optimiser, data position, RNGs."""
    rng = [_rng_state(device)]
    if state is not None:
        from accelerate.utils import gather_object

        rng = gather_object(rng)  # every process's dropout stream, in process order
    if main:
        _save_checkpoint(
            path,
            {
                "key": key,
                "step": step,
                "seconds": result.seconds,
                "losses": list(result.losses),
                "params": {n: p.detach().cpu().clone() for n, p in named},
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict(),
                "generator": generator.get_state(),
                "batches": batches,  # the unread batches of this epoch, or a TextStream's position
                "step_fn": step_fn.state_dict() if hasattr(step_fn, "state_dict") else {},
                "rng": rng,
            },
        )
    wait_for_everyone()


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


class _MLMStep:
    """MLM loss of a batch, or of rows of it; logits are computed only at the masked positions (see model.forward).

    Masks are drawn on the CPU from the run's generator for the whole global batch at once, so a seed gives the same
    masks on every device, with any number of processes and any grad_accum.
    """

    def __init__(self, model: AdapterModel, tokenizer, adapters: Stack | None, generator: torch.Generator) -> None:
        self.model, self.tokenizer, self.adapters, self.generator = model, tokenizer, adapters, generator
        self.weight = 0  # masked tokens in the last loss
        self._masked: tuple | None = None  # (batch, inputs, attention_mask, labels) of the current global batch

    def __call__(self, batch: list[dict], rows: slice | None = None) -> torch.Tensor:
        if self._masked is None or self._masked[0] is not batch:
            pad_id = self.tokenizer.pad_token_id
            b = pad_batch(batch, pad_id, ("input_ids", "special_tokens_mask"))
            attention_mask = (b["input_ids"] != pad_id).long()
            special = b["special_tokens_mask"].bool() | ~attention_mask.bool()
            inputs, labels = D.mask_tokens(
                b["input_ids"], special, self.tokenizer.mask_token_id, len(self.tokenizer), generator=self.generator
            )
            self._masked = (batch, inputs, attention_mask, labels)
        _, inputs, attention_mask, labels = self._masked
        rows = rows or slice(None)
        inputs, attention_mask, labels = inputs[rows], attention_mask[rows], labels[rows]
        self.weight = int((labels != -100).sum())
        device = self.model.device
        return self.model(
            inputs.to(device),
            attention_mask.to(device),
            adapters=self.adapters,
            head=MLM_HEAD,
            labels=labels.to(device),
        ).loss

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def mlm_step_fn(model: AdapterModel, tokenizer, adapters: Stack | None, generator: torch.Generator) -> _MLMStep:
    """A loss function for MLM batches (callable as step(batch) or step(batch, rows))."""
    return _MLMStep(model, tokenizer, adapters, generator)


def train_language_adapter(
    model: AdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str] | TextStream,
    lang: str,
    adapter_config: AdapterConfig | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a MAD-X language adapter named `lang` with MLM on `texts` (backbone and MLM head frozen).

    `texts` is a list of lines, or a TextStream that reads and tokenises its files lazily (corpora beyond memory).
    """
    if model.lm_head is None:
        raise ValueError("this backbone has no masked-LM head, so it cannot train a language adapter")
    config = config or TrainConfig(
        steps=LANG_ADAPTER_STEPS, batch_size=LANG_ADAPTER_BATCH, learning_rate=LANG_ADAPTER_LR
    )
    adapter_config = adapter_config or AdapterConfig(reduction_factor=2, inv_adapter="nice")
    max_length = min(config.max_length, model.max_tokens)
    if isinstance(texts, TextStream):
        features = texts.bind(tokenizer, max_length, config.group_by_length)
    else:
        features = mlm_features(tokenizer, [t for t in texts if t.strip()], max_length)
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
    if out_dir is not None and is_main_process():
        model.save_adapter(out_dir, lang, with_head=False)
    finish_run(config)
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


class _TaskStep:
    """NER or QA loss of a batch, or of rows of it; `adapters` may be a callable that picks the stack per batch."""

    def __init__(self, model: AdapterModel, tokenizer, task: str, adapters, head: str) -> None:
        self.model, self.tokenizer, self.task, self.adapters, self.head = model, tokenizer, task, adapters, head
        self.weight = 0  # labelled tokens (NER) or examples (QA) in the last loss
        self._stack: tuple | None = None  # (batch, stack): one stack per global batch, however it is shared out

    def __call__(self, batch: list[dict], rows: slice | None = None) -> torch.Tensor:
        if self._stack is None or self._stack[0] is not batch:
            self._stack = (batch, self.adapters() if callable(self.adapters) else self.adapters)
        stack = self._stack[1]
        part = batch[rows] if rows is not None else batch
        pad_id, device = self.tokenizer.pad_token_id, self.model.device
        if self.task == "ner":
            b = pad_batch(part, pad_id, ("input_ids", "attention_mask", "labels"), device)
            self.weight = int((b["labels"] != -100).sum())
            return self.model(
                b["input_ids"], b["attention_mask"], adapters=stack, head=self.head, labels=b["labels"]
            ).loss
        b = pad_batch(part, pad_id, ("input_ids", "attention_mask", "start_positions", "end_positions"), device)
        self.weight = len(part)
        out = self.model(
            b["input_ids"],
            b["attention_mask"],
            adapters=stack,
            head=self.head,
            start_positions=b["start_positions"],
            end_positions=b["end_positions"],
        )
        return out.loss

    def state_dict(self) -> dict:
        draw = getattr(self.adapters, "draw", None)  # the random source of a multi-language pool, if any
        return {"draw": draw.getstate()} if draw is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "draw" in state:
            self.adapters.draw.setstate(state["draw"])


def task_step_fn(model: AdapterModel, tokenizer, task: str, adapters: Stack | Callable[[], Stack] | None, head: str):
    """A loss function for task batches (callable as step(batch) or step(batch, rows))."""
    return _TaskStep(model, tokenizer, task, adapters, head)


def add_task_head(model: AdapterModel, task: str, name: str, labels: list[str] | None) -> None:
    if task == "ner":
        model.add_tagging_head(name, labels, overwrite=True)
    else:
        model.add_qa_head(name, overwrite=True)


def finish_run(config: TrainConfig) -> None:
    """After the output is written: wait for every process, then delete the checkpoint the run no longer needs."""
    wait_for_everyone()
    if config.checkpoint and is_main_process():
        Path(config.checkpoint).unlink(missing_ok=True)


class _PoolStack:
    """One stack per batch: a language adapter drawn from the pool under the task adapter (seeded, resumable)."""

    def __init__(self, pool: list[str], name: str, draw: random.Random) -> None:
        self.pool, self.name, self.draw = pool, name, draw

    def __call__(self) -> Stack:
        return Stack(self.draw.choice(self.pool), self.name)


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
        stack = _PoolStack(pool, name, random.Random(config.seed + 2))
    else:
        stack = Stack(pool[0], name) if pool else Stack(name)
    try:
        result = run_training(
            model, features, task_step_fn(model, tokenizer, task, stack, name), config, progress, should_stop
        )
    except Cancelled:
        model.delete_adapter(name)
        raise
    if out_dir is not None and is_main_process():
        model.save_adapter(out_dir, name)
    finish_run(config)
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

    with atomic_dir(out_dir) as tmp:
        model.backbone.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_head(model, head, tmp / "head")
