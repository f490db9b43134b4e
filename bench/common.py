"""Shared helpers for the benchmarks: timing with repeats, peak memory in a fresh process, JSON output."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--backbone", default="multilingual-e5-small")
    return p


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2, device: str = "cpu") -> dict:
    """Median and spread (min, max, IQR) of `repeats` wall-clock runs of fn, after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "iqr_s": q[2] - q[0],
        "repeats": repeats,
    }


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, dict]:
    """Time several variants in alternation (A B A B ...), so drifts of the machine hit all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[name] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "iqr_s": q[2] - q[0]}
    return out


def _child(target, args, queue) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = target(*args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"result": result, "peak_rss_mb": peak / 1024, "rss_before_mb": before / 1024})


def in_fresh_process(target: Callable, *args) -> dict:
    """Run target(*args) in a new (spawned) process and report its peak resident memory."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def emit(result: dict, as_json: bool) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if not as_json:
        print("(figures are medians over repeats; ratios are measured side by side in one run)", file=sys.stderr)


def rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process, so that loading the model does not count (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset_mb() -> float | None:
    """Peak resident set since the last reset_peak_rss (VmHWM), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
