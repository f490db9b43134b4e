"""`python -m madx_core ...`: MAD-X from the command line. Results go to stdout (JSON with --json), progress to stderr.

Bad input ends with a one-line error on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import data as D
from . import launch
from .adapters import AdapterConfig, Stack
from .cli_checks import validate
from .tasks import TASKS, get_task


def _print(result: dict, as_json: bool) -> None:
    from .distributed import is_main_process

    if not is_main_process():  # under `accelerate launch`, one result, from the main process
        return
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


class _ProgressBar:
    """Training progress on stderr as a tqdm bar (steps, rate, time left, loss), like transformers' own commands.

    One bar per run: it opens at the first report, and closes at the last step or when the command ends (a time limit
    stops training early). stdout is never touched, so `--json` output stays clean.
    """

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, info: dict) -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.total != info["total"] or info["step"] < self.bar.n:
            self.close()
            self.bar = tqdm(total=info["total"], desc="training", unit="step", file=sys.stderr, dynamic_ncols=True)
        self.bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
        self.bar.update(info["step"] - self.bar.n)
        if info["step"] >= info["total"]:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


_progress = _ProgressBar()


def _log(message: str) -> None:
    """A note on stderr, from the main process only (not once per process under `accelerate launch`)."""
    from .distributed import is_main_process

    if is_main_process():
        print(message, file=sys.stderr)


def _load(backbone: str):
    from .backbones import load_tokenizer
    from .model import AdapterModel

    started = time.perf_counter()
    model = AdapterModel.from_pretrained(backbone)
    tokenizer = load_tokenizer(backbone)
    _log(f"loaded {backbone} ({model.source}) in {time.perf_counter() - started:.1f}s")
    return model, tokenizer


def _load_adapter(model, spec: str | None, load_as: str | None = None) -> str | None:
    """Load an adapter from a directory or an AdapterHub name on the Hub; returns its name in the model."""
    if not spec:
        return None
    from .adapterhub import load_adapter
    from .backbones import fetch_adapter

    # An adapter trained on other backbone weights still loads here, with a one-line warning (the app refuses it).
    warn = lambda reason: print(f"warning: {reason}", file=sys.stderr)  # noqa: E731
    return load_adapter(model, fetch_adapter(spec), load_as=load_as, on_mismatch=warn)


def _task_data(args) -> list:
    """The command's --data as the task's examples, with --keep-labels applied (NER)."""
    task = get_task(args.task)
    examples = task.load(args.data)
    return task.keep_labels(examples, set(args.keep_labels.split(","))) if args.keep_labels else examples


def _train_config(args, preset):
    """The preset (training.LANGUAGE_ADAPTER, TASK_ADAPTER, FULL_FINE_TUNING) with the command's options over it."""
    config = replace(
        preset,
        seed=args.seed,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=args.device,
        precision=args.precision,
        time_limit_s=args.time_limit,
        grad_accum=args.grad_accum,
        checkpoint_every=args.checkpoint_every or 0,
        resume=args.resume,
    )
    if getattr(args, "epochs", None):
        config.epochs = args.epochs
    if args.steps:
        config.steps = args.steps
    if args.lr:
        config.learning_rate = args.lr
    if getattr(args, "task", None):
        config.max_length = get_task(args.task).max_length(config.max_length)
    if config.checkpoint_every or config.resume:
        config.checkpoint = str(checkpoint_path(args.out))
        if config.resume and not Path(config.checkpoint).is_file():
            _log(f"no checkpoint at {config.checkpoint}: starting from step 0")
    return config


def checkpoint_path(out: str) -> Path:
    """The resumable state of a run into `out`: a sibling file, since `out` itself appears only when it is done."""
    out_path = Path(out).expanduser()
    return out_path.parent / f"{out_path.name}.checkpoint"


# ----------------------------------------------------------------------------------------------------------
# Commands


def cmd_info(args) -> dict:
    from .backbones import describe_backbone

    return describe_backbone(args.backbone)


def cmd_train_lang(args) -> dict:
    from .mlm import TextStream, train_language_adapter
    from .training import LANGUAGE_ADAPTER

    if args.stream:  # --text is read and tokenised a buffer at a time while training, never whole
        texts = TextStream(args.text, buffer_lines=args.stream_buffer, seed=args.seed)
    else:
        texts = [line for path in args.text for line in D.load_texts(path)]
    model, tokenizer = _load(args.backbone)
    inv = None if args.inv == "none" else args.inv
    adapter_config = AdapterConfig(reduction_factor=args.reduction_factor, inv_adapter=inv, non_linearity=args.act)
    config = _train_config(args, LANGUAGE_ADAPTER)
    # an anchor (a variant beyond the paper): start from that adapter, shape included, and stay near its layer outputs
    spec = _anchor(args, adapter_config)
    anchor = _load_adapter(model, spec, load_as=f"{args.lang}-anchor") if spec else None
    result = train_language_adapter(
        model,
        tokenizer,
        texts,
        args.lang,
        adapter_config=None if anchor else adapter_config,
        start_from=anchor,
        config=config,
        out_dir=args.out,
        progress=_progress,
        anchor=anchor,
        anchor_weight=args.anchor_weight,
    )
    lines = {"streamed_files": len(args.text)} if args.stream else {"lines": len(texts)}
    anchored = {"anchor": spec, "anchor_weight": args.anchor_weight} if anchor else {"anchor": None}
    return {"out": args.out, "lang": args.lang, **lines, **anchored, **_summary(result)}


def _anchor(args, shape: AdapterConfig) -> str | None:
    """The adapter train-lang anchors to. "auto", the default: the shipped English adapter when training another
    language on the shipped backbone in its shape (on this backbone MAD-X's own recipe makes transfer worse than
    keeping the English adapter; README, Results); "none": MAD-X's recipe (random start, MLM only)."""
    if args.anchor == "none":
        return None
    if args.anchor != "auto":
        return args.anchor
    from .backbones import ASSETS, DEFAULT_BACKBONE
    from .training import LANGUAGE_ADAPTER_SHAPE

    english = ASSETS / "adapters" / "lang" / "en"
    if args.backbone != DEFAULT_BACKBONE or args.lang == "en" or not english.is_dir():
        return None
    return str(english) if shape == LANGUAGE_ADAPTER_SHAPE else None  # the shipped adapters' shape


def cmd_train_task(args) -> dict:
    from .training import TASK_ADAPTER, train_task_adapter

    examples = _task_data(args)
    model, tokenizer = _load(args.backbone)
    lang = _load_adapter(model, args.lang_adapter)
    config = _train_config(args, TASK_ADAPTER)
    adapter_config = AdapterConfig(reduction_factor=args.reduction_factor, non_linearity=args.act)
    result = train_task_adapter(
        model,
        tokenizer,
        args.task,
        examples,
        args.name,
        lang_adapter=lang,
        adapter_config=adapter_config,
        config=config,
        out_dir=args.out,
        progress=_progress,
    )
    return {"out": args.out, "task": args.task, "lang_adapter": lang, "examples": len(examples), **_summary(result)}


def cmd_train_full(args) -> dict:
    from .distributed import is_main_process
    from .training import FULL_FINE_TUNING, finish_run, save_full_model, train_full

    examples = _task_data(args)
    model, tokenizer = _load(args.backbone)
    config = _train_config(args, FULL_FINE_TUNING)
    result = train_full(model, tokenizer, args.task, examples, args.task, config=config, progress=_progress)
    if is_main_process():
        save_full_model(model, tokenizer, args.task, args.out)
    finish_run(config)
    return {"out": args.out, "task": args.task, "examples": len(examples), **_summary(result)}


def _summary(result) -> dict:
    return {
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "final_loss": round(sum(result.losses[-10:]) / max(1, len(result.losses[-10:])), 4),
        "trainable_parameters": result.trainable_parameters,
        "total_parameters": result.total_parameters,
        "processes": result.processes,  # the world size actually used (accelerate launch --num_processes)
        "precision": result.precision,  # what --precision auto became on this machine
        **({"resumed_from": result.resumed_from} if result.resumed_from else {}),
    }


def _model_for_inference(args):
    """Backbone (+ language adapter) + task adapter, or a fully fine-tuned model directory (--model)."""
    from .adapterhub import load_head

    if getattr(args, "model", None):
        model, tokenizer = _load(args.model)
        head = load_head(model, Path(args.model) / "head")
        return model, tokenizer, None, head
    model, tokenizer = _load(args.backbone)
    lang = _load_adapter(model, args.lang_adapter)
    if not args.task_adapter:
        raise ValueError("--task-adapter is required (or --model for a fully fine-tuned model)")
    task = _load_adapter(model, args.task_adapter)
    stack = Stack(lang, task) if lang else Stack(task)
    return model, tokenizer, stack, task


def cmd_ner(args) -> dict:
    from .evaluation import tag_text

    model, tokenizer, stack, head = _model_for_inference(args)
    entities = tag_text(model, tokenizer, args.text, stack, head)
    return {"stack": list(stack or []), "entities": [e.__dict__ for e in entities]}


def cmd_qa(args) -> dict:
    from .evaluation import answer_question

    model, tokenizer, stack, head = _model_for_inference(args)
    answer = answer_question(model, tokenizer, args.question, args.context, stack, head)
    return {"stack": list(stack or []), "answer": answer.text, "score": answer.score, "start": answer.start}


def cmd_evaluate(args) -> dict:
    task = get_task(args.task)
    examples = task.load(args.data)
    model, tokenizer, stack, head = _model_for_inference(args)
    examples = task.gold_for_head(model, head, examples)
    scores, predictions = task.evaluate(model, tokenizer, examples, stack, head, args.lang)
    if args.predictions:
        task.write_predictions(args.predictions, examples, predictions)
    return {"task": args.task, "data": args.data, "stack": list(stack or []), **scores}


def cmd_transfer(args) -> dict:
    from .transfer import merge_runs, run_transfer

    if args.merge:
        return merge_runs(args.config, args.out, args.merge)
    return run_transfer(
        args.config,
        args.out,
        only=args.only.split(",") if args.only else None,
        targets=args.targets.split(",") if args.targets else None,
    )


# ----------------------------------------------------------------------------------------------------------
# Parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`error: ...`) and exit code 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .backbones import DEFAULT_BACKBONE
    from .mlm import ANCHOR_WEIGHT
    from .training import LANGUAGE_ADAPTER, LANGUAGE_ADAPTER_SHAPE, TASK_ADAPTER_SHAPE

    parser = _Parser(prog="python -m madx_core", description="MAD-X adapters on transformers 5")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.set_defaults(fn=fn)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="catalog name, Hub id or local directory")
        return p

    def training(p: argparse.ArgumentParser, steps: int | None = None, precision: str = "fp32") -> None:
        p.add_argument("--out", required=True, help="output directory (written atomically)")
        p.add_argument("--steps", type=int, default=steps)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--max-length", type=int, default=128)
        p.add_argument("--lr", type=float, default=None)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
        p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
        p.add_argument(
            "--precision",
            choices=["auto", "fp32", "bf16", "fp16"],
            default=precision,
            help=f"autocast (auto: bf16 where the hardware computes it natively, else fp32; default {precision})",
        )
        p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
        p.add_argument(
            "--grad-accum", type=int, default=1, help="forward passes per optimiser step (--batch-size is split)"
        )
        p.add_argument("--checkpoint-every", type=int, default=None, help="write OUT.checkpoint every N steps")
        p.add_argument("--resume", action="store_true", help="continue from OUT.checkpoint when it exists")

    command("info", cmd_info, "describe a backbone: source, layers, sizes")

    p = command("train-lang", cmd_train_lang, "train a language adapter with masked-LM on text")
    p.add_argument("--lang", required=True)
    p.add_argument("--text", nargs="+", required=True, help="text files (line = sentence) or hf:DATASET[:CFG][:SPLIT]")
    p.add_argument("--inv", choices=["nice", "glow", "none"], default="nice")
    p.add_argument("--reduction-factor", type=float, default=LANGUAGE_ADAPTER_SHAPE.reduction_factor)
    p.add_argument("--act", default="relu")
    p.add_argument("--stream", action="store_true", help="read and tokenise --text lazily (files beyond memory)")
    p.add_argument("--stream-buffer", type=int, default=10_000, help="lines shuffled together when streaming")
    p.add_argument(
        "--anchor",
        default="auto",
        help="a language adapter (directory or AdapterHub name, e.g. the source language's) to start from and stay "
        "near: MLM plus --anchor-weight x its layer outputs' distance (a variant beyond the paper; its shape is kept). "
        "auto: the shipped English adapter on the shipped backbone with the default shape, else none; none: MAD-X's "
        "own recipe",
    )
    p.add_argument("--anchor-weight", type=float, default=ANCHOR_WEIGHT, help="weight of the pull towards --anchor")
    training(p, steps=LANGUAGE_ADAPTER.steps, precision="auto")

    for name, fn, what in [
        ("train-task", cmd_train_task, "train a task adapter stacked on a frozen language adapter"),
        ("train-full", cmd_train_full, "full fine-tuning baseline"),
    ]:
        p = command(name, fn, what)
        p.add_argument("--task", choices=list(TASKS), required=True)
        p.add_argument("--data", required=True, help="CoNLL (ner) or SQuAD JSON (qa), or hf:DATASET[:CFG][:SPLIT]")
        p.add_argument("--epochs", type=float, default=None)
        p.add_argument("--keep-labels", default="PER,LOC,ORG", help="NER entity types to keep (others become O)")
        training(p, steps=None)
        if name == "train-task":
            p.add_argument("--lang-adapter", default=None, help="directory or AdapterHub name; omit for MAD-X -LAD")
            p.add_argument("--name", default=None, help="adapter name (default: the task)")
            p.add_argument("--reduction-factor", type=float, default=TASK_ADAPTER_SHAPE.reduction_factor)
            p.add_argument("--act", default="relu")

    def inference(name: str, fn, what: str, *inputs: str) -> None:
        p = command(name, fn, what)
        p.add_argument("--lang-adapter", default=None)
        p.add_argument("--task-adapter", required=True)
        for option in inputs:
            p.add_argument(option, required=True)

    inference("ner", cmd_ner, "tag entities in a text", "--text")
    inference("qa", cmd_qa, "answer a question", "--question", "--context")

    p = command("evaluate", cmd_evaluate, "score an adapter stack (or a fine-tuned model) on labelled data")
    p.add_argument("--task", choices=list(TASKS), required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--lang-adapter", default=None)
    p.add_argument("--model", default=None, help="a directory written by train-full (instead of adapters)")
    p.add_argument("--task-adapter", default=None)
    p.add_argument("--lang", default=None, help="language of the QA data (CJK answers are scored by character)")
    p.add_argument("--predictions", default=None, help="write predictions (CoNLL for ner, JSON for qa)")

    p = sub.add_parser("transfer", help="run a source x target transfer matrix from a JSON config")
    p.set_defaults(fn=cmd_transfer)
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated systems to compute in this invocation (the rest of the config's rows are kept as they "
        "are, or left for a later run)",
    )
    p.add_argument(
        "--targets",
        default=None,
        help="comma-separated target languages to score in this invocation (e.g. one process per target); the other "
        "targets' rows are kept as they are, or left for a later run",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="DIR",
        help="add the rows of these output folders (runs of the same config elsewhere, e.g. --only on a GPU) to --out "
        "instead of computing anything; only rows this config would compute the same way are taken",
    )
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        processes = launch.requested_cpu_processes()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if processes > 1:  # `accelerate launch --cpu --num_processes N` started only this copy: start the N workers
        return launch.run_workers(processes, sys.argv[1:] if argv is None else argv)
    if getattr(args, "name", "unset") is None:
        args.name = args.task
    try:
        validate(args)
        result = args.fn(args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        _progress.close()
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except RecursionError:  # json.loads on input nested thousands deep
        print("error: an input file is nested too deeply to read (malformed JSON?)", file=sys.stderr)
        return 2
    _progress.close()  # before the result: a run cut short by --time-limit leaves its bar open
    _print(result, args.json)
    return 0
