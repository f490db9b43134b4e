"""Checks of the command line's options, run before a model is loaded or a file is written.

Every number is held to its bounds and every path is checked, so that bad input ends with a one-line error (exit code
2) instead of a traceback or a half-written output.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from . import data as D

# (option, smallest, largest): inclusive bounds; None options keep their defaults. A window needs room for the
# special tokens and at least a few word pieces (max_length 1 made encode_ner loop forever); 512 is the backbones'
# position limit.
NUMERIC_BOUNDS = {
    "steps": (1, 10_000_000),
    "batch_size": (1, 4096),
    "max_length": (8, 512),
    "lr": (1e-12, 1.0),
    "time_limit": (1e-3, 1e9),
    "epochs": (1e-6, 1e6),
    "reduction_factor": (0.5, 1024),
    "seed": (0, 2**32 - 1),
    "grad_accum": (1, 4096),
    "checkpoint_every": (1, 10_000_000),
    "stream_buffer": (1, 10_000_000),
}


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _check_numbers(args) -> None:
    for option, (low, high) in NUMERIC_BOUNDS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"{_flag(option)} must be between {_number(low)} and {_number(high)}, not {value}")


def _number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _check_input_file(spec: str, option: str) -> None:
    """A local input file must exist and be a file; `hf:` datasets are checked when they are read."""
    if D.is_hub_spec(spec):
        return
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"file not found: {spec} ({option})")
    if not path.is_file():
        raise ValueError(f"{option} {spec} is a directory, not a file")


def _check_adapter(spec: str | None, option: str) -> None:
    """A local adapter must be an AdapterHub directory; anything else is read as a Hub name (needs the Hub)."""
    if not spec:
        return
    path = Path(spec).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {spec} is a file; give the adapter's directory")
    if path.is_dir() and not (path / "adapter_config.json").is_file():
        raise ValueError(f"{option} {spec} is not an adapter: adapter_config.json is missing")


def _check_out_dir(args, resumable: bool = False) -> None:
    """--out must be a new or empty directory (or --overwrite); a file there is never moved or deleted."""
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not resumable and not getattr(args, "overwrite", False):
        raise ValueError(f"--out {args.out} exists and is not empty; choose a new directory or add --overwrite")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"--out {args.out} cannot be created: {parent.name} is a file")
    if parent is not None and not os.access(parent, os.W_OK):
        raise ValueError(f"--out {args.out} cannot be created: no permission to write there")


def validate(args) -> None:
    """Check the options of a command before any work starts (one-line errors, exit code 2)."""
    _check_numbers(args)
    if getattr(args, "keep_labels", None) is not None and not [t for t in args.keep_labels.split(",") if t.strip()]:
        raise ValueError("--keep-labels must name at least one entity type, e.g. PER,LOC,ORG")
    if args.command == "train-lang":  # elsewhere --text is the text itself
        for spec in args.text:
            _check_input_file(spec, "--text")
            if args.stream and D.is_hub_spec(spec):
                raise ValueError(f"--stream reads local files only; {spec} is a Hub dataset (drop --stream)")
    if args.command == "transfer" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # run_transfer writes its adapters and results from every process: one process until it learns not to.
        raise ValueError("transfer runs in one process; launch it without accelerate launch (or with 1 process)")
    if getattr(args, "grad_accum", 1) > getattr(args, "batch_size", 1):
        raise ValueError(f"--grad-accum {args.grad_accum} is larger than --batch-size {args.batch_size}")
    if getattr(args, "data", None):
        _check_input_file(args.data, "--data")
    if getattr(args, "config", None):
        _check_input_file(args.config, "--config")
    _check_adapter(getattr(args, "lang_adapter", None), "--lang-adapter")
    _check_adapter(getattr(args, "task_adapter", None), "--task-adapter")
    if getattr(args, "model", None) and not Path(args.model).expanduser().is_dir():
        raise FileNotFoundError(f"--model {args.model} is not a directory written by train-full")
    if getattr(args, "predictions", None) and Path(args.predictions).expanduser().is_dir():
        raise ValueError(f"--predictions {args.predictions} is a directory; give a file name")
    if getattr(args, "out", None):
        _check_out_dir(args, resumable=args.command == "transfer")  # a transfer run resumes in its own folder
