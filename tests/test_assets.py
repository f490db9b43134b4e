"""Shipped artifacts: fp16 AdapterHub adapters that reproduce the shipped results and load in the reference library."""

import json
from pathlib import Path

import pytest
import torch
from helpers import run_reference
from safetensors import safe_open
from safetensors.torch import save_file

import madx_core as mx
from madx_core import data as D
from madx_core.backbones import load_tokenizer, resolve_backbone
from madx_core.evaluation import evaluate_ner

ASSETS = Path(__file__).resolve().parents[1] / "assets"
pytestmark = pytest.mark.integration


def test_assets_are_small_fp16_adapterhub_dirs():
    size = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert size < 64 * 2**20  # the Space's budget: 17 language adapters of 3.6 MB each are most of it
    dirs = [d for d in (ASSETS / "adapters").glob("*/*") if d.is_dir()]
    assert {"en", "sw", "ha", "pcm", "de", "ar", "zh", "es", "qu", "mi"} <= {d.name for d in dirs}
    for d in dirs:
        assert (d / "adapter_config.json").is_file()
        with safe_open(str(d / "adapter.safetensors"), framework="pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}


def test_shipped_results_come_from_the_committed_config():
    """The shipped rows are the finished part of one run of configs/transfer.json: swap, keep and -LAD on every
    zero-shot target, the device of every row, and a rerun of the config would keep every shipped row."""
    from madx_core.transfer import _finished_rows

    results = json.loads((ASSETS / "results.json").read_text())
    rows = results["rows"]
    config = json.loads((ASSETS.parent / "configs" / "transfer.json").read_text())
    assert results["meta"]["config"] == config
    for task, targets in (("ner", ("sw", "ha", "pcm")), ("qa", ("de", "ar", "zh", "es"))):
        for system in ("madx", "madx-src", "madx-lad"):
            got = {r["target"] for r in rows if (r["task"], r["system"], r["source"]) == (task, system, "en")}
            assert set(targets) <= got, (task, system)
    assert all(r["device"] in ("cpu", "cuda") for r in rows)
    assert len(_finished_rows(ASSETS, config)) == len(rows)


def test_shipped_results_reproduce_exactly(data_dir):
    """`evaluate` on the shipped adapters gives the shipped score (deterministic inference, same fp16 weights)."""
    rows = json.loads((ASSETS / "results.json").read_text())["rows"]
    (want,) = [
        r
        for r in rows
        if (r["system"], r["source"], r["target"], r["task"], r["metric"], r["seed"])
        == ("madx", "en", "sw", "ner", "f1", 1)
    ]
    model = mx.AdapterModel.from_pretrained("multilingual-e5-small")
    sw = model.load_adapter(ASSETS / "adapters" / "lang" / "sw")
    ner = model.load_adapter(ASSETS / "adapters" / "task" / "ner")
    sents = D.restrict_labels(D.read_conll(data_dir / "ner" / "swa" / "test.txt"), {"PER", "LOC", "ORG"})
    scores, _ = evaluate_ner(model, load_tokenizer("multilingual-e5-small"), sents, mx.Stack(sw, ner))
    assert round(scores["f1"], 4) == want["value"] and scores["examples"] == want["examples"]


def test_shipped_adapters_load_in_reference_library(tmp_path):
    base = resolve_backbone("multilingual-e5-small").path
    model = mx.AdapterModel.from_pretrained(str(base))
    sw = model.load_adapter(ASSETS / "adapters" / "lang" / "sw")
    ner = model.load_adapter(ASSETS / "adapters" / "task" / "ner")
    tok = load_tokenizer("multilingual-e5-small")
    enc = tok(["Rais Samia Suluhu Hassan alizuru Mombasa jana."], return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    with torch.no_grad():
        ours = model(inputs["input_ids"], inputs["attention_mask"], adapters=mx.Stack(sw, ner)).logits
    adapters = [ASSETS / "adapters" / "lang" / "sw", ASSETS / "adapters" / "task" / "ner"]
    theirs = run_reference(
        base, adapters, f"{sw},{ner}", ner, tmp_path / "inputs.safetensors", tmp_path / "theirs.safetensors"
    )
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)
