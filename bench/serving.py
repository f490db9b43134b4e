"""Serving: the Gradio app in-process, its start-up time, and requests/s and p50/p95 latency of `/ner`.

The app is built and launched as tests/test_app.py does (`build_app(state)`, `demo.queue().launch(...)`) on a free
local port, with the shipped adapters (MADX_ASSETS or assets/) and a temporary work directory; the backbone is
loaded before launch, as app.py does. Clients are `gradio_client.Client`s, one per thread, each sending its share
of a fixed number of requests, cycling through the shipped NER examples (assets/examples.json) with the example's
language adapter when one is shipped (else "en"). Every client count is measured in each round, alternating.

python -m bench.serving --json [--requests 112] [--clients 1,8] [--repeats 3]
python -m bench.serving --json --classroom [--classroom-clients 30] [--classroom-seconds 60]

`--classroom` is the load test of a class on one free CPU Space: 30 clients send `/ner` requests back to back for
60 s (no pause between a reply and the next request, so it is harsher than people clicking), then four texts just
under the app's size limit are sent at once and a one-sentence request is timed while they run.

Start-up figures: `since_process_start_s` is measured from the interpreter's start (/proc/self/stat), the other
phases from the top of this module. The converted offline backbone is cached in ~/.cache/madx: the very first run
on a machine also converts it (~10 s) inside `model_load_s`.
"""

from __future__ import annotations

import os
import time

_MODULE_T0 = time.perf_counter()  # before torch, gradio and the app are imported

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import concurrent.futures as cf  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.common import emit, parser  # noqa: E402 (imports torch)

REPO = Path(__file__).resolve().parents[1]


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc), or None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted from the state field (3)
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list (q in 0..100)."""
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    pos = (len(sorted_xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def _ner_settings(demo) -> dict:
    """The queue settings of the /ner event (its concurrency limit bounds what 8 clients can get)."""
    fns = [f for f in getattr(demo, "fns", {}).values() if getattr(f, "api_name", None) in ("ner", "/ner")]
    if not fns:
        return {}
    f = fns[0]
    group = [
        g.api_name or "(private)"
        for g in demo.fns.values()
        if getattr(g, "concurrency_id", None) == f.concurrency_id and getattr(g, "queue", True)
    ]
    return {
        "concurrency_limit": f.concurrency_limit,
        "concurrency_id": f.concurrency_id,
        "events_sharing_the_limit": sorted(set(map(str, group))),
    }


def _requests(examples: list[dict], languages: set[str], n: int) -> list[tuple[str, str]]:
    """n (text, language adapter) pairs, cycling through the examples."""
    pairs = [(e["text"], e["lang"] if e["lang"] in languages else "en") for e in examples]
    return [pairs[i % len(pairs)] for i in range(n)]


def measure(url: str, work: list[tuple[str, str]], n_clients: int, downloads: str) -> dict:
    """All of `work` sent by n_clients threads (request i goes to client i % n_clients); latencies and throughput."""
    from gradio_client import Client

    clients = [Client(url, verbose=False, analytics_enabled=False, download_files=downloads) for _ in range(n_clients)]
    shares = [work[i::n_clients] for i in range(n_clients)]
    barrier = threading.Barrier(n_clients + 1)
    errors: list[str] = []

    def run(client, share) -> list[float]:
        latencies = []
        barrier.wait()
        for text, lang in share:
            t = time.perf_counter()
            try:
                client.predict(text, language_adapter=lang, api_name="/ner")
            except Exception as e:  # counted and reported, not raised: one failure should not hide the rest
                errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            latencies.append(time.perf_counter() - t)
        return latencies

    with cf.ThreadPoolExecutor(n_clients) as pool:
        futures = [pool.submit(run, c, s) for c, s in zip(clients, shares, strict=True)]
        barrier.wait()
        start = time.perf_counter()
        latencies = [x for f in futures for x in f.result()]
        wall = time.perf_counter() - start
    for c in clients:
        close = getattr(c, "close", None)
        if close:
            try:
                close()
            except Exception:
                pass
    return {"latencies": latencies, "wall_s": wall, "errors": errors}


def classroom(url: str, work: list[tuple[str, str]], n_clients: int, seconds: float, downloads: str) -> dict:
    """n_clients clients sending /ner back to back for `seconds`: latencies, throughput and errors."""
    from gradio_client import Client

    clients = [Client(url, verbose=False, analytics_enabled=False, download_files=downloads) for _ in range(n_clients)]
    barrier = threading.Barrier(n_clients + 1)
    errors: list[str] = []
    stop_at = [0.0]

    def run(i: int) -> list[float]:
        latencies, k = [], i
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            text, lang = work[k % len(work)]
            k += n_clients
            t = time.perf_counter()
            try:
                clients[i].predict(text, language_adapter=lang, api_name="/ner")
            except Exception as e:  # counted and reported, not raised
                errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            latencies.append(time.perf_counter() - t)
        return latencies

    with cf.ThreadPoolExecutor(n_clients) as pool:
        futures = [pool.submit(run, i) for i in range(n_clients)]
        start = time.perf_counter()
        stop_at[0] = start + seconds
        barrier.wait()
        lat = sorted(x for f in futures for x in f.result())
        wall = time.perf_counter() - start
    return {
        "clients": n_clients,
        "seconds": seconds,
        "requests": len(lat),
        "requests_per_s": round(len(lat) / wall, 2),
        "p50_ms": round(_percentile(lat, 50) * 1e3, 1) if lat else None,
        "p95_ms": round(_percentile(lat, 95) * 1e3, 1) if lat else None,
        "max_ms": round(lat[-1] * 1e3, 1) if lat else None,
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def long_text_probe(state, url: str, short_text: str, downloads: str) -> dict:
    """Four texts just under the size limit at once, then one sentence: how long the sentence waits."""
    from gradio_client import Client

    from app.limits import MAX_TEXT_CHARS

    long_text = (short_text + "\n") * ((MAX_TEXT_CHARS - 1000) // (len(short_text) + 1))
    longs = [Client(url, verbose=False, analytics_enabled=False, download_files=downloads) for _ in range(4)]
    started = time.perf_counter()
    jobs = [c.submit(long_text, api_name="/ner") for c in longs]
    while state.lanes.long_requests < 4 and time.perf_counter() - started < 60:
        time.sleep(0.1)
    in_flight = state.lanes.long_requests
    other = Client(url, verbose=False, analytics_enabled=False, download_files=downloads)
    t = time.perf_counter()
    other.predict(short_text, api_name="/ner")
    short_s = time.perf_counter() - t
    long_done_before = sum(j.done() for j in jobs)
    long_s = []
    for job in jobs:
        try:
            job.result(timeout=600)
            long_s.append(round(time.perf_counter() - started, 1))
        except Exception as e:  # reported: a long text may hit the per-request time cap
            long_s.append(f"{type(e).__name__}: {e}"[:120])
    return {
        "long_text_chars": len(long_text),
        "long_requests_in_flight": in_flight,
        "one_sentence_answered_s": round(short_s, 2),
        "long_requests_finished_before_it": long_done_before,
        "long_requests_finished_after_s": long_s,
    }


def main() -> None:
    p = parser(__doc__)
    p.set_defaults(repeats=3)
    p.add_argument("--requests", type=int, default=112, help="requests per measurement (8 clients x 14 examples)")
    p.add_argument("--clients", default="1,8", help="comma-separated numbers of concurrent clients")
    p.add_argument("--warmup", type=int, default=0, help="extra untimed requests (each example is sent once anyway)")
    p.add_argument("--classroom", action="store_true", help="run the classroom load test instead of the rounds")
    p.add_argument("--classroom-clients", type=int, default=30)
    p.add_argument("--classroom-seconds", type=float, default=60)
    args = p.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]

    import torch

    torch.set_num_threads(args.threads)
    from gradio_client import Client

    from app import build_app, launch_kwargs
    from app.state import create_state

    t_imported = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="madx-serving-"))
    state = create_state(None, tmp / "work")  # shipped assets (MADX_ASSETS or assets/), throw-away work dir
    state.registry.model(args.backbone)  # as app.py: load the backbone before the first user arrives
    t_model = time.perf_counter()
    demo = build_app(state)
    t_built = time.perf_counter()
    demo.queue().launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True, **launch_kwargs(state)
    )
    t_launched = time.perf_counter()
    examples = json.loads((REPO / "assets" / "examples.json").read_text(encoding="utf-8"))["ner"]
    client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=str(tmp / "dl"))
    client.predict(examples[0]["text"], api_name="/ner")  # defaults: language adapter en, task adapter ner
    t_first = time.perf_counter()
    age = _process_age_s()

    languages = {e.name for e in state.registry.language_adapters()}
    # Warm-up: every example once, so each language adapter is loaded into the serving model before timing.
    for text, lang in _requests(examples, languages, len(examples) + args.warmup):
        client.predict(text, language_adapter=lang, api_name="/ner")

    if args.classroom:
        work = _requests(examples, languages, len(examples))
        load = classroom(demo.local_url, work, args.classroom_clients, args.classroom_seconds, str(tmp / "dl"))
        probe = long_text_probe(state, demo.local_url, examples[0]["text"], str(tmp / "dl"))
        emit({"benchmark": "serving-classroom", "threads": args.threads, "load": load, "long_texts": probe}, args.json)
        with contextlib.redirect_stdout(sys.stderr):
            demo.close()
        return

    work = _requests(examples, languages, args.requests)
    per: dict[int, list[dict]] = {n: [] for n in client_counts}
    for _ in range(args.repeats):
        for n in client_counts:
            per[n].append(measure(demo.local_url, work, n, str(tmp / "dl")))

    # The same work called in-process (no HTTP, no queue): what the model and tag_text cost by themselves.
    from app.inference import ner as ner_direct

    direct = []
    for _ in range(args.repeats):
        for text, lang in work:
            t = time.perf_counter()
            ner_direct(state, text, args.backbone, lang, "ner")
            direct.append(time.perf_counter() - t)
    direct.sort()

    rows = []
    for n in client_counts:
        runs = per[n]
        lat = sorted(x for r in runs for x in r["latencies"])
        rps = [len(r["latencies"]) / r["wall_s"] for r in runs]
        rows.append(
            {
                "clients": n,
                "requests_per_round": args.requests,
                "rounds": len(runs),
                "requests_per_s": round(statistics.median(rps), 2),
                "requests_per_s_min_max": [round(min(rps), 2), round(max(rps), 2)],
                "p50_ms": round(_percentile(lat, 50) * 1e3, 1) if lat else None,
                "p95_ms": round(_percentile(lat, 95) * 1e3, 1) if lat else None,
                "max_ms": round(lat[-1] * 1e3, 1) if lat else None,
                "errors": sum(len(r["errors"]) for r in runs),
                "first_errors": [e for r in runs for e in r["errors"]][:3],
            }
        )
    token_counts = [len(state.registry.model(args.backbone)[1](e["text"])["input_ids"]) for e in examples]
    result = {
        "benchmark": "serving",
        "endpoint": "/ner",
        "threads": args.threads,
        "backbone": args.backbone,
        "startup": {
            "since_process_start_s": round(age, 2) if age is not None else None,
            "imports_s": round(t_imported - _MODULE_T0, 2),
            "model_load_s": round(t_model - t_imported, 2),
            "build_s": round(t_built - t_model, 2),
            "launch_s": round(t_launched - t_built, 2),
            "build_and_launch_s": round(t_launched - t_model, 2),
            "first_answer_s": round(t_first - t_launched, 2),
            "module_start_to_first_answer_s": round(t_first - _MODULE_T0, 2),
        },
        "queue": {
            "ner_event": _ner_settings(demo),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "note": "at most concurrency_limit /ner calls run at once (shared with the other inference events); "
            "the rest wait in Gradio's queue, and the running ones share the torch threads and cores",
        },
        "inputs": {
            "examples": len(examples),
            "tokens_min_median_max": [min(token_counts), statistics.median(token_counts), max(token_counts)],
            "language_adapters_used": sorted({lang for _, lang in work}),
        },
        "direct_call": {
            "what": "app.inference.ner in-process, one at a time, same requests: the model's share of the latency",
            "p50_ms": round(_percentile(direct, 50) * 1e3, 1),
            "p95_ms": round(_percentile(direct, 95) * 1e3, 1),
            "requests_per_s": round(len(direct) / sum(direct), 2),
        },
        "rows": rows,
    }
    emit(result, args.json)
    with contextlib.redirect_stdout(sys.stderr):  # Gradio prints "Closing server ..." on stdout
        demo.close()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # gradio_client / uvicorn threads can keep the interpreter alive after close()
