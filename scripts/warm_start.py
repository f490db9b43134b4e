"""Does a target language adapter that STARTS FROM the source language's adapter make swapping help? (issue 11)

MAD-X initialises every language adapter at random. On the offline backbone an adapter trained that way moves the
representations far from where the English adapter puts them, and the English task adapter, trained on the English
adapter's output, reads them worse than the English adapter's own (swapping loses to keeping it). Here the target's
adapter starts as a copy of the English adapter and is trained from there with the same MLM recipe, so it begins in
the space the task adapter knows and only learns the language's corrections. The task adapters are left as they are:
the existing English NER task adapters (one per seed), trained on the English adapter.

For each recipe and target (sw, ha, pcm): the adapter's held-out MLM loss and drift (against no adapter, on the
target's NER dev sentences), and NER F1 on dev and test with the new adapter swapped in, the English adapter kept,
and (for reference) MAD-X -LAD's task adapter with no language adapter. Recipes are compared on dev; test is reported.

    MADX_DATA_DIR=../shared/data python -m scripts.warm_start --run runs/transfer --recipes warm,cold \
        --seeds 1,2,3 --out runs/warm/warm.json

`--run` is a finished `transfer` output (its adapters/lang/ and adapters/task/). Resumable: finished items are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import madx_core as mx
from madx_core import data as D
from madx_core.atomic import atomic_write_text
from madx_core.backbones import load_tokenizer
from madx_core.evaluation import evaluate_ner
from madx_core.mlm import train_language_adapter
from madx_core.training import LANGUAGE_ADAPTER
from madx_core.transfer import texts_for
from scripts.lang_adapter_study import mlm_loss_and_drift

TARGETS = {"sw": "swa", "ha": "hau", "pcm": "pcm"}
KEEP = {"PER", "LOC", "ORG"}
# name -> (start from the English adapter?, steps). "cold" is the transfer run's own adapter (MAD-X's recipe, 400
# steps from a random start), evaluated as it is; "cold-N" trains that recipe for N steps: the learning curve.
RECIPES = {
    "cold": (False, None),
    "cold-100": (False, 100),
    "cold-200": (False, 200),
    "warm": (True, 400),
    "warm-100": (True, 100),
    "warm-1000": (True, 1000),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/transfer", help="a transfer output folder")
    p.add_argument("--config", default="configs/transfer.json")
    p.add_argument("--recipes", default="cold,warm")
    p.add_argument("--targets", default="sw,ha,pcm")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--out", default="runs/warm/warm.json")
    args = p.parse_args()
    data = Path(os.environ.get("MADX_DATA_DIR", "../shared/data"))
    cfg = json.loads(Path(args.config).read_text())
    run, out = Path(args.run), Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    report = json.loads(out.read_text()) if out.is_file() else {"items": [], "reference": {}}

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")

    model = mx.AdapterModel.from_pretrained(cfg["backbone"])
    tokenizer = load_tokenizer(cfg["backbone"])
    model.load_adapter(run / "adapters" / "lang" / "en", load_as="en")
    for seed in seeds:
        model.load_adapter(run / "adapters" / "task" / f"ner-madx-s{seed}", load_as=f"ner-s{seed}")
        model.load_adapter(run / "adapters" / "task" / f"ner-madx-lad-s{seed}", load_as=f"lad-s{seed}")
    la = cfg["lang_adapter"]
    recipe_config = replace(
        LANGUAGE_ADAPTER, batch_size=la["batch_size"], max_length=la["max_length"], learning_rate=la["lr"]
    )
    recipe_config = replace(recipe_config, precision=cfg.get("precision", "fp32"))

    for tgt in args.targets.split(","):
        splits = {
            s: D.restrict_labels(D.read_conll(data / "ner" / TARGETS[tgt] / f"{s}.txt"), KEEP) for s in ("dev", "test")
        }
        heldout = [" ".join(s.tokens) for s in splits["dev"]]
        for seed in seeds:  # the systems that do not depend on the recipe, once
            key = f"{tgt}/s{seed}"
            if key not in report["reference"]:
                row = {}
                for split, sents in splits.items():
                    row[f"{split}/keep"] = evaluate_ner(
                        model, tokenizer, sents, mx.Stack("en", f"ner-s{seed}"), f"ner-s{seed}"
                    )[0]["f1"]
                    row[f"{split}/none"] = evaluate_ner(
                        model, tokenizer, sents, mx.Stack(f"lad-s{seed}"), f"lad-s{seed}"
                    )[0]["f1"]
                report["reference"][key] = {k: round(float(v), 4) for k, v in row.items()}
                save()
                print(key, report["reference"][key], flush=True)
        for recipe in args.recipes.split(","):
            if any(i["recipe"] == recipe and i["target"] == tgt for i in report["items"]):
                continue
            warm, steps = RECIPES[recipe]
            name = f"{tgt}-{recipe}"
            item = {"recipe": recipe, "target": tgt, "f1": {}}
            if steps is not None:
                started = time.perf_counter()
                result = train_language_adapter(
                    model,
                    tokenizer,
                    texts_for(cfg, tgt),
                    name,
                    start_from="en" if warm else None,
                    config=replace(recipe_config, steps=steps),
                    out_dir=out.parent / "adapters" / recipe / tgt,
                )
                item.update(
                    steps=result.steps, train_seconds=round(time.perf_counter() - started), final_loss=result.losses[-1]
                )
            else:
                model.load_adapter(run / "adapters" / "lang" / tgt, load_as=name)
            base, _ = mlm_loss_and_drift(model, tokenizer, heldout, None)
            loss, drift = mlm_loss_and_drift(model, tokenizer, heldout, name)
            _, drift_en = mlm_loss_and_drift(model, tokenizer, heldout, "en")
            item.update(
                mlm_loss_without=round(base, 3),
                mlm_loss=round(loss, 3),
                drift=round(drift, 3),
                drift_en=round(drift_en, 3),
            )
            for seed in seeds:
                for split, sents in splits.items():
                    f1 = evaluate_ner(model, tokenizer, sents, mx.Stack(name, f"ner-s{seed}"), f"ner-s{seed}")[0]["f1"]
                    item["f1"][f"{split}/swap/s{seed}"] = round(float(f1), 4)
            model.delete_adapter(name)
            report["items"].append(item)
            save()
            print(json.dumps(item), flush=True)


if __name__ == "__main__":
    main()
