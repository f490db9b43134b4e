"""Rebuild every shipped artifact in assets/ from scratch, with this project's own code and the shared data.

    MADX_DATA_DIR=../shared/data python -m scripts.build_assets [--skip-transfer]

1. the MLM head of the offline backbone comes from `python -m scripts.fit_mlm_head` (run it first if it is missing);
2. the NER and QA transfer runs (configs/transfer_ner.json, configs/transfer_qa.json) train the language adapters,
   the task adapters and the baselines, and score them (runs/transfer-*/results.json);
3. language adapters for the low-resource UDHR languages of the demo (qu, mi) are trained the same way;
4. the adapters are copied into assets/adapters/{lang,lang_noinv,task}/ (fp16, AdapterHub format), the results of
   both runs are merged into assets/results.json and .csv, and the README's results table is regenerated.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from madx_core import data as D
from madx_core.adapters import AdapterConfig
from madx_core.data import atomic_write_text
from madx_core.transfer import _write_results, run_transfer, summarise

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"
ASSETS = REPO / "assets"
DEMO_LANGS = ("qu", "mi")  # low-resource languages of the paper with UDHR text


def train_demo_languages(lang_spec: dict) -> None:
    from madx_core.backbones import load_tokenizer
    from madx_core.model import AdapterModel
    from madx_core.training import TrainConfig, train_language_adapter

    model = AdapterModel.from_pretrained("multilingual-e5-small")
    tokenizer = load_tokenizer("multilingual-e5-small")
    data = Path(os.environ["MADX_DATA_DIR"])
    for lang in DEMO_LANGS:
        out = RUNS / "demo" / "lang" / lang
        if out.is_dir():
            continue
        texts = D.read_text(data / "text" / "udhr" / f"{lang}.txt")
        config = TrainConfig(
            steps=lang_spec["steps"],
            batch_size=lang_spec["batch_size"],
            max_length=lang_spec["max_length"],
            learning_rate=lang_spec["lr"],
            seed=0,
        )
        train_language_adapter(
            model, tokenizer, texts, lang, AdapterConfig(reduction_factor=2, inv_adapter="nice"), config
        )
        model.save_adapter(out, lang, with_head=False, dtype=torch.float16)


def copy_adapters() -> None:
    shutil.rmtree(ASSETS / "adapters", ignore_errors=True)
    for run in ("transfer-ner", "transfer-qa"):
        for sub in ("lang", "lang_noinv"):
            for d in sorted((RUNS / run / "adapters" / sub).glob("*/")):
                target = ASSETS / "adapters" / sub / d.name
                if not target.exists():
                    shutil.copytree(d, target)
    for d in sorted((RUNS / "demo" / "lang").glob("*/")):
        shutil.copytree(d, ASSETS / "adapters" / "lang" / d.name)
    # The task adapters of MAD-X (seed 1) are the app's defaults; the -INV one goes with lang_noinv.
    for name, source in (
        ("ner", "transfer-ner/adapters/task/ner-madx-s1"),
        ("ner_noinv", "transfer-ner/adapters/task/ner-madx-inv-s1"),
        ("qa", "transfer-qa/adapters/task/qa-madx-s1"),
    ):
        if (RUNS / source).is_dir():
            shutil.copytree(RUNS / source, ASSETS / "adapters" / "task" / name)


def merge_results() -> None:
    rows, configs = [], {}
    for run in ("transfer-ner", "transfer-qa"):
        f = RUNS / run / "results.json"
        if f.is_file():
            r = json.loads(f.read_text())
            rows += r["rows"]
            configs[run] = r["meta"]["config"]
    _write_results(ASSETS, rows, {"runs": configs, "generated": time.strftime("%Y-%m-%d")})
    atomic_write_text(ASSETS / "results_summary.json", json.dumps(summarise(rows), indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--skip-transfer", action="store_true", help="reuse finished runs under runs/")
    args = p.parse_args()
    started = time.perf_counter()
    if not args.skip_transfer:
        for name in ("ner", "qa"):
            run_transfer(REPO / "configs" / f"transfer_{name}.json", RUNS / f"transfer-{name}")
    lang_spec = json.loads((REPO / "configs" / "transfer_ner.json").read_text())["lang_adapter"]
    train_demo_languages(lang_spec)
    copy_adapters()
    merge_results()
    from scripts.results_table import main as write_table

    sys.argv = sys.argv[:1]  # the table script reads its own arguments
    write_table()
    print(f"assets rebuilt in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
