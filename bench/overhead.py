"""Inference overhead of MAD-X: Stack(language, task) + head against the bare backbone + the same head.

python -m bench.overhead --json     (goal: <= 1.05x)
"""

from __future__ import annotations

import torch

import madx_core as mx
from bench.common import emit, interleaved, parser


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--lengths", default="32,128")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = mx.AdapterModel.from_pretrained(args.backbone).to(args.device)
    model.add_adapter("lang", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    model.add_adapter("ner", mx.AdapterConfig(reduction_factor=16))
    model.add_tagging_head("ner", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"])
    vocab = model.config.vocab_size
    rows = []
    for batch in map(int, args.batches.split(",")):
        for length in map(int, args.lengths.split(",")):
            g = torch.Generator().manual_seed(0)
            ids = torch.randint(5, vocab, (batch, length), generator=g).to(args.device)
            mask = torch.ones_like(ids)

            def run(stack, ids=ids, mask=mask):
                with torch.inference_mode():
                    model(ids, mask, adapters=stack, head="ner")

            variants = {"bare": lambda: run(None), "madx": lambda: run(mx.Stack("lang", "ner"))}
            t = interleaved(variants, repeats=args.repeats)
            rows.append(
                {
                    "batch": batch,
                    "seq_len": length,
                    "bare_ms": round(t["bare"]["median_s"] * 1e3, 2),
                    "madx_ms": round(t["madx"]["median_s"] * 1e3, 2),
                    "ratio": round(t["madx"]["median_s"] / t["bare"]["median_s"], 3),
                    "bare_iqr_ms": round(t["bare"]["iqr_s"] * 1e3, 2),
                    "madx_iqr_ms": round(t["madx"]["iqr_s"] * 1e3, 2),
                }
            )
    emit(
        {
            "benchmark": "overhead",
            "device": args.device,
            "threads": args.threads,
            "repeats": args.repeats,
            "backbone": args.backbone,
            "rows": rows,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
