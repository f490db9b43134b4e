"""Drift against what an adapter learned, for the transfer run's three kinds of target language adapter (issue 11).

For each target language: held-out MLM loss (fixed masks, through the shipped head) without an adapter and with
each kind, and its drift: 1 - mean cosine of last-layer token states with and without it (scripts.lang_adapter_study's
measure). The kinds: MAD-X's own (adapters/lang/), anchored to the English adapter (madx-anchor's,
adapters/lang_anchor/en/) and anchored to the backbone itself (madx-lad-anchor's, adapters/lang_anchor/none/).
Held-out text no adapter trained on: the NER dev sentences for sw/ha/pcm, the XQuAD questions for de/ar/zh/es
(their adapters read the XQuAD contexts and UDHR, never the questions).

    MADX_DATA_DIR=../shared/data python -m scripts.adapter_drift --run runs/transfer --out runs/drift.json

`--langs sw,de` measures those targets only. A kind whose adapter is not in the run is left out of the report.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import madx_core as mx
from madx_core import data as D
from madx_core.atomic import atomic_write_text
from madx_core.backbones import load_tokenizer
from scripts.lang_adapter_study import mlm_loss_and_drift

HELD_OUT = {"sw": "ner/swa/dev.txt", "ha": "ner/hau/dev.txt", "pcm": "ner/pcm/dev.txt"}
HELD_OUT |= {lang: f"qa/xquad.{lang}.json" for lang in ("de", "ar", "zh", "es")}
KINDS = {
    "madx": "lang/{lang}",
    "anchored to en": "lang_anchor/en/{lang}",
    "anchored to backbone": "lang_anchor/none/{lang}",
}


def held_out(lang: str) -> list[str]:
    path = Path(os.environ["MADX_DATA_DIR"]) / HELD_OUT[lang]
    if path.suffix == ".json":
        return [e.question for e in D.read_squad(str(path))]
    return [" ".join(s.tokens) for s in D.read_conll(str(path))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/transfer")
    p.add_argument("--backbone", default="multilingual-e5-small")
    p.add_argument("--langs", default=",".join(HELD_OUT), help="targets to measure (default: all)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    langs = args.langs.split(",")
    if set(langs) - set(HELD_OUT):
        raise SystemExit(f"no held-out text for {sorted(set(langs) - set(HELD_OUT))}; known: {', '.join(HELD_OUT)}")
    model, tokenizer = mx.AdapterModel.from_pretrained(args.backbone), load_tokenizer(args.backbone)
    model.eval()
    report = {}
    for lang in langs:
        lines = held_out(lang)
        plain, _ = mlm_loss_and_drift(model, tokenizer, lines, None)
        report[lang] = {"lines": min(len(lines), 400), "no_adapter_mlm_loss": round(plain, 4)}
        for kind, where in KINDS.items():
            directory = Path(args.run) / "adapters" / where.format(lang=lang)
            if not directory.is_dir():
                continue
            name = model.load_adapter(directory, load_as=f"drift-{lang}")
            loss, drift = mlm_loss_and_drift(model, tokenizer, lines, name)
            report[lang][kind] = {"heldout_mlm_loss": round(loss, 4), "drift": round(drift, 4)}
            model.delete_adapter(name)
        print(lang, report[lang], flush=True)
        atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
