"""Where and how a run computes: device, precision, several processes, and the checkpoint a run resumes from.

Under `accelerate launch` with N processes (CPU/gloo or GPUs/nccl), every process draws the same global batch and
computes its own share of it; one all-reduce per optimiser step sums the gradients, weighted by the tokens (or
examples) each share holds, so a run gives the same update as one process would on the whole batch. A plain
single-process run never imports accelerate.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import torch

from .atomic import atomic_open

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


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is bf16 where the hardware computes it natively (a CPU with AVX512-BF16 or AMX tiles, a CUDA GPU with
    bf16), else fp32: on this project's CPU bf16 trained a language adapter 1.76-1.99x faster to the same held-out MLM
    loss (bench.precision_loss; 2.34x on short lines since the masked-LM loss runs in blocks), while a CPU without
    it would emulate bf16, likely slower (not measured)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = [getattr(torch.cpu, f, lambda: False) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return "bf16" if device.type == "cpu" and any(f() for f in native) else "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for the forward pass (bf16 or fp16); fp32 runs as it is."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        yield


def process_state():
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
    state = process_state()
    return 1 if state is None else state.num_processes


def is_main_process() -> bool:
    """True in the process that logs and writes files (the only one without `accelerate launch`)."""
    state = process_state()
    return state is None or state.is_main_process


def wait_for_everyone() -> None:
    """A barrier across processes (nothing in a single process): files written by the main one exist after it."""
    state = process_state()
    if state is not None:
        state.wait_for_everyone()


def train_device(device: str, state) -> torch.device:
    """The device of this process: its own GPU under a multi-GPU launch, the CPU under `--cpu` or --device cpu."""
    if state is None or device == "cpu":
        return resolve_device(device)
    if device.startswith("cuda") and state.device.type != "cuda":
        raise ValueError("--device cuda was asked for, but accelerate launched these processes without a GPU")
    return state.device


def shares(n: int, parts: int) -> list[slice]:
    """Cut n rows into `parts` contiguous slices whose sizes differ by at most one (some may be empty)."""
    size, extra = divmod(n, parts)
    bounds = [0]
    for k in range(parts):
        bounds.append(bounds[-1] + size + (k < extra))
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


def step_weight(step_fn, rows: int) -> float:
    """The weight of the last loss: the tokens (MLM, NER) or examples (QA) it averaged over."""
    return float(getattr(step_fn, "weight", rows))


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save through the atomic writer: a run killed while writing keeps the last whole checkpoint."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def run_key(config, total: int, data: int | list, world: int) -> dict:
    """What a checkpoint must agree on to be continued (config: the run's TrainConfig): the same run, on the same
    data, with as many processes."""
    return {
        "total": total,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "data": data,  # the number of features, or the streamed files with their sizes
        "processes": world,
        "grad_accum": config.grad_accum,
    }


def shared_backward(step_fn, batch, parts, world, rank, precision, device, scaler, params) -> float:
    """Backward this process's shares of the global batch, then all-reduce the weighted gradients; the mean loss."""
    from accelerate.utils import reduce

    loss_sum, weight = torch.zeros((), device=device), 0.0
    for rows in shares(len(batch), parts)[rank::world]:  # share k*world + rank: this process's k-th forward pass
        if rows.stop == rows.start:
            continue  # the last, short batch of an epoch may leave a process nothing to do
        with autocast(device, precision):
            loss = step_fn(batch, rows)
        w = step_weight(step_fn, rows.stop - rows.start)
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


def write_checkpoint(
    path, state, main, device, key, step, result, named, optimizer, schedule, scaler, generator, batches, step_fn
) -> None:
    """Write everything a resumed run needs to take the same next step: weights, optimiser, data position, RNGs."""
    rng = [rng_state(device)]
    if state is not None:
        from accelerate.utils import gather_object

        rng = gather_object(rng)  # every process's dropout stream, in process order
    if main:
        save_checkpoint(
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
