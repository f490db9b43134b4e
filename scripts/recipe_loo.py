"""Leave one language out: is the target-adapter recipe chosen on some languages as good on one it was not chosen on?

For each NER target language in a recipe report (scripts/adapter_recipes.py's JSON, e.g. assets/recipes_converged.json),
the recipe with the best mean dev gain (swap − keep English) over the OTHER targets is chosen, and its test gain on the
left-out language is reported. It is a proxy for issue 11's goal 2 (languages the project has never seen), which needs
NER data this project does not have: the left-out language's test set was seen when the family of recipes was proposed.

    python -m scripts.recipe_loo assets/recipes_converged.json [--recipes anchor-10,anchor-30,anchor-100,anchor-300]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def leave_one_out(summary: list[dict], recipes: list[str] | None = None) -> dict:
    """Per left-out target: the recipe chosen on the others' dev gains, and its test gain there; and their mean."""
    rows = [r for r in summary if "dev" in r and "test" in r and (recipes is None or r["recipe"] in recipes)]
    gain = {(r["recipe"], r["target"], split): r[split]["gain"] for r in rows for split in ("dev", "test")}
    targets = sorted({r["target"] for r in rows})
    names = sorted({r["recipe"] for r in rows})
    chosen = {}
    for held_out in targets:
        others = [t for t in targets if t != held_out]
        scored = [n for n in names if all((n, t, "dev") in gain for t in [*others, held_out])]
        if not others or not scored:
            raise ValueError(f"no recipe is scored on {held_out} and on other targets")
        best = max(scored, key=lambda n: statistics.fmean(gain[n, t, "dev"] for t in others))
        chosen[held_out] = {"recipe": best, "test_gain": gain[best, held_out, "test"]}
    mean = round(statistics.fmean(c["test_gain"] for c in chosen.values()), 2)
    return {"recipes": names, "chosen": chosen, "mean_test_gain": mean}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", help="a recipe report (JSON with a 'summary')")
    p.add_argument("--recipes", default=None, help="comma-separated recipes to choose among (default: all scored)")
    args = p.parse_args()
    summary = json.loads(Path(args.report).read_text())["summary"]
    print(json.dumps(leave_one_out(summary, args.recipes.split(",") if args.recipes else None), indent=2))


if __name__ == "__main__":
    main()
