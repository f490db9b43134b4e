"""Reading and writing adapters in AdapterHub's directory format (`adapters` 1.3.0), both ways.

An adapter directory holds `adapter_config.json` + `adapter.safetensors` (or a legacy `pytorch_adapter.bin`), and
optionally `head_config.json` + `model_head.safetensors` / `pytorch_model_head.bin`. How config fields and weight
keys translate is in `adapterhub_config`; `inspect` says what a directory holds without reading its weights.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .adapterhub_config import (
    LIBRARY_VERSION,
    MODEL_CLASSES,
    library_config,
    library_head_config,
    parse_adapter_config,
    to_adapterhub_keys,
    to_local_keys,
)
from .adapters import Adapter, AdapterConfig
from .atomic import atomic_dir
from .heads import HeadConfig, PredictionHead

ADAPTER_WEIGHTS = ("adapter.safetensors", "pytorch_adapter.bin")
HEAD_WEIGHTS = ("model_head.safetensors", "pytorch_model_head.bin")
# Every file of the format: configs and weights (an app keeps only these from an upload and puts only these in a zip).
FILES = ("adapter_config.json", *ADAPTER_WEIGHTS, "head_config.json", *HEAD_WEIGHTS)

# ----------------------------------------------------------------------------------------------------------
# What a directory holds


@dataclass
class AdapterInfo:
    """An AdapterHub directory as its JSON files describe it (the weights are not opened)."""

    name: str | None  # the name the adapter was saved under (None: the file does not give one as a string)
    head_type: str | None  # "tagging", "question_answering", "masked_lm", ...; None without a head
    head_name: str | None = None  # the name the head was saved under
    labels: list[str] = field(default_factory=list)  # a tagging head's labels, in id order
    files: list[str] = field(default_factory=list)  # the format's files present (see FILES)

    @property
    def kind(self) -> str:
        """The adapter's role: a task adapter has a task head (tagging, QA, ...); a language adapter has none, or a
        masked-LM head."""
        return "language" if self.head_type in (None, "masked_lm") else "task"

    def check_head_name(self) -> None:
        """Refuse a task head saved under another name than its adapter's (it would be loaded under that name)."""
        if self.kind == "task" and self.head_name and self.name and self.head_name != self.name:
            raise ValueError(
                f"the head is named {self.head_name!r} but its adapter {self.name!r}; the names must match"
            )


def inspect(directory: str | Path) -> AdapterInfo:
    """Read an adapter directory's JSON files: is it an adapter, with which head, saved under which names.

    Cheap (no weights are read) and strict about what it reads; `load_adapter` checks everything else.
    """
    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise ValueError(f"{directory.name} is not an adapter: adapter_config.json is missing")
    if _find(directory, ADAPTER_WEIGHTS) is None:
        raise ValueError(f"{directory.name} is not an adapter: it has no adapter.safetensors or pytorch_adapter.bin")
    files = [f for f in FILES if (directory / f).is_file()]
    try:
        name = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError, RecursionError):
        name = None  # an unreadable config is reported by load_adapter, with the reason
    name = name if isinstance(name, str) else None
    head_file = directory / "head_config.json"
    if not head_file.is_file():
        return AdapterInfo(name, None, files=files)
    try:
        head_meta = json.loads(head_file.read_text(encoding="utf-8"))
        head = head_meta.get("config") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, RecursionError) as e:
        raise ValueError(f"{directory.name}/head_config.json is not valid JSON ({e})") from None
    if not isinstance(head, dict):
        raise ValueError(f"{directory.name}/head_config.json has no 'config' object")
    head_name = head_meta.get("name") if isinstance(head_meta.get("name"), str) else None
    labels = []
    if head.get("head_type") == "tagging":
        label2id = head.get("label2id") or {}
        if not isinstance(label2id, dict) or not all(isinstance(v, int) for v in label2id.values()):
            raise ValueError(f"{directory.name}/head_config.json: label2id must map labels to whole numbers")
        labels = sorted(label2id, key=label2id.get)
    return AdapterInfo(name, head.get("head_type"), head_name, labels, files)


# ----------------------------------------------------------------------------------------------------------
# Weights


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, or a torch `.bin` of plain tensors (never a general unpickle)."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path.name} is not a file of plain tensors ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} does not hold a dict of tensors")
    return state


def _find(directory: Path, names: tuple[str, ...]) -> Path | None:
    return next((directory / n for n in names if (directory / n).is_file()), None)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.name} is not valid JSON ({e})") from None
    except RecursionError:  # JSON nested thousands deep: refuse it like any other malformed file
        raise ValueError(f"{path.name} is nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} must hold a JSON object")
    return data


# Load and save


def load_adapter(
    model,
    adapter_dir: str | Path,
    load_as: str | None = None,
    with_head: bool = True,
    head_as: str | None = None,
    exist_ok: bool = True,
    on_mismatch: Callable[[str], None] | None = None,
) -> str:
    """Load an AdapterHub adapter directory into `model`; everything is checked before the model is changed.

    `head_as` names the head in the model (default: the adapter's name, or the head's own saved name when that
    differs). With `exist_ok=False` an adapter or head name that is already loaded is refused instead of replaced,
    and so is a task head saved under another name than its adapter's: what a server that loads other people's
    files needs, so that an upload can never take over a shared name.
    Configs are checked against the backbone and against the weight file's shapes on the meta device, so a config
    that claims a huge module is refused without allocating it. An adapter trained on other backbone weights raises
    BackboneMismatch, or, with `on_mismatch`, is reported to it (e.g. a warning printer) and loaded anyway.
    """
    directory = Path(adapter_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"adapter directory not found: {directory.name or directory}")
    config_file = directory / "adapter_config.json"
    if not config_file.is_file():
        raise ValueError(f"{directory.name} is not an adapter directory: adapter_config.json is missing")
    meta = _read_json(config_file)
    if "config" not in meta:
        raise ValueError(f"{directory.name}/adapter_config.json has no 'config' entry")
    config = parse_adapter_config(meta["config"])
    _check_against_backbone(model, config, meta.get("hidden_size"), directory.name)
    if reason := backbone_mismatch(model, meta, f"adapter {directory.name}"):
        if on_mismatch is None:
            raise BackboneMismatch(reason)
        on_mismatch(reason)
    weights = _find(directory, ADAPTER_WEIGHTS)
    if weights is None:
        raise ValueError(f"{directory.name} has no adapter.safetensors or pytorch_adapter.bin")
    saved_name = meta.get("name") or directory.name
    if not isinstance(saved_name, str):
        raise ValueError(f"{directory.name}/adapter_config.json: 'name' must be a string")
    name = load_as or saved_name

    def build() -> Adapter:
        return Adapter(name, config, model.config.hidden_size, model.num_layers)

    adapter = _build_checked(build, to_local_keys(read_tensors(weights)), f"adapter {saved_name!r}")

    head = name_of_head = None
    head_file = directory / "head_config.json"
    if with_head and head_file.is_file():
        head, head_name = _read_head(model, directory, head_file)
        if not exist_ok:
            inspect(directory).check_head_name()
        name_of_head = head_as or (name if head_name == saved_name else head_name)

    # Everything is read and checked: now change the model (the model checks name clashes under its lock).
    model.install((name, adapter), (name_of_head, head) if head is not None else None, overwrite=exist_ok)
    return name


def _check_against_backbone(model, config: AdapterConfig, hidden: object, what: str) -> None:
    """The parts of an adapter config that must agree with the backbone, checked before any module is built."""
    size = model.config.hidden_size
    if hidden is not None and hidden != size:
        raise ValueError(f"adapter {what} was trained for hidden size {hidden}, the model has {size}")
    if int(size // config.reduction_factor) < 1:
        raise ValueError(f"adapter {what}: reduction_factor {config.reduction_factor} leaves no bottleneck")
    if any(not 0 <= i < model.num_layers for i in config.leave_out):
        raise ValueError(f"adapter {what}: leave_out names layers outside 0-{model.num_layers - 1}")


def _build_checked(build, state: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Build a module with `build()` only once `state` fits it: keys and shapes are compared on the meta device.

    A config could otherwise claim gigabytes (num_labels, layers, a tiny reduction factor) before the weights were
    looked at; on the meta device the module has shapes but no memory.
    """
    with torch.device("meta"):
        skeleton = build()
    _check_state(skeleton.state_dict(), state, what)
    module = build()
    module.load_state_dict({k: v.float() for k, v in state.items()})
    return module


def _check_state(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{what}: missing weights {missing[:3]}, unexpected weights {unexpected[:3]}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(
                f"{what}: weight {key} has shape {tuple(tensor.shape)}, the model needs {tuple(expected[key].shape)} "
                f"(was it trained for another model or hidden size?)"
            )


# ----------------------------------------------------------------------------------------------------------
# The backbone an adapter was trained on

FINGERPRINT_KEY = "backbone_fingerprint"  # our key in adapter_config.json / head_config.json (the library ignores it)


class BackboneMismatch(ValueError):
    """An adapter was trained on other backbone weights than the loaded model's (its outputs would be meaningless)."""


def backbone_mismatch(model, meta: dict, what: str) -> str | None:
    """Why the adapter described by `meta` (an adapter_config.json) does not fit `model`, or None when it fits.

    Files without a fingerprint (older ones, AdapterHub's) are taken as fitting, as before fingerprints existed.
    """
    from .backbones import backbone_fingerprint, backbone_name

    recorded = meta.get(FINGERPRINT_KEY)
    if not recorded:
        return None
    ours = backbone_fingerprint(model)
    if recorded == ours:
        return None
    return (
        f"{what} was trained on backbone {meta.get('model_name') or '?'} (weights {recorded}), but the loaded backbone "
        f"is {backbone_name(model)} (weights {ours}): load it onto the backbone it was trained on"
    )


def _head_config(model, meta: dict, what: str) -> HeadConfig:
    """A head config, with its sizes checked: whole positive numbers, and a masked-LM vocabulary that is the model's."""
    raw = meta.get("config") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{what}: head_config.json's 'config' must be a JSON object")
    for key in ("num_labels", "layers", "vocab_size"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{what}: head config {key}={value!r} must be a positive whole number")
    label2id = raw.get("label2id")
    if label2id is not None and not (isinstance(label2id, dict) and all(isinstance(v, int) for v in label2id.values())):
        raise ValueError(f"{what}: head config label2id must map labels to whole numbers")
    try:
        config = HeadConfig.from_dict(raw)
    except TypeError as e:
        raise ValueError(f"{what}: unreadable head config ({e})") from None
    if config.head_type == "masked_lm":
        if config.vocab_size is None:
            config.vocab_size = model.config.vocab_size
        if config.vocab_size != model.config.vocab_size:
            raise ValueError(
                f"{what}: masked-LM head for a vocabulary of {config.vocab_size}, "
                f"the model has {model.config.vocab_size}"
            )
    elif config.label2id is not None and len(config.label2id) != config.num_labels:
        raise ValueError(f"{what}: head config has {len(config.label2id)} labels but num_labels={config.num_labels}")
    return config


def _read_head(model, directory: Path, head_file: Path) -> tuple[PredictionHead, str]:
    meta = _read_json(head_file)
    what = f"head {meta.get('name')!r}"
    config = _head_config(model, meta, what)
    weights = _find(directory, HEAD_WEIGHTS)
    if weights is None:
        raise ValueError(
            f"{directory.name} has head_config.json but no model_head.safetensors / pytorch_model_head.bin"
        )
    state = {re.sub(r"^heads\.[^.]+\.", "", k): v for k, v in read_tensors(weights).items()}
    if config.layers > len(state):  # each layer has its own weights: a count the file cannot back is refused
        raise ValueError(f"{what}: head config has layers={config.layers}, its weights only {len(state)} tensors")

    def build() -> PredictionHead:
        return PredictionHead(
            config, model.config.hidden_size, model.config.layer_norm_eps, model.config.hidden_dropout_prob
        )

    if config.head_type == "masked_lm":
        # The decoder is tied to the input embeddings; files may or may not carry a copy of it.
        with torch.device("meta"):
            skeleton = build()
        decoder = f"{len(skeleton) - 1}.weight"
        state.pop(decoder, None)
        _check_state({k: v for k, v in skeleton.state_dict().items() if k != decoder}, state, what)
        head = build()
        head.decoder.weight = model.word_embeddings.weight
        head.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    else:
        head = _build_checked(build, state, what)
    name = meta.get("name") or directory.name
    if not isinstance(name, str):
        raise ValueError(f"{what}: 'name' must be a string")
    return head, name


def _common_meta(model, name: str) -> dict:
    """The fields the library writes, with the backbone's public name (never a local path) and its fingerprint."""
    from .backbones import backbone_fingerprint, backbone_name

    model_type = model.config.model_type
    return {
        FINGERPRINT_KEY: backbone_fingerprint(model),
        "hidden_size": model.config.hidden_size,
        "model_class": MODEL_CLASSES[model_type],
        "model_name": backbone_name(model),
        "model_type": model_type,
        "name": name,
        "version": LIBRARY_VERSION,
    }


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    return {k: (v.to(dtype) if dtype else v).detach().contiguous().cpu() for k, v in state.items()}


def _write_head(model, name: str, directory: Path, dtype: torch.dtype | None) -> None:
    head = model.heads[name]
    state = head.state_dict()
    if head.config.head_type == "masked_lm":
        state.pop(f"{len(head) - 1}.weight")  # tied to the embeddings: not the head's own weight
    meta = {"config": library_head_config(head.config), **_common_meta(model, name)}
    (directory / "head_config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    save_file(
        _cast({f"heads.{name}.{k}": v for k, v in state.items()}, dtype),
        str(directory / "model_head.safetensors"),
    )


def save_adapter(
    model, out_dir: str | Path, name: str, with_head: bool = True, dtype: torch.dtype | None = None
) -> None:
    """Write adapter `name` (and the head of the same name) as AdapterHub files, atomically."""
    if name not in model.adapters:
        raise ValueError(f"unknown adapter {name!r}; loaded adapters: {', '.join(sorted(model.adapters)) or 'none'}")
    adapter = model.adapters[name]

    with atomic_dir(out_dir) as tmp:
        meta = {"config": library_config(adapter.config), **_common_meta(model, name)}
        (tmp / "adapter_config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        state = to_adapterhub_keys(adapter, name, model.config.model_type)
        save_file(_cast(state, dtype), str(tmp / "adapter.safetensors"))
        if with_head and name in model.heads:
            _write_head(model, name, tmp, dtype)


def save_head(model, name: str, out_dir: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write only head `name` (head_config.json + model_head.safetensors), atomically."""
    if name not in model.heads:
        raise ValueError(f"unknown head {name!r}; loaded heads: {', '.join(sorted(model.heads)) or 'none'}")
    with atomic_dir(out_dir) as tmp:
        _write_head(model, name, tmp, dtype)


def load_head(model, head_dir: str | Path, load_as: str | None = None) -> str:
    """Load a head saved by `save_head` (or AdapterHub) into `model`; returns its name."""
    directory = Path(head_dir)
    head_file = directory / "head_config.json"
    if not head_file.is_file():
        raise ValueError(f"{directory} has no head_config.json")
    head, name = _read_head(model, directory, head_file)
    name = load_as or name
    model.install(head=(name, head), overwrite=True)
    return name
