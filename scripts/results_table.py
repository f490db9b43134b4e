"""Write the README's results table from assets/results.json (between the RESULTS markers).

python -m scripts.results_table            # rewrites README.md in place
python -m scripts.results_table --print    # prints the table only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"
SYSTEMS = [
    ("baseline", "full fine-tuning"),
    ("mlm-trg", "MLM-TRG"),
    ("madx-lad", "MAD-X –LAD"),
    ("madx-inv", "MAD-X –INV"),
    ("madx", "MAD-X"),
]


def table(results: dict) -> str:
    summary = results["summary"]
    lines = []
    for task, metric, label in [("ner", "f1", "NER entity F1"), ("qa", "f1", "QA F1"), ("qa", "em", "QA EM")]:
        rows = [r for r in summary if r["task"] == task and r["metric"] == metric]
        if not rows:
            continue
        targets = sorted({r["target"] for r in rows}, key=lambda t: (t != rows[0]["source"], t))
        scale = 100 if task == "ner" else 1
        lines.append(f"**{label}** (source {rows[0]['source']}; mean ± std over seeds, n = seeds)\n")
        lines.append("| system | " + " | ".join(targets) + " |")
        lines.append("|---|" + "---|" * len(targets))
        for key, name in SYSTEMS:
            cells = []
            for t in targets:
                hit = [r for r in rows if r["system"] == key and r["target"] == t]
                if hit:
                    r = hit[0]
                    cells.append(f"{r['mean'] * scale:.1f} ± {r['std'] * scale:.1f} (n={r['n']})")
                else:
                    cells.append("–")
            if any(c != "–" for c in cells):
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default=str(REPO / "assets" / "results.json"))
    p.add_argument("--print", action="store_true")
    args = p.parse_args()
    text = table(json.loads(Path(args.results).read_text()))
    stats = Path(args.results).with_name("text_stats.json")
    if stats.is_file():
        text += "\n" + text_table(json.loads(stats.read_text()))
    if args.print:
        print(text)
        return
    readme = REPO / "README.md"
    content = readme.read_text()
    a, b = content.index(START) + len(START), content.index(END)
    readme.write_text(content[:a] + "\n" + text + "\n" + content[b:])


if __name__ == "__main__":
    main()
