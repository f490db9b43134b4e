"""Where a language-adapter training step on short sentences spends its time, in fp32 and in bf16 (torch.profiler).

The default `train-lang` step (rf 2 + NICE adapter, MLM head frozen, AdamW, dropout on) on 16 Swahili MasakhaNER
sentences of 35-45 tokens, the lines on which bf16 gains least over fp32 (bench.precision_loss). Self CPU time of
--repeats profiled steps after 3 warm-up steps, grouped: matrix products, dtype casts (autocast's copies), dropout's
random masks, fills, the log-softmax over the 250k-token vocabulary at the masked positions (forward and backward),
and the rest. What bf16 does not make faster shows here as a share that grows.

    MADX_DATA_DIR=../shared/data python -m bench.profile_lang_step --json --out bench/results/profile_lang_step.json
    MADX_DATA_DIR=../shared/data python -m bench.profile_lang_step --json --shapes   # which tensors the ops are on
"""

from __future__ import annotations

import json
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

GROUPS = {
    "matrix products": ("aten::addmm", "aten::mm", "aten::bmm"),
    "dtype casts": ("aten::copy_",),
    "dropout masks": ("aten::bernoulli_",),
    "fills": ("aten::fill_", "aten::zero_"),
    "vocabulary log-softmax": ("aten::_log_softmax", "aten::_log_softmax_backward_data"),
}


def main() -> None:
    from bench.common import emit, parser
    from madx_core import data as D
    from madx_core.adapters import Stack
    from madx_core.atomic import atomic_write_text
    from madx_core.backbones import load_tokenizer
    from madx_core.features import mask_tokens
    from madx_core.model import MLM_HEAD, AdapterModel
    from madx_core.training import LANGUAGE_ADAPTER_SHAPE

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--shapes", action="store_true", help="also list the costliest ops by input shape (slows ops)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = os.environ.get("MADX_DATA_DIR", "../shared/data")
    tokenizer = load_tokenizer(args.backbone)
    lines = [" ".join(s.tokens) for s in D.read_conll(f"{data}/ner/swa/train.txt")]
    lines = [t for t in lines if 35 <= len(tokenizer(t)["input_ids"]) <= 45][:16]
    enc = tokenizer(lines, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    mask = (enc["input_ids"] != tokenizer.pad_token_id).long()
    special = enc["special_tokens_mask"].bool() | ~mask.bool()
    generator = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(
        enc["input_ids"], special, tokenizer.mask_token_id, len(tokenizer), generator=generator
    )
    model = AdapterModel.from_pretrained(args.backbone)
    model.add_adapter("sw", LANGUAGE_ADAPTER_SHAPE)
    model.set_trainable(adapters=["sw"])
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "conditions": {"threads": args.threads, "batch": list(inputs.shape), "profiled_steps": args.repeats},
    }
    for precision in ("fp32", "bf16"):

        def step(precision: str = precision) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(inputs, mask, adapters=Stack("sw"), head=MLM_HEAD, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(3):
            step()
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
            for _ in range(args.repeats):
                step()
        seconds = (time.perf_counter() - start) / args.repeats
        self_ms = {e.key: e.self_cpu_time_total / 1000 / args.repeats for e in prof.key_averages()}
        total = sum(self_ms.values())
        groups = {name: sum(self_ms.get(op, 0.0) for op in ops) for name, ops in GROUPS.items()}
        groups["rest"] = total - sum(groups.values())
        report[precision] = {
            "step_s_profiled": round(seconds, 3),
            "self_cpu_ms_per_step": {k: round(v, 1) for k, v in groups.items()},
            "share": {k: round(v / total, 3) for k, v in groups.items()},
        }
        if args.shapes:  # which tensors the casts and fills are of
            by_shape = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
            report[precision]["costliest_ops_by_input_shape"] = [
                {
                    "op": e.key,
                    "shapes": str(e.input_shapes),
                    "self_ms_per_step": round(e.self_cpu_time_total / 1000 / args.repeats, 1),
                }
                for e in by_shape[:12]
            ]
    report["bf16_speedup_per_group"] = {  # fp32's time over bf16's
        k: round(report["fp32"]["self_cpu_ms_per_step"][k] / max(v, 1e-9), 2)
        for k, v in report["bf16"]["self_cpu_ms_per_step"].items()
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    emit(report, args.json)


if __name__ == "__main__":
    main()
