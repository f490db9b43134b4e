"""Load adapters written by madx_core into the reference library and print its output (run with .ref-venv's python).

    .ref-venv/bin/python tests/reference_check.py --base DIR --adapter DIR [--adapter DIR ...] --stack a,b
        [--head NAME] --inputs FILE --out FILE

Exits non-zero when the library reports missing or unexpected weights, so a test sees any incompatibility.
"""

import argparse
import sys

import torch
from adapters import AutoAdapterModel, Stack
from safetensors.torch import load_file, save_file


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", action="append", required=True)
    p.add_argument("--stack", required=True)
    p.add_argument("--head", default=None)
    p.add_argument("--inputs", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    model = AutoAdapterModel.from_pretrained(args.base)
    model.eval()
    for directory in args.adapter:
        with_head = args.head is not None
        # madx_core writes safetensors; the library reads them when asked to (its default is the .bin pickle)
        name = model.load_adapter(directory, with_head=with_head, use_safetensors=True)
        print("loaded", name, file=sys.stderr)
    model.active_adapters = Stack(*args.stack.split(","))
    inputs = load_file(args.inputs)
    with torch.no_grad():
        if args.head:
            out = model(inputs["input_ids"], attention_mask=inputs["attention_mask"], head=args.head).logits
        else:
            out = model.base_model(inputs["input_ids"], attention_mask=inputs["attention_mask"])[0]
    save_file({"output": out.contiguous()}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
