"""Training cost: a task-adapter step vs a full fine-tuning step (time and peak memory, equal batch),
and language-adapter MLM steps with the vocabulary projection at masked positions only vs everywhere.

python -m bench.training_cost --json   (goals: adapter step <= 0.6x and memory <= 0.6x of full FT; masked-only >= 3x)
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.common import emit, in_fresh_process, interleaved, parser


def _model(backbone: str, device: str):
    import madx_core as mx

    model = mx.AdapterModel.from_pretrained(backbone).to(device)
    model.add_adapter("en", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    model.add_adapter("ner", mx.AdapterConfig(reduction_factor=16))
    model.add_tagging_head("ner", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"])
    return model


def _batch(model, batch: int, length: int, device: str):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (batch, length), generator=g).to(device)
    labels = torch.randint(0, 7, (batch, length), generator=g).to(device)
    return ids, torch.ones_like(ids), labels


def task_step_timing(backbone: str, mode: str, batch: int, length: int, steps: int, threads: int, device: str) -> dict:
    """Runs in a fresh process: `steps` optimiser steps of task-adapter training or full fine-tuning."""
    import madx_core as mx
    from bench.common import peak_rss_since_reset_mb, reset_peak_rss

    torch.set_num_threads(threads)
    model = _model(backbone, device)
    reset = reset_peak_rss()  # so that the training peak does not include the transient peak of loading the checkpoint
    if mode == "adapter":
        model.set_trainable(adapters=["ner"], heads=["ner"])
        stack = mx.Stack("en", "ner")
    else:
        model.set_trainable(heads=["ner"], backbone=True)
        stack = None
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids, mask, labels = _batch(model, batch, length, device)
    times = []
    for _ in range(steps + 1):  # the first step allocates optimizer state: not timed
        start = time.perf_counter()
        loss = model(ids, mask, adapters=stack, head="ner", labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])
    train_peak = peak_rss_since_reset_mb() if reset else None
    return {
        "median_step_s": times[len(times) // 2],
        "trainable": sum(p.numel() for p in params),
        "train_peak_mb": train_peak,
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    # 1. Task adapter vs full fine-tuning, each in its own process so peak memory is its own.
    runs = {}
    for mode in ("adapter", "full"):
        runs[mode] = in_fresh_process(
            task_step_timing, args.backbone, mode, args.batch, args.length, args.steps, args.threads, args.device
        )
    a, f = runs["adapter"], runs["full"]
    task = {
        "batch": args.batch,
        "seq_len": args.length,
        "adapter_step_s": round(a["result"]["median_step_s"], 3),
        "full_step_s": round(f["result"]["median_step_s"], 3),
        "step_ratio": round(a["result"]["median_step_s"] / f["result"]["median_step_s"], 3),
        "adapter_peak_rss_mb": round(a["peak_rss_mb"]),
        "full_peak_rss_mb": round(f["peak_rss_mb"]),
        "memory_ratio": round(a["peak_rss_mb"] / f["peak_rss_mb"], 3),
        # the same without the transient peak of loading the checkpoint (fp16 file -> fp32 weights), which both share
        "adapter_train_peak_mb": a["result"]["train_peak_mb"] and round(a["result"]["train_peak_mb"]),
        "full_train_peak_mb": f["result"]["train_peak_mb"] and round(f["result"]["train_peak_mb"]),
        "train_memory_ratio": a["result"]["train_peak_mb"]
        and round(a["result"]["train_peak_mb"] / f["result"]["train_peak_mb"], 3),
        "adapter_trainable": a["result"]["trainable"],
        "full_trainable": f["result"]["trainable"],
    }

    # 2. MLM: vocabulary projection at the masked positions only vs at every position.
    import madx_core as mx

    model = _model(args.backbone, args.device)
    model.set_trainable(adapters=["en"])
    model.train()
    ids, mask, _ = _batch(model, args.batch, args.length, args.device)
    g = torch.Generator().manual_seed(1)
    masked = torch.rand(ids.shape, generator=g) < 0.15
    labels = torch.where(masked, ids, torch.full_like(ids, -100))

    def masked_only():
        model(ids, mask, adapters=mx.Stack("en"), head="mlm", labels=labels).loss.backward()

    def everywhere():
        logits = model(ids, mask, adapters=mx.Stack("en"), head="mlm").logits
        F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()

    t = interleaved({"masked_only": masked_only, "everywhere": everywhere}, repeats=max(3, args.repeats // 2), warmup=1)
    mlm = {
        "batch": args.batch,
        "seq_len": args.length,
        "masked_only_step_s": round(t["masked_only"]["median_s"], 3),
        "everywhere_step_s": round(t["everywhere"]["median_s"], 3),
        "speedup": round(t["everywhere"]["median_s"] / t["masked_only"]["median_s"], 2),
    }
    emit(
        {
            "benchmark": "training_cost",
            "device": args.device,
            "threads": args.threads,
            "task_adapter_vs_full": task,
            "mlm_masked_only_vs_everywhere": mlm,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
