"""The one atomic writer, `adapterhub.inspect` and `AdapterModel.install`, on a tiny random model (no shared data)."""

import json

import pytest
import torch
from transformers import BertConfig

import madx_core as mx
from madx_core import adapterhub
from madx_core.adapters import Adapter
from madx_core.atomic import atomic_dir, atomic_open, atomic_write_text

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def tiny_model() -> mx.AdapterModel:
    torch.manual_seed(0)
    return mx.AdapterModel.from_config(BertConfig(**TINY))


# ----------------------------------------------------------------------------------------------------------
# Atomic writing


def test_atomic_file_keeps_the_old_one_when_writing_fails(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_open(path, "w") as f:
        f.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]  # no temporary left behind


def test_atomic_dir_replaces_or_keeps(tmp_path):
    out = tmp_path / "d"
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("1")
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("2")
    assert (out / "x").read_text() == "2"
    with atomic_dir(out, replace=False) as tmp:  # someone else finished first: theirs stays
        (tmp / "x").write_text("3")
    assert (out / "x").read_text() == "2"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "x").write_text("4")
        raise RuntimeError("killed")
    assert (out / "x").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


# ----------------------------------------------------------------------------------------------------------
# inspect


def saved(tmp_path, head: str | None) -> tuple[mx.AdapterModel, object]:
    model = tiny_model()
    model.add_adapter("ner", mx.AdapterConfig(reduction_factor=16))
    if head == "tagging":
        model.add_tagging_head("ner", ["O", "B-PER", "I-PER"])
    elif head == "qa":
        model.add_qa_head("ner")
    model.save_adapter(tmp_path / "ner", "ner")
    return model, tmp_path / "ner"


@pytest.mark.parametrize(
    "head, kind, head_type, labels",
    [
        (None, "language", None, []),
        ("tagging", "task", "tagging", ["O", "B-PER", "I-PER"]),
        ("qa", "task", "question_answering", []),
    ],
)
def test_inspect_reads_kind_names_labels_and_files(tmp_path, head, kind, head_type, labels):
    _, directory = saved(tmp_path, head)
    info = adapterhub.inspect(directory)
    assert (info.kind, info.head_type, info.labels, info.name) == (kind, head_type, labels, "ner")
    assert info.head_name == ("ner" if head else None)
    expected = ["adapter_config.json", "adapter.safetensors"]
    if head:
        expected += ["head_config.json", "model_head.safetensors"]
    assert info.files == expected


def test_inspect_refuses_what_is_not_an_adapter(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="adapter_config.json is missing"):
        adapterhub.inspect(tmp_path / "empty")
    _, directory = saved(tmp_path, "tagging")
    (directory / "adapter.safetensors").unlink()
    with pytest.raises(ValueError, match="no adapter.safetensors"):
        adapterhub.inspect(directory)


def test_a_renamed_head_is_reported_and_refused_by_strict_loading(tmp_path):
    model, directory = saved(tmp_path, "tagging")
    head_file = directory / "head_config.json"
    head_file.write_text(json.dumps({**json.loads(head_file.read_text()), "name": "qa"}))
    info = adapterhub.inspect(directory)
    assert info.head_name == "qa" and info.name == "ner"
    with pytest.raises(ValueError, match="names must match"):
        info.check_head_name()
    target = tiny_model()
    with pytest.raises(ValueError, match="names must match"):
        adapterhub.load_adapter(target, directory, load_as="up", head_as="up", exist_ok=False)
    assert "up" not in target.adapters and "up" not in target.heads  # nothing changed


# ----------------------------------------------------------------------------------------------------------
# install


def test_install_freezes_and_refuses_a_clash_without_changing_anything():
    model = tiny_model()
    adapter = model.add_adapter("a")
    assert not any(p.requires_grad for p in adapter.parameters()) and not adapter.training
    other = Adapter("b", mx.AdapterConfig(), model.config.hidden_size, model.num_layers).train()
    head = model.add_tagging_head("h", ["O", "B"])
    with pytest.raises(ValueError, match="a head named 'h' is already loaded"):
        model.install(("b", other), ("h", head))
    assert "b" not in model.adapters  # both or neither
    model.install(("b", other))
    assert model.adapters["b"] is other and not other.training
    assert not any(p.requires_grad for p in other.parameters())
