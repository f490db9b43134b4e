"""The zero-shot transfer matrix: train on the source language, evaluate on every target, for several systems.

    baseline   full fine-tuning of the backbone on the source task ("XLM-R" / "mBERT" row of the paper)
    mlm-trg    full MLM fine-tuning on target text, then full task fine-tuning (one model per target)
    madx-lad   a task adapter without language adapters
    madx-inv   language adapters without invertible adapters + task adapter
    madx       language adapters with NICE invertible adapters + task adapter; swap in the target's at test time
    madx-src   (scored with madx's task adapters, no training of its own) the source language's adapter kept at
               test time: what swapping in the target's adapter is measured against
    madx-anchor  (a variant beyond the paper, scored with madx's task adapters) each target's language adapter starts
               from the source's and trains with MLM plus a pull towards the source adapter's layer outputs on the
               target's text ("madx_anchor": {"weight": W}; see mlm.train_language_adapter's anchor), swapped in
    madx-lad-anchor  (a variant beyond the paper, scored with madx-lad's task adapters) each target's language adapter
               starts as MAD-X's and trains with MLM plus the same pull towards the frozen backbone's own layer
               outputs, swapped in under the task adapter trained with no language adapter (on the source: none)
    madx-lad-pool  (a variant beyond the paper) madx-lad's task adapter trained further ("madx_lad_continue":
               {"epochs": E, "lr": R}) with each batch of source examples stacked on no adapter or on one of
               madx-lad-anchor's target adapters, drawn at random; scored with the target's adapter swapped in
    madx-lad-more  (its control) the same continuation with no language adapter: as much more training, no adapters

A config (JSON) names the backbone, seeds, text per language, tasks with their train/test files, and the systems;
a task may name its own "systems" and "seeds", "epochs" or "steps", and "full_epochs" / "full_steps" / "full_lr" for
the full fine-tuning baselines. A task's "sources" ({lang: train file}) add more source languages (with
"source_systems", "source_seeds" and "source_steps"), which fills a source x target matrix. "extra_languages" get
language adapters too (for the demo), "system_seeds" ({system: seeds}) lets a costly system run fewer seeds, and
"device" / "precision" say where and how everything is trained. Paths may use $MADX_DATA_DIR.
Results are written to results.json and results.csv, one row per (system, source,
target, task, metric, seed), after every finished (task, system, seed); a run of the same config into the same
folder skips what is already there, so a run that was cut off resumes. `only` and `targets` compute part of a
config (e.g. on other machines), and merge_runs gathers such parts into one run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from . import data as D
from .adapters import AdapterConfig, Stack
from .atomic import atomic_write_text
from .backbones import DEFAULT_BACKBONE
from .mlm import ANCHOR_BACKBONE, ANCHOR_WEIGHT, train_language_adapter, train_mlm_full
from .model import AdapterModel
from .results import held_out_split, score_rows, summarise, write_results
from .tasks import get_task
from .training import (
    FULL_FINE_TUNING,
    LANGUAGE_ADAPTER,
    LANGUAGE_ADAPTER_SHAPE,
    MLM_FULL,
    TASK_ADAPTER,
    TASK_ADAPTER_SHAPE,
    TrainConfig,
    train_full,
    train_task_adapter,
)

SYSTEMS = (
    "baseline",
    "mlm-trg",
    "madx-lad",
    "madx-inv",
    "madx",
    "madx-src",
    "madx-anchor",
    "madx-lad-anchor",
    "madx-lad-pool",
    "madx-lad-more",
)
# Systems with no training of their own: another system's task adapters, scored on other language adapters
SCORED_WITH = {"madx-src": "madx", "madx-anchor": "madx", "madx-lad-anchor": "madx-lad"}
# Systems that continue training another system's task adapter (so their rows go when it is trained again)
CONTINUES = {"madx-lad-pool": "madx-lad", "madx-lad-more": "madx-lad"}
CONTINUE = {"epochs": 1, "lr": 1e-4}  # their budget and rate where a config's "madx_lad_continue" does not say
# What each anchored variant's target adapters are kept near: the source language's adapter, or None (the backbone
# alone, as -LAD's task adapters were trained); madx-lad-pool trains over madx-lad-anchor's
ANCHORED = {"madx-anchor": "source", "madx-lad-anchor": None}
ANCHORS = ANCHORED | {"madx-lad-pool": None}
DEFAULT_SYSTEMS = ["baseline", "madx-lad", "madx-inv", "madx"]  # MLM-TRG only on request: a full model per target
FULL_SYSTEMS = ("baseline", "mlm-trg")  # they train the whole backbone (the task's full_* settings), not adapters


def _path(p: str) -> str:
    return os.path.expandvars(os.path.expanduser(p))


STEPS = 500  # a config's training budget where it names neither steps nor epochs


def lang_adapter_shape(spec: dict, inv: str | None = "nice") -> AdapterConfig:
    """A language adapter's shape from a config's "lang_adapter" spec (reduction factor, layers left out)."""
    return replace(
        LANGUAGE_ADAPTER_SHAPE,
        reduction_factor=spec.get("reduction_factor", LANGUAGE_ADAPTER_SHAPE.reduction_factor),
        inv_adapter=inv,
        leave_out=spec.get("leave_out", []),
    )


def config_from_spec(spec: dict, seed: int, preset: TrainConfig, run: dict, full: bool = False) -> TrainConfig:
    """The preset with a config spec's settings over it (`run`: the whole config, for device and precision); with
    `full`, its full_* budget and rate (full fine-tuning has its own)."""
    prefix = "full_" if full else ""
    return replace(
        preset,
        steps=spec.get(prefix + "steps", spec.get("steps", STEPS)),
        epochs=spec.get(prefix + "epochs", None if full else spec.get("epochs")),
        batch_size=spec.get("batch_size", preset.batch_size),
        learning_rate=spec.get("full_lr" if full else "lr", preset.learning_rate),
        warmup_ratio=spec.get("warmup_ratio", preset.warmup_ratio),
        max_length=spec.get("max_length", preset.max_length),
        seed=seed,
        device=run.get("device", preset.device),
        precision=run.get("precision", preset.precision),
    )


def load_task(task: str, spec: dict, train_file: str | None = None) -> tuple[list, dict[str, list]]:
    """Training examples and test examples per target language, as the config describes them."""
    keep = set(spec.get("keep_labels", ["PER", "LOC", "ORG"]))
    t = get_task(task)

    def read(p: str) -> list:
        return t.keep_labels(t.load(_path(p)), keep)

    train = read(train_file or spec["train"])[: spec.get("max_train")]
    tests = {lang: read(p) for lang, p in spec["targets"].items()}
    if "eval_fraction" in spec:  # XQuAD as training data: split by article so no evaluated context is trained on
        split = spec["eval_fraction"]
        train = held_out_split(train, split)[0]
        tests = {lang: held_out_split(examples, split)[1] for lang, examples in tests.items()}
    return train, tests


def run_transfer(
    config_path: str | Path, out_dir: str | Path, only: list[str] | None = None, targets: list[str] | None = None
) -> dict:
    """Run every (task, system, seed) of the config; write results.json / results.csv into out_dir.

    `only` computes just those systems now (e.g. the costly baselines on another machine), `targets` scores just those
    target languages (e.g. one process per target on one GPU, merged afterwards with merge_runs); results.json still
    records the whole config, and a later run adds what is missing.
    """
    from .backbones import load_tokenizer

    cfg = json.loads(Path(config_path).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    systems = cfg.get("systems", DEFAULT_SYSTEMS)
    unknown = sorted({s for t in cfg["tasks"].values() for s in t.get("systems", [])}.union(systems) - set(SYSTEMS))
    if unknown:
        raise ValueError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    if only is not None and set(only) - set(SYSTEMS):
        raise ValueError(f"unknown systems {sorted(set(only) - set(SYSTEMS))}; known: {', '.join(SYSTEMS)}")
    seeds = cfg.get("seeds", [1])
    backbone = cfg.get("backbone", DEFAULT_BACKBONE)
    base = AdapterModel.from_pretrained(backbone)
    tokenizer = load_tokenizer(backbone)
    rows = _finished_rows(out, cfg)  # a run that was cut off resumes where it stopped
    work = cfg if targets is None else _with_targets(cfg, targets)  # what this invocation computes
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[transfer {time.perf_counter() - started:7.0f}s] {msg}", flush=True, file=sys.stderr)

    # 1. Language adapters (trained once; the paper varies seeds for the task stage only).
    lang_spec = cfg.get("lang_adapter", {})
    for inv, suffix, system in (("nice", "", "madx"), (None, "_noinv", "madx-inv")):
        if only is not None and system not in only and not (system == "madx" and "madx-anchor" in only):
            continue
        needed = set(cfg.get("extra_languages", [])) if system == "madx" and targets is None else set()
        for spec in work["tasks"].values():
            for src, systems_, _ in _sources(spec, systems, seeds):
                if system in systems_:
                    needed |= {src, *spec["targets"]}
        for lang in sorted(needed):
            name = lang + suffix
            given = cfg.get("lang_adapter_dirs" + suffix, {}).get(lang)
            directory = Path(_path(given)) if given else out / "adapters" / f"lang{suffix}" / lang
            record = {"backbone": backbone, "texts": cfg["texts"].get(lang), "lang_adapter": lang_spec, "inv": inv}
            record["precision"] = cfg.get("precision")
            # a folder the config gives, or one from a run before records were kept, is used as it is
            trusted = bool(given) or not (directory / "madx_training.json").is_file()
            shape = lang_adapter_shape(lang_spec, inv)
            _language_adapter(base, tokenizer, cfg, lang, name, directory, record, log, trusted, adapter_config=shape)
    if only is None or set(ANCHORS) & set(only):
        _anchored_adapters(base, tokenizer, cfg, work, systems, seeds, out, log, only)

    # 2. Task training on each source, zero-shot evaluation on every target.
    for task, spec in work["tasks"].items():
        for src, task_systems, task_seeds in _sources(spec, systems, seeds):
            train_file = spec["train"] if src == spec.get("source", "en") else spec["sources"][src]
            train, tests = load_task(task, spec, train_file)
            labels = get_task(task).labels(train)
            # the systems that read another's task adapter come after it
            in_order = sorted(task_systems, key=lambda s: s in ANCHORED or s in CONTINUES)
            for seed in task_seeds:
                for system in in_order:
                    if system == "madx-src" or _done(rows, task, system, seed, src, tests):
                        continue  # madx-src is scored together with madx
                    if only is not None and system not in only:
                        continue
                    if seed not in spec.get("system_seeds", {}).get(system, [seed]):
                        continue  # a costly system may run fewer seeds
                    # a partly scored run is trained again and scored on these targets (other targets' rows stay)
                    rows = [r for r in rows if not (_same_run(r, task, system, seed, src) and r["target"] in tests)]
                    if system in ANCHORED:  # no training: another system's task adapter on anchored target adapters
                        rows += _score_anchored(base, tokenizer, task, spec, tests, seed, src, out, system)
                    elif system in CONTINUES:
                        log(f"{task} {system} seed {seed}: continuing {CONTINUES[system]}'s task adapter")
                        rows += _run_continued(
                            base, tokenizer, task, spec, train, tests, labels, seed, system, cfg, src, out, log
                        )
                    elif system in FULL_SYSTEMS:
                        log(f"{task} {system} seed {seed}: training on {len(train)} {src} examples")
                        rows += _run_full(backbone, tokenizer, task, spec, train, tests, labels, seed, system, cfg, src)
                    else:
                        log(f"{task} {system} seed {seed}: training on {len(train)} {src} examples")
                        rows += _run_adapters(
                            base, tokenizer, task, spec, train, tests, labels, seed, system, cfg, src, out
                        )
                    write_results(out, rows, cfg)
    write_results(out, rows, cfg)
    return {"rows": len(rows), "out": str(out), "summary": summarise(rows)}


def merge_runs(config_path: str | Path, out_dir: str | Path, others: list[str | Path]) -> dict:
    """Add to out_dir's results the rows of other output folders of the same config (e.g. runs of `--only` on other
    machines, or of one target each), under the rule a resumed run uses: a row is taken only if this config would
    compute it the same way (backbone, texts, adapters' and task's settings, the target's test file). Computes
    nothing; a row already in out_dir wins."""
    cfg = json.loads(Path(config_path).read_text())
    out = Path(out_dir)
    rows = _finished_rows(out, cfg)
    have = {_key(r) for r in rows}
    for other in others:
        if not (Path(other) / "results.json").is_file():
            raise FileNotFoundError(f"no results.json in {other}")
        new = [r for r in _finished_rows(Path(other), cfg) if _key(r) not in have]
        rows += new
        have |= {_key(r) for r in new}
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, rows, cfg)
    return {"rows": len(rows), "out": str(out), "summary": summarise(rows)}


def _with_targets(cfg: dict, targets: list[str]) -> dict:
    """The config with each task's targets cut to `targets` (a task with none of them is left out)."""
    known = {t for spec in cfg["tasks"].values() for t in spec["targets"]}
    if set(targets) - known:
        raise ValueError(f"unknown targets {sorted(set(targets) - known)}; the config has {', '.join(sorted(known))}")
    tasks = {}
    for task, spec in cfg["tasks"].items():
        kept = {t: f for t, f in spec["targets"].items() if t in targets}
        if kept:
            tasks[task] = {**spec, "targets": kept}
    return {**cfg, "tasks": tasks}


def _key(r: dict) -> tuple:
    return r["task"], r["system"], r["seed"], r["source"], r["target"], r["metric"]


def _same_run(r: dict, task: str, system: str, seed: int, src: str) -> bool:
    """Whether row r came from this (task, system, seed, source) training run (madx-src and madx-anchor are scored
    with madx's task adapter, madx-lad-anchor with madx-lad's, and madx-lad-pool/-more continue madx-lad's, so they go
    when it is trained again)."""
    systems = {system} | {s for s, reads in (SCORED_WITH | CONTINUES).items() if reads == system}
    return r["task"] == task and r["system"] in systems and r["seed"] == seed and r["source"] == src


def _done(rows: list[dict], task: str, system: str, seed: int, src: str, tests: dict) -> bool:
    """Whether rows already score this training run on every target it is evaluated on (MLM-TRG: all but the
    source)."""
    targets = {t for t in tests if not (system == "mlm-trg" and t == src)}
    return targets <= {r["target"] for r in rows if _same_run(r, task, system, seed, src) and r["system"] == system}


def _sources(spec: dict, systems: list[str], seeds: list[int]) -> list[tuple[str, list[str], list[int]]]:
    """(source language, systems, seeds) for a task: its main source, then any extra "sources"."""
    main = (spec.get("source", "en"), spec.get("systems", systems), spec.get("seeds", seeds))
    extra = [
        (src, spec.get("source_systems", ["madx"]), spec.get("source_seeds", [1]))
        for src in spec.get("sources", {})
        if src != main[0]
    ]
    return [main, *extra]


def _run_adapters(base, tokenizer, task, spec, train, tests, labels, seed, system, cfg, src, out) -> list[dict]:
    """Train one task adapter (stacked on the source's language adapter, or on none for -LAD) and score it."""
    model_lang = {"madx": "", "madx-inv": "_noinv"}.get(system)
    name = task_adapter_name(task, system, seed, src, spec)
    result = _train_task(base, tokenizer, task, spec, train, labels, seed, system, cfg, src, out)
    rows = []
    # madx is also scored with the source's adapter kept (madx-src): the comparison that swapping is about.
    variants = [(system, lambda tgt: tgt)] + ([("madx-src", lambda tgt: src)] if system == "madx" else [])
    for scored_as, adapter_for in variants:
        for tgt, examples in tests.items():
            stack = Stack(name) if model_lang is None else Stack(adapter_for(tgt) + model_lang, name)
            row = result_row(scored_as, src, tgt, task, seed, base)
            rows += score_rows(base, tokenizer, examples, stack, name, row)
            rows[-1].update(trainable_parameters=result.trainable_parameters, train_seconds=result.seconds)
    base.delete_adapter(name)
    return rows


def _train_task(base, tokenizer, task, spec, train, labels, seed, system, cfg, src, out, **how):
    """Train `system`'s task adapter of this seed and source with the task's recipe (`how`: train_task_adapter's
    options over the system's own), ship it under adapters/task/ and keep it loaded."""
    model_lang = {"madx": "", "madx-inv": "_noinv"}.get(system)
    name = task_adapter_name(task, system, seed, src, spec)
    options = dict(
        lang_adapter=None if model_lang is None else src + model_lang,
        labels=labels,
        adapter_config=replace(
            TASK_ADAPTER_SHAPE, reduction_factor=spec.get("reduction_factor", TASK_ADAPTER_SHAPE.reduction_factor)
        ),
        config=config_from_spec(_adapter_spec(spec, src), seed, TASK_ADAPTER, cfg),
    )
    result = train_task_adapter(base, tokenizer, task, train, name, **(options | how))
    _ship(base, name, out / "adapters" / "task" / name, with_head=True)
    print(f"{name}: {result.steps} steps in {result.seconds:.0f}s, loss {result.losses[-1]:.3f}", file=sys.stderr)
    return result


def _run_continued(base, tokenizer, task, spec, train, tests, labels, seed, system, cfg, src, out, log) -> list[dict]:
    """madx-lad-pool / madx-lad-more: madx-lad's task adapter of this seed, as this run shipped it (trained again, with
    its recipe and unscored, if this folder lacks it), trained "madx_lad_continue" further over the backbone-anchored
    target adapters or over none, then scored (pool: the target's anchored adapter swapped in; more: none)."""
    start = task_adapter_name(task, CONTINUES[system], seed, src, spec)
    directory = out / "adapters" / "task" / start
    if directory.is_dir():
        base.load_adapter(directory, load_as=start, with_head=True)
    else:
        log(f"{task} {system} seed {seed}: {directory} is missing, training {CONTINUES[system]}'s task adapter first")
        _train_task(base, tokenizer, task, spec, train, labels, seed, CONTINUES[system], cfg, src, out)
    targets = [t for t in tests if t != src]
    pool = [None] + [_anchored_name(t, None) for t in targets] if system == "madx-lad-pool" else None
    more = CONTINUE | cfg.get("madx_lad_continue", {})
    config = config_from_spec(_adapter_spec(spec, src), seed, TASK_ADAPTER, cfg)
    config = replace(config, epochs=more["epochs"], learning_rate=more["lr"])
    labels = base.heads[start].config.labels  # in the order its head predicts them
    how = {"lang_adapter": pool, "adapter_config": None, "start_from": start, "config": config}
    result = _train_task(base, tokenizer, task, spec, train, labels, seed, system, cfg, src, out, **how)
    name = task_adapter_name(task, system, seed, src, spec)
    rows = []
    for tgt, examples in tests.items():
        stack = Stack(_anchored_name(tgt, None), name) if pool and tgt != src else Stack(name)
        rows += score_rows(base, tokenizer, examples, stack, name, result_row(system, src, tgt, task, seed, base))
        rows[-1].update(trainable_parameters=result.trainable_parameters, train_seconds=result.seconds)
    base.delete_adapter(name)
    base.delete_adapter(start)
    return rows


def task_adapter_name(task: str, system: str, seed: int, src: str, spec: dict) -> str:
    """The task adapter's name, also its folder under adapters/task/."""
    return f"{task}-{system}-s{seed}" + ("" if src == spec.get("source", "en") else f"-{src}")


def _anchored_name(lang: str, src: str | None) -> str:
    return f"{lang}_anchor_{src or 'none'}"


def _anchored_adapters(
    base, tokenizer, cfg: dict, work: dict, systems: list, seeds: list, out: Path, log, only: list | None = None
) -> None:
    """Train (or load) the anchored systems' target adapters (variants beyond the paper). For madx-anchor, every
    (source, target) it scores: the target's adapter starts from the source's madx adapter and trains with the
    language adapters' MLM recipe plus W x the mean over layers of 1 - cos(its layer outputs, the source adapter's) on
    the target's own text. For madx-lad-anchor (and madx-lad-pool, which trains over them), every target: MAD-X's
    fresh adapter, pulled towards the layer outputs of the backbone alone (no adapter, as madx-lad's task adapters
    were trained).
    """
    lang_spec, anchor_spec = cfg.get("lang_adapter", {}), cfg.get("madx_anchor", {})
    pairs = set()
    for spec in work["tasks"].values():
        for src, systems_, _ in _sources(spec, systems, seeds):
            for system in set(ANCHORS) & set(systems_) & set(only or ANCHORS):  # those this invocation computes
                anchor = src if ANCHORS[system] == "source" else None
                pairs |= {(anchor, tgt) for tgt in spec["targets"] if tgt != src}
    weight = anchor_spec.get("weight", ANCHOR_WEIGHT)
    for src, lang in sorted(pairs, key=lambda p: (p[0] or "", p[1])):
        name = _anchored_name(lang, src)
        record = {"backbone": cfg.get("backbone", DEFAULT_BACKBONE), "texts": cfg["texts"].get(lang)}
        record |= {"lang_adapter": lang_spec, "precision": cfg.get("precision"), "madx_anchor": anchor_spec}
        if src is None:  # kept near the backbone's own outputs, from MAD-X's own start
            record["anchor"] = ANCHOR_BACKBONE
            how = {"anchor": ANCHOR_BACKBONE, "anchor_weight": weight, "adapter_config": lang_adapter_shape(lang_spec)}
        else:  # what it starts from and keeps near
            record |= {"start_from": src, "source_texts": cfg["texts"].get(src)}
            how = {"start_from": src, "anchor": src, "anchor_weight": weight}
        directory = out / "adapters" / "lang_anchor" / (src or "none") / lang
        _language_adapter(base, tokenizer, cfg, lang, name, directory, record, log, **how)


def _language_adapter(
    base, tokenizer, cfg: dict, lang: str, name: str, directory: Path, record: dict, log, trusted=False, **how
) -> None:
    """Load the language adapter kept in `directory` if it was trained from `record` (what it was trained from, kept
    beside it in madx_training.json) or is `trusted`; else train it on `lang`'s text with the config's language-adapter
    recipe (`how`: train_language_adapter's options, e.g. its shape or anchor), ship it there and keep the record: an
    adapter of another recipe, text or backbone is trained again (its rows were already dropped by _finished_rows)."""
    made = directory / "madx_training.json"
    if directory.is_dir() and (trusted or (made.is_file() and json.loads(made.read_text()) == record)):
        base.load_adapter(directory, load_as=name)
        return
    texts = texts_for(cfg, lang)
    log(f"language adapter {name}: {len(texts)} lines")
    config = config_from_spec(cfg.get("lang_adapter", {}), 0, LANGUAGE_ADAPTER, cfg)
    result = train_language_adapter(base, tokenizer, texts, name, config=config, **how)
    _ship(base, name, directory, with_head=False)
    atomic_write_text(made, json.dumps(record, indent=2) + "\n")
    log(f"language adapter {name}: {result.steps} steps in {result.seconds:.0f}s, loss {result.losses[-1]:.3f}")


def _score_anchored(base, tokenizer, task: str, spec: dict, tests: dict, seed: int, src: str, out: Path, system: str):
    """An anchored system's rows: the task adapter of the system it reads (madx, madx-lad) as shipped by this run,
    with each target's anchored adapter swapped in; on the source itself, what that task adapter was trained on."""
    name = task_adapter_name(task, SCORED_WITH[system], seed, src, spec)
    directory = out / "adapters" / "task" / name
    if not directory.is_dir():
        raise FileNotFoundError(f"{system} reads {SCORED_WITH[system]}'s task adapter and {directory} is missing")
    base.load_adapter(directory, load_as=name, with_head=True)
    anchor = src if ANCHORED[system] == "source" else None
    rows = []
    for tgt, examples in tests.items():
        lang = anchor if tgt == src else _anchored_name(tgt, anchor)
        stack = Stack(lang, name) if lang else Stack(name)
        rows += score_rows(base, tokenizer, examples, stack, name, result_row(system, src, tgt, task, seed, base))
    base.delete_adapter(name)
    return rows


def _finished_rows(out: Path, cfg: dict) -> list[dict]:
    """Rows an earlier run in `out` finished that this config would compute the same way.

    A row is kept when everything it depends on is unchanged: the backbone, the language adapters' text and settings,
    the precision, the task's data, and the training recipe of its own system (a task adapter's budget is not full
    fine-tuning's: giving the task adapters more epochs keeps the baselines' rows); and only for the systems, seeds
    and sources this config still asks for (so a config can ask for more seeds or systems, and the run adds only those).
    """
    f = out / "results.json"
    if not f.is_file():
        return []
    previous = json.loads(f.read_text())
    before = previous.get("meta", {}).get("config", {})

    # Keys that only choose which rows to compute; every other key of a task changes how its rows are computed.
    # A target changes only its own rows: they are kept while its test file stays the same.
    selection = {"systems", "seeds", "system_seeds", "sources", "source_systems", "source_seeds", "targets"}

    def shared(c: dict, task: str) -> dict:  # what every system of the task reads, apart from its recipe
        return {k: v for k, v in c["tasks"][task].items() if k not in selection | RECIPE_KEYS}

    def same(r: dict) -> bool:
        keys = ("backbone", "texts", "lang_adapter", "lang_adapter_dirs", "lang_adapter_dirs_noinv", "precision")
        task = r["task"]
        return (
            task in before.get("tasks", {})
            and all(before.get(k) == cfg.get(k) for k in keys)
            and shared(before, task) == shared(cfg, task)
            and _recipe(before, task, r["system"], r["source"]) == _recipe(cfg, task, r["system"], r["source"])
            and (r["system"] not in ANCHORS or before.get("madx_anchor") == cfg.get("madx_anchor"))
            and (r["system"] not in CONTINUES or before.get("madx_lad_continue") == cfg.get("madx_lad_continue"))
        )

    def wanted(r: dict) -> bool:
        spec = cfg["tasks"][r["task"]]
        for src, systems, seeds in _sources(spec, cfg.get("systems", DEFAULT_SYSTEMS), cfg.get("seeds", [1])):
            if r["source"] == src:
                seeds = spec.get("system_seeds", {}).get(r["system"], seeds)
                test_file = before["tasks"][r["task"]].get("targets", {}).get(r["target"])
                same_test = test_file is not None and test_file == spec["targets"].get(r["target"])
                return r["system"] in [*systems, "madx-src"] and r["seed"] in seeds and same_test
        return False

    return [r for r in previous["rows"] if r["task"] in cfg["tasks"] and same(r) and wanted(r)]


# A task's keys that config_from_spec reads (and the task adapters' size): compared per system through _recipe.
RECIPE_KEYS = {
    "steps",
    "epochs",
    "source_steps",
    "lr",
    "batch_size",
    "max_length",
    "warmup_ratio",
    "reduction_factor",
} | {
    "full_steps",
    "full_epochs",
    "full_lr",
}


def _adapter_spec(spec: dict, src: str) -> dict:
    """A task's settings for the task adapters of source `src`: an extra source's own "source_steps" (its training
    set may be far smaller than the main source's, so epochs would not compare) replace the task's budget."""
    if src != spec.get("source", "en") and "source_steps" in spec:
        return {**spec, "steps": spec["source_steps"], "epochs": None}
    return spec


def _recipe(cfg: dict, task: str, system: str, src: str) -> tuple:
    """How `system` trains on `task` from `src` under `cfg`: its TrainConfig (seed and device aside; steps aside when
    epochs decide), and what else it reads: the task adapters' size, or MLM-TRG's first stage."""
    spec = cfg["tasks"][task]
    full = system in FULL_SYSTEMS
    spec = spec if full else _adapter_spec(spec, src)
    config = config_from_spec(spec, 0, FULL_FINE_TUNING if full else TASK_ADAPTER, cfg, full=full)
    config = replace(config, device="auto", steps=None if config.epochs else config.steps)
    if full:
        return config, cfg.get("mlm_trg") if system == "mlm-trg" else None
    return config, spec.get("reduction_factor")


def texts_for(cfg: dict, lang: str) -> list[str]:
    """Unlabelled text for a language: plain files, or the tokens of CoNLL files (their labels are not used)."""
    texts = []
    for p in cfg["texts"][lang]:
        path = _path(p)
        if D.is_hub_spec(path):
            texts += D.load_texts(path)
        elif path.endswith(".conll") or "/ner/" in path:
            texts += [" ".join(s.tokens) for s in D.read_conll(path)]
        elif path.endswith(".json"):
            texts += sorted({e.context for e in D.read_squad(path)})
        else:
            texts += D.read_text(path)
    return texts


def _ship(model: AdapterModel, name: str, directory: Path, with_head: bool) -> None:
    """Save in fp16 and load back, so that every score is computed with exactly the weights that are shipped."""
    model.save_adapter(directory, name, with_head=with_head, dtype=torch.float16)
    model.load_adapter(directory, load_as=name, with_head=with_head)


def _run_full(backbone, tokenizer, task, spec, train, tests, labels, seed, system, cfg, src) -> list[dict]:
    """Baselines that change the backbone itself, each on a fresh copy of it."""
    rows = []
    targets = [t for t in tests if t != src] if system == "mlm-trg" else [None]
    for tgt in targets:
        model = AdapterModel.from_pretrained(backbone)
        if tgt is not None:  # MLM-TRG: adapt the whole model to the target language first
            # the language adapters' budget unless "mlm_trg" says otherwise; never their learning rate (2e-5 here)
            mlm_spec = {k: v for k, v in cfg.get("lang_adapter", {}).items() if k != "lr"} | cfg.get("mlm_trg", {})
            train_mlm_full(model, tokenizer, texts_for(cfg, tgt), config=config_from_spec(mlm_spec, 0, MLM_FULL, cfg))
        config = config_from_spec(spec, seed, FULL_FINE_TUNING, cfg, full=True)
        result = train_full(model, tokenizer, task, train, task, labels=labels, config=config)
        for t, examples in tests.items():
            if tgt is None or t == tgt:
                row = result_row(system, src, t, task, seed, model)
                rows += score_rows(model, tokenizer, examples, None, task, row)
                rows[-1].update(trainable_parameters=result.trainable_parameters, train_seconds=result.seconds)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def result_row(system: str, source: str, target: str, task: str, seed: int, model: AdapterModel) -> dict:
    """The columns of a result row that say which system was scored where (results.score_rows adds the scores)."""
    return {
        "system": system,
        "source": source,
        "target": target,
        "task": task,
        "seed": seed,
        "device": model.device.type,
    }
