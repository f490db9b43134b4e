"""Does bf16 autocast keep the loss of language-adapter training? The same run in fp32 and in bf16, side by side,
in bf16 with torch's fused attention kernel in training too (`bf16-fused`: what bf16 ran before model.attention
took transformers' eager path for CPU autocast training), and (an option, never the default) in bf16 with the
softmax over the text's own tokens only, and in bf16 on packed rows (`bf16-packed`: neighbouring whole lines
concatenated into rows of up to 128 tokens, see mlm.pack_features; as many steps as see as many tokens as the
unpacked runs, unless --packed-steps; tokens per second count real tokens, from the mean row of each).

The default `train-lang` recipe (rf 2 + NICE, lr 1e-4, batch 16, seed 0) on real text: Swahili UDHR and MasakhaNER
train sentences (short, length-grouped), or with `--text de` German XQuAD paragraphs in 128-token rows; --steps steps
in each variant on the chosen device, every variant's whole run --rounds times in alternating order (median
seconds). The same batches and masks in every variant, so the mean training losses of the first and last steps
compare directly. The vocabulary subset changes the objective, so its training loss is not comparable: each adapter
is then scored by its held-out MLM loss in fp32 with the full 250k softmax (MasakhaNER Swahili dev sentences, or
every tenth German paragraph, left out of training; the same masks for every variant).

    MADX_DATA_DIR=../shared/data python -m bench.precision_loss --json --out bench/results/precision_loss.json
    MADX_DATA_DIR=../shared/data python -m bench.precision_loss --json --text de --steps 40 \
        --variants fp32,bf16,bf16-fused --out bench/results/precision_loss_de.json
    MADX_DATA_DIR=../shared/data python -m bench.precision_loss --json --variants fp32,bf16,bf16-packed \
        --out bench/results/precision_loss_packed.json
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
    from madx_core.mlm import mlm_features, pack_features, train_language_adapter
    from madx_core.model import AdapterModel
    from madx_core.training import LANGUAGE_ADAPTER, LANGUAGE_ADAPTER_SHAPE

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2, help="whole runs of every variant (median of their seconds)")
    p.add_argument("--text", choices=("sw", "de"), default="sw", help="sw: short sentences; de: 128-token rows")
    p.add_argument("--variants", default="fp32,bf16,bf16-fused,bf16-subset")
    p.add_argument("--packed-steps", type=int, default=0, help="steps of -packed variants (default: as many tokens)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = os.environ.get("MADX_DATA_DIR", "../shared/data")
    if args.text == "sw":  # Swahili UDHR and MasakhaNER sentences; held out: MasakhaNER dev
        texts = D.read_text(f"{data}/text/udhr/sw.txt")
        texts += [" ".join(s.tokens) for s in D.read_conll(f"{data}/ner/swa/train.txt")]
        heldout = [" ".join(s.tokens) for s in D.read_conll(f"{data}/ner/swa/dev.txt")]
    else:  # German XQuAD paragraphs, cut into full 128-token rows as the transfer run's de adapter sees them
        contexts = sorted({e.context for e in D.read_squad(f"{data}/qa/xquad.de.json")})
        texts = [c for i, c in enumerate(contexts) if i % 10]
        heldout = [c for i, c in enumerate(contexts) if not i % 10]  # every tenth paragraph
    tokenizer = load_tokenizer(args.backbone)
    # real tokens per row, unpacked and packed: a packed variant gets as many steps as see as many tokens
    unpacked = mlm_features(tokenizer, texts, 128)
    row_tokens = {
        packed: statistics.fmean(len(f["input_ids"]) for f in rows)
        for packed, rows in ((False, unpacked), (True, pack_features(unpacked, 128)))
    }
    packed_steps = args.packed_steps or round(args.steps * row_tokens[False] / row_tokens[True])
    load_before = round(os.getloadavg()[0], 2)
    from scripts.lang_adapter_study import mlm_loss_and_drift

    runs: dict[str, dict] = {}
    variants = args.variants.split(",")
    for round_ in range(args.rounds):  # whole runs, in alternating order: the machine's drift hits every variant
        for variant in variants if round_ % 2 == 0 else variants[::-1]:
            precision = variant.split("-")[0]
            model = AdapterModel.from_pretrained(args.backbone)
            if variant == "bf16-fused":
                model.config._attn_implementation = "sdpa"  # this model alone: torch's kernel in every call
            packed = variant.endswith("packed")
            steps = packed_steps if packed else args.steps
            config = replace(LANGUAGE_ADAPTER, steps=steps, precision=precision, device=args.device, seed=0)
            result = train_language_adapter(
                model,
                tokenizer,
                texts,
                args.text,
                adapter_config=LANGUAGE_ADAPTER_SHAPE,
                config=config,
                vocab_subset=variant.endswith("subset"),
                pack=packed,
            )
            run = runs.setdefault(variant, {"steps": steps, "train_seconds_each": []})
            run["train_seconds_each"].append(round(result.seconds, 1))
            run["train_seconds"] = round(statistics.median(run["train_seconds_each"]), 1)
            run["tokens_per_second"] = round(steps * 16 * row_tokens[packed] / run["train_seconds"])
            if round_ == 0:  # the same seed, batches and masks give the same losses in every round
                run["mean_loss_first_10"] = round(statistics.fmean(result.losses[:10]), 4)
                run["mean_loss_last_20"] = round(statistics.fmean(result.losses[-20:]), 4)
                run["heldout_mlm_loss"] = round(mlm_loss_and_drift(model, tokenizer, heldout, args.text)[0], 4)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "conditions": {
            "device": args.device,
            "threads": args.threads,
            "steps": args.steps,
            "rounds": args.rounds,
            "batch": 16,
            "text": args.text,
            "lines": len(texts),
            "real_tokens_per_row": {"unpacked": round(row_tokens[False], 1), "packed": round(row_tokens[True], 1)},
            "load_average_before": load_before,
        },
        "runs": runs,
    }
    fp32 = runs.get("fp32", {})
    for variant, run in runs.items():
        if variant != "fp32" and fp32:
            # tokens per second against fp32's: the time ratio where both see the same rows
            report[f"speedup_{variant}"] = round(run["tokens_per_second"] / fp32["tokens_per_second"], 2)
            report[f"heldout_difference_{variant}"] = round(run["heldout_mlm_loss"] - fp32["heldout_mlm_loss"], 4)
    if "bf16" in runs and "bf16-fused" in runs:
        report["speedup_eager_over_fused"] = round(
            runs["bf16-fused"]["train_seconds"] / runs["bf16"]["train_seconds"], 2
        )
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    emit(report, args.json)


if __name__ == "__main__":
    main()
