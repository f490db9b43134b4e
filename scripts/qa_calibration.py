"""What the QA confidence means: on XQuAD, how often an answer with a given score is right.

Runs the shipped QA task adapters (MAD-X with the target language's adapter, and -LAD) on the first questions of
every XQuAD language, bins the predictions by their score (the span's probability under the start and end
softmax) and writes, per bin, the share of answers with token F1 >= 0.5, to assets/qa_calibration.json. The app's
QA note quotes it. XQuAD was never used to train the shipped QA adapters (they were trained on SQuAD train).

    python -m scripts.qa_calibration [--per-language 120]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import madx_core as mx
from madx_core import data as D
from madx_core.backbones import ASSETS, load_tokenizer
from madx_core.evaluation import predict_qa
from madx_core.metrics import _f1

BINS = [0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0001]
LANGS = ["en", "de", "ar", "zh", "es"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-language", type=int, default=120)
    ap.add_argument("--out", default=str(ASSETS / "qa_calibration.json"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    data = Path(os.environ.get("MADX_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    started = time.time()
    model = mx.AdapterModel.from_pretrained("multilingual-e5-small")
    tokenizer = load_tokenizer("multilingual-e5-small")
    for lang in LANGS:
        model.load_adapter(ASSETS / "adapters" / "lang" / lang, load_as=lang, with_head=False)
    for task in ("qa", "qa_lad"):
        model.load_adapter(ASSETS / "adapters" / "task" / task, load_as=task, head_as=task)
    points = []  # (score, right)
    for lang in LANGS:
        examples = D.read_squad(data / "qa" / f"xquad.{lang}.json")[: args.per_language]
        for stack in (mx.Stack(lang, "qa"), mx.Stack("qa_lad")):
            preds = predict_qa(model, tokenizer, examples, stack, stack.last())
            for ex in examples:
                p = preds[ex.id]
                f1 = max(_f1(p.text, a["text"], lang) for a in ex.answers) if ex.answers else 0.0
                points.append((float(p.score), f1 >= 0.5))
        print(lang, len(points), f"{time.time() - started:.0f} s", flush=True)
    bins = []
    for lo, hi in zip(BINS, BINS[1:], strict=False):
        inside = [right for s, right in points if lo <= s < hi]
        bins.append(
            {
                "from": lo,
                "to": min(hi, 1.0),
                "answers": len(inside),
                "right": round(sum(inside) / len(inside), 3) if inside else None,
            }
        )
    payload = {
        "about": "Share of XQuAD answers with token F1 >= 0.5, by the answer's score, for the shipped QA adapters "
        "(MAD-X with the target language's adapter, and -LAD), on the first "
        f"{args.per_language} questions of XQuAD {', '.join(LANGS)}. Written by scripts/qa_calibration.py.",
        "answers": len(points),
        "right_overall": round(sum(r for _, r in points) / len(points), 3),
        "bins": bins,
    }
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
