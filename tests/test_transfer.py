"""The transfer matrix end to end on a tiny local backbone and real data: every system, two seeds, results files."""

import csv
import json

import torch
from conftest import make_word_tokenizer
from transformers import BertConfig, BertForMaskedLM

from madx_core import data as D
from madx_core.transfer import run_transfer


def tiny_backbone(path, tok):
    """A 2-layer random BERT with an MLM head and `tok`, saved as a local checkpoint directory."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=1,
    )
    BertForMaskedLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_transfer_matrix_writes_results(tmp_path, data_dir):
    en = D.read_conll(data_dir / "ner" / "en" / "train.txt")[:40]
    sw = D.read_conll(data_dir / "ner" / "swa" / "test.txt")[:15]
    texts = D.read_text(data_dir / "text" / "udhr" / "sw.txt")[:20]
    for name, sents in (("en.txt", en), ("sw.txt", sw)):
        D.write_conll(tmp_path / name, [s.tokens for s in sents], [s.labels for s in sents])
    (tmp_path / "sw_text.txt").write_text("\n".join(texts), encoding="utf-8")
    tok = make_word_tokenizer([w for s in en + sw for w in s.tokens] + " ".join(texts).split())
    backbone = tiny_backbone(tmp_path / "tiny", tok)

    cfg = {
        "backbone": str(backbone),
        "systems": ["baseline", "mlm-trg", "madx-lad", "madx-inv", "madx"],
        "seeds": [1, 2],
        "texts": {"en": [str(tmp_path / "en.txt")], "sw": [str(tmp_path / "sw_text.txt")]},
        "lang_adapter": {"steps": 2, "batch_size": 4},
        "tasks": {
            "ner": {
                "source": "en",
                "train": str(tmp_path / "en.txt"),
                "targets": {"sw": str(tmp_path / "sw.txt")},
                "steps": 3,
                "batch_size": 8,
            }
        },
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    summary = run_transfer(tmp_path / "cfg.json", out)
    results = json.loads((out / "results.json").read_text())
    # 5 systems + madx-src (madx's task adapter with the source adapter kept) x 2 seeds x 1 target x f1
    assert summary["rows"] == len(results["rows"]) == 6 * 2
    assert {r["system"] for r in results["rows"]} == {*cfg["systems"], "madx-src"}
    by = {(r["system"], r["seed"]): r for r in results["rows"]}
    assert by[("madx-src", 1)]["train_seconds"] == by[("madx", 1)]["train_seconds"]  # same adapter, no training
    assert all(0 <= r["value"] <= 1 and r["target"] == "sw" and r["examples"] == 15 for r in results["rows"])
    means = {(s["system"], s["metric"]): s for s in results["summary"]}
    assert means[("madx", "f1")]["n"] == 2
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["system", "source", "target", "task", "metric", "value", "seed"] and len(rows) == 12
    # the language adapters and task adapters are AdapterHub directories, stored in fp16
    lang = json.loads((out / "adapters" / "lang" / "sw" / "adapter_config.json").read_text())
    assert lang["config"]["inv_adapter"] == "nice"
    assert (out / "adapters" / "lang_noinv" / "en" / "adapter.safetensors").is_file()
    assert (out / "adapters" / "task" / "ner-madx-s1" / "head_config.json").is_file()

    # A run that was cut off resumes: finished (task, system, seed) groups are kept, the missing one is redone.
    kept = [r for r in results["rows"] if not (r["system"] in ("madx", "madx-src") and r["seed"] == 2)]
    results["rows"] = kept
    (out / "results.json").write_text(json.dumps(results))
    summary = run_transfer(tmp_path / "cfg.json", out)
    again = json.loads((out / "results.json").read_text())["rows"]
    assert summary["rows"] == 12 and again[:10] == kept
    assert {(r["system"], r["seed"]) for r in again[10:]} == {("madx", 2), ("madx-src", 2)}


def test_transfer_sources_matrix_and_growing_a_run(tmp_path, data_dir):
    """Extra source languages fill a source x target matrix; a costly system can run fewer seeds; asking for more
    seeds later adds only their rows and keeps every finished one."""
    en = D.read_conll(data_dir / "ner" / "en" / "train.txt")[:30]
    sw = D.read_conll(data_dir / "ner" / "swa" / "train.txt")[:30]
    for name, sents in (("en.txt", en), ("sw.txt", sw)):
        D.write_conll(tmp_path / name, [s.tokens for s in sents], [s.labels for s in sents])
    tok = make_word_tokenizer([w for s in en + sw for w in s.tokens])
    tiny_backbone(tmp_path / "tiny", tok)
    cfg = {
        "backbone": str(tmp_path / "tiny"),
        "systems": ["madx", "baseline"],
        "seeds": [1, 2],
        "texts": {"en": [str(tmp_path / "en.txt")], "sw": [str(tmp_path / "sw.txt")]},
        "lang_adapter": {"steps": 2, "batch_size": 4},
        "tasks": {
            "ner": {
                "source": "en",
                "train": str(tmp_path / "en.txt"),
                "targets": {"en": str(tmp_path / "en.txt"), "sw": str(tmp_path / "sw.txt")},
                "steps": 2,
                "batch_size": 8,
                "system_seeds": {"baseline": [1]},
                "sources": {"sw": str(tmp_path / "sw.txt")},
                "source_systems": ["madx"],
                "source_seeds": [1],
            }
        },
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    run_transfer(tmp_path / "cfg.json", out)
    rows = json.loads((out / "results.json").read_text())["rows"]
    cells = {(r["system"], r["source"], r["target"], r["seed"]) for r in rows}
    # sw as a source: its own task adapter on the sw adapter, swapped to en (madx) or kept (madx-src)
    assert {("madx", "sw", "en", 1), ("madx-src", "sw", "en", 1), ("madx", "sw", "sw", 1)} <= cells
    assert {r["seed"] for r in rows if r["system"] == "baseline"} == {1}  # system_seeds
    assert {r["seed"] for r in rows if r["system"] == "madx" and r["source"] == "en"} == {1, 2}
    assert all(r["device"] == "cpu" for r in rows)

    cfg["seeds"] = [1, 2, 3]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run_transfer(tmp_path / "cfg.json", out)
    again = json.loads((out / "results.json").read_text())["rows"]
    assert again[: len(rows)] == rows
    assert {(r["system"], r["seed"]) for r in again[len(rows) :]} == {("madx", 3), ("madx-src", 3)}
