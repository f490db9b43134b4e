"""Rebuild every shipped artifact in assets/ from scratch, with this project's own code and the shared data.

    MADX_DATA_DIR=../shared/data python -m scripts.build_assets [--skip-transfer]

1. the MLM head of the offline backbone comes from `python -m scripts.fit_mlm_head` (run it first if it is missing);
2. one transfer run (configs/transfer.json: QA, then NER) trains the language adapters (also for the low-resource
   demo languages qu and mi, its "extra_languages"), the task adapters and the baselines, and scores them
   (runs/transfer/results.json; a run that was cut off resumes, and what it has finished is what ships);
3. the adapters are copied into assets/adapters/{lang,lang_noinv,task}/ (fp16, AdapterHub format), the results of
   the run are copied into assets/results.json and .csv, and the README's results table is regenerated.

The run is meant for a GPU (`"device": "auto"` picks it): on a 2-core CPU its full-fine-tuning baselines alone take
hours. `--skip-transfer` only copies what runs/transfer holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from madx_core.atomic import atomic_dir, atomic_write_text
from madx_core.results import summarise, write_results
from madx_core.transfer import run_transfer

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"
ASSETS = REPO / "assets"


def text_stats(cfg: dict) -> None:
    """How much unlabelled text each language adapter had (lines, sub-word tokens) and how much of it training saw."""
    from madx_core.backbones import load_tokenizer
    from madx_core.transfer import texts_for

    tokenizer = load_tokenizer(cfg["backbone"])
    data = os.environ["MADX_DATA_DIR"]
    sources = cfg["texts"]
    spec = cfg["lang_adapter"]
    stats = {}
    for lang, files in sources.items():
        texts = texts_for({"texts": sources}, lang)
        tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        stats[lang] = {
            "lines": len(texts),
            "tokens": tokens,
            "sources": [Path(os.path.expandvars(f).replace(data, "data")).as_posix() for f in files],
            "sequences_seen": spec["steps"] * spec["batch_size"],
        }
    atomic_write_text(ASSETS / "text_stats.json", json.dumps(stats, indent=1))


def copy_adapters() -> None:
    """Replace assets/adapters with the run's adapters in one swap: a failed copy leaves the shipped ones as is."""
    with atomic_dir(ASSETS / "adapters") as out:
        for sub in ("lang", "lang_noinv"):
            for d in sorted((RUNS / "transfer" / "adapters" / sub).glob("*/")):
                shutil.copytree(d, out / sub / d.name)
        # madx-anchor's target adapters (a variant beyond the paper), anchored to the English adapter: the NER
        # targets' only, for the app's examples; the QA targets' (3.6 MB each) stay in runs/ to keep the Space small
        for lang in ("sw", "ha", "pcm"):
            d = RUNS / "transfer" / "adapters" / "lang_anchor" / "en" / lang
            if d.is_dir():
                shutil.copytree(d, out / "lang_anchor" / lang)
        # The task adapters of seed 1 are the app's: MAD-X's (stacked on en), -LAD's (trained with no language
        # adapter, what the app runs when "no language adapter" is chosen) and -INV's (goes with lang_noinv).
        for name, source in (
            ("ner", "transfer/adapters/task/ner-madx-s1"),
            ("ner_lad", "transfer/adapters/task/ner-madx-lad-s1"),
            ("ner_noinv", "transfer/adapters/task/ner-madx-inv-s1"),
            ("qa", "transfer/adapters/task/qa-madx-s1"),
            ("qa_lad", "transfer/adapters/task/qa-madx-lad-s1"),
        ):
            if (RUNS / source).is_dir():
                shutil.copytree(RUNS / source, out / "task" / name)


def stamp_backbone(backbone: str) -> None:
    """Record the backbone's public name and fingerprint in every shipped config that does not carry them yet.

    Runs saved by code older than the fingerprint recorded a local cache folder as model_name; their adapters were
    trained on this same backbone (the config names it), so its name and fingerprint are filled in here.
    """
    from madx_core.adapterhub import FINGERPRINT_KEY
    from madx_core.backbones import backbone_fingerprint, backbone_name
    from madx_core.model import AdapterModel

    model = AdapterModel.from_pretrained(backbone)
    for f in sorted((ASSETS / "adapters").glob("*/*/*_config.json")):
        meta = json.loads(f.read_text())
        if FINGERPRINT_KEY not in meta:
            meta.update({FINGERPRINT_KEY: backbone_fingerprint(model), "model_name": backbone_name(model)})
            atomic_write_text(f, json.dumps(meta, indent=2, sort_keys=True))


def copy_results() -> None:
    run = json.loads((RUNS / "transfer" / "results.json").read_text())
    rows = run["rows"]
    write_results(ASSETS, rows, run["meta"]["config"])  # the run's own config, so a reader can rerun it
    atomic_write_text(ASSETS / "results_summary.json", json.dumps(summarise(rows), indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--skip-transfer", action="store_true", help="reuse finished runs under runs/")
    args = p.parse_args()
    started = time.perf_counter()
    if not args.skip_transfer:
        run_transfer(REPO / "configs" / "transfer.json", RUNS / "transfer")
    elif not (RUNS / "transfer" / "results.json").is_file():  # else the shipped adapters would be replaced by none
        raise SystemExit("--skip-transfer copies a finished run, and runs/transfer/results.json is missing")
    copy_adapters()
    stamp_backbone(json.loads((REPO / "configs" / "transfer.json").read_text())["backbone"])
    copy_results()
    if (RUNS / "study" / "study.json").is_file():  # the language-adapter study behind the README's table
        shutil.copy(RUNS / "study" / "study.json", ASSETS / "study.json")
    if (RUNS / "recipes" / "recipes.json").is_file():  # the target-adapter recipes and the app's learning curve
        shutil.copy(RUNS / "recipes" / "recipes.json", ASSETS / "recipes.json")
    if (RUNS / "recipes-e3" / "recipes.json").is_file():  # the anchored recipes with the shipped task adapters
        shutil.copy(RUNS / "recipes-e3" / "recipes.json", ASSETS / "recipes_converged.json")
    if (RUNS / "drift" / "drift.json").is_file():  # drift and MLM loss of each kind of target adapter
        shutil.copy(RUNS / "drift" / "drift.json", ASSETS / "adapter_drift.json")
    text_stats(json.loads((REPO / "configs" / "transfer.json").read_text()))
    from scripts.results_table import main as write_table

    sys.argv = sys.argv[:1]  # the table script reads its own arguments
    write_table()
    print(f"assets rebuilt in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
