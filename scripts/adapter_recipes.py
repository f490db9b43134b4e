"""Target language-adapter recipes, judged by what swapping them in does to zero-shot NER (issue 11).

Three questions. How does swapping change as a language adapter trains longer (MAD-X's recipe for 100, 200 and 400
steps: the learning curve the app draws)? Does a target adapter that STARTS FROM the source language's adapter make
swapping help? Does MAD-X 2.0 (no adapter in the last layer) help? Do smaller language adapters (reduction factor
16 instead of 2), with less room to move the representations, help?

MAD-X initialises every language adapter at random. On the offline backbone an adapter trained that way moves the
representations far from where the English adapter puts them, and the English task adapter, trained on the English
adapter's output, reads them worse than the English adapter's own (swapping loses to keeping it). Here the target's
adapter starts as a copy of the English adapter and is trained from there with the same MLM recipe, so it begins in
the space the task adapter knows and only learns the language's corrections. The task adapters are left as they are:
the existing English NER task adapters (one per seed), trained on the English adapter.

For each recipe and target (sw, ha, pcm): the adapter's held-out MLM loss and drift (against no adapter, on the
target's NER dev sentences), and NER F1 on dev and test with the new adapter swapped in, the English adapter kept,
and (for reference) MAD-X -LAD's task adapter with no language adapter. Recipes are compared on dev; test is reported.

    MADX_DATA_DIR=../shared/data python -m scripts.adapter_recipes --run runs/transfer \
        --recipes cold,cold-100,cold-200,warm --seeds 1,2,3 --out runs/recipes/recipes.json

`--run` is a finished `transfer` output (its adapters/lang/ and adapters/task/). Resumable: finished items are kept.
`--adapters runs/recipes/adapters` scores adapters trained before (e.g. against another run's task adapters).
Adding seeds to a recipe already scored scores its same adapter (saved under --out) with the new seeds' task adapters.
The anchor-W recipes (a variant beyond the paper, any weight W) start from the English adapter and add W x its drift
from the English adapter's layer outputs to the MLM loss (see anchor_weight).
The long-* recipes score checkpoints of scripts.long_adapters (the paper's batch on a GPU) from `--long`;
`--device cuda` scores on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import madx_core as mx
from madx_core import data as D
from madx_core.atomic import atomic_write_text
from madx_core.backbones import load_tokenizer
from madx_core.evaluation import evaluate_ner
from madx_core.mlm import train_language_adapter
from madx_core.training import (
    LANGUAGE_ADAPTER,
    LANGUAGE_ADAPTER_SHAPE,
    TASK_ADAPTER,
    train_task_adapter,
)
from madx_core.transfer import config_from_spec, texts_for
from scripts.lang_adapter_study import mlm_loss_and_drift

TARGETS = {"sw": "swa", "ha": "hau", "pcm": "pcm"}
KEEP = {"PER", "LOC", "ORG"}
# name -> (start from the English adapter?, steps, what it is). "cold" is the transfer run's own adapter (MAD-X's
# recipe: 400 steps from a random start), evaluated as it is; "cold-N" trains that recipe for N steps (the learning
# curve); "warm" starts from the English adapter; "madx2" trains its own English adapter and task adapters too.
RECIPES = {
    "cold": (False, None, "MAD-X: random start, MLM (the shipped adapter)"),
    "cold-100": (False, 100, "MAD-X's recipe, 100 steps"),
    "cold-200": (False, 200, "MAD-X's recipe, 200 steps"),
    "warm": (True, 400, "starts from the English adapter, then MLM"),
    "madx2": (False, 400, "MAD-X 2.0: no adapter in the last layer (English adapter and task adapters retrained)"),
    "rf16": (False, 400, "MAD-X's recipe, reduction factor 16 (English adapter and task adapters retrained)"),
}
# "long-N": checkpoints of one GPU run per language at the paper's batch and rate (64 x 128 tokens at 1e-4, linear
# schedule over 5,000 steps, stopped by a 250 s budget near 4k), trained by scripts.long_adapters; "long-first" is
# where that budget ended, "long-last" where its continuation (weights kept; a new optimiser and 4,500-step schedule,
# stopped by a 160 s budget near 7k) ended.
RECIPES["long-first"] = (False, None, "paper batch 64 (GPU run), end of its first 250 s (~4k steps)")
RECIPES["long-last"] = (False, None, "paper batch 64 (GPU run), continued for 160 s more (~7k steps)")


def anchor_weight(name: str) -> float | None:
    """The anchor weight of an "anchor-W" recipe (else None): a variant beyond the paper. The target's adapter starts
    from the English adapter and trains with MLM plus W x the mean over layers of 1 - cos(its states, the English
    adapter's states) on the same target text (mlm._MLMStep), so it learns the language but stays in the space the
    English task adapter was trained in; W -> infinity is keeping the English adapter."""
    return float(name[7:]) if name.startswith("anchor-") else None


def recipe_info(name: str) -> tuple[bool, int | None, str]:
    """(warm start?, steps to train here or None, what it is) of a recipe name; long-N and anchor-W for any N, W."""
    if name.startswith("long-") and name[5:].isdigit():
        return False, None, f"paper batch 64 (GPU run), checkpoint at {int(name[5:]):,} steps"
    if anchor_weight(name) is not None:
        return True, 400, f"starts from the English adapter, MLM + {anchor_weight(name):g} x drift from it (variant)"
    return RECIPES[name]


# Recipes whose language adapters have another shape than the run's: every language adapter of the recipe, the
# English one too, has that shape, and the English NER task adapters are trained again on its English adapter, so
# swap and keep are compared as MAD-X would be with that shape throughout.
OWN_SHAPE = {
    "madx2": replace(LANGUAGE_ADAPTER_SHAPE, leave_out=[11]),  # MAD-X 2.0 (Pfeiffer et al., 2021)
    "rf16": replace(LANGUAGE_ADAPTER_SHAPE, reduction_factor=16),  # bottlenecks of 24 instead of 192
}


def own_sources(model, tokenizer, cfg: dict, config, seeds: list[int], recipe: str, folder: Path) -> None:
    """A recipe's own English adapter (shape OWN_SHAPE[recipe]) and, stacked on it, one English NER task adapter per
    seed (the transfer config's task recipe); trained once, saved under `folder` and loaded from there afterwards."""
    if f"en-{recipe}" not in model.adapters:
        if (folder / "en").is_dir():
            model.load_adapter(folder / "en", load_as=f"en-{recipe}")
        else:
            train_language_adapter(
                model, tokenizer, texts_for(cfg, "en"), f"en-{recipe}", adapter_config=OWN_SHAPE[recipe],
                config=config, out_dir=folder / "en",
            )  # fmt: skip
    spec = cfg["tasks"]["ner"]
    for seed in seeds:
        name = f"ner-{recipe}-s{seed}"
        if name in model.adapters:
            continue
        if (folder / name).is_dir():
            model.load_adapter(folder / name, load_as=name)
            continue
        train = D.restrict_labels(D.read_conll(os.path.expandvars(spec["train"])), KEEP)
        task_config = config_from_spec(spec, seed, TASK_ADAPTER, cfg)
        train_task_adapter(
            model, tokenizer, "ner", train, name, lang_adapter=f"en-{recipe}", labels=D.label_list(train),
            config=task_config, out_dir=folder / name,
        )  # fmt: skip


def summarise(report: dict) -> list[dict]:
    """Per (recipe, target): the adapter's steps, MLM loss and drift, and NER F1 (0-100) means over the seeds of
    swapping it in, keeping the English adapter and -LAD, with gain = swap - keep, on dev and on test."""
    out = []
    for item in report["items"]:
        row = {k: item.get(k) for k in ("recipe", "target", "steps", "mlm_loss_without", "mlm_loss", "drift")}
        row["warm"] = recipe_info(item["recipe"])[0]
        row["batch_size"] = item.get("batch_size")
        # MAD-X's recipe at a budget: the CPU recipe's batch (cold, cold-N) or the paper's batch on a GPU (long-*)
        row["curve"] = item["recipe"] == "cold" or item["recipe"].startswith(("cold-", "long-"))
        for split in ("dev", "test"):
            seeds = sorted(k.split("/")[-1] for k in item["f1"] if k.startswith(f"{split}/swap/"))
            refs = [
                report["reference"].get(f"{item['target']}/{s}", {})
                | {k.rsplit("/", 1)[0]: v for k, v in item["f1"].items() if k.endswith(f"/{s}") and "/swap/" not in k}
                for s in seeds
            ]
            if not seeds or any(f"{split}/keep" not in r for r in refs):
                continue
            swap = [item["f1"][f"{split}/swap/{s}"] for s in seeds]
            means = {
                "swap": statistics.mean(swap),
                "keep": statistics.mean(r[f"{split}/keep"] for r in refs),
                "none": statistics.mean(r[f"{split}/none"] for r in refs),
            }
            row[split] = {k: round(100 * v, 1) for k, v in means.items()} | {"seeds": len(seeds)}
            row[split]["gain"] = round(row[split]["swap"] - row[split]["keep"], 1)
        out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/transfer", help="a transfer output folder")
    p.add_argument("--config", default="configs/transfer.json")
    p.add_argument("--recipes", default="cold,warm")
    p.add_argument("--targets", default="sw,ha,pcm")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--out", default="runs/recipes/recipes.json")
    p.add_argument("--long", default="runs/long", help="scripts.long_adapters output, for the long-* recipes")
    p.add_argument("--device", default="cpu", help="where to evaluate (training follows the config's device)")
    p.add_argument(
        "--adapters",
        default="",
        help="score the recipes' adapters already trained in DIR/<recipe>/<target> (another --out's adapters/, e.g. "
        "runs/recipes/adapters) instead of training them again: the same adapters against another run's task adapters",
    )
    args = p.parse_args()
    data = Path(os.environ.get("MADX_DATA_DIR", "../shared/data"))
    cfg = json.loads(Path(args.config).read_text())
    run, out = Path(args.run), Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    report = json.loads(out.read_text()) if out.is_file() else {"items": [], "reference": {}}

    def save() -> None:
        report["summary"] = summarise(report)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")

    model = mx.AdapterModel.from_pretrained(cfg["backbone"])
    tokenizer = load_tokenizer(cfg["backbone"])
    model.to(args.device)
    model.load_adapter(run / "adapters" / "lang" / "en", load_as="en")

    def run_task_adapters(seed: int) -> None:
        """The run's English NER task adapters of a seed (MAD-X's and -LAD's), loaded when first needed: a recipe
        with its own task adapters whose references are already in --out needs none of them."""
        if f"ner-s{seed}" not in model.adapters:
            model.load_adapter(run / "adapters" / "task" / f"ner-madx-s{seed}", load_as=f"ner-s{seed}")
            model.load_adapter(run / "adapters" / "task" / f"ner-madx-lad-s{seed}", load_as=f"lad-s{seed}")

    la = cfg["lang_adapter"]
    recipe_config = config_from_spec(cfg["lang_adapter"], 0, LANGUAGE_ADAPTER, cfg)  # as the run's adapters
    for item in report["items"]:  # every recipe but long-* trains with the config's batch
        item.setdefault("batch_size", recipe_config.batch_size)
    # how the English NER task adapters every recipe is scored with were trained (the --run's own config)
    ner = json.loads((run / "results.json").read_text())["meta"]["config"]["tasks"]["ner"]
    report["task_adapters"] = {"run": run.name} | {k: ner.get(k) for k in ("epochs", "steps", "batch_size", "lr")}

    def first_adapter(recipe: str, tgt: str, name: str) -> dict:
        """The recipe's target adapter, trained here or loaded, as `name`, and its item (no F1 yet): the first time
        this (recipe, target) is scored."""
        warm, steps, _ = recipe_info(recipe)
        item = {"recipe": recipe, "target": tgt, "f1": {}, "batch_size": recipe_config.batch_size}
        if steps is not None and args.adapters and (Path(args.adapters) / recipe / tgt).is_dir():
            model.load_adapter(Path(args.adapters) / recipe / tgt, load_as=name)  # trained before: scored only
            item.update(steps=steps, trained_in=(Path(args.adapters) / recipe / tgt).as_posix())
        elif steps is not None:
            started = time.perf_counter()
            result = train_language_adapter(
                model,
                tokenizer,
                texts_for(cfg, tgt),
                name,
                start_from="en" if warm else None,
                adapter_config=OWN_SHAPE.get(recipe),  # None: the run's shape, or the English adapter's
                config=replace(recipe_config, steps=steps),
                anchor="en" if anchor_weight(recipe) is not None else None,
                anchor_weight=anchor_weight(recipe) or 0.0,
                out_dir=out.parent / "adapters" / recipe / tgt,
            )
            seconds = round(time.perf_counter() - started)
            item.update(steps=result.steps, train_seconds=seconds, final_loss=result.losses[-1])
        elif recipe.startswith("long-"):  # a checkpoint of scripts.long_adapters' run for this language
            runs = {int(d.name.split("-")[1]): d for d in (Path(args.long) / tgt).glob("step-*")}
            log = json.loads((Path(args.long) / f"{tgt}.json").read_text())  # the first run's
            step = {"long-last": max(runs), "long-first": log["steps_done"]}.get(recipe) or int(recipe[5:])
            model.load_adapter(runs[step], load_as=name)
            item.update(steps=step, batch_size=log["recipe"]["batch_size"])
        else:  # the transfer run's own adapter, trained with the config's recipe
            model.load_adapter(run / "adapters" / "lang" / tgt, load_as=name)
            item["steps"] = la["steps"]
        return item

    for tgt in args.targets.split(","):
        splits = {
            s: D.restrict_labels(D.read_conll(data / "ner" / TARGETS[tgt] / f"{s}.txt"), KEEP) for s in ("dev", "test")
        }
        heldout = [" ".join(s.tokens) for s in splits["dev"]]
        for seed in seeds:  # the systems that do not depend on the recipe, once
            key = f"{tgt}/s{seed}"
            if key not in report["reference"]:
                run_task_adapters(seed)
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
            item = next((i for i in report["items"] if i["recipe"] == recipe and i["target"] == tgt), None)
            todo = [s for s in seeds if item is None or f"test/swap/s{s}" not in item["f1"]]
            if not todo:
                continue
            name = f"{tgt}-{recipe}"
            stack_en, task = "en", "ner-s{seed}"
            if recipe in OWN_SHAPE:  # its own English adapter and English task adapters, of the recipe's shape
                stack_en, task = f"en-{recipe}", f"ner-{recipe}-s{{seed}}"
                own_sources(model, tokenizer, cfg, recipe_config, seeds, recipe, out.parent / "adapters" / recipe)
            new = item is None
            if new:
                item = first_adapter(recipe, tgt, name)
            else:  # scored before on fewer seeds: the same adapter, on the seeds it lacks
                saved = Path(item.get("trained_in") or out.parent / "adapters" / recipe / tgt)
                if recipe == "cold":
                    saved = run / "adapters" / "lang" / tgt
                if not saved.is_dir():
                    raise SystemExit(f"{recipe}/{tgt} lacks seeds {todo} and its adapter is not in {saved}")
                model.load_adapter(saved, load_as=name)
            if new:  # what the adapter does to the MLM loss and the states: once per adapter
                base, _ = mlm_loss_and_drift(model, tokenizer, heldout, None)
                loss, drift = mlm_loss_and_drift(model, tokenizer, heldout, name)
                _, drift_en = mlm_loss_and_drift(model, tokenizer, heldout, stack_en)
                item.update(
                    mlm_loss_without=round(base, 3),
                    mlm_loss=round(loss, 3),
                    drift=round(drift, 3),
                    drift_en=round(drift_en, 3),
                )
            for seed in todo:
                if recipe not in OWN_SHAPE:
                    run_task_adapters(seed)
                head = task.format(seed=seed)
                ways = {"swap": name} | ({"keep": stack_en} if stack_en != "en" else {})
                for split, sents in splits.items():
                    for way, lang in ways.items():
                        f1 = evaluate_ner(model, tokenizer, sents, mx.Stack(lang, head), head)[0]["f1"]
                        item["f1"][f"{split}/{way}/s{seed}"] = round(float(f1), 4)
            model.delete_adapter(name)
            if new:
                report["items"].append(item)
            save()
            print(json.dumps(item), flush=True)
    save()


if __name__ == "__main__":
    main()
