"""Does bf16 autocast keep the loss of language-adapter training? The same run in fp32 and in bf16, side by side,
and (an option, never the default) in bf16 with the softmax over the Swahili text's own tokens only.

The default `train-lang` recipe (rf 2 + NICE, lr 1e-4, batch 16, seed 0) on real text (Swahili UDHR and MasakhaNER
train sentences), for --steps steps in each variant on the chosen device: the same batches and masks, so the mean
training losses of the first and last steps compare directly, and the seconds give the speed-up on real,
length-grouped text (not full-length rows as in bench.distributed). The vocabulary subset changes the objective, so
its training loss is not comparable: each adapter is then scored by its held-out MLM
loss in fp32 with the full 250k softmax (MasakhaNER Swahili dev sentences, the same masks for every variant).

    MADX_DATA_DIR=../shared/data python -m bench.precision_loss --json --out bench/results/precision_loss.json
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import replace

import torch


def main() -> None:
    from bench.common import emit, parser
    from madx_core import data as D
    from madx_core.atomic import atomic_write_text
    from madx_core.backbones import load_tokenizer
    from madx_core.mlm import train_language_adapter
    from madx_core.model import AdapterModel
    from madx_core.training import LANGUAGE_ADAPTER, LANGUAGE_ADAPTER_SHAPE

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = os.environ.get("MADX_DATA_DIR", "../shared/data")
    texts = D.read_text(f"{data}/text/udhr/sw.txt")
    texts += [" ".join(s.tokens) for s in D.read_conll(f"{data}/ner/swa/train.txt")]
    tokenizer = load_tokenizer(args.backbone)
    load_before = round(os.getloadavg()[0], 2)
    from scripts.lang_adapter_study import mlm_loss_and_drift

    heldout = [" ".join(s.tokens) for s in D.read_conll(f"{data}/ner/swa/dev.txt")]
    runs = {}
    for variant in ("fp32", "bf16", "bf16-subset"):
        precision = variant.split("-")[0]
        model = AdapterModel.from_pretrained(args.backbone)
        config = replace(LANGUAGE_ADAPTER, steps=args.steps, precision=precision, device=args.device, seed=0)
        started = time.perf_counter()
        result = train_language_adapter(
            model,
            tokenizer,
            texts,
            "sw",
            adapter_config=LANGUAGE_ADAPTER_SHAPE,
            config=config,
            vocab_subset=variant.endswith("subset"),
        )
        runs[variant] = {
            "seconds": round(time.perf_counter() - started, 1),
            "train_seconds": round(result.seconds, 1),
            "mean_loss_first_10": round(statistics.fmean(result.losses[:10]), 4),
            "mean_loss_last_20": round(statistics.fmean(result.losses[-20:]), 4),
            "heldout_mlm_loss": round(mlm_loss_and_drift(model, tokenizer, heldout, "sw")[0], 4),
        }
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "conditions": {
            "device": args.device,
            "threads": args.threads,
            "steps": args.steps,
            "batch": 16,
            "lines": len(texts),
            "load_average_before": load_before,
        },
        "runs": runs,
        "speedup_bf16": round(runs["fp32"]["train_seconds"] / runs["bf16"]["train_seconds"], 2),
        "loss_difference_last_20": round(runs["bf16"]["mean_loss_last_20"] - runs["fp32"]["mean_loss_last_20"], 4),
        "heldout_difference": round(runs["bf16"]["heldout_mlm_loss"] - runs["fp32"]["heldout_mlm_loss"], 4),
        "speedup_bf16_subset": round(runs["fp32"]["train_seconds"] / runs["bf16-subset"]["train_seconds"], 2),
        "heldout_difference_subset": round(
            runs["bf16-subset"]["heldout_mlm_loss"] - runs["fp32"]["heldout_mlm_loss"], 4
        ),
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    emit(report, args.json)


if __name__ == "__main__":
    main()
