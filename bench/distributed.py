"""Language-adapter training throughput on CPUs: 1 against N processes (`accelerate launch`), fp32 against bf16.

Each variant is a real `run_training` MLM run (rf-2 adapter with NICE on the chosen backbone, backbone frozen) on
full-length synthetic rows, launched in its own process group; tokens per second count every row's tokens over the
steps after the warm-up. The variants run in alternation for several rounds, so a drift of the machine hits all of
them alike; the machine's load average is recorded with the result, since on a shared machine the figures mean little.

    python -m bench.distributed --json [--processes 2] [--rounds 3] [--out bench/results/distributed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(backbone: str, batch: int, length: int, precision: str, steps: int, warmup: int) -> None:
    """Runs inside `accelerate launch`: train, then print one JSON line from the main process."""
    import torch

    import madx_core as mx
    from madx_core.backbones import load_tokenizer
    from madx_core.distributed import is_main_process, process_count
    from madx_core.mlm import mlm_step_fn
    from madx_core.training import TrainConfig, run_training

    model, tokenizer = mx.AdapterModel.from_pretrained(backbone), load_tokenizer(backbone)
    rng = random.Random(0)
    features = [
        {
            "input_ids": [0] + [rng.randrange(5, len(tokenizer) - 1) for _ in range(length - 2)] + [2],
            "special_tokens_mask": [1] + [0] * (length - 2) + [1],
        }
        for _ in range(batch * 4)
    ]
    model.add_adapter("xx", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"), overwrite=True)
    model.set_trainable(adapters=["xx"])
    elapsed: dict[int, float] = {}
    config = TrainConfig(
        steps=warmup + steps, batch_size=batch, max_length=length, device="cpu", precision=precision, log_every=1
    )
    step = mlm_step_fn(model, tokenizer, mx.Stack("xx"), torch.Generator().manual_seed(1))
    run_training(model, features, step, config, progress=lambda info: elapsed.update({info["step"]: info["elapsed"]}))
    if is_main_process():
        seconds = elapsed[warmup + steps] - elapsed[warmup]
        print(json.dumps({"processes": process_count(), "tokens_per_s": steps * batch * length / seconds}), flush=True)


def launch(processes: int, threads: int, precision: str, args) -> float:
    """Tokens per second of one run with `processes` processes of `threads` torch threads each."""
    cmd = [sys.executable, "-m", "bench.distributed", "--worker", "--worker-precision", precision]
    cmd += ["--backbone", args.backbone, "--batch", str(args.batch), "--length", str(args.length)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    if processes > 1:  # accelerate 1.x starts several CPU processes through torchrun only with --multi_gpu
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes"]
        launcher += [str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd = launcher + ["--main_process_port", "0", "-m", *cmd[2:]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise SystemExit(f"error: a {processes}-process run failed: {run.stderr.strip().splitlines()[-1:]}")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["processes"] == processes, report
    return report["tokens_per_s"]


def main() -> None:
    from bench.common import emit, parser

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default="")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one launched run (internal)
    p.add_argument("--worker-precision", default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.backbone, args.batch, args.length, args.worker_precision, args.steps, args.warmup)
        return
    cores = os.cpu_count() or 1
    variants = {
        "1 process fp32": (1, args.threads, "fp32"),
        f"{args.processes} processes fp32": (args.processes, max(1, args.threads // args.processes), "fp32"),
        "1 process bf16": (1, args.threads, "bf16"),
    }
    load_before = os.getloadavg()[0]
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, (n, threads, precision) in variants.items():
            rates[name].append(launch(n, threads, precision, args))
    median = {k: statistics.median(v) for k, v in rates.items()}
    names = list(variants)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "conditions": {
            "cores": cores,
            "threads_total": args.threads,
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
            "backbone": args.backbone,
            "batch": args.batch,
            "length": args.length,
            "steps": args.steps,
            "rounds": args.rounds,
        },
        "tokens_per_s": {k: {"median": round(median[k]), "runs": [round(r) for r in v]} for k, v in rates.items()},
        "ratio_processes": round(median[names[1]] / median[names[0]], 2),
        "ratio_bf16_over_fp32": round(median[names[2]] / median[names[0]], 2),
    }
    if args.out:
        from madx_core.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    emit(result, args.json)


if __name__ == "__main__":
    main()
