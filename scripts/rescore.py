"""Score a finished transfer run's adapters again on this machine, for comparisons on one device.

A run's rows may come from different machines (e.g. QA task adapters trained and scored on a GPU, a variant scored
later on this CPU); the same adapters scored on two devices can differ by a few tenths of a point (fp32 kernels
differ), which is the size of the differences issue 11 is about. This scores the named systems' stacks here, with
the run's own adapters and the config's test files, so that two systems can be compared on one device:

    MADX_DATA_DIR=../shared/data python -m scripts.rescore --config configs/transfer.json --run runs/transfer \
        --task qa --systems madx-lad --targets de,ar,zh,es --seeds 1,2,3 --out runs/rescore-cpu/qa.json

Resumable: rows already in --out are kept. The output is a results.json-like {"rows": [...], "summary": [...]}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import madx_core as mx
from madx_core.atomic import atomic_write_text
from madx_core.backbones import load_tokenizer
from madx_core.results import score_rows, summarise
from madx_core.transfer import SCORED_WITH, load_task, result_row, task_adapter_name

# system -> the language adapters (under the run's adapters/lang/) below the task adapter, given (source, target)
LANGUAGE_ADAPTERS = {
    "madx-lad": lambda src, tgt: [],
    "madx-src": lambda src, tgt: [src],
    "madx": lambda src, tgt: [tgt],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--run", required=True, help="a finished transfer output (its adapters/)")
    p.add_argument("--task", required=True, choices=["ner", "qa"])
    p.add_argument("--systems", required=True, help=f"comma-separated: {', '.join(LANGUAGE_ADAPTERS)}")
    p.add_argument("--targets", required=True)
    p.add_argument("--seeds", default="1")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    spec, run, out = cfg["tasks"][args.task], Path(args.run), Path(args.out)
    systems = args.systems.split(",")
    if set(systems) - set(LANGUAGE_ADAPTERS):
        raise SystemExit(f"unknown systems {sorted(set(systems) - set(LANGUAGE_ADAPTERS))}")
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []
    done = {(r["system"], r["seed"], r["target"]) for r in rows}
    src = spec.get("source", "en")
    model = mx.AdapterModel.from_pretrained(cfg["backbone"])
    tokenizer = load_tokenizer(cfg["backbone"])
    _, tests = load_task(args.task, {**spec, "targets": {t: spec["targets"][t] for t in args.targets.split(",")}})
    for seed in [int(s) for s in args.seeds.split(",")]:
        for system in systems:
            name = task_adapter_name(args.task, SCORED_WITH.get(system, system), seed, src, spec)
            model.load_adapter(run / "adapters" / "task" / name, load_as=name, with_head=True)
            for tgt, examples in tests.items():
                if (system, seed, tgt) in done:
                    continue
                langs = LANGUAGE_ADAPTERS[system](src, tgt)
                for lang in langs:
                    if lang not in model.adapters:
                        model.load_adapter(run / "adapters" / "lang" / lang, load_as=lang)
                started = time.perf_counter()
                row = result_row(system, src, tgt, args.task, seed, model)
                scored = score_rows(model, tokenizer, examples, mx.Stack(*langs, name), name, row)
                rows += scored
                metrics = ", ".join(f"{r['metric']} {r['value']}" for r in scored)
                print(f"{system} s{seed} {tgt}: {metrics} ({time.perf_counter() - started:.0f}s)", flush=True)
                payload = {"meta": {"config": args.config, "run": args.run}, "rows": rows, "summary": summarise(rows)}
                atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
            model.delete_adapter(name)


if __name__ == "__main__":
    main()
