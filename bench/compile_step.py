"""Does torch.compile make a language-adapter training step faster on this machine? Eager against compiled, in fp32
and in bf16 autocast.

One step of the default `train-lang` recipe's shape (rf 2 + NICE adapter, MLM head frozen, AdamW): 16 German XQuAD
paragraphs in 128-token rows, 15% of tokens masked the same way in every run, the adapter initialised from the same
seed. Each (precision, eager or compiled) runs in a fresh process, the eager and compiled ones alternating over
--rounds (in one process the two disturbed each other's timings). Reported: the median step after two warm-up steps,
the first step (for the compiled model: the compilation), the first step at a second shape (16 x 64, as a
length-grouped batch of shorter lines would be: what a new shape costs), and the loss of one forward pass without
dropout, which checks that the compiled model computes what the eager one does. Inductor's caches are off, so the
compilation is timed, not a cache of an earlier run.

    MADX_DATA_DIR=../shared/data python -m bench.compile_step --json --out bench/results/compile_step.json
"""

from __future__ import annotations

import json
import os
import statistics
import time

import torch


def _batch(tokenizer, contexts: list[str], length: int) -> tuple:
    from madx_core.features import mask_tokens

    enc = tokenizer(contexts, truncation=True, max_length=length, padding="max_length", return_special_tokens_mask=True)
    ids = torch.tensor(enc["input_ids"])
    mask = (ids != tokenizer.pad_token_id).long()
    special = torch.tensor(enc["special_tokens_mask"]).bool() | ~mask.bool()
    generator = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(ids, special, tokenizer.mask_token_id, len(tokenizer), generator=generator)
    return inputs, mask, labels


def run(backbone: str, precision: str, compiled: bool, steps: int, threads: int) -> dict:
    """In a fresh process: one model, eager or compiled, timed over `steps` training steps."""
    import torch._inductor.config as inductor_config

    from madx_core import data as D
    from madx_core.adapters import Stack
    from madx_core.backbones import load_tokenizer
    from madx_core.model import MLM_HEAD, AdapterModel
    from madx_core.training import LANGUAGE_ADAPTER_SHAPE

    torch.set_num_threads(threads)
    inductor_config.force_disable_caches = True
    data = os.environ.get("MADX_DATA_DIR", "../shared/data")
    contexts = sorted({e.context for e in D.read_squad(f"{data}/qa/xquad.de.json")})[:16]
    tokenizer = load_tokenizer(backbone)
    full, short = _batch(tokenizer, contexts, 128), _batch(tokenizer, contexts, 64)
    model = AdapterModel.from_pretrained(backbone)
    torch.manual_seed(0)  # the same adapter weights in every process
    model.add_adapter("de", LANGUAGE_ADAPTER_SHAPE)
    model.set_trainable(adapters=["de"])
    if compiled:
        model.compile()  # in place: model(...) now runs the compiled forward (and backward)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def loss_of(batch: tuple) -> torch.Tensor:
        inputs, mask, labels = batch
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model(inputs, mask, adapters=Stack("de"), head=MLM_HEAD, labels=labels).loss

    def step(batch: tuple) -> float:
        start = time.perf_counter()
        loss_of(batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    model.eval()
    with torch.no_grad():
        loss = loss_of(full).item()
    model.train()
    first, at_new_shape = step(full), step(short)
    times = [step(full) for _ in range(steps + 2)][2:]
    return {
        "step_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "first_step_s": first,
        "first_step_at_a_new_shape_s": at_new_shape,
        "loss_without_dropout": loss,
    }


def main() -> None:
    from bench.common import emit, in_fresh_process, parser
    from madx_core.atomic import atomic_write_text

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="")
    args = p.parse_args()
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "conditions": {"threads": args.threads, "batch": "16 x 128", "steps": args.repeats, "rounds": args.rounds},
        "torch": torch.__version__,
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    for precision in args.precisions.split(","):
        runs: dict[str, list[dict]] = {"eager": [], "compiled": []}
        for round_ in range(args.rounds):
            for mode in ("eager", "compiled") if round_ % 2 == 0 else ("compiled", "eager"):
                child = in_fresh_process(run, args.backbone, precision, mode == "compiled", args.repeats, args.threads)
                runs[mode].append(child["result"] | {"peak_rss_mb": round(child["peak_rss_mb"])})
        median = {mode: statistics.median(r["step_s"] for r in rs) for mode, rs in runs.items()}
        report[precision] = {
            "eager_step_s": round(median["eager"], 3),
            "compiled_step_s": round(median["compiled"], 3),
            "speedup_compiled": round(median["eager"] / median["compiled"], 2),
            "compilation_s": round(statistics.median(r["first_step_s"] for r in runs["compiled"]), 1),
            "loss_without_dropout": {mode: round(rs[0]["loss_without_dropout"], 5) for mode, rs in runs.items()},
            "runs": {mode: [{k: round(v, 3) for k, v in r.items()} for r in rs] for mode, rs in runs.items()},
        }
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    emit(report, args.json)


if __name__ == "__main__":
    main()
