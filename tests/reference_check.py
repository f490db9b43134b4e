"""Load adapter dirs (e.g. madx_core's) into the reference library and save its output (run with .ref-venv's python).

    .ref-venv/bin/python tests/reference_check.py --base DIR --adapter DIR [--adapter DIR ...] --stack a,b
        [--head NAME | --no-head] --inputs FILE --out FILE

--inputs is a safetensors file with input_ids and attention_mask (token_type_ids optional). --out gets one tensor,
"output": the logits of head NAME with --head (a QA head's start and end logits stacked on the last axis), else
(--no-head, the default) the base model's last hidden state, with Stack(a, b) active. Exits non-zero with a one-line
reason when the library reports missing or unexpected adapter/head weights (a masked-LM decoder that the library tied to
the input embeddings excepted), when an adapter name is loaded twice, or when a stacked adapter or the head is not
there after loading.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch
from adapters import AutoAdapterModel, Stack
from safetensors.torch import load_file, save_file
from transformers.utils import logging as hf_logging


def fail(message: str) -> None:
    sys.exit(f"reference_check: {message}")


def load_base(path: str):
    """The base model in the library; only the unused pooler (and heads a static checkpoint converts to) may be new."""
    model, info = AutoAdapterModel.from_pretrained(path, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if ".pooler." not in k and not k.startswith("heads.")]
    if missing or info["mismatched_keys"] or info["error_msgs"]:
        fail(f"base {path}: missing {missing}, mismatched {info['mismatched_keys']}, errors {info['error_msgs']}")
    if info["unexpected_keys"]:  # e.g. an LM head in a backbone checkpoint: not ours to judge here
        print(f"reference_check: base {path}: unused checkpoint keys {info['unexpected_keys']}", file=sys.stderr)
    return model.eval()


def load_adapter(model, directory: str, with_head: bool) -> str:
    """load_adapter as a user would call it, failing on any key the library could not place."""
    config_file = Path(directory) / "adapter_config.json"
    if not config_file.is_file():
        fail(f"{directory} has no adapter_config.json")
    name = json.loads(config_file.read_text())["name"]
    if name in model.adapters_config.adapters:
        fail(f"adapter {name!r} from {directory} is already loaded")
    info = {}
    # use_safetensors=True reads adapter.safetensors and falls back to pytorch_adapter.bin (loading.py:166-176)
    loaded = model.load_adapter(directory, with_head=with_head, use_safetensors=True, loading_info=info)
    # A masked-LM decoder tied to the input embeddings (tie_word_embeddings) is not in madx_core's files: the library
    # reports it missing but has tied it already, so it holds the right values. Any other missing key is an error.
    embeddings = model.get_input_embeddings().weight
    params = dict(model.named_parameters(remove_duplicate=False))
    tied = [k for k in info.get("missing_keys", []) if k in params and params[k] is embeddings]
    missing = [k for k in info.get("missing_keys", []) if k not in tied]
    if missing or info.get("unexpected_keys"):
        fail(f"{directory}: missing keys {missing}, unexpected keys {info.get('unexpected_keys')}")
    if tied:
        print(f"reference_check: {directory}: {tied} tied to the input embeddings", file=sys.stderr)
    print(f"reference_check: loaded {loaded!r} from {directory}", file=sys.stderr)
    return loaded


def atomic_save(tensors: dict, path: str) -> None:
    out = Path(path)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="base model dir (config.json + weights)")
    p.add_argument("--adapter", action="append", required=True, help="adapter dir; repeat for more")
    p.add_argument("--stack", required=True, help="comma-separated adapter names, outermost first")
    heads = p.add_mutually_exclusive_group()
    heads.add_argument("--head", default=None, help="output this head's logits (heads are loaded from the dirs)")
    heads.add_argument("--no-head", action="store_true", help="output the last hidden state (the default)")
    p.add_argument("--inputs", required=True, help="safetensors with input_ids, attention_mask")
    p.add_argument("--out", required=True, help="safetensors file to write ('output')")
    args = p.parse_args()
    torch.set_num_threads(2)
    hf_logging.set_verbosity_error()  # the pooler notice; real problems are checked below
    # set_active_adapters runs an empty forward context before the setup is stored, which warns every time
    logging.getLogger("adapters.model_mixin").addFilter(lambda r: "none are activated" not in r.getMessage())

    for path in [args.base, *args.adapter]:
        if not Path(path).is_dir():
            fail(f"{path} is not a directory")
    if not Path(args.inputs).is_file():
        fail(f"--inputs {args.inputs} does not exist")
    model = load_base(args.base)
    for directory in args.adapter:
        load_adapter(model, directory, with_head=args.head is not None)
    stack = [n for n in args.stack.split(",") if n]
    absent = [n for n in stack if n not in model.adapters_config.adapters]
    if not stack or absent:
        fail(f"--stack {args.stack!r}: not loaded {absent} (loaded: {list(model.adapters_config.adapters)})")
    if args.head is not None and args.head not in model.heads:
        fail(f"--head {args.head!r} was not loaded from the adapter dirs (heads: {list(model.heads)})")
    model.active_adapters = Stack(*stack)

    inputs = load_file(args.inputs)
    if "input_ids" not in inputs or "attention_mask" not in inputs:
        fail(f"--inputs {args.inputs} needs input_ids and attention_mask, has {sorted(inputs)}")
    kwargs = {"attention_mask": inputs["attention_mask"], "token_type_ids": inputs.get("token_type_ids")}
    with torch.no_grad():
        if args.head is not None:
            result = model(inputs["input_ids"], head=args.head, **kwargs)
            # QA heads give start and end logits; stacked on the last axis they are madx_core's QA logits
            start = getattr(result, "start_logits", None)
            out = result.logits if start is None else torch.stack([start, result.end_logits], dim=-1)
        else:
            out = model.base_model(inputs["input_ids"], **kwargs).last_hidden_state
    atomic_save({"output": out.contiguous()}, args.out)


if __name__ == "__main__":
    main()
