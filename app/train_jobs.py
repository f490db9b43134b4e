"""The Train tab's work: its inputs checked and read, and the two kinds of job (run in the runner's thread).

A job trains on a private copy of the backbone; the finished adapter is loaded into the serving model, so it is
selectable in Explore at once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gradio.utils import get_upload_folder

from madx_core import data as D
from madx_core.backbones import hub_reachable
from madx_core.mlm import train_language_adapter
from madx_core.tasks import get_task
from madx_core.training import TASK_ADAPTER, TrainConfig, TrainResult, train_task_adapter

from .entry import AdapterEntry
from .jobs import Job
from .limits import MAX_TRAIN_SECONDS, MAX_TRAIN_STEPS, MAX_TRAIN_TEXT_BYTES
from .registry import NO_ADAPTER
from .state import AppState

MAX_TRAIN_EXAMPLES = 5_000  # more cannot be seen in 300 steps anyway
MAX_HUB_LINES = 20_000
# The app's jobs are short (at most 300 steps), so its language adapters default to a higher rate than the 1e-4 of
# the long recipe (training.LANGUAGE_ADAPTER); task adapters use the task-adapter preset's rate.
LANGUAGE_LR = 5e-4
TASK_LR = TASK_ADAPTER.learning_rate


# ----------------------------------------------------------------------------------------------------------
# Inputs


def _paths(files) -> list[Path]:
    """Uploaded files arrive as paths (gr.File's type="filepath"): one, a list, or none."""
    if not files:
        return []
    return [Path(f) for f in (files if isinstance(files, list) else [files])]


def collect_texts(text: str, files, hub_dataset: str) -> list[str]:
    """Lines of text for masked-LM training, from the text box, uploaded UTF-8 files, or a Hub dataset (online)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    paths = _paths(files)
    size = sum(p.stat().st_size for p in paths)
    if size > MAX_TRAIN_TEXT_BYTES:
        raise ValueError(f"the uploaded text is {size / 2**20:.1f} MB; the limit is {MAX_TRAIN_TEXT_BYTES // 2**20} MB")
    for p in paths:
        lines += D.read_text(p)
    if hub_dataset and hub_dataset.strip():
        lines += _hub_lines(hub_dataset.strip())
    if not lines:
        raise ValueError("no training text: paste text (one sentence or paragraph per line) or upload a .txt file")
    return lines


def _hub_lines(name: str) -> list[str]:
    if not hub_reachable():
        raise ValueError("the Hugging Face Hub is not reachable here (offline): paste or upload the text instead")
    import datasets

    dataset_name, _, config = name.partition(":")  # e.g. "wikimedia/wikipedia:20231101.qu"
    stream = datasets.load_dataset(dataset_name, config or None, split="train", streaming=True)
    lines = []
    for row in stream:
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise ValueError(f"Hub dataset {name!r} has no 'text' column")
        lines += [line for line in text.splitlines() if line.strip()]
        if len(lines) >= MAX_HUB_LINES:
            break
    return lines[:MAX_HUB_LINES]


def read_task_data(task: str, files) -> list:
    paths = _paths(files)
    if not paths:
        raise ValueError("upload training data: a CoNLL file (token label per line) for NER, or SQuAD JSON for QA")
    reader = get_task(task)
    examples = []
    for p in paths:
        examples += reader.read(p)
    if not examples:
        raise ValueError(f"no {task.upper()} examples found in the uploaded file")
    return examples[:MAX_TRAIN_EXAMPLES]


def sample_text() -> list[str]:
    """Sample sentences to train a language adapter on, written for this app (assets/examples.json)."""
    from .inference import load_examples

    return [line for line in load_examples().get("train_text", {}).get("lines", []) if isinstance(line, str)]


def train_config(steps: float, learning_rate: float, batch_size: float, max_length: int, seed: float) -> TrainConfig:
    steps = int(steps or 0)
    if not 1 <= steps <= MAX_TRAIN_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_TRAIN_STEPS} on this machine")
    if not 0 < float(learning_rate or 0) <= 1e-2:
        raise ValueError("learning rate must be in (0, 0.01]")
    return TrainConfig(
        steps=steps,
        batch_size=max(1, min(32, int(batch_size or 8))),
        learning_rate=float(learning_rate),
        max_length=max_length,
        seed=int(seed or 0),
        time_limit_s=MAX_TRAIN_SECONDS,
        log_every=1,
        precision="auto",  # bf16 where the CPU has it natively (train-lang's default; README, Benchmarks)
    )


def forget_upload(file: str | None) -> None:
    """Delete an uploaded file from Gradio's upload cache once it is read (only there: never a file of the app)."""
    if not file:
        return
    path = Path(file).resolve()
    if path.is_file() and path.is_relative_to(Path(get_upload_folder()).resolve()):
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------
# Jobs (run in the runner's thread)


def _training_model(state: AppState, backbone: str):
    """One private training copy per backbone, kept between jobs (jobs never overlap)."""
    cache = state.training_models
    if backbone not in cache:
        cache[backbone] = state.registry.training_copy(backbone)
    return cache[backbone]


def english_anchor(state: AppState, backbone: str) -> AdapterEntry | None:
    """The anchored variant's anchor: the shipped English adapter, which fits the default backbone only."""
    entry = state.registry.entries.get("en")
    return entry if entry and entry.origin == "shipped" and backbone == state.registry.default_backbone else None


def language_job(
    state: AppState, texts: list[str], name: str, backbone: str, config: TrainConfig, anchor: AdapterEntry | None = None
):
    """MAD-X's language adapter (rf 2 with NICE); with `anchor`, the anchored variant beyond the paper (the CLI's
    default on this backbone): it starts from that adapter and stays near its layer outputs while it learns."""

    def work(job: Job) -> AdapterEntry:
        job.state = "loading the backbone"
        model, tokenizer = _training_model(state, backbone)
        if anchor is not None and anchor.name not in model.adapters:
            model.load_adapter(anchor.path, load_as=anchor.name, with_head=False)

        def train(out: Path) -> TrainResult:
            run = {"config": config, "out_dir": out, "progress": job.record, "should_stop": job.cancel.is_set}
            if anchor is not None:
                run |= {"start_from": anchor.name, "anchor": anchor.name}
            return train_language_adapter(model, tokenizer, texts, name, **run)

        return _train_and_register(state, job, model, name, backbone, name, train)

    return work


def task_job(state: AppState, task: str, examples: list, name: str, lang: str, backbone: str, config: TrainConfig):
    lang_entry = None if lang in ("", NO_ADAPTER, None) else state.registry.get(lang, "language")

    def work(job: Job) -> AdapterEntry:
        job.state = "loading the backbone"
        model, tokenizer = _training_model(state, backbone)
        if lang_entry is not None and lang_entry.name not in model.adapters:
            state.registry.ensure_loaded(backbone, lang_entry)  # downloads a Hub adapter once if needed
            model.load_adapter(lang_entry.path, load_as=lang_entry.name, with_head=False)
        kind = get_task(task)

        def train(out: Path) -> TrainResult:
            return train_task_adapter(
                model,
                tokenizer,
                kind,
                examples,
                name,
                lang_adapter=lang_entry.name if lang_entry else None,
                labels=kind.labels(examples),
                config=replace(config, max_length=kind.max_length(config.max_length)),
                out_dir=out,
                progress=job.record,
                should_stop=job.cancel.is_set,
            )

        return _train_and_register(state, job, model, name, backbone, lang_entry.lang if lang_entry else None, train)

    return work


def _train_and_register(state: AppState, job: Job, model, name: str, backbone: str, lang: str | None, train):
    """Run `train(out)` into trained/<name>, then register the adapter; if anything fails, free the reserved name."""
    out = state.registry.work / "trained" / name
    try:
        result = train(out)
    except BaseException:
        state.registry.release(name)  # nothing was saved: the reserved name is free again
        raise
    finally:
        model.delete_adapter(name)  # the training copy keeps no adapter; the app loads the saved one
    job.state = "loading into the app"
    entry = state.registry.register_dir(out, "trained here", name, backbone, lang=lang)
    job.message = _result_line(result)
    return entry


def _result_line(result) -> str:
    stopped = " (stopped at the time limit)" if result.stopped_early else ""
    return (
        f"{result.steps} steps in {result.seconds:.0f} s{stopped}, {result.trainable_parameters:,} trainable parameters"
    )
