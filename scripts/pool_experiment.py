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

The same for QA (SQuAD training subset, XQuAD test sets, the config's QA recipe). `none` in the pool draws no
language adapter for that batch, so with --adapters runs/transfer/adapters/lang_anchor/none (the madx-lad-anchor
system's target adapters, held near the backbone's own outputs) the task adapter is trained as -LAD's is, and on the
target adapters it will be read through; here the targets ARE in the pool (English text through them, never their
labelled data), so this asks whether a task adapter that has seen an adapter's output reads it better:

    python -m scripts.pool_experiment --task qa --adapters runs/transfer/adapters/lang_anchor/none \
        --pool none,de,ar,zh,es --ways swap,none --seeds 1,2,3 --out runs/pool/qa.json

With --start-from, the task adapter is not trained from a random start: training continues from a saved task adapter
(e.g. -LAD's converged one, shipped in assets/adapters/task/qa_lad, seed 1), here for one more epoch at a tenth of
the rate, over the pool; the same with `--pool none --ways none` is the control (as much more training, no adapter):

    python -m scripts.pool_experiment --task qa --adapters runs/transfer/adapters/lang_anchor/none \
        --start-from assets/adapters/task/qa_lad --epochs 1 --lr 1e-4 --pool none,de,ar,zh,es --ways swap,none \
        --seeds 1 --out runs/qa-cont/qa.json

The transfer run's systems madx-lad-pool and madx-lad-more (configs/transfer.json, "madx_lad_continue") are this
continued experiment and its control on 3 seeds; seed 1 reproduces the command above to the 4th decimal.

Each task adapter is saved (fp16, the weights it is scored with) beside --out under adapters/. Resumable: finished
(task, adapters, pool, start, epochs, rate, seed) items in --out are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

import madx_core as mx
from madx_core import data as D
from madx_core.atomic import atomic_write_text
from madx_core.backbones import load_tokenizer
from madx_core.results import score
from madx_core.tasks import get_task
from madx_core.training import TASK_ADAPTER, train_task_adapter
from madx_core.transfer import config_from_spec, load_task

NER_FOLDERS = {"sw": "swa", "ha": "hau", "pcm": "pcm"}  # MasakhaNER's folders: their dev splits are scored too
KEEP = {"PER", "LOC", "ORG"}
TARGETS = {"ner": "sw,ha,pcm", "qa": "de,ar,zh,es"}


def ner(path: Path) -> list[D.NerSentence]:
    return D.restrict_labels(D.read_conll(path), KEEP)


def splits_for(task: str, spec: dict, tests: dict, targets: list[str], data: Path) -> dict[tuple[str, str], list]:
    """(target, split) -> examples: the config's test sets (the source's too); for NER the targets' dev sets also."""
    out = {(t, "test"): tests[t] for t in [*targets, spec.get("source", "en")]}
    if task == "ner":
        out |= {(t, "dev"): ner(data / "ner" / NER_FOLDERS[t] / "dev.txt") for t in targets}
    return dict(sorted(out.items()))


def stack_for(way: str, tgt: str, src: str, name: str, loaded: set[str]) -> mx.Stack | None:
    """The stack a way of scoring reads on `tgt`: the target's adapter (swap), the source's (keep) or none; None when
    that adapter is not in --adapters (or, on the source, where swap is keep)."""
    lang = {"swap": tgt, "keep": src, "none": None}[way]
    if way == "swap" and tgt == src or lang is not None and lang not in loaded:
        return None
    return mx.Stack(name) if lang is None else mx.Stack(lang, name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["ner", "qa"], default="ner")
    p.add_argument("--adapters", required=True, help="folder with one language-adapter folder per language")
    p.add_argument("--pool", default="en,de,ar,zh,es,qu,mi", help="adapters drawn from in training; none: no adapter")
    p.add_argument("--targets", default=None, help="scored targets (default: NER sw,ha,pcm; QA de,ar,zh,es)")
    p.add_argument("--ways", default="swap,keep,none", help="stacks scored on each target: swap, keep, none")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--config", default="configs/transfer.json", help="the task's recipe and data are read from here")
    p.add_argument("--out", default="runs/pool/pool.json")
    p.add_argument("--epochs", type=float, default=None, help="train this many epochs instead of the config's budget")
    p.add_argument("--lr", type=float, default=None, help="this learning rate instead of the config's")
    p.add_argument("--start-from", default=None, help="a saved task adapter (with its head) to continue training from")
    args = p.parse_args()
    data = Path(os.environ.get("MADX_DATA_DIR", "../shared/data"))
    cfg = json.loads(Path(args.config).read_text())
    spec = cfg["tasks"][args.task]
    src = spec.get("source", "en")
    pool_names = args.pool.split(",")
    pool = [None if lang == "none" else lang for lang in pool_names]
    targets = (args.targets or TARGETS[args.task]).split(",")
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {"items": []}
    keys = ("adapters", "start_from", "epochs", "lr")  # with task, pool and seed: what makes an item
    done = {(i.get("task", "ner"), tuple(i["pool"]), i["seed"], *(i.get(k) for k in keys)) for i in report["items"]}

    model = mx.AdapterModel.from_pretrained(cfg["backbone"])
    tokenizer = load_tokenizer(cfg["backbone"])
    folder = Path(args.adapters)
    missing = [lang for lang in pool if lang is not None and not (folder / lang).is_dir()]
    if missing:
        raise SystemExit(f"pool adapters {missing} are not in {folder}")
    loaded = {lang for lang in {*pool, src, *targets} - {None} if (folder / lang).is_dir()}
    for lang in sorted(loaded):
        model.load_adapter(folder / lang, load_as=lang)
    train, tests = load_task(args.task, spec)
    labels = get_task(args.task).labels(train)
    if args.start_from:
        model.load_adapter(args.start_from, load_as="start", with_head=True)
        labels = model.heads["start"].config.labels or labels  # in the order its head predicts them
    splits = splits_for(args.task, spec, tests, targets, data)
    ways = args.ways.split(",")

    for seed in [int(s) for s in args.seeds.split(",")]:
        if (args.task, tuple(pool_names), seed, str(folder), args.start_from, args.epochs, args.lr) in done:
            continue
        config = config_from_spec(spec, seed, TASK_ADAPTER, cfg)
        if args.epochs is not None:
            config = replace(config, epochs=args.epochs)
        if args.lr is not None:
            config = replace(config, learning_rate=args.lr)
        name = f"{args.task}-pool-s{seed}"
        started = time.perf_counter()
        result = train_task_adapter(
            model,
            tokenizer,
            args.task,
            train,
            name,
            lang_adapter=pool,
            labels=labels,
            config=config,
            start_from=args.start_from and "start",
        )
        # scored with the fp16 weights that are kept, as the transfer run's are
        start = ["from", Path(args.start_from).name] if args.start_from else []
        kept = out.parent / "adapters" / "-".join([out.stem, *folder.parts[-2:], *pool_names, *start, f"s{seed}"])
        model.save_adapter(kept, name, with_head=True, dtype=torch.float16)
        model.load_adapter(kept, load_as=name, with_head=True)
        item = {"task": args.task, "adapters": str(folder), "pool": pool_names, "seed": seed, "epochs": args.epochs}
        item |= {"start_from": args.start_from, "lr": args.lr}  # None: the config's
        item |= {"steps": result.steps, "train_seconds": round(result.seconds), "f1": {}}
        for (tgt, split), examples in splits.items():
            for way in ways:
                stack = stack_for(way, tgt, src, name, loaded)
                if stack is None:
                    continue
                metrics = score(model, tokenizer, args.task, examples, stack, name, tgt)
                for metric, value in metrics.items():
                    item.setdefault(metric, {})[f"{tgt}/{split}/{way}"] = round(float(value), 4)
                print(f"{name} {tgt}/{split}/{way}: {metrics}", flush=True)
        item["eval_seconds"] = round(time.perf_counter() - started - result.seconds)
        model.delete_adapter(name)
        report["items"].append(item)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
        print(json.dumps(item), flush=True)


if __name__ == "__main__":
    main()
