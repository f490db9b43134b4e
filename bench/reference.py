"""Ours against the reference library: a MAD-X forward (Stack(lang, task) + tagging head) and one task-adapter
training step, with adapters 1.3.0 on transformers 4.57.6 in its own virtualenv (scripts/make_ref_venv.sh).
Same checkpoint, same inputs, same thread count; each side in its own process, alternating, several rounds.

python -m bench.reference --json      (goal: ours <= 1.0x theirs for both)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import emit, parser

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ref-python", default=str(REPO / ".ref-venv" / "bin" / "python"))
    args = p.parse_args()
    from madx_core.backbones import resolve_backbone

    model_dir = str(resolve_backbone(args.backbone).path)
    runs: dict[str, list[dict]] = {"ours": [], "theirs": []}
    for _ in range(args.rounds):
        for side, python in (("ours", sys.executable), ("theirs", args.ref_python)):
            cmd = [
                python,
                str(REPO / "bench" / "_worker.py"),
                "--side",
                side,
                "--model",
                model_dir,
                "--batch",
                str(args.batch),
                "--length",
                str(args.length),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
            ]
            out = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                cwd=REPO,
                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MADX_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
            )
            if out.returncode != 0:
                raise SystemExit(f"{side} worker failed: {out.stderr[-800:]}")
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def med(side: str, key: str) -> float:
        return statistics.median(r[key][0] for r in runs[side])

    result = {
        "benchmark": "reference",
        "batch": args.batch,
        "seq_len": args.length,
        "threads": args.threads,
        "rounds": args.rounds,
        "ours_forward_s": round(med("ours", "forward_s"), 4),
        "theirs_forward_s": round(med("theirs", "forward_s"), 4),
        "forward_ratio": round(med("ours", "forward_s") / med("theirs", "forward_s"), 3),
        "ours_train_step_s": round(med("ours", "train_step_s"), 4),
        "theirs_train_step_s": round(med("theirs", "train_step_s"), 4),
        "train_step_ratio": round(med("ours", "train_step_s") / med("theirs", "train_step_s"), 3),
        "trainable": {s: runs[s][0]["trainable"] for s in runs},
        # adapters' train_adapter("ner") also leaves the checkpoint's unused MLM head trainable (no gradient, no
        # work); the worker freezes it so both sides train the same 228,775 parameters. Count before that:
        "theirs_trainable_after_train_adapter": runs["theirs"][0].get("trainable_before_equalising"),
        "raw": runs,
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
