"""Write the README's results table from assets/results.json (between the RESULTS markers).

python -m scripts.results_table            # rewrites README.md in place
python -m scripts.results_table --print    # prints the table only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from madx_core.results import SYSTEM_NAMES, reading
from madx_core.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"
SYSTEMS = list(SYSTEM_NAMES.items())


def table(results: dict) -> str:
    summary = results["summary"]
    lines = []
    for task, metric, label in [("ner", "f1", "NER entity F1"), ("qa", "f1", "QA F1"), ("qa", "em", "QA EM")]:
        rows = [r for r in summary if r["task"] == task and r["metric"] == metric and r["source"] == "en"]
        if not rows:
            continue
        targets = sorted({r["target"] for r in rows}, key=lambda t: (t != rows[0]["source"], t))
        scale = TASKS[task].scale
        lines.append(f"**{label}** (source {rows[0]['source']}; mean ± sample std over seeds where n > 1, n = seeds)\n")
        lines.append("| system | " + " | ".join(targets) + " |")
        lines.append("|---|" + "---|" * len(targets))
        for key, name in SYSTEMS:
            cells = []
            for t in targets:
                hit = [r for r in rows if r["system"] == key and r["target"] == t]
                if hit:
                    r = hit[0]
                    spread = f" ± {r['std'] * scale:.1f}" if r["n"] > 1 else ""  # no spread from one run
                    cells.append(f"{r['mean'] * scale:.1f}{spread} (n={r['n']})")
                else:
                    cells.append("–")
            if any(c != "–" for c in cells):
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += matrix(summary)
    lines += ["**What this shows** (generated from the results):\n", *[f"- {x}" for x in reading(summary)], ""]
    return "\n".join(lines)


def matrix(summary: list[dict]) -> list[str]:
    """NER F1 for every source x target pair, for each system trained on more than one source (the mean over the
    seeds each source ran)."""
    rows = [r for r in summary if r["task"] == "ner" and r["metric"] == "f1"]
    sources = sorted({r["source"] for r in rows}, key=lambda s: (s != "en", s))
    if len(sources) < 2:
        return []
    targets = sorted({r["target"] for r in rows}, key=lambda t: (t != "en", t))
    lines = []
    for system in ("madx", "madx-src", "madx-lad"):
        if len({r["source"] for r in rows if r["system"] == system}) < 2:
            continue
        seeds = ", ".join(f"{src} {max(r['n'] for r in rows if r['source'] == src)}" for src in sources)
        lines += [f"**NER F1, source (rows) x target (columns): {SYSTEM_NAMES[system]}** (seeds: {seeds})\n"]
        lines += ["| source | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
        for src in sources:
            cells = []
            for t in targets:
                hit = [r for r in rows if r["system"] == system and r["source"] == src and r["target"] == t]
                cells.append(f"{hit[0]['mean'] * 100:.1f}" if hit else "–")
            lines.append(f"| {src} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def text_table(stats: dict) -> str:
    """The unlabelled text each language adapter had, and how much of it its training steps covered."""
    lines = [
        "**Unlabelled text per language adapter** (sub-word tokens of the backbone's tokenizer; sequences seen = steps "
        "x batch, each at most 128 tokens)\n",
        "| language | lines | tokens | sequences seen | sources |",
        "|---|---|---|---|---|",
    ]
    for lang, s in stats.items():
        sources = ", ".join(f.removeprefix("data/") for f in s["sources"])
        lines.append(f"| {lang} | {s['lines']:,} | {s['tokens']:,} | {s['sequences_seen']:,} | {sources} |")
    return "\n".join(lines) + "\n"


def task_adapters_line(info: dict | None) -> str:
    """Which English NER task adapters the recipes were scored with, in words (from recipes.json)."""
    if not info:
        return "of the transfer run"
    budget = f"{info['epochs']:g} epoch(s)" if info.get("epochs") else f"{info['steps']} steps"
    return f"of the transfer run in runs/{info['run']} ({budget} of {info['batch_size']} at {info['lr']:g})"


def recipes_table(summary: list[dict], task_adapters: str = "of the transfer run", name: str = "recipes.json") -> str:
    """Target language-adapter recipes (scripts/adapter_recipes.py): each adapter's MLM loss and drift, and what
    swapping it in does to zero-shot NER against keeping the English adapter, on dev and on test."""
    from scripts.adapter_recipes import RECIPES, anchor_weight, recipe_info

    def rank(recipe: str) -> tuple:  # the named recipes in their order, the GPU run's checkpoints by mean step, anchors
        if recipe.startswith("long-"):
            steps = [r["steps"] for r in summary if r["recipe"] == recipe]
            return len(RECIPES), sum(steps) / len(steps)
        if anchor_weight(recipe) is not None:  # the strongest anchor first
            return len(RECIPES) + 1, -anchor_weight(recipe)
        return list(RECIPES).index(recipe), 0

    lines = [
        f"**Target language-adapter recipes** (`assets/{name}`; NER F1 means over the seeds of the English task "
        f'adapters {task_adapters}, unchanged except for recipes marked "retrained", which train their own; gain = '
        "swap − keep English; MLM loss on the target's NER dev sentences, without → with the adapter; drift = 1 − "
        "mean cosine of last-layer states without and with it)\n",
        "| recipe | target | steps | seeds | MLM loss | drift | dev swap / keep (gain) | test swap / keep (gain) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = sorted({r["recipe"] for r in summary}, key=rank)
    for r in sorted(summary, key=lambda r: (rank(r["recipe"]), r["target"])):
        cells = [
            f"{r[split]['swap']:.1f} / {r[split]['keep']:.1f} ({r[split]['gain']:+.1f})" if split in r else "–"
            for split in ("dev", "test")
        ]
        lines.append(
            f"| {recipe_info(r['recipe'])[2]} | {r['target']} | {r['steps']} | {r.get('test', {}).get('seeds', '–')} | "
            f"{r['mlm_loss_without']:.2f} → "
            f"{r['mlm_loss']:.2f} | {r['drift']:.3f} | " + " | ".join(cells) + " |"
        )
    means = []
    for name in order:
        rows = [r for r in summary if r["recipe"] == name and "dev" in r and "test" in r]
        if rows:
            dev = sum(r["dev"]["gain"] for r in rows) / len(rows)
            test = sum(r["test"]["gain"] for r in rows) / len(rows)
            means.append(f"{recipe_info(name)[2]}: dev {dev:+.1f}, test {test:+.1f} ({len(rows)} targets)")
    lines += ["", "Mean gain of swapping over keeping the English adapter, per recipe: " + "; ".join(means) + "."]
    return "\n".join(lines) + "\n"


# adapter_drift.json's kinds of target adapter: (the system that swaps it in, the system it is measured against:
# the stack its task adapter was trained on)
DRIFT_KINDS = {
    "madx": ("madx", "madx-src"),
    "anchored to en": ("madx-anchor", "madx-src"),
    "anchored to backbone": ("madx-lad-anchor", "madx-lad"),
}


def drift_table(report: dict, summary: list[dict]) -> str:
    """Per target language and kind of adapter: held-out MLM loss, drift from the backbone alone, and what swapping it
    in does (F1 against the stack its task adapter was trained on; mean over seeds, from the main source)."""
    f1 = {
        (r["system"], r["target"]): r["mean"] * TASKS[r["task"]].scale
        for r in summary
        if r["metric"] == "f1" and r["source"] == "en"
    }
    kinds = [k for k in DRIFT_KINDS if any(k in v for v in report.values())]
    lines = [
        "**Drift against gain, per kind of target adapter** (held-out MLM loss with the adapter, through the "
        "shipped head; drift = 1 − mean cosine of last-layer states with and without it; gain = F1 of swapping it in "
        "minus the stack its task adapter was trained on: keeping English for MAD-X and anchored-to-en, no adapter "
        "for anchored-to-backbone; held-out text: NER dev sentences, XQuAD questions; `python -m scripts.adapter_drift "
        "--run runs/transfer --out runs/drift/drift.json`, in `assets/adapter_drift.json`)\n",
        "| target | MLM loss, no adapter | " + " | ".join(f"{k}: loss, drift, gain" for k in kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    for lang, row in report.items():
        cells = []
        for kind in kinds:
            if kind not in row:
                cells.append("–")
                continue
            system, ref = DRIFT_KINDS[kind]
            gain = f1.get((system, lang), float("nan")) - f1.get((ref, lang), float("nan"))
            cells.append(f"{row[kind]['heldout_mlm_loss']:.2f}, {row[kind]['drift']:.3f}, {gain:+.1f}")
        lines.append(f"| {lang} | {row['no_adapter_mlm_loss']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default=str(REPO / "assets" / "results.json"))
    p.add_argument("--print", action="store_true")
    args = p.parse_args()
    results = json.loads(Path(args.results).read_text())
    text = table(results)
    stats = Path(args.results).with_name("text_stats.json")
    if stats.is_file():
        text += "\n" + text_table(json.loads(stats.read_text()))
    drift = Path(args.results).with_name("adapter_drift.json")
    if drift.is_file():
        text += "\n" + drift_table(json.loads(drift.read_text()), results["summary"])
    for name in ("recipes.json", "recipes_converged.json"):  # scored with the one-epoch / the shipped task adapters
        recipes = Path(args.results).with_name(name)
        if recipes.is_file():
            report = json.loads(recipes.read_text())
            text += "\n" + recipes_table(report["summary"], task_adapters_line(report.get("task_adapters")), name)
    if args.print:
        print(text)
        return
    readme = REPO / "README.md"
    content = readme.read_text()
    a, b = content.index(START) + len(START), content.index(END)
    readme.write_text(content[:a] + "\n" + text + "\n" + content[b:])


if __name__ == "__main__":
    main()
