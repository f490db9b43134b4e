"""Where bench.overhead's extra time goes: torch.profiler over the bare backbone + head and the MAD-X stack + head.

Each part of a layer is labelled with record_function through forward hooks and a wrapped `adapter_block`, added
here at run time (madx_core itself is not changed): embeddings, invertible adapter, attention, feed-forward,
adapter_block (the stacked adapters plus the output LayerNorm(s)), bottleneck adapters by name, head. For each
shape it prints the time per label and the aten ops that the MAD-X forward adds (calls and self time), against
the bare forward, and the FLOP lower bound of the overhead.

python -m bench.profile_overhead --json [--shapes 1x32,32x128] [--seconds 3] [--threads 1]
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

import madx_core as mx
import madx_core.model as mx_model
from bench.common import emit, interleaved, parser

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def _label(module: torch.nn.Module, name: str) -> None:
    """Wrap every call of `module` in record_function(name), with forward hooks."""
    frames = []

    def pre(_m, _inp):
        rf = record_function(name)
        rf.__enter__()
        frames.append(rf)

    def post(_m, _inp, _out):
        frames.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def instrument(model: mx.AdapterModel) -> None:
    _label(model.backbone.embeddings, "embeddings")
    for layer in model.backbone.encoder.layer:
        _label(layer.attention, "attention")
        _label(layer.intermediate, "ffn")
        _label(layer.output.dense, "ffn")
    for name, adapter in model.adapters.items():
        for block in adapter.layers.values():
            _label(block, f"bottleneck[{name}]")
        if adapter.invertible is not None:
            _label(adapter.invertible, f"invertible[{name}]")
    for name, head in model.heads.items():
        _label(head, f"head[{name}]")
    original = mx_model.adapter_block

    def labelled(h0, x, layer_norm, adapters):
        with record_function(f"adapter_block[{len(adapters)} adapters]"):
            return original(h0, x, layer_norm, adapters)

    mx_model.adapter_block = labelled


def flops_per_token(config, length: int, lang_rf: float = 2, task_rf: float = 16) -> dict:
    """Multiply-adds per token: the bare encoder layer and what the adapters add (the overhead's lower bound)."""
    d, ffn, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    layer = 4 * d * d + 2 * d * ffn + 2 * length * d  # projections, feed-forward, scores and weighted sum
    lang = 2 * d * int(d // lang_rf)
    task = 2 * d * int(d // task_rf)
    nice = 4 * (d // 2) * int((d // 2) // 2)
    bare = n * layer + d * len(LABELS)
    extra = n * (lang + task) + nice
    return {"bare_macs": bare, "adapter_macs": extra, "flop_ratio": round((bare + extra) / bare, 4)}


def profile_one(fn, seconds: float) -> tuple[object, int]:
    fn()  # warm
    n, start = 0, time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        while n == 0 or time.perf_counter() - start < seconds:
            fn()
            n += 1
    return prof, n


def per_label(prof, n: int) -> dict[str, float]:
    """Total (inclusive) CPU ms per call of the forward, for our record_function labels."""
    out = {}
    for e in prof.key_averages():
        if e.key.startswith(("embeddings", "attention", "ffn", "adapter_block", "bottleneck", "invertible", "head")):
            out[e.key] = round(e.cpu_time_total / 1e3 / n, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def ops(prof, n: int) -> dict[str, tuple[float, float]]:
    """aten op -> (calls per forward, self CPU ms per forward)."""
    out = defaultdict(lambda: [0.0, 0.0])
    for e in prof.key_averages():
        if e.key.startswith("aten::"):
            out[e.key][0] += e.count / n
            out[e.key][1] += e.self_cpu_time_total / 1e3 / n
    return out


def _runner(model: mx.AdapterModel, batch: int, length: int, device: str):
    """run(stack): one inference forward of the model on fixed random ids of shape (batch, length)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (batch, length), generator=g).to(device)
    mask = torch.ones_like(ids)

    def run(stack):
        with torch.inference_mode():
            model(ids, mask, adapters=stack, head="ner")

    return run


def main() -> None:
    p = parser(__doc__)
    p.set_defaults(threads=1, repeats=5)
    p.add_argument("--shapes", default="1x32,32x128", help="BATCHxLENGTH, comma-separated")
    p.add_argument("--seconds", type=float, default=3.0, help="profiled seconds per variant and shape")
    p.add_argument("--top", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = mx.AdapterModel.from_pretrained(args.backbone).to(args.device)
    model.add_adapter("lang", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    model.add_adapter("ner", mx.AdapterConfig(reduction_factor=16))
    model.add_tagging_head("ner", LABELS)
    rows = []
    for shape in args.shapes.split(","):
        batch, length = map(int, shape.lower().split("x"))
        run = _runner(model, batch, length, args.device)
        variants = {"bare": lambda run=run: run(None), "madx": lambda run=run: run(mx.Stack("lang", "ner"))}
        t = interleaved(variants, repeats=args.repeats, warmup=1)  # unprofiled, before the hooks exist
        rows.append({"batch": batch, "seq_len": length, "timing": t})
    instrument(model)
    for row in rows:
        batch, length = row["batch"], row["seq_len"]
        run = _runner(model, batch, length, args.device)
        profs = {}
        for name, stack in (("bare", None), ("madx", mx.Stack("lang", "ner"))):
            prof, n = profile_one(lambda stack=stack, run=run: run(stack), args.seconds)
            profs[name] = (prof, n)
        bare_ops, madx_ops = ops(*profs["bare"]), ops(*profs["madx"])
        extra = {
            k: {
                "extra_calls": round(madx_ops[k][0] - bare_ops.get(k, (0, 0))[0], 1),
                "extra_self_ms": round(madx_ops[k][1] - bare_ops.get(k, (0, 0))[1], 3),
            }
            for k in madx_ops
        }
        extra = dict(sorted(extra.items(), key=lambda kv: -kv[1]["extra_self_ms"])[: args.top])
        t = row.pop("timing")
        row.update(
            {
                "bare_ms": round(t["bare"]["median_s"] * 1e3, 2),
                "madx_ms": round(t["madx"]["median_s"] * 1e3, 2),
                "ratio": round(t["madx"]["median_s"] / t["bare"]["median_s"], 3),
                "flops": flops_per_token(model.config, length),
                "profiled_forwards": {k: v[1] for k, v in profs.items()},
                "bare_ms_per_label": per_label(*profs["bare"]),
                "madx_ms_per_label": per_label(*profs["madx"]),
                "aten_calls_per_forward": {
                    k: round(sum(c for c, _ in o.values())) for k, o in (("bare", bare_ops), ("madx", madx_ops))
                },
                "top_extra_ops": extra,
            }
        )
    emit({"benchmark": "profile_overhead", "threads": args.threads, "device": args.device, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
