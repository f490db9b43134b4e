"""The expected cost of the paper's language-adapter recipe (configs/paper_xlmr_base.json) on one GPU: an ESTIMATE.

hours = steps x batch x length / tokens per second, with the tokens per second that `bench.gpu` measured for
language-adapter training of XLM-R-base-shaped weights at the recipe's batch and length (bench/results/gpu.json).
Nothing is trained here; `--write` puts the figures into the config's "estimate" block.

    python -m bench.paper_cost [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from madx_core.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "paper_xlmr_base.json"
MEASURED = REPO / "bench" / "results" / "gpu.json"
BACKBONE = "xlm-roberta-base (random weights)"


def estimate(config: dict, measured: dict) -> dict:
    """Hours per language size and for all the config's languages, per precision, from the measured tokens/s."""
    spec = config["lang_adapter"]
    runs = [
        r
        for r in measured["runs"]
        if r["backbone"] == BACKBONE and r["batch"] == spec["batch_size"] and r["length"] == spec["max_length"]
    ]
    if not runs:
        raise SystemExit(f"error: no measurement of {BACKBONE} at {spec['batch_size']} x {spec['max_length']}")
    rate = {r["precision"]: r["tokens_per_s"] for r in runs}
    tokens_per_step = spec["batch_size"] * spec["max_length"]

    def hours(steps: int, precision: str) -> float:
        return steps * tokens_per_step / rate[precision] / 3600

    sizes = config["steps_by_size"]
    per_size = {size: {p: round(hours(steps, p), 2) for p in rate} for size, steps in sizes.items()}
    every = [sizes[lang["size"]] for lang in config["languages"].values()]
    return {
        "device": measured["device"],
        "tokens_per_s": rate,
        "hours_per_language": per_size,
        "gpu_hours_all_languages": {p: round(sum(hours(s, p) for s in every), 1) for p in rate},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="update the config's estimate block")
    args = p.parse_args()
    config = json.loads(CONFIG.read_text())
    figures = estimate(config, json.loads(MEASURED.read_text()))
    print(json.dumps(figures, indent=2))
    if args.write:
        config["estimate"] = {"note": config["estimate"]["note"], **figures}
        atomic_write_text(CONFIG, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
