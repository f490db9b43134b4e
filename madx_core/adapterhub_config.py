"""AdapterHub's vocabulary, translated both ways: adapter and head config fields, and weight key names.

What `adapters` 1.3.0 writes for a Pfeiffer (seq_bn) adapter, which of its settings MAD-X has, and how its weight keys
map to the keys of madx_core's `Adapter` module (../shared/ADAPTERHUB_FORMAT.md describes the format; the tables were
checked against the library itself, tests/fixtures/adapterhub). The files themselves are read in `adapterhub`.
"""

from __future__ import annotations

import re

import torch

from .adapters import Adapter, AdapterConfig
from .heads import HeadConfig

LIBRARY_VERSION = "adapters.1.3.0"
MODEL_CLASSES = {"bert": "BertAdapterModel", "xlm-roberta": "XLMRobertaAdapterModel"}
KEY_PREFIXES = {"bert": "bert.", "xlm-roberta": "roberta."}

# Older AdapterHub files name the same modules differently.
LEGACY_RENAMES = [
    ("layer_text_lang_adapters", "adapters"),
    ("layer_text_task_adapters", "adapters"),
    ("attention_text_lang_adapters", "adapters"),
    ("attention_text_task_adapters", "adapters"),
    ("invertible_lang_adapters", "invertible_adapters"),
]

# Named configurations, as `adapters` resolves them (reduction factor, invertible adapter).
NAMED_CONFIGS = {
    "pfeiffer": {},
    "seq_bn": {},
    "pfeiffer+inv": {"inv_adapter": "nice"},
    "seq_bn_inv": {"inv_adapter": "nice"},
}

# The Pfeiffer architecture that madx_core implements; a config that differs in any of these is another method.
PFEIFFER_FLAGS = {
    "mh_adapter": False,
    "output_adapter": True,
    "original_ln_before": True,
    "original_ln_after": True,
    "residual_before_ln": True,
    "ln_before": False,
    "ln_after": False,
    "adapter_residual_before_ln": False,
    "use_gating": False,
    "is_parallel": False,
    "phm_layer": False,
    "scaling": 1.0,
}

# What the library writes for a Pfeiffer adapter besides our own fields (kept so that it reads our files as its own).
LIBRARY_DEFAULTS = {
    **PFEIFFER_FLAGS,
    "init_weights_seed": None,
    "cross_adapter": False,
    "dropout": 0.0,
    "init_weights": "bert",
    "stochastic_depth": 0.0,
    "hypercomplex_nonlinearity": "glorot-uniform",
    "phm_c_init": "normal",
    "phm_dim": 4,
    "phm_rank": 1,
    "phm_init_range": 0.0001,
    "phm_bias": True,
    "learn_phm": True,
    "shared_phm_rule": True,
    "factorized_phm_rule": False,
    "shared_W_phm": False,
    "factorized_phm_W": True,
}


# The keyword arguments each head class of the library takes (adapters/heads/base.py, language_modeling.py):
# `add_prediction_head_from_config` passes every key of a head config to the class, so any other key breaks loading.
LIBRARY_HEAD_KEYS = {
    "tagging": {"num_labels", "layers", "activation_function", "label2id", "id2label", "dropout_prob"},
    "question_answering": {"num_labels", "layers", "activation_function", "label2id", "id2label", "dropout_prob"},
    "masked_lm": {
        "vocab_size",
        "embedding_size",
        "layers",
        "activation_function",
        "layer_norm",
        "bias",
        "shift_labels",
        "label2id",
        "id2label",
    },
}

# ----------------------------------------------------------------------------------------------------------
# Configs


def parse_adapter_config(raw: dict | str) -> AdapterConfig:
    """Turn an AdapterHub `config` (a dict, or a name like "pfeiffer+inv") into an AdapterConfig."""
    if isinstance(raw, str):
        if raw not in NAMED_CONFIGS:
            raise ValueError(f"unsupported adapter config {raw!r}; madx_core supports {', '.join(NAMED_CONFIGS)}")
        return AdapterConfig(**NAMED_CONFIGS[raw])
    if not isinstance(raw, dict):
        raise ValueError(f"adapter config must be a JSON object or a name, got {type(raw).__name__}")
    arch = raw.get("architecture") or "bottleneck"
    if arch != "bottleneck":
        raise ValueError(f"unsupported adapter architecture {arch!r}: madx_core implements bottleneck adapters")
    for key, expected in PFEIFFER_FLAGS.items():
        if key in raw and raw[key] is not None and raw[key] != expected:
            raise ValueError(
                f"unsupported adapter config: {key}={raw[key]!r} (madx_core implements the Pfeiffer/seq_bn "
                f"configuration, which has {key}={expected!r})"
            )
    inv = raw.get("inv_adapter")
    inv_rf = raw.get("inv_adapter_reduction_factor") or 2
    non_linearity = raw.get("non_linearity") or "relu"
    legacy = raw.get("invertible_adapter")  # older files nest the invertible part
    if isinstance(legacy, dict):
        inv = legacy.get("block_type", inv)
        inv_rf = legacy.get("reduction_factor", inv_rf)
    rf = raw.get("reduction_factor", 16)
    if isinstance(rf, dict):  # per-layer reduction factors exist in the library, not in MAD-X
        raise ValueError("unsupported adapter config: per-layer reduction_factor")
    # A file may hold anything: check the types here, so that a bad value is a clear error, not a crash later.
    for key, value in (("reduction_factor", rf), ("inv_adapter_reduction_factor", inv_rf)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
            raise ValueError(f"adapter config {key}={value!r} must be a positive number")
    if not isinstance(non_linearity, str) or (inv is not None and not isinstance(inv, str)):
        raise ValueError("adapter config: non_linearity and inv_adapter must be names")
    leave_out = raw.get("leave_out") or []
    if not isinstance(leave_out, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in leave_out):
        raise ValueError("adapter config: leave_out must be a list of layer numbers")
    return AdapterConfig(
        reduction_factor=rf,
        non_linearity=non_linearity,
        inv_adapter=inv,
        inv_adapter_reduction_factor=inv_rf,
        leave_out=leave_out,
    )


def library_config(config: AdapterConfig) -> dict:
    """The `config` dict the reference library writes for this adapter."""
    return {**LIBRARY_DEFAULTS, **config.to_dict()}


def library_head_config(config: HeadConfig) -> dict:
    """A head's `config` as the library's class for its type takes it (our own or foreign keys left out)."""
    allowed = LIBRARY_HEAD_KEYS[config.head_type]
    return {"head_type": config.head_type, **{k: v for k, v in config.to_dict().items() if k in allowed}}


# ----------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------
# Weight keys

_ADAPTER_KEY = re.compile(r"encoder\.layer\.(\d+)\.output\.adapters\.([^.]+)\.(.+)$")
_INVERTIBLE_KEY = re.compile(r"invertible_adapters\.([^.]+)\.(.+)$")


def to_local_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map AdapterHub keys (any prefix, legacy names) to our `Adapter` module's keys."""
    local = {}
    for key, tensor in state.items():
        for old, new in LEGACY_RENAMES:
            key = key.replace(old, new)
        if ".attention.output.adapters." in key:
            raise ValueError("unsupported adapter: it has attention-block (Houlsby) adapters; MAD-X uses Pfeiffer")
        if m := _ADAPTER_KEY.search(key):
            local[f"layers.{m.group(1)}.{m.group(3)}"] = tensor
        elif m := _INVERTIBLE_KEY.search(key):
            local[f"invertible.{m.group(2)}"] = tensor
        else:
            raise ValueError(f"unexpected weight {key!r} in adapter file")
    return local


def to_adapterhub_keys(adapter: Adapter, name: str, model_type: str) -> dict[str, torch.Tensor]:
    prefix = KEY_PREFIXES[model_type]
    out = {}
    for key, tensor in adapter.state_dict().items():
        if key.startswith("layers."):
            _, i, rest = key.split(".", 2)
            out[f"{prefix}encoder.layer.{i}.output.adapters.{name}.{rest}"] = tensor
        else:
            out[f"{prefix}invertible_adapters.{name}.{key.removeprefix('invertible.')}"] = tensor
    return out


# ----------------------------------------------------------------------------------------------------------
