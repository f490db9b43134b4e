"""Rebuild every shipped artifact in assets/ from scratch, with this project's own code and the shared data.

    MADX_DATA_DIR=../shared/data python -m scripts.build_assets [--skip-transfer]

1. the MLM head of the offline backbone comes from `python -m scripts.fit_mlm_head` (run it first if it is missing);
2. one transfer run (configs/transfer.json: QA, then NER) trains the language adapters (also for the low-resource
   demo languages qu and mi, its "extra_languages"), the task adapters and the baselines, and scores them
   (runs/transfer/results.json; a run that was cut off resumes, and what it has finished is what ships);
3. the adapters are copied into assets/adapters/{lang,lang_noinv,task}/ (fp16, AdapterHub format), the results of
   the run are copied into assets/results.json and .csv, and the README's results table is regenerated.

The run is meant for a GPU (`"device": "auto"` picks it): on a 2-core CPU its full-fine-tuning baselines alone take
hours. `--skip-transfer` only copies what runs/transfer holds, and refuses when it lacks an adapter that ships.
`--results-only` copies the run's results and regenerates the tables, and leaves the shipped adapters as they are:
for a run that was extended on a machine that holds only some of its adapters (e.g. a system added with --only).
`--run DIR` reads another run folder than runs/transfer (e.g. one that `transfer --merge` gathered).
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


# The run's task adapters that ship: the app's (seed 1), under its names
TASK_ADAPTERS = {
    "ner": "ner-madx-s1",  # MAD-X's (stacked on en)
    "ner_lad": "ner-madx-lad-s1",  # -LAD's (no language adapter: what the app runs when none is chosen)
    "ner_noinv": "ner-madx-inv-s1",  # -INV's (goes with lang_noinv)
    "qa": "qa-madx-s1",
    "qa_lad": "qa-madx-lad-s1",
}


def missing_adapters(run: Path) -> list[str]:
    """The run's adapter folders that ship and are not in `run` (copying would drop them from assets/)."""
    adapters = run / "adapters"
    wanted = [adapters / "lang", adapters / "lang_noinv", *(adapters / "task" / d for d in TASK_ADAPTERS.values())]
    return [os.path.relpath(d, REPO) for d in wanted if not d.is_dir()]


def copy_adapters(run: Path) -> None:
    """Replace assets/adapters with the run's adapters in one swap: a failed copy leaves the shipped ones as is."""
    with atomic_dir(ASSETS / "adapters") as out:
        for sub in ("lang", "lang_noinv"):
            for d in sorted((run / "adapters" / sub).glob("*/")):
                shutil.copytree(d, out / sub / d.name)
        # madx-anchor's target adapters (a variant beyond the paper), anchored to the English adapter: the NER
        # targets' only, for the app's examples; the QA targets' (3.6 MB each) stay in runs/ to keep the Space small
        for lang in ("sw", "ha", "pcm"):
            d = run / "adapters" / "lang_anchor" / "en" / lang
            if d.is_dir():
                shutil.copytree(d, out / "lang_anchor" / lang)
        for name, source in TASK_ADAPTERS.items():
            shutil.copytree(run / "adapters" / "task" / source, out / "task" / name)


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


def copy_results(run: Path) -> None:
    results = json.loads((run / "results.json").read_text())
    rows = results["rows"]
    write_results(ASSETS, rows, results["meta"]["config"])  # the run's own config, so a reader can rerun it
    atomic_write_text(ASSETS / "results_summary.json", json.dumps(summarise(rows), indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--skip-transfer", action="store_true", help="reuse finished runs under runs/")
    p.add_argument("--results-only", action="store_true", help="copy the run's results, keep the shipped adapters")
    p.add_argument("--run", default=None, help="the transfer run's folder (default: runs/transfer)")
    args = p.parse_args()
    run = Path(args.run) if args.run else RUNS / "transfer"
    started = time.perf_counter()
    if not (args.skip_transfer or args.results_only):
        run_transfer(REPO / "configs" / "transfer.json", run)
    elif not (run / "results.json").is_file():  # there is nothing finished to copy
        flag = "--results-only" if args.results_only else "--skip-transfer"
        raise SystemExit(f"{flag} copies a finished run, and {run / 'results.json'} is missing")
    if not args.results_only:
        missing = missing_adapters(run)
        if missing:  # before anything is touched
            raise SystemExit(f"{os.path.relpath(run, REPO)} lacks adapters that ship: {', '.join(missing)}")
        copy_adapters(run)
        stamp_backbone(json.loads((REPO / "configs" / "transfer.json").read_text())["backbone"])
    copy_results(run)
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
