"""Long CLI work shows a tqdm bar on stderr (steps, rate, time left, loss) while --json keeps stdout pure JSON."""

import json
import re
import subprocess
import sys
from pathlib import Path

import torch
from conftest import make_word_tokenizer
from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

REPO = Path(__file__).resolve().parents[1]
WORDS = "Amina lives in Kano and works at the hospital every day".split()


def test_training_shows_a_progress_bar_and_json_stays_clean(tmp_path):
    torch.manual_seed(0)
    tokenizer = make_word_tokenizer(WORDS)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    backbone = tmp_path / "tiny-mlm"
    XLMRobertaForMaskedLM(config).save_pretrained(backbone)  # with an MLM head, which train-lang needs
    tokenizer.save_pretrained(backbone)
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))) + "\n")
    out = tmp_path / "o"
    args = ["train-lang", "--backbone", str(backbone), "--lang", "xx", "--text", str(text), "--out", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "madx_core", *args, "--steps", "12", "--batch-size", "4", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["steps"] == 12  # nothing but the JSON result on stdout
    bar = run.stderr.replace("\r", "\n").splitlines()
    final = [line for line in bar if line.startswith("training: 100%")]
    assert final, run.stderr[-1000:]
    # tqdm's layout: "training: 100%|████| 12/12 [00:01<00:00, 9.5step/s, loss=4.7]" (elapsed<left, rate, loss)
    assert re.search(r"12/12 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(step/s|s/step), loss=[\d.]+\]", final[-1]), final[-1]
    assert not any(re.match(r"step \d+/\d+ +loss", line) for line in bar)  # the old bare lines are gone
