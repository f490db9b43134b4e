"""Long CLI work shows a tqdm bar on stderr (steps, rate, time left, loss) while --json keeps stdout pure JSON."""

import json
import re

from helpers import madx, make_word_tokenizer, save_tiny_backbone

WORDS = "Amina lives in Kano and works at the hospital every day".split()


def test_training_shows_a_progress_bar_and_json_stays_clean(tmp_path):
    backbone = save_tiny_backbone(
        tmp_path / "tiny-mlm", make_word_tokenizer(WORDS)
    )  # with the MLM head train-lang needs
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))) + "\n")
    out = tmp_path / "o"
    args = ["train-lang", "--backbone", str(backbone), "--lang", "xx", "--text", str(text), "--out", str(out)]
    run = madx([*args, "--steps", "12", "--batch-size", "4", "--json"], timeout=300)
    assert json.loads(run.stdout)["steps"] == 12  # nothing but the JSON result on stdout
    bar = run.stderr.replace("\r", "\n").splitlines()
    final = [line for line in bar if line.startswith("training: 100%")]
    assert final, run.stderr[-1000:]
    # tqdm's layout: "training: 100%|████| 12/12 [00:01<00:00, 9.5step/s, loss=4.7]" (elapsed<left, rate, loss)
    assert re.search(r"12/12 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(step/s|s/step), loss=[\d.]+\]", final[-1]), final[-1]
    assert not any(re.match(r"step \d+/\d+ +loss", line) for line in bar)  # the old bare lines are gone
