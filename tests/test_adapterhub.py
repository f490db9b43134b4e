"""AdapterHub compatibility, both ways, against the reference library `adapters` 1.3.0.

Fixtures made by the library itself (tests/fixtures/make_adapterhub_fixtures.py) load here and give its outputs;
adapters that madx_core saves load back into the library (run in its own virtualenv, MADX_REF_PYTHON) and give ours.
"""

import json
from pathlib import Path

import pytest
import torch
from helpers import run_reference
from safetensors.torch import load_file

import madx_core as mx

FIXTURES = Path(__file__).parent / "fixtures" / "adapterhub"
KINDS = ["bert", "xlmr"]


def load_case(kind: str):
    root = FIXTURES / kind
    model = mx.AdapterModel.from_pretrained(str(root / "base"))
    inputs = load_file(root / "inputs.safetensors")
    return model, root, inputs["input_ids"], inputs["attention_mask"]


def expected(root: Path, case: str) -> torch.Tensor:
    return load_file(root / case / "expected.safetensors")["output"]


@pytest.mark.parametrize("kind", KINDS)
def test_bare_backbone_matches_transformers4(kind):
    model, root, ids, mask = load_case(kind)
    want = load_file(root / "bare.safetensors")["output"]
    torch.testing.assert_close(model(ids, mask).hidden_states, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_single_adapter_from_bin(kind):
    model, root, ids, mask = load_case(kind)
    assert model.load_adapter(root / "single" / "a") == "a"
    got = model(ids, mask, adapters="a").hidden_states
    want = expected(root, "single")
    assert (want - load_file(root / "bare.safetensors")["output"]).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_stack_language_nice_and_task_with_tagging_head(kind):
    model, root, ids, mask = load_case(kind)
    model.load_adapter(root / "stack" / "sw")
    model.load_adapter(root / "stack" / "ner")
    assert model.adapters["sw"].config.inv_adapter == "nice"
    assert model.heads["ner"].config.id2label[1] == "B-PER"
    got = model(ids, mask, adapters=mx.Stack("sw", "ner")).logits  # head defaults to the last adapter's
    torch.testing.assert_close(got, expected(root, "stack"), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_leave_out(kind):
    model, root, ids, mask = load_case(kind)
    model.load_adapter(root / "leave_out" / "lo")
    assert model.adapters["lo"].at_layer(2) is None
    torch.testing.assert_close(
        model(ids, mask, adapters="lo").hidden_states, expected(root, "leave_out"), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("kind", KINDS)
def test_masked_lm_head_inverts_the_invertible_adapter(kind):
    model, root, ids, mask = load_case(kind)
    model.load_adapter(root / "mlm_inv" / "qu")
    got = model(ids, mask, adapters="qu", head="qu").logits
    torch.testing.assert_close(got, expected(root, "mlm_inv"), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_our_adapters_load_in_the_reference_library(tmp_path, kind):
    model, root, ids, mask = load_case(kind)
    g = torch.Generator().manual_seed(5)
    model.add_adapter("de", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    model.add_adapter("pos", mx.AdapterConfig(reduction_factor=4, non_linearity="gelu", leave_out=[2]))
    model.add_tagging_head("pos", ["NOUN", "VERB", "ADJ"])
    with torch.no_grad():
        for p in [*model.adapters.parameters(), *model.heads.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    ours = model(ids, mask, adapters=mx.Stack("de", "pos")).logits
    model.save_adapter(tmp_path / "de", "de")
    model.save_adapter(tmp_path / "pos", "pos")
    theirs = run_reference(
        root / "base",
        [tmp_path / "de", tmp_path / "pos"],
        "de,pos",
        "pos",
        root / "inputs.safetensors",
        tmp_path / "theirs.safetensors",
    )
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("head_type", ["tagging", "question_answering", "masked_lm"])
def test_every_head_type_we_save_loads_in_the_reference_library(tmp_path, kind, head_type):
    """A language adapter with its masked-LM head (inverting the NICE adapter), a QA head, a 2-layer tagging head."""
    model, root, ids, mask = load_case(kind)
    inv = "nice" if head_type == "masked_lm" else None
    model.add_adapter("x", mx.AdapterConfig(reduction_factor=2, inv_adapter=inv))
    if head_type == "masked_lm":
        config = mx.HeadConfig("masked_lm", layers=2, activation_function="gelu", vocab_size=model.config.vocab_size)
        model.add_head("x", config)
    elif head_type == "question_answering":
        model.add_qa_head("x", layers=2)
    else:
        model.add_tagging_head("x", ["O", "B-LOC", "I-LOC"], layers=2)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in [*model.adapters["x"].parameters(), *model.heads["x"].parameters()]:
            if p is not model.word_embeddings.weight:  # the masked-LM decoder is the backbone's embedding matrix
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    ours = model(ids, mask, adapters="x").logits
    model.save_adapter(tmp_path / "x", "x")
    saved = json.loads((tmp_path / "x" / "head_config.json").read_text())["config"]
    assert saved["head_type"] == head_type
    theirs = run_reference(
        root / "base", [tmp_path / "x"], "x", "x", root / "inputs.safetensors", tmp_path / "theirs.safetensors"
    )
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)
