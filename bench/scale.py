"""Scaling: forward time and task-adapter training-step time, and peak memory, against sequence length and batch.

Model as in bench.overhead: Stack(language rf 2 + NICE, task rf 16) + tagging head. A training step is forward +
backward + AdamW step with only the task adapter and the head trainable. Every point runs in its own fresh process
(one for the forward, one for the step), so each peak memory is that point's own: on CPU the peak resident set while
timing (Linux VmHWM, reset after the model is built) and its growth over the loaded model; on CUDA
torch.cuda.max_memory_allocated.

python -m bench.scale --json [--lengths 32,64,128,256,512 --length-batch 8] [--batches 1,4,16,64 --batch-length 128]

Writes bench/results/scale.json, scale.html (Plotly, self-contained) and scale.png (needs kaleido, in
requirements-dev.txt, and a Chrome/Chromium: on Debian `apt-get install chromium`; without one the PNG is skipped and
the JSON says why).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch

from bench.common import emit, in_fresh_process, parser, peak_rss_since_reset_mb, reset_peak_rss, rss_mb, timed

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def point(backbone: str, mode: str, batch: int, length: int, repeats: int, threads: int, device: str) -> dict:
    """Runs in a fresh process: time `mode` ("forward" or "train") at one (batch, length); memory of this process."""
    import madx_core as mx

    torch.set_num_threads(threads)
    model = mx.AdapterModel.from_pretrained(backbone).to(device)
    model.add_adapter("lang", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    model.add_adapter("ner", mx.AdapterConfig(reduction_factor=16))
    model.add_tagging_head("ner", LABELS)
    stack = mx.Stack("lang", "ner")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (batch, length), generator=g).to(device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, len(LABELS), (batch, length), generator=g).to(device)
    import gc

    gc.collect()
    loaded_rss = rss_mb()
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # reading the checkpoint included
    reset = reset_peak_rss()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        loaded_cuda = torch.cuda.memory_allocated() / 2**20

    if mode == "forward":

        def fn():
            with torch.inference_mode():
                model(ids, mask, adapters=stack, head="ner")

        trainable = 0
    else:
        model.set_trainable(adapters=["ner"], heads=["ner"])
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in params)
        opt = torch.optim.AdamW(params, lr=1e-4)

        def fn():
            loss = model(ids, mask, adapters=stack, head="ner", labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    # warmup=1: the first step allocates AdamW's state and the allocator's pools; it counts for memory, not time.
    t = timed(fn, repeats=repeats, warmup=1, device=device)
    out = {
        "median_s": t["median_s"],
        "iqr_s": t["iqr_s"],
        "min_s": t["min_s"],
        "loaded_rss_mb": loaded_rss,
        "run_peak_rss_mb": peak_rss_since_reset_mb() if reset else None,
        "load_peak_rss_mb": load_peak,
        "trainable": trainable,
    }
    if device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["cuda_loaded_mb"] = loaded_cuda
    return out


def run_point(args, mode: str, batch: int, length: int) -> dict:
    started = time.perf_counter()
    r = in_fresh_process(point, args.backbone, mode, batch, length, args.repeats, args.threads, args.device)
    res = r["result"]
    row = {
        "mode": mode,
        "batch": batch,
        "seq_len": length,
        "tokens": batch * length,
        "median_ms": round(res["median_s"] * 1e3, 2),
        "iqr_ms": round(res["iqr_s"] * 1e3, 2),
        "min_ms": round(res["min_s"] * 1e3, 2),
        # Peak while timing (VmHWM reset after the model was built). Loading the checkpoint has its own transient
        # peak, the same for every point: load_peak_rss_mb.
        "peak_rss_mb": round(res["run_peak_rss_mb"] if res["run_peak_rss_mb"] is not None else r["peak_rss_mb"]),
        "loaded_rss_mb": round(res["loaded_rss_mb"]),
        "load_peak_rss_mb": round(res["load_peak_rss_mb"]),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    row["peak_over_loaded_mb"] = row["peak_rss_mb"] - row["loaded_rss_mb"]
    if mode == "train":
        row["trainable"] = res["trainable"]
    if "cuda_peak_mb" in res:
        row["cuda_peak_mb"] = round(res["cuda_peak_mb"])
        row["cuda_peak_over_loaded_mb"] = round(res["cuda_peak_mb"] - res["cuda_loaded_mb"])
    return row


def figure(rows: list[dict], length_batch: int, batch_length: int, device: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    mem_key = "cuda_peak_mb" if device == "cuda" else "peak_rss_mb"
    mem_title = "peak CUDA memory (MB)" if device == "cuda" else "peak resident memory (MB)"
    fig = make_subplots(
        rows=2,
        cols=2,
        shared_xaxes="columns",
        vertical_spacing=0.08,
        horizontal_spacing=0.08,
        subplot_titles=(
            f"time vs sequence length (batch {length_batch})",
            f"time vs batch (sequence length {batch_length})",
            f"memory vs sequence length (batch {length_batch})",
            f"memory vs batch (sequence length {batch_length})",
        ),
    )
    styles = {"forward": ("forward (inference)", "#2a9d8f"), "train": ("task-adapter training step", "#e76f51")}
    for col, (sweep, x_key) in enumerate((("length", "seq_len"), ("batch", "batch")), start=1):
        for mode, (name, color) in styles.items():
            pts = sorted((r for r in rows if r["sweep"] == sweep and r["mode"] == mode), key=lambda r: r[x_key])
            if not pts:
                continue
            xs = [r[x_key] for r in pts]
            show = col == 1
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[r["median_ms"] for r in pts],
                    error_y=dict(type="data", array=[r["iqr_ms"] / 2 for r in pts], visible=True),
                    mode="lines+markers",
                    name=name,
                    legendgroup=mode,
                    showlegend=show,
                    line=dict(color=color),
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[r[mem_key] for r in pts],
                    mode="lines+markers",
                    name=name,
                    legendgroup=mode,
                    showlegend=False,
                    line=dict(color=color, dash="dot"),
                ),
                row=2,
                col=col,
            )
        base = {r[x_key]: r["loaded_rss_mb"] for r in rows if r["sweep"] == sweep}
        if base and device != "cuda":
            fig.add_trace(
                go.Scatter(
                    x=sorted(base),
                    y=[base[x] for x in sorted(base)],
                    mode="lines",
                    name="model loaded, before the first call",
                    legendgroup="loaded",
                    showlegend=col == 1,
                    line=dict(color="#999999", dash="dash"),
                ),
                row=2,
                col=col,
            )
    for col, (title, x_key) in enumerate((("sequence length (tokens)", "seq_len"), ("batch size", "batch")), start=1):
        ticks = sorted({r[x_key] for r in rows if r["sweep"] == ("length" if col == 1 else "batch")})
        fig.update_xaxes(type="log", title_text=title, tickvals=ticks, row=2, col=col)
        fig.update_xaxes(type="log", tickvals=ticks, row=1, col=col)
        fig.update_yaxes(type="log", title_text="median time (ms)" if col == 1 else None, row=1, col=col)
        fig.update_yaxes(title_text=mem_title if col == 1 else None, rangemode="tozero", row=2, col=col)
    fig.update_layout(
        title="MAD-X Stack(language rf 2 + NICE, task rf 16) + tagging head: cost against input size",
        template="plotly_white",
        width=1100,
        height=750,
        legend=dict(orientation="h", yanchor="bottom", y=1.04, x=0),
        margin=dict(t=110),
    )
    return fig


def main() -> None:
    p = parser(__doc__)
    p.set_defaults(repeats=5)
    p.add_argument("--lengths", default="32,64,128,256,512")
    p.add_argument("--length-batch", type=int, default=8, help="batch size of the length sweep")
    p.add_argument("--batches", default="1,4,16,64")
    p.add_argument("--batch-length", type=int, default=128, help="sequence length of the batch sweep")
    p.add_argument("--modes", default="forward,train")
    p.add_argument("--out", default=str(RESULTS), help="folder for scale.json / scale.html / scale.png")
    p.add_argument("--name", default="scale", help="file name stem of the outputs")
    p.add_argument("--no-png", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    modes = args.modes.split(",")

    rows = []
    grid = [("length", args.length_batch, int(n)) for n in args.lengths.split(",") if n]
    grid += [("batch", int(b), args.batch_length) for b in args.batches.split(",") if b]
    done: dict[tuple, dict] = {}  # a point on both sweeps (batch 8 x 128) is measured once
    for sweep, batch, length in grid:
        for mode in modes:
            key = (mode, batch, length)
            if key not in done:
                done[key] = run_point(args, mode, batch, length)
            rows.append({"sweep": sweep, **done[key]})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "scale",
        "device": args.device,
        "threads": args.threads,
        "repeats": args.repeats,
        "backbone": args.backbone,
        "model": "Stack(lang rf2 + NICE, ner rf16) + tagging head (7 labels)",
        "train_step": "forward + backward + AdamW, task adapter and head trainable",
        "memory": "one fresh process per point; peak_rss_mb is the peak resident set while timing (Linux VmHWM,"
        " reset once the model was built; includes the ~470 MB of fp32 weights); peak_over_loaded_mb subtracts the"
        " resident size right after the model was built; load_peak_rss_mb is the transient peak of loading it",
        "rows": rows,
        "files": {},
    }
    fig = figure(rows, args.length_batch, args.batch_length, args.device)
    html = out / f"{args.name}.html"
    fig.write_html(html, include_plotlyjs=True)
    result["files"]["html"] = str(html.relative_to(Path.cwd()) if html.is_relative_to(Path.cwd()) else html)
    if args.no_png:
        result["files"]["png"] = None
        result["png_skipped"] = "--no-png"
    else:
        png = out / f"{args.name}.png"
        try:
            fig.write_image(png, scale=2)
            result["files"]["png"] = str(png.relative_to(Path.cwd()) if png.is_relative_to(Path.cwd()) else png)
        except Exception as e:  # no kaleido, or no Chrome/Chromium for it to drive
            result["files"]["png"] = None
            result["png_skipped"] = f"{type(e).__name__}: {str(e)[:300]}"
    path = out / f"{args.name}.json"
    result["files"]["json"] = str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    emit(result, args.json)


if __name__ == "__main__":
    main()
