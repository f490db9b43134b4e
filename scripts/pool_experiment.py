"""Does a task adapter trained over a POOL of language adapters transfer better when the target's adapter is swapped in?

A variant beyond the paper (issue 11). MAD-X trains the English NER task adapter on the English language adapter
alone; on the offline backbone a target language's adapter then moves the representations out of the space that
task adapter learned, and swapping costs F1. Here each training batch (English text, English labels) runs through a
language adapter drawn from a pool of OTHER languages' adapters, so the task adapter learns to read the output of
many language adapters. The NER targets' own adapters (sw, ha, pcm) are never in the pool: at test time they are
adapters the task adapter has never seen, as a new language's would be.

Scored on each target's dev and test split three ways: the target's adapter swapped in, the English adapter kept, and
(for reference) with no language adapter. Same task recipe as configs/transfer.json's NER madx system.

    MADX_DATA_DIR=../shared/data python -m scripts.pool_experiment --adapters runs/transfer/adapters/lang \
        --pool en,de,ar,zh,es,qu,mi --seeds 1,2,3 --out runs/pool/pool.json

With `--pool en` it is MAD-X's own task adapter; `--epochs 3` trains it three times as long as the transfer run's
one epoch (the issue's "task adapter converged on English"):

    python -m scripts.pool_experiment --adapters runs/transfer/adapters/lang --pool en --epochs 3 --seeds 1,2,3 \
        --out runs/converged/converged.json

Resumable: finished (pool, seed) items in --out are skipped.
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
from madx_core.training import TASK_ADAPTER, train_task_adapter
from madx_core.transfer import config_from_spec

TARGETS = {"sw": "swa", "ha": "hau", "pcm": "pcm"}
KEEP = {"PER", "LOC", "ORG"}


def ner(path: Path) -> list[D.NerSentence]:
    return D.restrict_labels(D.read_conll(path), KEEP)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapters", required=True, help="folder with one language-adapter folder per language")
    p.add_argument("--pool", default="en,de,ar,zh,es,qu,mi")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--config", default="configs/transfer.json", help="the NER task recipe is read from here")
    p.add_argument("--out", default="runs/pool/pool.json")
    p.add_argument("--epochs", type=float, default=None, help="train this many epochs instead of the config's steps")
    args = p.parse_args()
    data = Path(os.environ.get("MADX_DATA_DIR", "../shared/data"))
    cfg = json.loads(Path(args.config).read_text())
    spec = cfg["tasks"]["ner"]
    pool = args.pool.split(",")
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {"items": []}
    done = {(tuple(i["pool"]), i["seed"]) for i in report["items"]}

    model = mx.AdapterModel.from_pretrained(cfg["backbone"])
    tokenizer = load_tokenizer(cfg["backbone"])
    for lang in sorted({*pool, "en", *TARGETS}):
        model.load_adapter(Path(args.adapters) / lang, load_as=lang)
    train = ner(data / "ner" / "en" / "train.txt")
    labels = D.label_list(train)
    splits = {(t, s): ner(data / "ner" / folder / f"{s}.txt") for t, folder in TARGETS.items() for s in ("dev", "test")}
    splits[("en", "test")] = ner(data / "ner" / "en" / "test.txt")

    for seed in [int(s) for s in args.seeds.split(",")]:
        if (tuple(pool), seed) in done:
            continue
        config = config_from_spec(spec, seed, TASK_ADAPTER, cfg)
        if args.epochs is not None:
            config = replace(config, epochs=args.epochs)
        name = f"ner-pool-s{seed}"
        started = time.perf_counter()
        lang_adapter = pool if len(pool) > 1 else pool[0]
        result = train_task_adapter(
            model, tokenizer, "ner", train, name, lang_adapter=lang_adapter, labels=labels, config=config
        )
        item = {
            "pool": pool,
            "seed": seed,
            "epochs": args.epochs,
            "steps": result.steps,
            "train_seconds": round(result.seconds),
            "f1": {},
        }
        for (tgt, split), sents in splits.items():
            stacks = {"swap": mx.Stack(tgt, name), "keep": mx.Stack("en", name), "none": mx.Stack(name)}
            for way, stack in stacks.items():
                if tgt == "en" and way != "keep":
                    continue
                scores, _ = evaluate_ner(model, tokenizer, sents, stack, name)
                item["f1"][f"{tgt}/{split}/{way}"] = round(float(scores["f1"]), 4)
        item["eval_seconds"] = round(time.perf_counter() - started - result.seconds)
        model.delete_adapter(name)
        report["items"].append(item)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
        print(json.dumps(item), flush=True)


if __name__ == "__main__":
    main()
