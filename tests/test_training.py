"""Training routines on a tiny random model and generated data: seeded, cancellable, atomic, only adapters change."""

from dataclasses import replace

import pytest
import torch
from helpers import make_word_tokenizer, ner_sentences, qa_examples, sw_texts
from helpers import tiny_model as tiny

import madx_core as mx
from madx_core import data as D
from madx_core.mlm import TextStream, mlm_features, pack_features, train_language_adapter
from madx_core.training import Cancelled, TrainConfig, epoch_batches, train_task_adapter


@pytest.fixture(scope="module")
def ner_data():
    sents, texts = ner_sentences(64), sw_texts(40)
    words = [w for s in sents for w in s.tokens] + [w for t in texts for w in t.split()]
    return sents, texts, make_word_tokenizer(words)


def test_language_adapter_training_is_seeded_and_saved(tmp_path, ner_data):
    _, texts, tok = ner_data
    config = TrainConfig(steps=6, batch_size=4, max_length=32, seed=3, learning_rate=1e-3)
    seen = []
    runs = []
    for k in range(2):
        model = tiny(tok)
        frozen = {n: p.clone() for n, p in model.backbone.named_parameters()}
        result = train_language_adapter(
            model, tok, texts, "sw", config=config, out_dir=tmp_path / f"sw{k}", progress=seen.append
        )
        runs.append(result.losses)
        assert all(torch.equal(p, frozen[n]) for n, p in model.backbone.named_parameters())  # backbone frozen
        assert result.trainable_parameters == model.parameter_budget()["adapters"]["sw"]
    assert runs[0] == runs[1]  # same seed, same losses
    assert seen and seen[-1]["step"] == 6 and seen[-1]["total"] == 6
    fresh = tiny(tok)
    assert fresh.load_adapter(tmp_path / "sw0") == "sw"
    assert fresh.adapters["sw"].config.inv_adapter == "nice"


def test_language_adapter_can_start_from_another_adapter(ner_data):
    """start_from copies a loaded adapter's weights (and config) into the new one, which then trains on its own; the
    adapter it started from is left as it was."""
    _, texts, tok = ner_data
    model = tiny(tok)
    config = TrainConfig(steps=3, batch_size=4, max_length=32, seed=1, learning_rate=1e-3)
    shape = mx.AdapterConfig(reduction_factor=4, inv_adapter=None, leave_out=[1])
    train_language_adapter(model, tok, texts, "en", adapter_config=shape, config=config)
    en = {k: v.clone() for k, v in model.adapters["en"].state_dict().items()}
    start = model.add_adapter("copy", init_from="en")
    assert start.config == shape and all(torch.equal(v, en[k]) for k, v in start.state_dict().items())
    train_language_adapter(model, tok, texts, "sw", start_from="en", config=config)
    sw = model.adapters["sw"].state_dict()
    assert model.adapters["sw"].config == shape and set(sw) == set(en)
    assert any(not torch.equal(sw[k], en[k]) for k in en)  # trained on from the copy
    assert all(torch.equal(v, en[k]) for k, v in model.adapters["en"].state_dict().items())
    with pytest.raises(ValueError, match="no adapter named 'xx'"):
        model.add_adapter("zz", init_from="xx")
    with pytest.raises(ValueError, match="configs differ"):
        model.add_adapter("zz", mx.AdapterConfig(reduction_factor=2), init_from="en")


def test_packed_rows_hold_whole_lines_in_order_and_train(tmp_path, ner_data):
    """pack_features concatenates neighbouring lines, each whole, into rows of at most max_length tokens (none lost,
    none cut); a language adapter trains on them; a streamed corpus is refused before the model is touched."""
    _, texts, tok = ner_data
    lines = mlm_features(tok, texts, 32)
    rows = pack_features(lines, 32)
    assert len(rows) < len(lines) and all(len(r["input_ids"]) <= 32 for r in rows)
    assert [t for r in rows for t in r["input_ids"]] == [t for f in lines for t in f["input_ids"]]
    assert [t for r in rows for t in r["special_tokens_mask"]] == [t for f in lines for t in f["special_tokens_mask"]]
    starts = [i for r in rows for i, t in enumerate(r["input_ids"]) if t == tok.cls_token_id]
    assert len(starts) == len(lines) and starts.count(0) == len(rows)  # every row begins with a whole line
    model = tiny(tok)
    config = TrainConfig(steps=3, batch_size=4, max_length=32, seed=1, learning_rate=1e-3)
    result = train_language_adapter(model, tok, texts, "sw", config=config, pack=True)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    (tmp_path / "sw.txt").write_text("\n".join(texts) + "\n")
    with pytest.raises(ValueError, match="not a stream"):
        train_language_adapter(model, tok, TextStream([tmp_path / "sw.txt"]), "xx", config=config, pack=True)
    assert "xx" not in model.adapters


def test_cancel_writes_nothing(tmp_path, ner_data):
    _, texts, tok = ner_data
    model = tiny(tok)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        train_language_adapter(
            model,
            tok,
            texts,
            "sw",
            config=TrainConfig(steps=50, batch_size=4, max_length=32),
            out_dir=tmp_path / "sw",
            should_stop=lambda: next(calls) >= 2,
        )
    assert not (tmp_path / "sw").exists() and list(tmp_path.iterdir()) == []
    assert "sw" not in model.adapters


def test_task_adapter_learns_and_keeps_language_adapter_frozen(tmp_path, ner_data):
    sents, _, tok = ner_data
    model = tiny(tok)
    model.add_adapter("en", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    lang_before = {n: p.clone() for n, p in model.adapters["en"].named_parameters()}
    config = TrainConfig(steps=40, batch_size=8, max_length=64, learning_rate=5e-3, seed=1)
    result = train_task_adapter(
        model, tok, "ner", sents, "ner", lang_adapter="en", config=config, out_dir=tmp_path / "ner"
    )
    assert sum(result.losses[-5:]) < sum(result.losses[:5])  # it learns
    assert all(torch.equal(p, lang_before[n]) for n, p in model.adapters["en"].named_parameters())
    assert model.heads["ner"].config.label2id == {lab: i for i, lab in enumerate(D.label_list(sents))}
    assert sorted(p.name for p in (tmp_path / "ner").iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
        "head_config.json",
        "model_head.safetensors",
    ]
    with pytest.raises(ValueError, match="not loaded"):
        train_task_adapter(model, tok, "ner", sents, "ner2", lang_adapter="xx", config=config)


def test_a_task_adapter_trained_over_a_pool_reads_each_adapter_drawn(ner_data):
    """A pool draws one stack per batch; None in it is the task adapter alone. A pool of [None] alone trains exactly
    the -LAD task adapter, and adding a language adapter to the pool changes what is learned (it is read, not
    skipped) while that adapter stays frozen."""
    sents, _, tok = ner_data
    config = TrainConfig(steps=8, batch_size=8, max_length=64, learning_rate=5e-3, seed=2)

    def train(pool):
        model = tiny(tok)
        model.add_adapter("en", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
        before = {n: p.clone() for n, p in model.adapters["en"].named_parameters()}
        result = train_task_adapter(model, tok, "ner", sents, "ner", lang_adapter=pool, config=config)
        assert all(torch.equal(p, before[n]) for n, p in model.adapters["en"].named_parameters())
        return result.losses, model.adapters["ner"].state_dict()

    lad, pooled_none, pooled = train(None), train([None, None]), train([None, "en"])
    assert lad[0] == pooled_none[0] and all(torch.equal(v, lad[1][k]) for k, v in pooled_none[1].items())
    assert pooled[0] != lad[0]
    with pytest.raises(ValueError, match="'xx' is not loaded"):
        train([None, "xx"])


def test_a_task_adapter_continues_from_a_trained_one(ner_data):
    """start_from copies a trained task adapter and its head, then trains the copy: at learning rate 0 the copy is the
    original exactly, with a real rate it moves away while the original stays as it was; a head trained for other
    labels, or the adapter being trained itself, is refused with a one-line error."""
    sents, _, tok = ner_data
    model = tiny(tok)
    config = TrainConfig(steps=4, batch_size=8, max_length=64, learning_rate=5e-3, seed=2)

    def params(name):
        return dict([*model.adapters[name].named_parameters(), *model.heads[name].named_parameters()])

    train_task_adapter(model, tok, "ner", sents, "first", config=config)
    first = {n: p.clone() for n, p in params("first").items()}
    labels = model.heads["first"].config.labels
    frozen = replace(config, learning_rate=0.0)
    train_task_adapter(model, tok, "ner", sents, "copy", labels=labels, start_from="first", config=frozen)
    assert all(torch.equal(p, first[n]) for n, p in params("copy").items())
    train_task_adapter(model, tok, "ner", sents, "more", labels=labels, start_from="first", config=config)
    assert any(not torch.equal(p, first[n]) for n, p in params("more").items())
    assert all(torch.equal(p, first[n]) for n, p in params("first").items())
    with pytest.raises(ValueError, match="does not fit"):
        train_task_adapter(model, tok, "ner", sents, "other", labels=labels[::-1], start_from="first", config=config)
    assert "other" not in model.adapters and "other" not in model.heads
    with pytest.raises(ValueError, match="another task adapter"):
        train_task_adapter(model, tok, "ner", sents, "first", start_from="first", config=config)


def test_qa_task_adapter_learns_to_answer():
    """Trained on generated questions, the QA head answers them with the gold span of the context."""
    from madx_core.evaluation import evaluate_qa

    examples = qa_examples(32)
    tok = make_word_tokenizer(w for e in examples for w in (e.context + " " + e.question).split())
    model = tiny(tok)
    config = TrainConfig(steps=60, batch_size=8, max_length=64, learning_rate=1e-2, seed=1)
    result = train_task_adapter(model, tok, "qa", examples, "qa", config=config)
    assert result.steps == 60 and model.heads["qa"].config.head_type == "question_answering"
    scores, answers = evaluate_qa(model, tok, examples, "qa")
    assert set(answers) == {e.id for e in examples}
    assert scores["exact_match"] >= 75, (scores, answers)


def test_length_grouped_batches_cover_the_epoch_with_little_padding():
    """Every example once per epoch, seeded, and far fewer padded positions than random batches."""
    g = torch.Generator().manual_seed(0)
    features = [{"input_ids": [0] * int(n)} for n in torch.randint(3, 120, (1000,), generator=g)]

    def padded(batches):
        return sum(max(len(features[i]["input_ids"]) for i in b) * len(b) for b in batches)

    grouped = epoch_batches(features, 16, torch.Generator().manual_seed(1), group=True)
    assert sorted(i for b in grouped for i in b) == list(range(1000))
    assert grouped == epoch_batches(features, 16, torch.Generator().manual_seed(1), group=True)
    assert grouped != epoch_batches(features, 16, torch.Generator().manual_seed(2), group=True)
    random_batches = epoch_batches(features, 16, torch.Generator().manual_seed(1), group=False)
    real = sum(len(f["input_ids"]) for f in features)
    assert padded(grouped) < 1.1 * real < padded(random_batches) / 1.5


def test_vocabulary_subset_softmax_is_cross_entropy_over_those_tokens(ner_data):
    """With `vocab`, the MLM loss is the cross-entropy of the full logits restricted to those tokens (labels mapped
    to their place in the subset); a label outside the subset is an error, not a silent wrong loss."""
    _, _, tok = ner_data
    model = tiny(tok, dropout=0.0).eval()
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(5, len(tok), (2, 9), generator=g)
    labels = torch.full_like(inputs, -100)
    labels[0, 2], labels[1, 5], labels[1, 7] = 11, 40, 23
    vocab = torch.tensor([3, 11, 17, 23, 40, 41])
    with torch.no_grad():
        full = model(inputs, head="mlm", labels=labels)
        subset = model(inputs, head="mlm", labels=labels, vocab=vocab)
    expected = torch.nn.functional.cross_entropy(full.logits[:, vocab], torch.tensor([1, 4, 3]))
    assert subset.logits.shape == (3, 6) and torch.allclose(subset.loss, expected, atol=1e-6)
    assert subset.loss < full.loss  # fewer tokens share the probability
    with pytest.raises(ValueError, match="not in the vocabulary subset"):
        model(inputs, head="mlm", labels=labels, vocab=torch.tensor([3, 11, 17, 23]))


def test_an_anchored_language_adapter_stays_near_its_anchor_in_every_layer(ner_data):
    """With anchor="en", training adds the drift of every layer's output from the English adapter's on the same text:
    with a large weight the new adapter learns while its layer outputs stay far closer to the anchor's than the same
    training without it puts them. all_layers returns every layer's output, the last being the usual result."""
    _, texts, tok = ner_data
    model = tiny(tok, dropout=0.0)
    config = TrainConfig(steps=12, batch_size=4, max_length=32, seed=1, learning_rate=3e-3)
    shape = mx.AdapterConfig(reduction_factor=4, inv_adapter="nice")
    train_language_adapter(model, tok, texts, "en", adapter_config=shape, config=replace(config, seed=7))
    free = train_language_adapter(model, tok, texts, "free", adapter_config=shape, config=config)
    kept = train_language_adapter(model, tok, texts, "kept", adapter_config=shape, config=config, anchor="en",
                                  anchor_weight=100.0)  # fmt: skip
    assert kept.losses[-1] < kept.losses[0] and free.losses[-1] < free.losses[0]
    model.eval()
    ids = tok(texts[:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = {a: model.encode(ids["input_ids"], ids["attention_mask"], adapters=a, all_layers=True) for a in
                  ("en", "free", "kept")}  # fmt: skip
        assert torch.allclose(states["en"][-1], model.encode(ids["input_ids"], ids["attention_mask"], adapters="en"))
    real = ids["attention_mask"].bool()

    def drift(name):
        return (1 - torch.cosine_similarity(states[name][:, real], states["en"][:, real], dim=-1)).mean()

    assert states["en"].shape[0] == model.num_layers and drift("kept") < drift("free") / 3
    with pytest.raises(ValueError, match="unknown anchor adapter 'xx'"):
        train_language_adapter(model, tok, texts, "bad", config=config, anchor="xx")
    assert "bad" not in model.adapters  # refused before anything was added


def test_a_language_adapter_anchored_to_the_backbone_stays_near_the_backbone_alone(ner_data):
    """anchor=ANCHOR_BACKBONE (for task adapters trained with no language adapter, -LAD's) pulls every layer's output
    towards the frozen backbone's own, with no adapter: the adapter still learns, and moves the states far less than
    the same training without the pull."""
    from madx_core.mlm import ANCHOR_BACKBONE

    _, texts, tok = ner_data
    model = tiny(tok, dropout=0.0)
    config = TrainConfig(steps=12, batch_size=4, max_length=32, seed=1, learning_rate=3e-3)
    shape = mx.AdapterConfig(reduction_factor=4, inv_adapter="nice")
    free = train_language_adapter(model, tok, texts, "free", adapter_config=shape, config=config)
    kept = train_language_adapter(model, tok, texts, "kept", adapter_config=shape, config=config,
                                  anchor=ANCHOR_BACKBONE, anchor_weight=100.0)  # fmt: skip
    assert kept.losses[-1] < kept.losses[0] and free.losses[-1] < free.losses[0]
    model.eval()
    ids = tok(texts[:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = {a: model.encode(ids["input_ids"], ids["attention_mask"], adapters=a, all_layers=True) for a in
                  (None, "free", "kept")}  # fmt: skip
    real = ids["attention_mask"].bool()

    def drift(name):
        return (1 - torch.cosine_similarity(states[name][:, real], states[None][:, real], dim=-1)).mean()

    assert drift("kept") < drift("free") / 3


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    """`--precision auto` (train-lang's default) trains in bf16 on a CPU with native bf16 (AVX512-BF16 or AMX) and
    falls back to fp32 on one without; an explicit precision is kept as asked."""
    from madx_core.distributed import resolve_precision

    cpu = torch.device("cpu")
    for avx512_bf16, amx, expected in ((True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_precision("auto", cpu) == expected
        assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
