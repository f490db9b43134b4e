"""Language adapters at a far larger budget than the CPU recipe (issue 11: "what does a GPU budget change?").

MAD-X trains each language adapter for 250k steps of 64 sequences at learning rate 1e-4. The shipped adapters saw 400
steps of 16. This trains one language's adapter with the paper's batch and rate for as many steps as `--steps` (or
`--time-limit-s`) allows, on the same unlabelled text as the transfer config, and keeps a copy of the adapter at
each step of `--save-at` (fp16, AdapterHub format), so one run gives the whole learning curve. The checkpoints are
points along ONE run with one linear schedule (the learning rate has not decayed yet at the early ones), not separate
runs of that length.

    MADX_DATA_DIR=../shared/data python -m scripts.long_adapters --lang sw --device cuda --precision bf16 \
        --steps 5000 --save-at 250,500,1000,2000,4000 --out runs/long

Writes runs/long/<lang>/step-<N>/ per checkpoint (and the last step reached) and runs/long/<lang>.json (steps,
seconds, mean training loss over the 50 steps before each checkpoint). `--start-from runs/long/sw/step-3933
--steps-before 3933` continues such an adapter (its weights; a new optimiser and schedule): its checkpoints are named
by the total steps, its log is runs/long/<lang>-from-<steps-before>.json.
`scripts.adapter_recipes --recipes long-<N> --long runs/long` scores them against the transfer run's English NER
task adapters.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

import torch

import madx_core as mx
from madx_core.atomic import atomic_write_text
from madx_core.backbones import load_tokenizer
from madx_core.mlm import train_language_adapter
from madx_core.training import LANGUAGE_ADAPTER
from madx_core.transfer import config_from_spec, lang_adapter_shape, texts_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lang", required=True)
    p.add_argument("--config", default="configs/transfer.json", help="the transfer config: backbone, texts")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--save-at", default="250,500,1000,2000,4000")
    p.add_argument("--time-limit-s", type=float, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--out", default="runs/long")
    p.add_argument("--start-from", default=None, help="an adapter folder to continue (weights only)")
    p.add_argument("--steps-before", type=int, default=0, help="steps the --start-from adapter was trained for")
    args = p.parse_args()
    cfg = json.loads(Path(args.config).read_text()) | {"device": args.device, "precision": args.precision}
    spec = cfg["lang_adapter"] | {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr}
    config = replace(config_from_spec(spec, 0, LANGUAGE_ADAPTER, cfg), time_limit_s=args.time_limit_s, log_every=1)
    shape = lang_adapter_shape(spec)  # as the transfer run's language adapters

    model = mx.AdapterModel.from_pretrained(cfg["backbone"])
    tokenizer = load_tokenizer(cfg["backbone"])
    out = Path(args.out) / args.lang
    offset = args.steps_before
    pending = sorted(int(s) - offset for s in args.save_at.split(",") if int(s) > offset)
    log_file = Path(args.out) / (f"{args.lang}-from-{offset}.json" if args.start_from else f"{args.lang}.json")
    log = {"lang": args.lang, "recipe": spec, "device": args.device, "start_from": args.start_from, "checkpoints": []}
    if args.start_from:
        model.load_adapter(args.start_from, load_as="start")
    losses: list[float] = []

    def save(step: int, elapsed: float) -> None:
        model.save_adapter(out / f"step-{offset + step}", args.lang, with_head=False, dtype=torch.float16)
        point = {"step": offset + step, "seconds": round(elapsed, 1), "train_loss": statistics.mean(losses[-50:])}
        log["checkpoints"].append(point)
        atomic_write_text(log_file, json.dumps(log, indent=2) + "\n")
        print(f"{args.lang}: step {offset + step}, {elapsed:.0f}s, loss {point['train_loss']:.3f}", flush=True)

    def progress(info: dict) -> None:
        losses.append(info["loss"])
        if pending and info["step"] == pending[0]:
            save(pending.pop(0), info["elapsed"])

    texts = texts_for(cfg, args.lang)
    result = train_language_adapter(
        model,
        tokenizer,
        texts,
        args.lang,
        adapter_config=None if args.start_from else shape,
        start_from="start" if args.start_from else None,
        config=config,
        progress=progress,
    )
    if not log["checkpoints"] or log["checkpoints"][-1]["step"] != offset + result.steps:
        save(result.steps, result.seconds)  # where the budget ended
    log["lines"], log["steps_done"], log["seconds"] = len(texts), result.steps, round(result.seconds, 1)
    atomic_write_text(log_file, json.dumps(log, indent=2) + "\n")


if __name__ == "__main__":
    main()
