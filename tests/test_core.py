"""The adapter core on tiny random BERT and XLM-R models: exactness, invertibility, I/O, threads, bad input."""

import json
import pickle
import threading

import pytest
import torch
from helpers import spread
from transformers import BertConfig, XLMRobertaConfig

import madx_core as mx
from madx_core.adapters import GLOWCoupling, NICECoupling

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def tiny_model(kind: str = "bert", seed: int = 0) -> mx.AdapterModel:
    torch.manual_seed(seed)
    config = BertConfig(**TINY) if kind == "bert" else XLMRobertaConfig(**TINY, pad_token_id=1)
    return mx.AdapterModel.from_config(config)


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 1
    return ids, mask


def madx_model(kind: str = "bert") -> mx.AdapterModel:
    model = tiny_model(kind)
    model.add_adapter("sw", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    model.add_adapter("ner", mx.AdapterConfig(reduction_factor=4, non_linearity="gelu", leave_out=[2]))
    model.add_tagging_head("ner", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    for name in ("sw", "ner"):
        spread(model.adapters[name], seed=len(name))
    spread(model.heads["ner"], seed=7)
    return model


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_no_adapters_equals_backbone(kind):
    model = tiny_model(kind)
    ids, mask = inputs()
    ours = model(ids, mask).hidden_states
    theirs = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_zeroed_adapters_equal_bare_backbone(kind):
    model = madx_model(kind)
    ids, mask = inputs()
    bare = model(ids, mask).hidden_states
    with_adapters = model(ids, mask, adapters=mx.Stack("sw", "ner")).hidden_states
    assert (with_adapters - bare).abs().max() > 1e-2  # random adapters change the output...
    with torch.no_grad():
        for adapter in model.adapters.values():
            for layer in adapter.layers.values():
                layer.adapter_up.weight.zero_()
                layer.adapter_up.bias.zero_()
            if adapter.invertible is not None:
                for mlp in (adapter.invertible.F, adapter.invertible.G):
                    mlp[2].weight.zero_()
                    mlp[2].bias.zero_()
    zeroed = model(ids, mask, adapters=mx.Stack("sw", "ner")).hidden_states
    torch.testing.assert_close(zeroed, bare, rtol=0, atol=1e-6)  # ...and zeroed ones are the identity


def test_stack_formula_by_hand():
    """o1 = LA(LN(h0+x)) + h0; o2 = TA(LN(o1+x)) + o1; out = LN(o2+x), in one layer, computed by hand."""
    model = madx_model("bert")
    layer = model.backbone.encoder.layer[0]
    x = torch.randn(2, 5, 32)
    h0 = layer.output.dense(layer.intermediate(x))
    ln = layer.output.LayerNorm
    la, ta = model.adapters["sw"].at_layer(0), model.adapters["ner"].at_layer(0)
    o1 = la.adapter_up(torch.relu(la.adapter_down[0](ln(h0 + x)))) + h0
    o2 = ta.adapter_up(torch.nn.functional.gelu(ta.adapter_down[0](ln(o1 + x)))) + o1
    expected = ln(o2 + x)
    got = mx.adapters.adapter_block(h0, x, ln, [la, ta])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("coupling", [NICECoupling, GLOWCoupling])
def test_invertible_adapters_invert(coupling):
    torch.manual_seed(0)
    block = coupling(33, reduction_factor=2)  # odd size: the halves differ
    spread(block, seed=3, std=0.5)
    x = torch.randn(3, 11, 33, dtype=torch.float64)
    block = block.double()
    y = block(x)
    assert (y - x).abs().max() > 0.1
    torch.testing.assert_close(block(y, rev=True), x, rtol=0, atol=1e-10)


def test_mlm_inverse_and_masked_only_logits():
    model = tiny_model("xlmr")
    config = mx.HeadConfig("masked_lm", layers=2, activation_function="gelu", vocab_size=120)
    model.add_head("lm", config)
    model.add_adapter("qu", mx.AdapterConfig(reduction_factor=2, inv_adapter="glow"))
    spread(model.adapters["qu"], seed=3)
    ids, mask = inputs()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 4] = 7, 9
    full = model(ids, mask, adapters="qu", head="lm").logits
    masked = model(ids, mask, adapters="qu", head="lm", labels=labels)
    assert masked.logits.shape == (2, 120)
    torch.testing.assert_close(masked.logits, full[labels != -100])
    # The inverse runs before the decoder: the head's input equals the un-coupled hidden state.
    head = model.heads["lm"]
    hidden = model(ids, mask, adapters="qu").hidden_states
    transformed = head[2](head[1](head[0](hidden)))
    expected = head.decoder(model.adapters["qu"].invertible(transformed, rev=True))
    torch.testing.assert_close(full, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vocab_cross_entropy_matches_torch_in_loss_and_gradient(dtype):
    """The masked-LM loss, computed a block of rows at a time, equals F.cross_entropy in fp32 on the same logits, in
    value and gradient, for fp32 and bf16 logits and a row count that is no multiple of the block; fp32 logits are
    left as they were."""
    from madx_core.heads import vocab_cross_entropy

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(19, 1000, generator=g) * 4).to(dtype)
    targets = torch.randint(0, 1000, (19,), generator=g)
    before = logits.clone()
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = vocab_cross_entropy(ours, targets)
    expected = torch.nn.functional.cross_entropy(theirs.float(), targets)
    (loss * 3).backward()
    (expected * 3).backward()
    torch.testing.assert_close(loss, expected)
    assert ours.grad.dtype == dtype
    torch.testing.assert_close(ours.grad.float(), theirs.grad.float())
    assert torch.equal(logits, before)
    with torch.no_grad():
        torch.testing.assert_close(vocab_cross_entropy(logits, targets), expected.detach())


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_save_load_roundtrip(tmp_path, kind):
    model = madx_model(kind)
    ids, mask = inputs()
    expected = model(ids, mask, adapters=mx.Stack("sw", "ner")).logits
    model.save_adapter(tmp_path / "sw", "sw")
    model.save_adapter(tmp_path / "ner", "ner")
    assert sorted(p.name for p in (tmp_path / "ner").iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
        "head_config.json",
        "model_head.safetensors",
    ]
    fresh = tiny_model(kind)
    assert fresh.load_adapter(tmp_path / "sw") == "sw"
    assert fresh.load_adapter(tmp_path / "ner") == "ner"
    got = fresh(ids, mask, adapters=mx.Stack("sw", "ner")).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert fresh.adapters["ner"].config.leave_out == [2]
    assert fresh.heads["ner"].config.label2id == model.heads["ner"].config.label2id


def test_legacy_bin_and_key_names(tmp_path):
    model = madx_model("bert")
    model.save_adapter(tmp_path / "sw", "sw")
    meta = json.loads((tmp_path / "sw" / "adapter_config.json").read_text())
    # An old-style file: legacy module names, a nested invertible config, weights in a .bin of plain tensors.
    meta["config"].pop("inv_adapter")
    meta["config"]["invertible_adapter"] = {
        "block_type": "nice",
        "reduction_factor": 2,
        "non_linearity": "relu",
    }
    from safetensors.torch import load_file

    state = load_file(tmp_path / "sw" / "adapter.safetensors")
    legacy = {
        k.replace("output.adapters", "output.layer_text_lang_adapters").replace(
            "invertible_adapters", "invertible_lang_adapters"
        ): v
        for k, v in state.items()
    }
    old = tmp_path / "old"
    old.mkdir()
    (old / "adapter_config.json").write_text(json.dumps(meta))
    torch.save(legacy, old / "pytorch_adapter.bin")
    fresh = tiny_model("bert")
    fresh.load_adapter(old, load_as="sw_old")
    ids, mask = inputs()
    torch.testing.assert_close(
        fresh(ids, mask, adapters="sw_old").hidden_states, model(ids, mask, adapters="sw").hidden_states
    )


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def _bad_dir(tmp_path, good, name: str, config: dict | None = None, files: dict | None = None):
    """A folder `name` with `good`'s adapter_config.json (changed by `config`) and weights, or other `files`."""
    folder = tmp_path / name
    folder.mkdir()
    meta = json.loads((good / "adapter_config.json").read_text())
    meta["config"].update(config or {})
    (folder / "adapter_config.json").write_text(json.dumps(meta))
    for file_name, data in (files or {"adapter.safetensors": (good / "adapter.safetensors").read_bytes()}).items():
        (folder / file_name).write_bytes(data)
    return folder


def _other_hidden_size(tmp_path, good):
    torch.manual_seed(0)
    other = mx.AdapterModel.from_config(BertConfig(**{**TINY, "hidden_size": 48}))
    other.add_adapter("x", mx.AdapterConfig())
    other.save_adapter(tmp_path / "h48", "x")
    return tmp_path / "h48"


def _empty(tmp_path, good):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _bad_json(tmp_path, good):
    (tmp_path / "bad_json").mkdir()
    (tmp_path / "bad_json" / "adapter_config.json").write_text("{not json")
    return tmp_path / "bad_json"


# (case, the folder to load, the error and what its message says)
BAD_ADAPTERS = [
    ("missing", lambda tmp, good: tmp / "missing", FileNotFoundError, "not found"),
    ("empty folder", _empty, ValueError, "adapter_config.json is missing"),
    ("config not JSON", _bad_json, ValueError, "not valid JSON"),
    ("other hidden size", _other_hidden_size, ValueError, "hidden size 48"),
    (
        "pickle that runs code",
        lambda tmp, good: _bad_dir(tmp, good, "evil", files={"pytorch_adapter.bin": pickle.dumps({"x": Evil()})}),
        ValueError,
        "not a file of plain tensors",
    ),
    ("Houlsby adapter", lambda tmp, good: _bad_dir(tmp, good, "h", {"mh_adapter": True}), ValueError, "mh_adapter"),
]


@pytest.mark.parametrize("case, make, error, message", BAD_ADAPTERS, ids=[c[0] for c in BAD_ADAPTERS])
def test_bad_adapter_dir_is_refused_with_the_reason_and_changes_nothing(tmp_path, capsys, case, make, error, message):
    model = madx_model("bert")
    model.save_adapter(tmp_path / "good", "sw")
    before = (dict(model.adapters), dict(model.heads))
    with pytest.raises(error, match=message):
        model.load_adapter(make(tmp_path, tmp_path / "good"), load_as="new")
    assert (dict(model.adapters), dict(model.heads)) == before
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "stack, head, message",
    [(mx.Stack("sw", "xx"), None, "unknown adapter 'xx'"), ("sw", "qa", "unknown head 'qa'")],
    ids=["unknown adapter", "unknown head"],
)
def test_forward_with_unknown_names_says_which(stack, head, message):
    with pytest.raises(ValueError, match=message):
        madx_model("bert")(*inputs(), adapters=stack, head=head)


def test_save_is_atomic_and_overwrites(tmp_path):
    model = madx_model("bert")
    model.save_adapter(tmp_path / "sw", "sw")
    model.save_adapter(tmp_path / "sw", "sw")  # overwriting an existing directory works
    assert [p.name for p in tmp_path.iterdir()] == ["sw"]  # no temp folders left behind
    with pytest.raises(ValueError, match="unknown adapter"):
        model.save_adapter(tmp_path / "nope", "nope")
    assert not (tmp_path / "nope").exists()


def test_threads_with_different_stacks_match_sequential():
    model = madx_model("xlmr")
    model.add_adapter("de", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    spread(model.adapters["de"], seed=11)
    ids, mask = inputs()
    stacks = [mx.Stack("sw", "ner"), mx.Stack("de", "ner"), mx.Stack("ner"), None] * 4
    with torch.no_grad():
        expected = [model(ids, mask, adapters=s).hidden_states for s in stacks]
    results: dict[int, torch.Tensor] = {}

    def run(i: int) -> None:
        with torch.no_grad():
            for _ in range(5):
                results[i] = model(ids, mask, adapters=stacks[i]).hidden_states

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stacks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        assert torch.equal(results[i], want), f"thread {i} with {stacks[i]} differs"


def test_set_trainable_freezes_all_but_named():
    model = madx_model("bert")
    counts = model.set_trainable(adapters=["ner"], heads=["ner"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    named = {n for n, _ in model.named_parameters() if n.startswith(("adapters.ner.", "heads.ner."))}
    assert trainable == named and len(named) > 4
    budget = model.parameter_budget()
    assert counts["trainable"] == budget["adapters"]["ner"] + budget["heads"]["ner"]
    assert counts["total"] == budget["total"]
    with pytest.raises(ValueError, match="unknown adapter or head"):
        model.set_trainable(adapters=["zz"])


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_attention_under_cpu_autocast_training_is_transformers_eager_path_and_inference_the_fused_kernel(kind):
    """A training step under CPU autocast runs transformers' eager attention (faster there than torch's fused
    kernel, bench.precision_loss); padding is masked the same way, and the loss and the adapter's gradients are the
    eager path's. Without gradients, or without autocast, the fused kernel runs as before."""
    model = madx_model(kind)
    model.set_trainable(adapters=["ner"])
    ids, mask = inputs()
    labels = torch.where(mask.bool(), ids % 5, -100)

    def step(implementation: str, grad: bool = True) -> tuple:
        model.config._attn_implementation = implementation
        model.zero_grad()
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids, mask, adapters=mx.Stack("sw", "ner"), head="ner", labels=labels)
        if not grad:
            return out.logits, None
        out.loss.backward()
        return out.loss.detach(), [p.grad.clone() for p in model.adapters["ner"].parameters()]

    ours, eager, fused = step(mx.model.ATTENTION), step("eager"), step("sdpa")
    torch.testing.assert_close(ours[0], eager[0], rtol=0, atol=0)
    for a, b in zip(ours[1], eager[1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(ours[0], fused[0], rtol=0.02, atol=0.02)  # bf16: another kernel, the same loss
    torch.testing.assert_close(step(mx.model.ATTENTION, grad=False)[0], step("sdpa", grad=False)[0], rtol=0, atol=0)
    model.config._attn_implementation = mx.model.ATTENTION
    with torch.no_grad():
        assert torch.equal(model(ids, mask, adapters="sw").hidden_states, _fused(model, ids, mask))


def _fused(model: mx.AdapterModel, ids, mask) -> torch.Tensor:
    model.config._attn_implementation = "sdpa"
    try:
        return model(ids, mask, adapters="sw").hidden_states
    finally:
        model.config._attn_implementation = mx.model.ATTENTION


def test_mlm_projection_under_autocast_follows_its_weight_and_trains_it_when_asked():
    """The MLM head's 250k-row projection is cast once under autocast while frozen: a changed weight is cast again,
    and a trainable one (MLM-TRG trains the tied embeddings) still gets its gradient through the projection."""
    torch.manual_seed(0)
    model = mx.AdapterModel.from_config(XLMRobertaConfig(**TINY, pad_token_id=1), mlm_head=True)
    ids, mask = inputs()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 4] = 7, 9
    decoder = model.lm_head.decoder
    with torch.no_grad():
        decoder.bias.zero_()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(ids, mask, head="mlm", labels=labels).logits
        decoder.weight.mul_(2)  # the tied word embeddings change (scaled by 2: exact in bf16 too)
        after = model(ids, mask, head="mlm", labels=labels).logits
        transformed = model.encode(ids, mask)[labels != -100]
        for module in list(model.lm_head)[:-1]:  # dense, activation, layer norm: all but the projection
            transformed = module(transformed)
        expected = torch.nn.functional.linear(transformed, decoder.weight.to(torch.bfloat16), decoder.bias)
        stale = torch.nn.functional.linear(transformed, (decoder.weight / 2).to(torch.bfloat16), decoder.bias)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    assert not torch.allclose(after, stale) and not torch.allclose(after, before)
    model.set_trainable(backbone=True)
    unused = sorted(set(range(120)) - set(ids.flatten().tolist()))[0]  # reached only through the projection
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, mask, head="mlm", labels=labels).loss.backward()
    assert model.word_embeddings.weight.grad[unused].abs().sum() > 0
