"""Results of cross-lingual transfer: scoring a trained system, the summary over seeds, results.json / results.csv.

One place for what the transfer runner, the app and the scripts all need, so that they cannot disagree: a result row
is {system, source, target, task, metric, value, seed, examples, ...}; a summary row holds the mean and the sample
standard deviation over seeds.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable
from pathlib import Path

from . import data as D
from .adapters import Stack
from .atomic import atomic_write_text
from .model import AdapterModel
from .tasks import TASKS, get_task

ROW_FIELDS = ["system", "source", "target", "task", "metric", "value", "seed"]  # the columns of results.csv

SYSTEM_NAMES = {
    "baseline": "full fine-tuning",
    "mlm-trg": "MLM-TRG",
    "madx-lad": "MAD-X –LAD (no language adapter)",
    "madx-inv": "MAD-X –INV",
    "madx-src": "MAD-X, source adapter kept",
    "madx": "MAD-X (target adapter swapped in)",
    "madx-anchor": "MAD-X, anchored target adapter swapped in (variant)",
    "madx-lad-anchor": "MAD-X –LAD, backbone-anchored target adapter swapped in (variant)",
    "madx-lad-pool": "MAD-X –LAD continued over the target adapters, target's swapped in (variant)",
    "madx-lad-more": "MAD-X –LAD continued with no language adapter (its control)",
}


def held_out_split(examples: list[D.QAExample], eval_fraction: float = 0.5) -> tuple[list, list]:
    """XQuAD used for training and testing: (train, held out), split by article with seed 0, so that the same
    articles are held out in every language and no evaluated context is trained on."""
    return D.split_by_article(examples, eval_fraction=eval_fraction, seed=0)


def score(
    model: AdapterModel, tokenizer, task: str, examples: list, stack: Stack | None, head: str, lang: str | None
) -> dict[str, float]:
    """The metrics a result row keeps (NER: entity F1 as a fraction; QA: F1 and EM in percent) on `examples`."""
    scores, _ = get_task(task).evaluate(model, tokenizer, examples, stack, head, lang)
    return get_task(task).row_metrics(scores)


def score_rows(model: AdapterModel, tokenizer, examples: list, stack: Stack | None, head: str, row: dict) -> list[dict]:
    """Result rows, one per metric: `row` ({system, source, target, task, seed, ...}) with the scores on `examples`,
    the test set of row["target"]."""
    metrics = score(model, tokenizer, row["task"], examples, stack, head, row["target"])
    return [{**row, "metric": m, "value": round(float(v), 4), "examples": len(examples)} for m, v in metrics.items()]


def mean_std(values: list[float], digits: int = 4) -> tuple[float, float]:
    """Mean and sample standard deviation (statistics.stdev: n - 1), rounded; one value has no spread (0.0)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return round(statistics.fmean(values), digits), round(std, digits)


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation over seeds for every (system, source, target, task, metric)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["system"], r["source"], r["target"], r["task"], r["metric"]), []).append(r["value"])
    out = []
    for (system, source, target, task, metric), values in sorted(groups.items()):
        mean, std = mean_std(values)
        row = {"system": system, "source": source, "target": target, "task": task, "metric": metric}
        out.append({**row, "mean": mean, "std": std, "n": len(values)})
    return out


def zero_shot_means(summary: list[dict], task: str, metric: str = "f1") -> dict:
    """Per system, the mean over the target languages other than the source (zero-shot), with its seed count."""
    rows = [r for r in summary if r["task"] == task and r["metric"] == metric and r["target"] != r["source"]]
    if not rows:
        return {}
    source = "en" if any(r["source"] == "en" for r in rows) else rows[0]["source"]
    rows = [r for r in rows if r["source"] == source]
    targets = sorted({r["target"] for r in rows})
    means = {}
    for system in SYSTEM_NAMES:
        hits = [r for r in rows if r["system"] == system]
        if {r["target"] for r in hits} == set(targets):
            means[system] = {"mean": statistics.fmean(r["mean"] for r in hits), "n": min(r["n"] for r in hits)}
    return {"source": source, "targets": targets, "systems": means}


def reading(summary: list[dict]) -> list[str]:
    """Plain sentences that say what the results show about swapping in the target language's adapter."""
    lines = []
    for task in TASKS.values():
        z = zero_shot_means(summary, task.name, "f1")
        systems = z.get("systems", {})
        if "madx" not in systems:
            continue
        counts = [v["n"] for v in systems.values()]
        n = max(set(counts), key=counts.count)  # the seeds most systems have; the others are named
        scale = task.scale
        figures = ", ".join(f"{SYSTEM_NAMES[k]} {v['mean'] * scale:.1f}" for k, v in systems.items())
        verdicts = [swap_verdict(systems, system, scale) for system in SWAPS if system in systems]
        seeds = f"{n} seed" + ("s" if n != 1 else "")
        seeds += "".join(f"; {SYSTEM_NAMES[k]} {v['n']}" for k, v in systems.items() if v["n"] != n)
        lines.append(
            f"{task.title} {task.metrics['f1']}, zero-shot from {z['source']} (mean over {', '.join(z['targets'])}; "
            f"{seeds}): {figures}. So {'; and '.join(verdicts)}."
        )
    return lines


SWAPS = {
    "madx": "swapping in the target language's adapter",
    "madx-anchor": "swapping in an anchored target adapter (a variant beyond the paper)",
    "madx-lad-anchor": "swapping a backbone-anchored target adapter in under –LAD's task adapter (a variant beyond "
    "the paper)",
    "madx-lad-pool": "swapping a backbone-anchored target adapter in under –LAD's task adapter trained one more epoch "
    "over those adapters (a variant beyond the paper)",
}
# What a swap is measured against: keeping the source adapter and using none (-LAD); the continued variant also
# against its control, the same extra training with no adapter (else more training would pass for the adapters' gain)
CONTROLS = {"madx-lad-pool": "madx-lad-more"}
REFERENCES = {system: ("madx-src", "madx-lad", control) for system, control in CONTROLS.items()}


def swap_helps(systems: dict, system: str = "madx") -> tuple[bool, str | None, float]:
    """Whether `system` (madx, or a variant) beats every system it is measured against (keeping the source adapter,
    no language adapter (-LAD), and for madx-lad-pool its control) on a zero_shot_means "systems" dict: (helps, the
    best of those, its lead over `system`). Without its control's rows a variant does not help: (False, control,
    nan)."""
    if system in CONTROLS and CONTROLS[system] not in systems:
        return False, CONTROLS[system], float("nan")
    others = {k: v["mean"] for k, v in systems.items() if k in REFERENCES.get(system, ("madx-src", "madx-lad"))}
    best = max(others, key=others.get) if others else None
    if best is None:
        return True, None, 0.0
    return systems[system]["mean"] > others[best], best, others[best] - systems[system]["mean"]


def swap_verdict(systems: dict, system: str, scale: float) -> str:
    """A clause on whether swapping (MAD-X's, or a variant's) helps, with the gap to the best reference."""
    helps, best, lead = swap_helps(systems, system)
    if best is not None and best not in systems:
        return f"{SWAPS[system]} is not measured against {SYSTEM_NAMES[best]} here, so there is no verdict"
    if helps:
        ahead = f": {-lead * scale:.1f} points above {SYSTEM_NAMES[best]}" if best else ""
        return f"{SWAPS[system]} helps here{ahead}"
    return f"{SWAPS[system]} does not help here: {SYSTEM_NAMES[best]} is {lead * scale:.1f} points better"


def csv_text(rows: list[dict], fields: list[str], cell: Callable[[object], object] = lambda v: v) -> str:
    """Rows as CSV with the given columns (others dropped); `cell` may rewrite each value (e.g. make it inert)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def write_results(out: Path, rows: list[dict], config: dict) -> None:
    """results.json (the config, the rows, their summary) and results.csv into `out`, each written atomically."""
    payload = {"meta": {"config": config}, "rows": rows, "summary": summarise(rows)}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2, ensure_ascii=False))
    atomic_write_text(out / "results.csv", csv_text(rows, ROW_FIELDS))
