"""Language-adapter training throughput on a GPU: tokens per second, fp32 against bf16 autocast.

Two backbones: the offline multilingual-e5-small (or, where its weights are not installed, random weights of exactly
its shapes: the speed is the same) and random weights shaped like XLM-R base (12 layers, hidden 768, 250k vocab),
the paper's backbone. Each step is a real `madx_core.training` MLM step: a rf-2 language adapter with NICE, backbone
and MLM head frozen, vocabulary projection at the masked positions only. Also the NER task-adapter step and the
full fine-tuning step of the offline backbone, for the cost of a transfer run.

    python -m bench.gpu --json [--out bench/results/gpu.json]
"""

from __future__ import annotations

import json
import random
import time

import torch

import madx_core as mx
from bench.common import emit, parser
from madx_core.distributed import PRECISIONS, autocast
from madx_core.mlm import mlm_step_fn

SHAPES = {
    "multilingual-e5-small": dict(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536
    ),
    "xlm-roberta-base (random weights)": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
}


class _Tok:
    """The few tokenizer attributes an MLM step needs (random token ids stand in for text: speed does not care)."""

    pad_token_id, mask_token_id = 1, 250001

    def __len__(self) -> int:
        return 250002


def _model(shape: dict, device: str) -> mx.AdapterModel:
    from transformers import XLMRobertaConfig

    config = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, **shape)
    model = mx.AdapterModel.from_config(config, mlm_head=True).to(device)
    return model


def _features(n: int, length: int) -> list[dict]:
    rng = random.Random(0)
    return [
        {
            "input_ids": [0] + [rng.randrange(5, 250000) for _ in range(length - 2)] + [2],
            "special_tokens_mask": [1] + [0] * (length - 2) + [1],
        }
        for _ in range(n)
    ]


def lang_adapter_tokens_per_s(model, device: str, batch: int, length: int, precision: str, steps: int) -> dict:
    model.add_adapter("xx", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"), overwrite=True)
    model.set_trainable(adapters=["xx"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    step = mlm_step_fn(model, _Tok(), mx.Stack("xx"), torch.Generator().manual_seed(0))
    feats = _features(batch, length)
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    times = []
    for i in range(steps + 3):  # 3 warm-up steps (allocation, kernel selection)
        torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(torch.device(device), precision):
            loss = step(feats)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    model.eval()
    model.requires_grad_(False)
    times.sort()
    median = times[len(times) // 2]
    return {
        "batch": batch,
        "length": length,
        "precision": precision,
        "step_s": round(median, 5),
        "tokens_per_s": round(batch * length / median),
        "loss": round(loss.item(), 3),
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="")
    args = p.parse_args()
    device = "cuda"
    if not torch.cuda.is_available():
        raise SystemExit("error: bench.gpu needs a CUDA GPU (torch sees none)")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here; bf16 is the other column
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": []}
    for name, shape in SHAPES.items():
        model = _model(shape, device)
        for batch in (16, 64):
            for precision in ("fp32", "bf16"):
                assert precision in PRECISIONS
                row = lang_adapter_tokens_per_s(model, device, batch, 128, precision, args.steps)
                result["runs"].append({"backbone": name, **row})
                print(json.dumps(result["runs"][-1]), flush=True)
        del model
        torch.cuda.empty_cache()
    for name in SHAPES:
        fp32 = {
            r["batch"]: r["tokens_per_s"] for r in result["runs"] if r["backbone"] == name and r["precision"] == "fp32"
        }
        bf16 = {
            r["batch"]: r["tokens_per_s"] for r in result["runs"] if r["backbone"] == name and r["precision"] == "bf16"
        }
        result.setdefault("bf16_speedup", {})[name] = {b: round(bf16[b] / fp32[b], 2) for b in fp32}
    if args.out:
        from madx_core.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2))
    emit(result, args.json)


if __name__ == "__main__":
    main()
